//! Every rule an `#[entrypoint]` must follow: the shapes RPC can carry, and names that JS and
//! the Workers runtime accept without collisions. All failures are reported at once.

use std::collections::HashMap;

use syn::spanned::Spanned;
use syn::Type;

use crate::ast::{Entrypoint, Method, Output, Receiver};
use crate::attr::Kind;
use crate::Errors;

/// Method names that a Worker entrypoint or Durable Object already gives a meaning to, or that
/// break a JS RPC stub or promise (a method `then` makes every stub a thenable).
const RESERVED: &[&str] = &[
    "then",
    "catch",
    "finally",
    "constructor",
    "fetch",
    "connect",
    "alarm",
    "queue",
    "scheduled",
    "tail",
    "trace",
    "email",
    "test",
    "webSocketMessage",
    "webSocketClose",
    "webSocketError",
    "dup",
    "call",
    "apply",
    "bind",
    "toString",
    "toJSON",
    "toLocaleString",
    "valueOf",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "env",
    "ctx",
    "__proto__",
];

fn is_js_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Checks every rule and reports every failure, each at the token to change.
pub fn check(entrypoint: &Entrypoint, errors: &mut Errors) {
    if let Some(span) = entrypoint.trait_impl {
        errors.push(
            span,
            "#[entrypoint] goes on an inherent impl (`impl MyType { ... }`), not on a trait impl: \
             RPC methods are the type's own",
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
    check_entrypoint_name(entrypoint, errors);
    for method in &entrypoint.methods {
        check_method(method, errors);
    }
    check_method_names(entrypoint, errors);
}

fn check_entrypoint_name(entrypoint: &Entrypoint, errors: &mut Errors) {
    let Kind::NamedEntrypoint(name) = &entrypoint.kind else {
        return;
    };
    let value = name.value();
    if !is_js_identifier(&value) {
        errors.push(
            name.span(),
            format!("`{value}` is not a valid JS class name: wrangler's `entrypoint` names a JS export; use letters, digits, `_` or `$`, not starting with a digit"),
        );
    } else if value == "default" || value.contains("__") || value.starts_with("__pf") {
        errors.push(
            name.span(),
            format!("`{value}` is reserved: `default` is the default entrypoint (omit `name`), and `__` is used by proxy-fetch's generated exports"),
        );
    }
}

fn check_method(m: &Method, errors: &mut Errors) {
    if let Some(span) = m.wait_until_args {
        errors.push(span, "#[wait_until] takes no arguments");
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
            "RPC methods take `&self` first; move associated functions (no `self`) to another impl block",
        ),
    }
    for arg in &m.args {
        if arg.ident.is_none() {
            errors.push(
                arg.pat_span,
                "RPC arguments must be plain names (`msg: FetchMessage`): patterns have no name to \
                 report in a payload error; destructure inside the body",
            );
        }
        match &arg.ty {
            Type::Reference(r) => errors.push(
                r.span(),
                "RPC arguments are owned values decoded from the caller's payload: take `T`, not `&T`",
            ),
            Type::ImplTrait(t) => errors.push(
                t.span(),
                "RPC arguments need a concrete type that serde can decode: `impl Trait` has none",
            ),
            _ => {}
        }
    }
    match &m.output {
        Output::Other(span) => errors.push(
            *span,
            "RPC methods return `Result<T, E>` with both types written out (T and E serde types, E: \
             Display): the caller needs to decode both; e.g. `-> Result<Health, HandlerError>`",
        ),
        Output::Result { ok, .. } if m.wait_until.is_some() && !is_unit(ok) => errors.push(
            ok.span(),
            "a #[wait_until] method returns `Result<(), E>`: the caller is answered before the work \
             ends, so there is no value to send; remove #[wait_until] to return a value",
        ),
        Output::Result { .. } => {}
    }
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

fn check_method_names(entrypoint: &Entrypoint, errors: &mut Errors) {
    let mut seen: HashMap<&str, &crate::ast::Method> = HashMap::new();
    for method in &entrypoint.methods {
        let name = method.js_name.as_str();
        if !is_js_identifier(name) {
            errors.push(
                method.js_name_span,
                format!("`{name}` is not a valid JS method name"),
            );
        } else if RESERVED.contains(&name)
            || name.starts_with("__pf")
            || (name.starts_with("__proxyFetch") && !entrypoint.remote_only)
        {
            errors.push(
                method.js_name_span,
                format!(
                    "`{name}` is reserved for the Workers runtime or JS (it would shadow a built-in handler \
                     or break RPC stubs); rename the method or give it another JS name with #[rpc(name = \"...\")]"
                ),
            );
        }
        if let Some(first) = seen.insert(name, method) {
            errors.push(
                method.js_name_span,
                format!(
                    "`{}` and `{}` are both called `{name}` from JS; rename one or set #[rpc(name = \"...\")]",
                    first.ident, method.ident
                ),
            );
        }
    }
}
