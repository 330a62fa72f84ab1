// The bindings of the TypeScript caller, typed with the declarations that
// `proxy-fetch-build --dts` generates from tests/worker's Rust #[entrypoint]s.
import type { Counter, DefaultEntrypoint, GreeterEntrypoint } from "../worker/build/worker.js";

export interface Env {
  GREETER: Service<GreeterEntrypoint>;
  RUST_DEFAULT: Service<DefaultEntrypoint>;
  COUNTER: DurableObjectNamespace<Counter>;
}
