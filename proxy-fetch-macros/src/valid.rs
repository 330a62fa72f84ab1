//! Rules on names: what JS and the Workers runtime accept, and what would collide.

use std::collections::HashMap;

use crate::ast::Entrypoint;
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

pub fn check(entrypoint: &Entrypoint, errors: &mut Errors) {
    if let Kind::NamedEntrypoint(name) = &entrypoint.kind {
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
