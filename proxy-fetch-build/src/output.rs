//! The JS files the build writes beside wasm-bindgen's output.

/// proxy-fetch's JS runtime, of this tool's version (`js/runtime.js` links to
/// `proxy-fetch/js/runtime.js`).
pub const RUNTIME_JS: &str = include_str!("../js/runtime.js");

/// The names the JS side already uses (`js/names.json` links to `proxy-fetch/js/names.json`,
/// the list `#[entrypoint]` also checks at compile time).
const NAMES_JSON: &str = include_str!("../js/names.json");

/// Problems with the classes of a build (it sees every crate's, where the macro sees one):
/// a class name claimed twice, or one the main module cannot export. One message each.
pub fn export_problems(classes: &Classes) -> Vec<String> {
    let names: serde_json::Value = serde_json::from_str(NAMES_JSON).unwrap_or_default();
    let list = |key: &str| -> Vec<String> {
        names[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (exports, infixes) = (list("exports"), list("exportInfixes"));
    let claims = classes
        .entrypoints
        .iter()
        .map(|n| (n, format!("#[entrypoint(name = \"{n}\")]")))
        .chain(
            classes
                .durable_objects
                .iter()
                .map(|n| (n, format!("#[entrypoint(durable_object)] impl {n}"))),
        );
    let mut seen: Vec<(&String, String)> = Vec::new();
    let mut problems = Vec::new();
    for (name, what) in claims {
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            problems.push(format!(
                "two classes are exported as `{name}`: {first} and {what}; rename one"
            ));
        }
        if exports.contains(name) || infixes.iter().any(|i| name.contains(i.as_str())) {
            problems.push(format!(
                "{what}: `{name}` cannot be exported from the main module (see \
                 proxy-fetch/js/names.json); rename it"
            ));
        }
        seen.push((name, what));
    }
    problems
}

/// The classes `#[entrypoint]` declared, read from the marker exports it emits.
#[derive(Debug, Default, PartialEq)]
pub struct Classes {
    pub entrypoints: Vec<String>,
    pub durable_objects: Vec<String>,
}

/// Names of `export function <prefix><Name>(` in wasm-bindgen's JS output.
fn exported(index_js: &str, prefix: &str) -> Vec<String> {
    let head = format!("export function {prefix}");
    index_js
        .lines()
        .filter_map(|line| line.strip_prefix(head.as_str()))
        .filter_map(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))?;
            (end > 0 && rest[end..].starts_with('(')).then(|| rest[..end].to_owned())
        })
        .collect()
}

/// The classes to export: those `#[entrypoint]` declared, except proxy-fetch's own
/// (`systemExports` in names.json), which only a worker that serves them exports
/// (`proxy_fetch::serve_system!()` leaves a `__pf__serve__<Name>` marker).
pub fn declared_classes(index_js: &str) -> Classes {
    let names: serde_json::Value = serde_json::from_str(NAMES_JSON).unwrap_or_default();
    let system: Vec<&str> = names["systemExports"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let served = exported(index_js, "__pf__serve__");
    let wanted = |name: &String| !system.contains(&name.as_str()) || served.contains(name);
    Classes {
        entrypoints: exported(index_js, "__pf__entrypoint__")
            .into_iter()
            .filter(wanted)
            .collect(),
        durable_objects: exported(index_js, "__pf__durable_object__")
            .into_iter()
            .filter(wanted)
            .collect(),
    }
}

/// The version spelled by proxy-fetch's marker export (`__pf__version__0_1_0`), if any.
pub fn version_marker(index_js: &str) -> Option<String> {
    exported(index_js, "__pf__version__").into_iter().next()
}

/// How the marker spells a version.
pub fn marker_version(version: &str) -> String {
    version.replace(['.', '-', '+'], "_")
}

/// Rust's futures (`js_sys::futures`, under `wasm_bindgen_futures`) run their woken tasks in a
/// microtask, scheduled through wasm-bindgen's import of `queueMicrotask`. workerd's
/// `queueMicrotask` wraps each callback in a new function (to report its errors and keep its
/// async context): 2.6-3.5 us a call against 0.1-0.2 us for a resolved promise's `then`, which
/// queues the same microtask (`bench/microtask.mjs`); 9.5% of the CPU of the bench's
/// 1,000-request burst went there.
/// The import is rewritten to schedule with `then`, as `js_sys` itself does where there is no
/// `queueMicrotask`; an error the callback throws is then reported as an unhandled rejection.
/// `None` when wasm-bindgen's output has no such import (another version's glue): the build is
/// still right, only slower.
pub fn microtasks_on_promises(index_js: &str) -> Option<String> {
    const IMPORT: &str = "__wbg_queueMicrotask_";
    const CALL: &str = "queueMicrotask(arg0);";
    let mut out = String::with_capacity(index_js.len());
    let mut rest = index_js;
    let mut rewritten = false;
    while let Some(at) = rest.find(IMPORT) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        // `__wbg_queueMicrotask_<hash>: function(arg0) {` then the call as the body's only line.
        let head_end = from.find('{').map_or(0, |i| i + 1);
        let head = &from[..head_end];
        let body = &from[head_end..];
        let is_call_import = head.ends_with(": function(arg0) {")
            && !head.contains('\n')
            && body.trim_start().starts_with(CALL)
            && body.trim_start()[CALL.len()..]
                .trim_start()
                .starts_with('}');
        if is_call_import {
            let indent = &body[..body.len() - body.trim_start().len()];
            out.push_str(head);
            out.push_str(indent);
            out.push_str("Promise.resolve().then(arg0);");
            rest = &body.trim_start()[CALL.len()..];
            rewritten = true;
        } else {
            out.push_str(&from[..IMPORT.len()]);
            rest = &from[IMPORT.len()..];
        }
    }
    out.push_str(rest);
    rewritten.then_some(out)
}

/// `worker.js`: `export default` (fetch/queue/... handlers and default-entrypoint methods),
/// one `WorkerEntrypoint` class per named entrypoint, one `DurableObject` class per Durable
/// Object.
pub fn main_module(classes: &Classes) -> String {
    let mut lines = vec![
        "// Generated by proxy-fetch-build. Do not edit.".to_owned(),
        r#"import * as wasm from "./index.js";"#.to_owned(),
        r#"import { defaultEntrypoint, workerEntrypoint, durableObject } from "./proxy-fetch-runtime.js";"#
            .to_owned(),
        "export default defaultEntrypoint(wasm);".to_owned(),
    ];
    for name in &classes.entrypoints {
        lines.push(format!(
            "export const {name} = workerEntrypoint(wasm, \"{name}\");"
        ));
    }
    for name in &classes.durable_objects {
        lines.push(format!(
            "export const {name} = durableObject(wasm, \"{name}\");"
        ));
    }
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wasm-bindgen 0.2.129's two imports of `queueMicrotask`: js_sys's check for it (a getter,
    /// left alone) and its call (rewritten).
    const MICROTASK_IMPORTS: &str = "\
        __wbg_queueMicrotask_9833f9a49df95a49: function(arg0) {
            const ret = arg0.queueMicrotask;
            return ret;
        },
        __wbg_queueMicrotask_a72f977e97f23c5f: function(arg0) {
            queueMicrotask(arg0);
        },
        __wbg_random_5a4cafd2f02395ff: function() {";

    #[test]
    fn microtasks_are_scheduled_with_a_resolved_promise_not_queue_microtask() {
        let out = microtasks_on_promises(MICROTASK_IMPORTS).expect("the call import is found");
        assert_eq!(
            out,
            MICROTASK_IMPORTS.replace(
                "            queueMicrotask(arg0);",
                "            Promise.resolve().then(arg0);"
            )
        );
        assert!(out.contains("const ret = arg0.queueMicrotask;"));
    }

    #[test]
    fn glue_without_the_microtask_call_import_is_left_alone() {
        let getter_only = MICROTASK_IMPORTS.replace("queueMicrotask(arg0);", "other(arg0);");
        assert_eq!(microtasks_on_promises(&getter_only), None);
        assert_eq!(microtasks_on_promises(INDEX_JS), None);
    }

    const INDEX_JS: &str = "\
export function __pf__entrypoint__FetchExecutorEntrypoint() {
export function __pf__durable_object__FetchOrchestrator() {
export function __pf__serve__FetchOrchestrator() {
export function __pf__serve__FetchExecutorEntrypoint() {
export function __pf__durable_object__Inbox() {
export function __pf__version__0_1_0() {
export function __pf__default__ping(env, ctx, args) {
// export function __pf__entrypoint__Commented() {
export function __pf__entrypoint__() {
";

    #[test]
    fn proxy_fetchs_classes_are_exported_only_where_served() {
        let unserved = INDEX_JS
            .lines()
            .filter(|l| !l.contains("__pf__serve__"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            declared_classes(&unserved),
            Classes {
                entrypoints: vec![],
                durable_objects: vec!["Inbox".into()],
            }
        );
    }

    #[test]
    fn a_class_claimed_twice_or_unexportable_is_named() {
        let classes = Classes {
            entrypoints: vec!["Inbox".into(), "default".into()],
            durable_objects: vec!["Inbox".into()],
        };
        let problems = export_problems(&classes);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`default` cannot be exported"));
        assert!(problems[1].contains(
            "two classes are exported as `Inbox`: #[entrypoint(name = \"Inbox\")] and #[entrypoint(durable_object)] impl Inbox"
        ));
        assert!(export_problems(&declared_classes(INDEX_JS)).is_empty());
    }

    #[test]
    fn classes_come_from_marker_exports_only() {
        assert_eq!(
            declared_classes(INDEX_JS),
            Classes {
                entrypoints: vec!["FetchExecutorEntrypoint".into()],
                durable_objects: vec!["FetchOrchestrator".into(), "Inbox".into()],
            }
        );
    }

    #[test]
    fn version_marker_is_read_and_compared_in_its_spelling() {
        assert_eq!(version_marker(INDEX_JS).as_deref(), Some("0_1_0"));
        assert_eq!(marker_version("0.1.0"), "0_1_0");
        assert_eq!(marker_version("1.2.0-rc.1"), "1_2_0_rc_1");
        assert_eq!(version_marker("export function other() {"), None);
    }

    #[test]
    fn main_module_exports_one_class_per_declaration() {
        let module = main_module(&declared_classes(INDEX_JS));
        assert_eq!(
            module,
            "// Generated by proxy-fetch-build. Do not edit.\n\
             import * as wasm from \"./index.js\";\n\
             import { defaultEntrypoint, workerEntrypoint, durableObject } from \"./proxy-fetch-runtime.js\";\n\
             export default defaultEntrypoint(wasm);\n\
             export const FetchExecutorEntrypoint = workerEntrypoint(wasm, \"FetchExecutorEntrypoint\");\n\
             export const FetchOrchestrator = durableObject(wasm, \"FetchOrchestrator\");\n\
             export const Inbox = durableObject(wasm, \"Inbox\");\n"
        );
    }

    #[test]
    fn runtime_js_is_proxy_fetchs_runtime() {
        assert!(RUNTIME_JS.contains("export function durableObject(wasm, className)"));
    }
}
