// proxy-fetch's JS side: the classes workerd needs (WorkerEntrypoint, DurableObject) around
// the Rust exports that #[entrypoint] generates. tools/build-worker.mjs writes a main module
// that calls these functions once per class; nothing here knows a user's method names.
//
// Every member these classes define besides the user's methods (handlers, `rust`, `inner`, ...)
// is listed in names.json, which #[entrypoint] reads to refuse such method names at compile
// time; tests/workerd/names.test.mjs checks this file against it.
//
// Export names made by the macro:
//   __pf__default__<method>(env, ctx, args)         method of the default entrypoint
//   __pf__ep__<Entrypoint>__<method>(env, ctx, args) method of a named WorkerEntrypoint
//   __pf__do__<RustClass>__<method>(object, ctx, args) RPC method of a Durable Object
import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";

const DEFAULT = "__pf__default__";
const NAMED = "__pf__ep__";
const DO_RPC = "__pf__do__";

// A Rust panic aborts the Wasm instance. workers-rs schedules a fresh instance for the next
// call, but promises of calls that were in flight never settle. Track them so a crash rejects
// them at once instead of leaving callers hanging until the runtime gives up.
const inFlight = new Set();

function crashed(error) {
  if (!(error instanceof WebAssembly.RuntimeError)) return;
  const lost = new Error(`proxy-fetch: the Wasm instance crashed (${error.message}); the call was lost`);
  for (const reject of inFlight) reject(lost);
  inFlight.clear();
}
addEventListener("error", (event) => crashed(event.error));
addEventListener("unhandledrejection", (event) => crashed(event.reason));

function tracked(start) {
  return new Promise((resolve, reject) => {
    inFlight.add(reject);
    const settle = (f) => (value) => {
      inFlight.delete(reject);
      f(value);
    };
    try {
      Promise.resolve(start()).then(settle(resolve), (error) => {
        crashed(error);
        settle(reject)(error);
      });
    } catch (error) {
      crashed(error);
      settle(reject)(error);
    }
  });
}

// Class names contain no `__` and do not end in `_` (the macro refuses them), so
// `__pf__ep__A__` or `__pf__do__A__` never matches the exports of another class.
function addMethods(prototype, wasm, prefix, forward) {
  for (const exportName of Object.keys(wasm)) {
    if (exportName.startsWith(prefix)) prototype[exportName.slice(prefix.length)] = forward(exportName);
  }
}

const HANDLERS = ["fetch", "queue", "scheduled", "email", "tail"];
const DO_HANDLERS = ["fetch", "alarm", "webSocketMessage", "webSocketClose", "webSocketError"];

/** The worker's `export default`: its fetch/queue/... handlers plus default-entrypoint methods. */
export function defaultEntrypoint(wasm) {
  class Entrypoint extends WorkerEntrypoint {}
  for (const handler of HANDLERS) {
    if (typeof wasm[handler] !== "function") continue;
    Entrypoint.prototype[handler] = function (arg) {
      return tracked(() => wasm[handler](arg, this.env, this.ctx));
    };
  }
  addMethods(Entrypoint.prototype, wasm, DEFAULT, (exportName) => function (...args) {
    return tracked(() => wasm[exportName](this.env, this.ctx, args));
  });
  return Entrypoint;
}

/** A named `WorkerEntrypoint` (wrangler: `entrypoint = "<name>"` in a service binding). */
export function workerEntrypoint(wasm, name) {
  const Named = { [name]: class extends WorkerEntrypoint {} }[name];
  addMethods(Named.prototype, wasm, `${NAMED}${name}__`, (exportName) => function (...args) {
    return tracked(() => wasm[exportName](this.env, this.ctx, args));
  });
  return Named;
}

/**
 * A Durable Object class that workerd accepts RPC on (`extends DurableObject`), owning the
 * workers-rs object and rebuilding it when the Wasm instance was replaced after a crash
 * (storage survives, in-memory state does not).
 */
export function durableObject(wasm, className) {
  const Rust = wasm[className];
  if (typeof Rust !== "function") throw new Error(`proxy-fetch: no Rust class ${className} in the build`);
  const Wrapper = {
    [className]: class extends DurableObject {
      constructor(ctx, env) {
        super(ctx, env);
        this.rustInstance = -1;
      }
      get rust() {
        // Calling an export runs wasm-bindgen's guard, which swaps in a fresh instance if the
        // last one aborted; instanceId then tells whether our object belongs to a dead one.
        const instance = wasm.__worker_init_state().instanceId;
        if (this.rustInstance !== instance) {
          this.inner = new Rust(this.ctx, this.env);
          this.rustInstance = instance;
        }
        return this.inner;
      }
    },
  }[className];
  for (const handler of DO_HANDLERS) {
    if (typeof Rust.prototype[handler] !== "function") continue;
    Wrapper.prototype[handler] = function (...args) {
      return tracked(() => this.rust[handler](...args));
    };
  }
  const prefix = `${DO_RPC}${className}__`;
  for (const exportName of Object.keys(wasm)) {
    if (!exportName.startsWith(prefix)) continue;
    Wrapper.prototype[exportName.slice(prefix.length)] = function (...args) {
      return tracked(() => wasm[exportName](this.rust, this.ctx, args));
    };
  }
  return Wrapper;
}
