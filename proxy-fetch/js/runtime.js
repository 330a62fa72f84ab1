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
const ORIGIN_ALARM = "__pf__alarm__";
// The long path's queue consumer, exported by serve_system!(): it takes the batches of the queue
// the worker's PROXY_FETCH_QUEUE var names (and never rejects); other batches go to the worker's
// own #[event(queue)].
const LONG_QUEUE = "__pf__queue__long";

// A Rust panic aborts the Wasm instance. workers-rs schedules a fresh instance for the next
// call, but promises of calls that were in flight never settle. Track them so a crash rejects
// them at once instead of leaving callers hanging until the runtime gives up.
const inFlight = new Set();
// Work handed to ctx.waitUntil by Rust (#[wait_until] methods), by label: it was acknowledged
// to its caller, so a crash loses it silently unless it is said here.
const background = new Map();

function crashed(error) {
  if (!(error instanceof WebAssembly.RuntimeError)) return;
  const lost = new Error(`proxy-fetch: the Wasm instance crashed (${error.message}); the call was lost`);
  for (const reject of inFlight) reject(lost);
  inFlight.clear();
  if (background.size > 0) {
    const counts = new Map();
    for (const label of background.values()) counts.set(label, (counts.get(label) ?? 0) + 1);
    const what = [...counts].map(([label, n]) => (n > 1 ? `${label} x${n}` : label)).join(", ");
    console.error(`proxy-fetch: the Wasm instance crashed (${error.message}); acknowledged background work lost: ${what}`);
    background.clear();
  }
}

/** `ctx` as Rust sees it: its waitUntil records the work under `label` until it settles. */
function tracking(ctx, label) {
  if (!ctx || typeof ctx.waitUntil !== "function") return ctx;
  return new Proxy(ctx, {
    get(target, prop) {
      if (prop === "waitUntil") {
        return (promise) => {
          background.set(promise, label);
          Promise.resolve(promise).finally(() => background.delete(promise));
          return target.waitUntil(promise);
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
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
  if (typeof wasm[LONG_QUEUE] === "function") {
    const own = typeof wasm.queue === "function" ? wasm.queue : null;
    Entrypoint.prototype.queue = function (batch) {
      if (batch.queue === this.env?.PROXY_FETCH_QUEUE) return tracked(() => wasm[LONG_QUEUE](batch, this.env));
      if (own) return tracked(() => own(batch, this.env, this.ctx));
      const why = `proxy-fetch: a batch of queue ${batch.queue}, which this worker does not consume (its PROXY_FETCH_QUEUE var is ${this.env?.PROXY_FETCH_QUEUE}, and it has no #[event(queue)])`;
      console.error(why);
      throw new Error(why);
    };
  }
  addMethods(Entrypoint.prototype, wasm, DEFAULT, (exportName) => function (...args) {
    const label = `default.${exportName.slice(DEFAULT.length)}`;
    return tracked(() => wasm[exportName](this.env, tracking(this.ctx, label), args));
  });
  return Entrypoint;
}

/** A named `WorkerEntrypoint` (wrangler: `entrypoint = "<name>"` in a service binding). */
export function workerEntrypoint(wasm, name) {
  const Named = { [name]: class extends WorkerEntrypoint {} }[name];
  const prefix = `${NAMED}${name}__`;
  addMethods(Named.prototype, wasm, prefix, (exportName) => function (...args) {
    const label = `${name}.${exportName.slice(prefix.length)}`;
    return tracked(() => wasm[exportName](this.env, tracking(this.ctx, label), args));
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
  // A proxy-fetch origin's alarm runs proxy-fetch's backstop first (which calls the
  // origin's own alarm when it has one).
  const originAlarm = wasm[`${ORIGIN_ALARM}${className}`];
  for (const handler of DO_HANDLERS) {
    const own = typeof Rust.prototype[handler] === "function";
    if (handler === "alarm" && typeof originAlarm === "function") {
      Wrapper.prototype.alarm = function () {
        return tracked(() => originAlarm(this.rust));
      };
      continue;
    }
    if (!own) continue;
    Wrapper.prototype[handler] = function (...args) {
      return tracked(() => this.rust[handler](...args));
    };
  }
  const prefix = `${DO_RPC}${className}__`;
  for (const exportName of Object.keys(wasm)) {
    if (!exportName.startsWith(prefix)) continue;
    const method = exportName.slice(prefix.length);
    const label = `${className}.${method}`;
    Wrapper.prototype[method] = function (...args) {
      return tracked(() => wasm[exportName](this.rust, tracking(this.ctx, label), args));
    };
  }
  return Wrapper;
}
