//! Options and protocol messages refuse keys they do not know (a misspelled option from a JS
//! caller must not be silently ignored). serde-wasm-bindgen reads only a struct's own fields,
//! so `deny_unknown_fields` alone never sees the others: these types derive serde with
//! `#[serde(remote = "Self")]` and `strict_serde!` reads them as a map of every key.
//!
//! A type that also derives `ts_rs::TS` gets `remote = "Self"` from
//! `#[proxy_fetch_macros::__serde_remote_self]`, written between `derive(ts_rs::TS)` and
//! `derive(Serialize, Deserialize)`: attributes expand in order, so serde's derives see it and
//! ts-rs's does not (ts-rs ignores `remote` anyway, but prints a warning for it at each build).

macro_rules! strict_serde {
    ($($t:ty),* $(,)?) => {$(
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                struct Strict;
                impl<'de> ::serde::de::Visitor<'de> for Strict {
                    type Value = $t;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                        f.write_str(concat!("an object (", stringify!($t), ")"))
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, map: A) -> ::core::result::Result<$t, A::Error> {
                        <$t>::deserialize(::serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_map(Strict)
            }
        }
    )*};
}

pub(crate) use strict_serde;
