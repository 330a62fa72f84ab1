//! Native only: what `proxy-fetch-build --dts` reads to write TypeScript declarations of a
//! worker's entrypoints (docs/typescript.md).
//!
//! `#[entrypoint]` implements [`Describe`] for each client it generates (native builds only):
//! the entrypoint's RPC methods as an [`Entrypoint`]. For each entrypoint that it serves it also
//! emits a `#[test]` (native, `cfg(test)`) that hands that description to [`export`], and
//! `proxy_fetch::serve_system!()` emits one for the classes of proxy-fetch it serves
//! (`proxy_fetch::system::described`). `export` does nothing unless `PROXY_FETCH_DTS_DIR` is set
//! (as `proxy-fetch-build --dts` sets it when it runs `cargo test --lib -- __pf_dts_`): then it
//! writes one JSON file per entrypoint there, which the build turns into `worker.d.ts`.
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

/// The 64- and 128-bit integers a piece of TypeScript holds. serde-wasm-bindgen (as
/// proxy-fetch configures it) carries them differently: `u64`/`i64` as a number (an error
/// beyond 2^53), `u128`/`i128` as a `BigInt` (and a number is refused for them); ts-rs has one
/// setting for both (`Config::with_large_int`), so each declaration is written with the one its
/// integers need, and one that holds both kinds is refused.
#[cfg(feature = "ts")]
#[derive(Default)]
struct LargeInts {
    bits64: bool,
    bits128: bool,
}

#[cfg(feature = "ts")]
impl LargeInts {
    fn note<U: ?Sized + 'static>(&mut self) {
        use std::num::{NonZeroI128, NonZeroI64, NonZeroU128, NonZeroU64};
        let id = TypeId::of::<U>();
        if [
            TypeId::of::<u64>(),
            TypeId::of::<i64>(),
            TypeId::of::<NonZeroU64>(),
            TypeId::of::<NonZeroI64>(),
        ]
        .contains(&id)
        {
            self.bits64 = true;
        }
        if [
            TypeId::of::<u128>(),
            TypeId::of::<i128>(),
            TypeId::of::<NonZeroU128>(),
            TypeId::of::<NonZeroI128>(),
        ]
        .contains(&id)
        {
            self.bits128 = true;
        }
    }

    /// Of what `T::decl` writes inline: its fields' types and their type arguments (a named
    /// type a field refers to is declared on its own; a flattened or inlined one counts here).
    fn in_decl<T: ts_rs::TS + ?Sized + 'static>() -> LargeInts {
        let mut ints = LargeInts::default();
        T::visit_dependencies(&mut ints);
        ints
    }

    /// Of what `T::name` writes: `T` itself and its type arguments (`Option<u128>`).
    fn in_name<T: ts_rs::TS + ?Sized + 'static>() -> LargeInts {
        let mut ints = LargeInts::default();
        ints.note::<T>();
        T::visit_generics(&mut ints);
        ints
    }

    /// The configuration that writes these integers as they cross, or an error when they need
    /// two different ones.
    fn config(&self, what: impl FnOnce() -> String) -> Result<ts_rs::Config, String> {
        match (self.bits64, self.bits128) {
            (true, true) => Err(format!(
                "{} holds both 64-bit integers (which cross RPC as numbers) and 128-bit ones \
                 (which cross as BigInt), and ts-rs writes both alike: annotate the 128-bit \
                 fields #[ts(type = \"bigint\")] (or move them into a type of their own)",
                what()
            )),
            (false, true) => Ok(ts_rs::Config::new().with_large_int("bigint")),
            _ => Ok(config()),
        }
    }
}

#[cfg(feature = "ts")]
impl ts_rs::TypeVisitor for LargeInts {
    fn visit<U: ts_rs::TS + 'static + ?Sized>(&mut self) {
        self.note::<U>();
    }
}

#[cfg(feature = "ts")]
fn config() -> ts_rs::Config {
    // serde-wasm-bindgen's default: 64-bit integers cross as numbers (LargeInts for 128).
    ts_rs::Config::new().with_large_int("number")
}

#[cfg(feature = "ts")]
impl<T: ts_rs::TS + ?Sized + 'static> ViaTs for Probe<T> {
    fn ts_type(&self, types: &mut Types) -> String {
        // `()` crosses as `undefined` (a method that returns `Ok(())` resolves to undefined).
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return "undefined".to_string();
        }
        types.declare::<T>();
        let cfg = match LargeInts::in_name::<T>().config(|| format!("`{}`", T::name(&config()))) {
            Ok(cfg) => cfg,
            Err(e) => {
                types.errors.push(e);
                config()
            }
        };
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
    /// Types that cannot be declared as they cross (`export` refuses the entrypoint).
    errors: Vec<String>,
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
        types.declare::<crate::rpc::RpcError>();
        types
    }

    /// Declares `T` when it is a named type, and every named type it uses.
    #[cfg(feature = "ts")]
    fn declare<T: ts_rs::TS + ?Sized + 'static>(&mut self) {
        struct Visit<'a>(&'a mut Types);
        impl ts_rs::TypeVisitor for Visit<'_> {
            fn visit<U: ts_rs::TS + 'static + ?Sized>(&mut self) {
                self.0.declare::<U>();
            }
        }
        // A type with an output path is a named (derived) type; the others are built in
        // (`string`, `Array<..>`) and only their parameters need declaring.
        if T::output_path().is_some() {
            if !self.seen.insert(TypeId::of::<T>()) {
                return;
            }
            let name = T::ident(&config());
            match LargeInts::in_decl::<T>().config(|| format!("`{name}`")) {
                Ok(cfg) => self.decls.push(Decl {
                    name,
                    decl: T::decl(&cfg),
                }),
                Err(e) => self.errors.push(e),
            }
        }
        T::visit_dependencies(&mut Visit(self));
        T::visit_generics(&mut Visit(self));
    }
}

/// What `#[entrypoint]` implements for each client it generates (native builds only): the
/// entrypoint's RPC methods.
pub trait Describe {
    /// The methods whose JS name `keep` accepts, and the types they use.
    fn describe_only(keep: &dyn Fn(&str) -> bool) -> Entrypoint;

    /// Every RPC method.
    fn describe() -> Entrypoint {
        Self::describe_only(&|_| true)
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
    #[serde(skip)]
    errors: Vec<String>,
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
            errors: Vec::new(),
        }
    }

    /// The export's name (`FetchOrchestrator`, `GreeterEntrypoint`, `default`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The JS names of its methods.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.iter().map(|m| m.name.as_str())
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
        self.errors = types.errors;
        self
    }
}

/// Writes the entrypoint's description into `$PROXY_FETCH_DTS_DIR/<name>.json`; nothing when
/// the variable is unset (a plain `cargo test`). Refuses an entrypoint with a type that cannot
/// be declared as it crosses.
pub fn export(ep: &Entrypoint) -> Result<(), String> {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return Ok(());
    };
    if !ep.errors.is_empty() {
        return Err(format!(
            "TypeScript declarations of `{}` ({}): {}",
            ep.name,
            ep.rust,
            ep.errors.join("; ")
        ));
    }
    let json = serde_json::to_string_pretty(ep).map_err(|e| e.to_string())?;
    let path = std::path::Path::new(&dir).join(format!("{}.json", ep.name));
    std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

// `(&Probe::<T>::new()).ts_type(..)` as the generated code writes it (the borrow is what picks
// `Fallback` for a type without `TS`).
#[cfg(test)]
#[allow(clippy::needless_borrow)]
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

    #[cfg(feature = "ts")]
    #[allow(dead_code)]
    mod large {
        #[derive(ts_rs::TS)]
        pub struct Wide {
            pub big: u128,
            pub negative: Option<i128>,
            pub many: Vec<u128>,
        }
        #[derive(ts_rs::TS)]
        pub struct Narrow {
            pub count: u64,
            pub wide: Wide,
        }
        #[derive(ts_rs::TS)]
        pub struct Flat {
            pub count: u64,
            #[ts(flatten)]
            pub wide: Wide,
        }
        #[derive(ts_rs::TS)]
        pub struct Annotated {
            pub count: u64,
            #[ts(type = "bigint")]
            pub big: u128,
        }
    }

    #[cfg(feature = "ts")]
    #[test]
    fn integers_of_128_bits_are_bigint_and_of_64_bits_number() {
        #[allow(unused_imports)]
        use super::{Fallback as _, ViaTs as _};
        let mut types = Types::default();
        assert_eq!((&Probe::<u128>::new()).ts_type(&mut types), "bigint");
        assert_eq!(
            (&Probe::<Option<Vec<i128>>>::new()).ts_type(&mut types),
            "Array<bigint> | null | undefined"
        );
        assert_eq!(
            (&Probe::<Vec<u64>>::new()).ts_type(&mut types),
            "Array<number>"
        );
        // Narrow refers to Wide: each declaration is written with its own integers.
        assert_eq!(
            (&Probe::<large::Narrow>::new()).ts_type(&mut types),
            "Narrow"
        );
        let decl = |types: &Types, name: &str| {
            types
                .decls
                .iter()
                .find(|d| d.name == name)
                .map(|d| d.decl.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            decl(&types, "Narrow"),
            "type Narrow = { count: number, wide: Wide, };"
        );
        assert_eq!(
            decl(&types, "Wide"),
            "type Wide = { big: bigint, negative: bigint | null, many: Array<bigint>, };"
        );
        assert!(types.errors.is_empty(), "{:?}", types.errors);
        // An annotated field is as the annotation says, and is not counted.
        (&Probe::<large::Annotated>::new()).ts_type(&mut types);
        assert_eq!(
            decl(&types, "Annotated"),
            "type Annotated = { count: number, big: bigint, };"
        );
        assert!(types.errors.is_empty(), "{:?}", types.errors);
    }

    #[cfg(feature = "ts")]
    #[test]
    fn a_declaration_with_integers_of_64_and_128_bits_is_refused() {
        #[allow(unused_imports)]
        use super::{Fallback as _, ViaTs as _};
        let mut types = Types::default();
        // Flattened, Wide's u128 fields are written inside Flat beside its u64.
        (&Probe::<large::Flat>::new()).ts_type(&mut types);
        assert_eq!(types.errors.len(), 1, "{:?}", types.errors);
        assert!(types.errors[0].contains("`Flat`"), "{}", types.errors[0]);
        assert!(types.errors[0].contains("#[ts(type = \"bigint\")]"));
        (&Probe::<(u64, u128)>::new()).ts_type(&mut types);
        assert_eq!(types.errors.len(), 2, "{:?}", types.errors);
        // The entrypoint that uses them is refused when the declarations are written.
        let mut ep = Entrypoint::new(Kind::Named, "E", "E");
        ep.method("m", false, &[], "Flat".into(), "unknown".into(), "");
        let ep = ep.types(types);
        assert!(!ep.errors.is_empty());
    }
}
