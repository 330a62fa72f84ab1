//! Every rule an `#[entrypoint]` must follow: the shapes RPC can carry, and names that JS and
//! the Workers runtime accept without collisions. All failures are reported at once.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, ReturnType, Type};

use crate::ast::{Entrypoint, Method, Output, Receiver, Role};
use crate::attr::Kind;
use crate::names::Names;
use crate::Errors;

/// A JS identifier without `$`, which wasm-bindgen does not carry into export names (an
/// export whose name has one is missing from the build).
fn is_js_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Is this proxy-fetch itself (the crate whose classes the system names belong to)? Its package
/// is this macro crate's, without `-macros` (the crates share a name, whatever it is; if they
/// did not, proxy-fetch's own `#[entrypoint]`s would not compile).
fn compiling_proxy_fetch() -> bool {
    let runtime = env!("CARGO_PKG_NAME").strip_suffix("-macros");
    std::env::var("CARGO_PKG_NAME").is_ok_and(|name| Some(name.as_str()) == runtime)
}

/// Checks every rule and reports every failure, each at the token to change.
pub fn check(entrypoint: &Entrypoint, errors: &mut Errors) {
    let names = match Names::load() {
        Ok(names) => names,
        Err(e) => {
            errors.push(Span::call_site(), e);
            return;
        }
    };
    if let Some(span) = entrypoint.trait_impl {
        errors.push(
            span,
            "#[entrypoint] goes on an inherent impl (`impl MyType { ... }`), not on a trait impl: \
             RPC methods are the type's own",
        );
    }
    if let (Kind::DurableObject { span, origin: true }, true) =
        (&entrypoint.kind, entrypoint.remote_only)
    {
        errors.push(
            *span,
            "`origin` marks the impl block of a Durable Object that receives proxy-fetch results; \
             a trait only declares a client: remove `origin` here and put it on the Durable \
             Object's own #[entrypoint(durable_object, origin)] impl",
        );
    }
    if let Some(span) = entrypoint.generics {
        let message = if entrypoint.remote_only {
            "an #[entrypoint] trait cannot be generic: a remote caller cannot choose a type"
        } else {
            "#[entrypoint] cannot be generic: the runtime builds one concrete type per entrypoint; \
             use a concrete type (or a type alias of one)"
        };
        errors.push(span, message);
    }
    if let (Some(span), None) = (entrypoint.self_generic_args, entrypoint.generics) {
        errors.push(
            span,
            "#[entrypoint] needs the type's own name without generic arguments: the runtime exports \
             one class per type; make a non-generic type (a struct wrapping `Wrapper<u32>`)",
        );
    }
    for span in &entrypoint.macros {
        errors.push(
            *span,
            "#[entrypoint] cannot see the methods a macro invocation would expand to, so they would \
             be neither exported nor on the client: write the methods out, or move the macro to \
             another impl block",
        );
    }
    for (span, method) in &entrypoint.attrs_on_helpers {
        errors.push(
            *span,
            format!(
                "`{method}` is not `pub`, so it is a local helper, not an RPC method, and this \
                 attribute does nothing: make it `pub async fn` to export it, or remove the attribute"
            ),
        );
    }
    for (span, message) in &entrypoint.bad_fn_qualifiers {
        errors.push(*span, message);
    }
    if entrypoint.client == entrypoint.self_ident {
        errors.push(
            entrypoint.client.span(),
            format!(
                "the client cannot have the name of the type it calls: choose another `client = \"...\"` \
                 (the default is `{}Client`)",
                entrypoint.self_ident
            ),
        );
    }
    if entrypoint.methods.is_empty() && entrypoint.trait_impl.is_none() {
        let message = if entrypoint.remote_only {
            "this #[entrypoint] trait declares no methods: declare the entrypoint's methods \
             (`async fn name(&self, ...) -> Result<T, E>;`)"
        } else {
            "this #[entrypoint] block has no RPC methods: only `pub` methods are exported (the others \
             are local helpers); write `pub async fn`"
        };
        errors.push(entrypoint.self_ident.span(), message);
    }
    check_class_names(entrypoint, &names, errors);
    for method in &entrypoint.methods {
        check_method(method, errors);
    }
    check_method_names(entrypoint, &names, errors);
}

/// The class names the worker's main module will export.
fn check_class_names(entrypoint: &Entrypoint, names: &Names, errors: &mut Errors) {
    let (value, span, what) = match &entrypoint.kind {
        Kind::NamedEntrypoint(name) => (name.value(), name.span(), "entrypoint"),
        Kind::DurableObject { .. } if !entrypoint.remote_only => (
            entrypoint.self_ident.to_string(),
            entrypoint.self_ident.span(),
            "Durable Object class",
        ),
        _ => return,
    };
    let rename = match what {
        "entrypoint" => "choose another `name = \"...\"`",
        _ => "rename the type",
    };
    if !is_js_identifier(&value) {
        errors.push(
            span,
            format!(
                "`{value}` is not a valid JS class name: wrangler's `entrypoint` names a JS export; use \
                 ASCII letters, digits or `_`, not starting with a digit"
            ),
        );
    } else if value == "default" {
        errors.push(
            span,
            "`default` is the worker's default entrypoint: omit `name` to add methods to it",
        );
    } else if let Some(infix) = names
        .export_infixes
        .iter()
        .find(|i| value.contains(i.as_str()))
    {
        errors.push(
            span,
            format!(
                "`{value}` contains `{infix}`, which proxy-fetch's and wasm-bindgen's generated exports \
                 use: {rename}"
            ),
        );
    } else if value.ends_with('_') {
        errors.push(
            span,
            format!(
                "`{value}` ends with `_`: proxy-fetch's generated export names put `__` after the class \
                 name, so it would share them with `{}`: {rename}",
                value.trim_end_matches('_')
            ),
        );
    } else if names.exports.contains(&value) {
        errors.push(
            span,
            format!(
                "the {what} `{value}` would be exported from the worker's main module under a name JS or \
                 the generated module already uses (JS reserved words, the module's own imports, \
                 workers-rs classes): {rename}"
            ),
        );
    } else if names.system_exports.contains(&value) && !compiling_proxy_fetch() {
        errors.push(
            span,
            format!(
                "`{value}` is a class proxy-fetch itself exports from every worker that uses its system: \
                 {rename}"
            ),
        );
    }
}

fn check_method(m: &Method, errors: &mut Errors) {
    if let Some(span) = m.wait_until_args {
        errors.push(span, "#[wait_until] takes no arguments");
    }
    for span in &m.duplicate_attrs {
        errors.push(
            *span,
            "this attribute is given twice on the same method: remove one",
        );
    }
    for span in &m.cfg_attr_ours {
        errors.push(
            *span,
            "#[entrypoint] cannot evaluate `cfg_attr` around #[wait_until] or #[rpc]: write the \
             attribute directly, and gate the whole method with #[cfg(...)] if needed",
        );
    }
    if m.rust_name.starts_with("__pf") {
        errors.push(
            m.ident.span(),
            "method names starting with `__pf` are reserved for proxy-fetch's generated code: rename the method",
        );
    }
    if !m.is_async {
        errors.push(m.fn_token, "RPC methods are async: write `async fn`");
    }
    if let Some(span) = m.generics {
        errors.push(
            span,
            "RPC methods cannot be generic: a remote caller cannot choose a type; use concrete types",
        );
    }
    if let Some(span) = m.variadic {
        errors.push(span, "RPC methods cannot be variadic");
    }
    match m.receiver {
        Receiver::Ref => {}
        Receiver::RefMut(span) => errors.push(
            span,
            "RPC methods take `&self`, not `&mut self`: calls may overlap, so keep mutable state in \
             storage or a `RefCell`",
        ),
        Receiver::Value(span) => errors.push(
            span,
            "RPC methods take `&self`, not `self` by value: the handler is shared by every call",
        ),
        Receiver::Typed(span) => errors.push(span, "RPC methods take `&self`"),
        Receiver::Missing(span) => errors.push(
            span,
            "RPC methods take `&self` first; move associated functions (no `self`) to another impl \
             block, or make them private helpers (not `pub`)",
        ),
    }
    for arg in &m.args {
        match &arg.ident {
            None => errors.push(
                arg.pat_span,
                "RPC arguments must be plain names (`msg: FetchMessage`): patterns have no name to \
                 report in a payload error; destructure inside the body",
            ),
            Some(ident) if ident.to_string().trim_start_matches("r#").starts_with("__pf") => {
                errors.push(
                    ident.span(),
                    "argument names starting with `__pf` are reserved for proxy-fetch's generated code: rename the argument",
                )
            }
            Some(_) => {}
        }
        check_type(&arg.ty, "argument", errors);
    }
    match &m.output {
        Output::Other(span, _) => errors.push(
            *span,
            "RPC methods return `Result<T, E>` with both types written out (T and E serde types, E: \
             Display): the caller needs to decode both; e.g. `-> Result<Health, HandlerError>`",
        ),
        Output::Result { ok, err } => {
            check_type(ok, "result", errors);
            check_type(err, "error", errors);
            if m.wait_until.is_some() && !is_unit(ok) {
                errors.push(
                    ok.span(),
                    "a #[wait_until] method returns `Result<(), E>`: the caller is answered before the \
                     work ends, so there is no value to send; remove #[wait_until] to return a value",
                );
            }
        }
    }
    if m.role == Role::Handler {
        if let Some(span) = m.wait_until {
            errors.push(
                span,
                "a continuation handler (first argument `FetchResult`) is called by proxy-fetch, which \
                 awaits it to deliver the result exactly once: remove #[wait_until]",
            );
        }
        if m.args.len() != 2 {
            errors.push(
                m.ident.span(),
                "a continuation handler (first argument `FetchResult`) takes exactly two arguments, \
                 `(result: FetchResult, data: D)`, where `D` is the data given to `Continuation::new`; \
                 use `()` for no data",
            );
        }
    }
}

/// Can the type be written in generated code as it is (no nested reference, `impl Trait`,
/// `Self`, ...)? The fallback client leaves out what cannot.
pub fn is_plain(ty: &Type) -> bool {
    let mut errors = Errors::default();
    check_type(ty, "", &mut errors);
    errors.0.is_none()
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// Shapes serde cannot decode into an owned value, or that mean something else in the
/// generated client, at any depth (`Vec<&str>`, `Option<impl Trait>`, `Result<Self, E>`).
fn check_type(ty: &Type, what: &str, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => errors.push(
            r.span(),
            format!(
                "an RPC {what} is an owned value decoded from the other side's payload: take `T`, not \
                 `&T` (e.g. `String` for `&str`, `Vec<T>` for `&[T]`)"
            ),
        ),
        Type::ImplTrait(t) => errors.push(
            t.span(),
            format!("an RPC {what} needs a concrete type that serde can decode: `impl Trait` has none"),
        ),
        Type::TraitObject(t) => errors.push(
            t.span(),
            format!("an RPC {what} needs a concrete serde type: a trait object cannot be decoded"),
        ),
        Type::BareFn(t) => errors.push(
            t.span(),
            format!("an RPC {what} is data: a function pointer cannot cross RPC"),
        ),
        Type::Ptr(t) => errors.push(
            t.span(),
            format!("an RPC {what} is data: a raw pointer cannot cross RPC"),
        ),
        Type::Infer(t) => errors.push(
            t.span(),
            format!("write the RPC {what}'s type out: the client needs it to encode and decode"),
        ),
        Type::Macro(t) => errors.push(
            t.span(),
            format!(
                "#[entrypoint] cannot see through a type macro in an RPC {what}: name the type, or a \
                 type alias of it"
            ),
        ),
        Type::Array(a) => check_type(&a.elem, what, errors),
        Type::Slice(s) => check_type(&s.elem, what, errors),
        Type::Group(g) => check_type(&g.elem, what, errors),
        Type::Paren(p) => check_type(&p.elem, what, errors),
        Type::Tuple(t) => t.elems.iter().for_each(|e| check_type(e, what, errors)),
        Type::Path(p) => {
            if let Some(q) = &p.qself {
                check_type(&q.ty, what, errors);
            }
            if p.qself.is_none() && p.path.segments.first().is_some_and(|s| s.ident == "Self") {
                errors.push(
                    p.path.segments[0].ident.span(),
                    format!(
                        "`Self` in an RPC {what} would name the generated client in its methods: write \
                         the type's name"
                    ),
                );
            }
            for segment in &p.path.segments {
                match &segment.arguments {
                    PathArguments::AngleBracketed(args) => {
                        for arg in &args.args {
                            match arg {
                                GenericArgument::Type(t) => check_type(t, what, errors),
                                GenericArgument::Lifetime(l) if l.ident != "static" => errors.push(
                                    l.span(),
                                    format!(
                                        "an RPC {what} is an owned value: it cannot borrow (`{l}`); use \
                                         an owned type or `'static`"
                                    ),
                                ),
                                GenericArgument::AssocType(a) => check_type(&a.ty, what, errors),
                                _ => {}
                            }
                        }
                    }
                    PathArguments::Parenthesized(args) => {
                        args.inputs.iter().for_each(|t| check_type(t, what, errors));
                        if let ReturnType::Type(_, t) = &args.output {
                            check_type(t, what, errors);
                        }
                    }
                    PathArguments::None => {}
                }
            }
        }
        _ => {}
    }
}

fn check_method_names(entrypoint: &Entrypoint, names: &Names, errors: &mut Errors) {
    let mut seen: HashMap<&str, &Method> = HashMap::new();
    let mut handles: HashMap<String, &Method> = HashMap::new();
    for method in &entrypoint.methods {
        let name = method.js_name.as_str();
        let reserved_prefix = names
            .method_prefixes
            .iter()
            .find(|p| name.starts_with(p.as_str()))
            // The trait that declares what every origin serves names `__proxyFetchDeliver`.
            .filter(|p| !(entrypoint.remote_only && *p == "__proxyFetch"));
        if !is_js_identifier(name) {
            errors.push(
                method.js_name_span,
                format!(
                    "`{name}` is not a valid JS method name: use ASCII letters, digits or `_`, not \
                     starting with a digit (`$` does not survive wasm-bindgen's exports)"
                ),
            );
        } else if names.methods.iter().any(|n| n == name) {
            errors.push(
                method.js_name_span,
                format!(
                    "`{name}` is reserved: the Workers runtime, JS or proxy-fetch's JS wrapper classes \
                     already use it (it would shadow a built-in handler or member, or break RPC stubs); \
                     rename the method or give it another JS name with #[rpc(name = \"...\")]"
                ),
            );
        } else if let Some(prefix) = reserved_prefix {
            errors.push(
                method.js_name_span,
                format!(
                    "JS names starting with `{prefix}` are reserved for proxy-fetch's own methods: rename \
                     the method or give it another JS name with #[rpc(name = \"...\")]"
                ),
            );
        }
        if let Some(first) = seen.insert(name, method) {
            errors.push(
                method.js_name_span,
                format!(
                    "`{}` and `{}` are both called `{name}` from JS; rename one or set #[rpc(name = \"...\")]",
                    first.rust_name, method.rust_name
                ),
            );
        }
        let handle = method.handle_name();
        if let Some(first) = handles.insert(handle.clone(), method) {
            errors.push(
                method.ident.span(),
                format!(
                    "`{}` and `{}` would both get the typed handle `{handle}` on the client: rename one",
                    first.rust_name, method.rust_name
                ),
            );
        }
    }
    // Handles are associated consts of the client, in the namespace of its methods.
    for method in entrypoint.methods.iter().filter(|m| m.role == Role::Rpc) {
        if let Some(owner) = handles.get(&method.rust_name) {
            let message = if owner.rust_name == method.rust_name {
                format!(
                    "`{}` is also the name of its own typed handle on the client: use a snake_case name",
                    method.rust_name
                )
            } else {
                format!(
                    "`{}` has the name of `{}`'s typed handle on the client: rename one",
                    method.rust_name, owner.rust_name
                )
            };
            errors.push(method.ident.span(), message);
        }
    }
}
