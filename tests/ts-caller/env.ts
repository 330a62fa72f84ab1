// The bindings of the TypeScript caller, typed with the declarations that
// `proxy-fetch-build --dts` generates from tests/worker's Rust #[entrypoint]s, and from
// examples/demo's (which serves proxy-fetch's own FetchOrchestrator and FetchExecutorEntrypoint).
import type { Counter, DefaultEntrypoint, GreeterEntrypoint } from "../worker/build/worker.js";
import type { FetchExecutorEntrypoint, FetchOrchestrator, Inbox } from "../../examples/demo/build/worker.js";

export interface Env {
  GREETER: Service<GreeterEntrypoint>;
  RUST_DEFAULT: Service<DefaultEntrypoint>;
  COUNTER: DurableObjectNamespace<Counter>;
  DEMO_INBOX: DurableObjectNamespace<Inbox>;
  DEMO_ORCHESTRATOR: DurableObjectNamespace<FetchOrchestrator>;
  DEMO_EXECUTOR: Service<FetchExecutorEntrypoint>;
}
