//! Native only: the TypeScript description of the classes `proxy_fetch::serve_system!()` makes
//! a worker serve (docs/typescript.md), for `proxy-fetch-build --dts`.
//!
//! `FetchOrchestrator` and `FetchExecutorEntrypoint` serve two kinds of RPC methods: the
//! protocol's, which the roles call on each other (`protocol::Orchestrator`,
//! `protocol::Executor`: `enqueue`, `recover`, `complete`, `forget`, `undelivered`,
//! `executeFetches`, `executeFetchesPacked`, `terms`), and
//! those for whoever holds a binding to them (`stats`, `statsWithQueries`, `health`). Only the
//! latter are declared: the protocol's take messages (`FetchJob`, with the origin's delivery
//! token) that only proxy-fetch builds, and calling them by hand would corrupt the queue.

use super::protocol::{ExecutorClient, OrchestratorClient};
use super::{FetchExecutorClient, FetchOrchestratorClient};
use crate::rpc::dts::{Describe, Entrypoint};

/// `FetchOrchestrator` and `FetchExecutorEntrypoint` as a TS caller sees them: their RPC
/// methods less the protocol's (which the `#[entrypoint]` traits of `protocol` list), and only
/// the types those use.
pub fn described() -> Vec<Entrypoint> {
    vec![
        FetchOrchestratorClient::describe_only(&not_in(OrchestratorClient::describe())),
        FetchExecutorClient::describe_only(&not_in(ExecutorClient::describe())),
    ]
}

fn not_in(protocol: Entrypoint) -> impl Fn(&str) -> bool {
    let names: Vec<String> = protocol.method_names().map(str::to_owned).collect();
    move |name| !names.iter().any(|n| n == name)
}

/// `ExecutorHealth` as it crosses RPC: `policy` is a `Result<(), String>`, which serde writes as
/// `{ Ok: <()> }` or `{ Err: <string> }`, and serde-wasm-bindgen writes `()` as `undefined` (ts-rs
/// would say `null`). Declared here, beside the executor rather than in it, as a mirror whose
/// fields `_same_fields` keeps in step with the real struct.
#[cfg(feature = "ts")]
mod executor_health {
    use crate::system::ExecutorHealth;
    use ts_rs::{Config, TypeVisitor, TS};

    /// What `health` reports.
    #[derive(TS)]
    #[ts(rename = "ExecutorHealth")]
    #[allow(dead_code)]
    struct Mirror {
        ok: bool,
        version: String,
        /// Whether `PROXY_FETCH_ALLOW` is set and readable.
        #[ts(type = "{ Ok: undefined } | { Err: string }")]
        policy: Result<(), String>,
        refused: u32,
        missing_bindings: Vec<String>,
        #[ts(type = "number")]
        in_flight_bytes: u64,
    }

    /// Fails to compile when `ExecutorHealth` gains, loses or retypes a field.
    #[allow(dead_code)]
    fn _same_fields(h: ExecutorHealth) -> Mirror {
        let ExecutorHealth {
            ok,
            version,
            policy,
            refused,
            missing_bindings,
            in_flight_bytes,
        } = h;
        Mirror {
            ok,
            version,
            policy,
            refused,
            missing_bindings,
            in_flight_bytes,
        }
    }

    impl TS for ExecutorHealth {
        type WithoutGenerics = Self;
        type OptionInnerType = Self;
        fn docs() -> Option<String> {
            Mirror::docs()
        }
        fn ident(cfg: &Config) -> String {
            Mirror::ident(cfg)
        }
        fn decl(cfg: &Config) -> String {
            Mirror::decl(cfg)
        }
        fn decl_concrete(cfg: &Config) -> String {
            Mirror::decl_concrete(cfg)
        }
        fn name(cfg: &Config) -> String {
            Mirror::name(cfg)
        }
        fn inline(cfg: &Config) -> String {
            Mirror::inline(cfg)
        }
        fn inline_flattened(cfg: &Config) -> String {
            Mirror::inline_flattened(cfg)
        }
        fn visit_dependencies(v: &mut impl TypeVisitor) {
            Mirror::visit_dependencies(v)
        }
        fn visit_generics(v: &mut impl TypeVisitor) {
            Mirror::visit_generics(v)
        }
        fn output_path() -> Option<std::path::PathBuf> {
            Mirror::output_path()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::described;

    #[test]
    fn the_system_classes_declare_only_what_a_binding_holder_calls() {
        let eps = described();
        let names: Vec<(&str, Vec<&str>)> = eps
            .iter()
            .map(|ep| (ep.name(), ep.method_names().collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("FetchOrchestrator", vec!["stats", "statsWithQueries"]),
                ("FetchExecutorEntrypoint", vec!["health"]),
            ]
        );
        // The protocol's messages are not declared, not even as `unknown`.
        let json = serde_json::to_string(&eps).unwrap_or_default();
        assert!(!json.contains("FetchJob"), "{json}");
    }
}
