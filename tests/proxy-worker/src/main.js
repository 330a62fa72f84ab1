// Test-only main module of the proxy test worker: the build's classes, with storage faults
// injectable into the Inbox and FetchOrchestrator Durable Objects (nothing of this ships).
// `injectStorageFault(op, prefix, times)` makes the next `times` storage calls `op` ("get",
// "put", "delete") on a key starting with `prefix` reject, as a failing storage would. A read
// fault also makes the object start afresh, as a restarted instance does (proxy-fetch keeps
// the rows an instance read or wrote in its memory), so its next reads reach storage.
// `storageFaultsLeft()` says how many injected faults have not been hit yet: a test checks that
// the failure it set up happened.
import * as build from "../build/worker.js";

export * from "../build/worker.js";
export default build.default;

function faulty(ctx, faults) {
  const storage = new Proxy(ctx.storage, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      return (...args) => {
        const keys = [args[0]].flat().filter((k) => typeof k === "string");
        const fault = faults.find((f) => f.op === prop && f.times > 0 && keys.some((k) => k.startsWith(f.prefix)));
        if (fault) {
          fault.times--;
          return Promise.reject(new Error(`injected storage fault: ${prop}(${keys.join(", ")})`));
        }
        return value.apply(target, args);
      };
    },
  });
  return new Proxy(ctx, {
    get(target, prop) {
      if (prop === "storage") return storage;
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function withFaults(Base) {
  return class extends Base {
    constructor(ctx, env) {
      super(ctx, env);
      this.faults = [];
      this.realCtx = ctx;
      // The runtime's base class wants the real state; the Rust object gets the faulty one.
      Object.defineProperty(this, "ctx", { value: faulty(ctx, this.faults) });
    }
    injectStorageFault(op, prefix, times) {
      this.faults.push({ op, prefix, times });
      // proxy-fetch keeps an instance's name on its state (proxy-fetch/src/system/ledger.rs)
      // and keeps the rows it read or wrote: without that name the object starts afresh, as a
      // restarted instance does, and its next reads reach storage.
      if (op === "get") delete this.realCtx.__proxyFetchInstance;
    }
    storageFaultsLeft() {
      return this.faults.reduce((sum, f) => sum + f.times, 0);
    }
  };
}

export const Inbox = withFaults(build.Inbox);
export const FetchOrchestrator = withFaults(build.FetchOrchestrator);
