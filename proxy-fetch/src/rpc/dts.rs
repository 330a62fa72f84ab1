//! Native only: what `proxy-fetch-build --dts` reads to write TypeScript declarations of a
//! worker's entrypoints (docs/typescript.md).
//!
//! `#[entrypoint]` emits, for each entrypoint that it serves, a `#[test]` (native, `cfg(test)`)
//! that describes the entrypoint's RPC methods with [`Entrypoint`] and hands it to [`export`].
//! `export` does nothing unless `PROXY_FETCH_DTS_DIR` is set (as `proxy-fetch-build --dts` sets
//! it when it runs `cargo test --lib -- __pf_dts_`): then it writes one JSON file per
//! entrypoint there, which the build turns into `worker.d.ts`.
//!
//! A type's TypeScript comes from ts-rs when it implements `ts_rs::TS` (the `ts` feature, and
//! `#[derive(ts_rs::TS)]` on the user's types); any other type is written `unknown`, so a crate
//! that declares nothing still builds and its declarations still type the method names and
//! arguments' count.

use std::any::TypeId;
use std::collections::HashSet;
use std::marker::PhantomData;

use serde::Serialize;

/// The environment variable naming the folder [`export`] writes into.
pub const DIR_VAR: &str = "PROXY_FETCH_DTS_DIR";

/// Which TypeScript a Rust type becomes: chosen by method resolution (`(&Probe::<T>::new())
/// .ts_type(..)` finds [`ViaTs`] when `T: ts_rs::TS`, else [`Fallback`]).
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

/// The TypeScript of a type that implements `ts_rs::TS`.
pub trait ViaTs {
    fn ts_type(&self, types: &mut Types) -> String;
}

/// `unknown`, for a type that does not implement `ts_rs::TS`.
pub trait Fallback {
    fn ts_type(&self, types: &mut Types) -> String;
}

impl<T: ?Sized> Fallback for &Probe<T> {
    fn ts_type(&self, types: &mut Types) -> String {
        types.untyped.push(std::any::type_name::<T>().to_string());
        "unknown".to_string()
    }
}

#[cfg(feature = "ts")]
fn config() -> ts_rs::Config {
    // serde-wasm-bindgen's default: 64- and 128-bit integers cross as numbers.
    ts_rs::Config::new().with_large_int("number")
}

#[cfg(feature = "ts")]
impl<T: ts_rs::TS + ?Sized + 'static> ViaTs for Probe<T> {
    fn ts_type(&self, types: &mut Types) -> String {
        // `()` crosses as `undefined` (a method that returns `Ok(())` resolves to undefined).
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return "undefined".to_string();
        }
        let cfg = config();
        types.declare::<T>(&cfg);
        let name = T::name(&cfg);
        // A `None` argument or result crosses as `undefined` (fields say so with
        // `#[ts(optional_fields = nullable)]`); ts-rs writes an `Option` as `T | null`.
        if T::IS_OPTION {
            format!("{name} | undefined")
        } else {
            name
        }
    }
}

/// The named TypeScript declarations that the methods' types need (`type Greeting = {..}`),
/// each once, and the Rust types written `unknown`.
#[derive(Default)]
pub struct Types {
    #[cfg_attr(not(feature = "ts"), allow(dead_code))]
    seen: HashSet<TypeId>,
    decls: Vec<Decl>,
    untyped: Vec<String>,
}

#[derive(Serialize)]
struct Decl {
    name: String,
    decl: String,
}

impl Types {
    /// Starts with `RpcError`, what `proxyFetchRpcError` holds.
    pub fn new() -> Types {
        #[allow(unused_mut)]
        let mut types = Types::default();
        #[cfg(feature = "ts")]
        types.declare::<crate::rpc::RpcError>(&config());
        types
    }

    /// Declares `T` when it is a named type, and every named type it uses.
    #[cfg(feature = "ts")]
    fn declare<T: ts_rs::TS + ?Sized + 'static>(&mut self, cfg: &ts_rs::Config) {
        struct Visit<'a>(&'a mut Types, &'a ts_rs::Config);
        impl ts_rs::TypeVisitor for Visit<'_> {
            fn visit<U: ts_rs::TS + 'static + ?Sized>(&mut self) {
                self.0.declare::<U>(self.1);
            }
        }
        // A type with an output path is a named (derived) type; the others are built in
        // (`string`, `Array<..>`) and only their parameters need declaring.
        if T::output_path().is_some() {
            if !self.seen.insert(TypeId::of::<T>()) {
                return;
            }
            self.decls.push(Decl {
                name: T::ident(cfg),
                decl: T::decl(cfg),
            });
        }
        T::visit_dependencies(&mut Visit(self, cfg));
        T::visit_generics(&mut Visit(self, cfg));
    }
}

/// What kind of class serves the entrypoint.
#[derive(Serialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The worker's default export.
    Default,
    /// A named `WorkerEntrypoint` export.
    Named,
    /// A Durable Object class.
    DurableObject,
}

/// One entrypoint's RPC methods, as JS callers see them.
#[derive(Serialize)]
pub struct Entrypoint {
    kind: Kind,
    /// The JS export's name (`GreeterEntrypoint`, `Counter`; `default` for the default one).
    name: String,
    /// The Rust type that serves it.
    rust: String,
    methods: Vec<Method>,
    decls: Vec<Decl>,
    untyped: Vec<String>,
}

#[derive(Serialize)]
struct Method {
    name: String,
    wait_until: bool,
    args: Vec<(String, String)>,
    ok: String,
    err: String,
    docs: String,
}

impl Entrypoint {
    pub fn new(kind: Kind, name: &str, rust: &str) -> Entrypoint {
        Entrypoint {
            kind,
            name: name.to_string(),
            rust: rust.to_string(),
            methods: Vec::new(),
            decls: Vec::new(),
            untyped: Vec::new(),
        }
    }

    /// Adds a method; `args` are (name, TypeScript type) pairs.
    pub fn method(
        &mut self,
        name: &str,
        wait_until: bool,
        args: &[(&str, String)],
        ok: String,
        err: String,
        docs: &str,
    ) {
        self.methods.push(Method {
            name: name.to_string(),
            wait_until,
            args: args
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            ok,
            err,
            docs: docs.to_string(),
        });
    }

    pub fn types(mut self, types: Types) -> Entrypoint {
        self.decls = types.decls;
        self.untyped = types.untyped;
        self
    }
}

/// Writes the entrypoint's description into `$PROXY_FETCH_DTS_DIR/<name>.json`; nothing when
/// the variable is unset (a plain `cargo test`).
pub fn export(ep: &Entrypoint) -> Result<(), String> {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return Ok(());
    };
    let json = serde_json::to_string_pretty(ep).map_err(|e| e.to_string())?;
    let path = std::path::Path::new(&dir).join(format!("{}.json", ep.name));
    std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NotTs;

    #[test]
    fn a_type_without_ts_is_unknown_and_listed() {
        #[allow(unused_imports)]
        use super::{Fallback as _, ViaTs as _};
        let mut types = Types::default();
        assert_eq!((&Probe::<NotTs>::new()).ts_type(&mut types), "unknown");
        assert!(types.untyped[0].ends_with("NotTs"));
    }

    #[cfg(feature = "ts")]
    #[test]
    fn a_ts_type_is_named_and_declared_with_what_it_uses() {
        #[allow(unused_imports)]
        use super::{Fallback as _, ViaTs as _};
        let mut types = Types::default();
        let ty = (&Probe::<Option<crate::rpc::RpcError>>::new()).ts_type(&mut types);
        assert_eq!(
            ty, "RpcError | null | undefined",
            "a None result crosses as undefined"
        );
        let mut names: Vec<&str> = types.decls.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["RpcError", "RpcErrorKind"]);
        assert_eq!((&Probe::<()>::new()).ts_type(&mut types), "undefined");
        assert_eq!((&Probe::<u64>::new()).ts_type(&mut types), "number");
        assert!(types.untyped.is_empty());
    }
}
