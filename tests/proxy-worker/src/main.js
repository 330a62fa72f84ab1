// Test-only main module of the proxy test worker: the build's classes, with storage faults
// injectable into the Inbox and FetchOrchestrator Durable Objects (nothing of this ships).
// `injectStorageFault(op, prefix, times)` makes the next `times` storage calls `op` ("get",
// "put", "delete") on a key starting with `prefix` fail, as a failing storage would:
// - a read rejects, and the object starts afresh (proxy-fetch keeps the rows an instance read or
//   wrote in its memory, so its next reads reach storage, as a restarted instance's do);
// - a write is not made and rejects, and then the object is reset (`ctx.abort`), as workerd
//   resets an object whose write failed: what was in flight in it fails, its memory is gone,
//   and the next call gets a fresh instance. The reset comes once the failing call has had its
//   turn (aborting inside the call would unwind the Wasm code that made it, which a real
//   failed write never does).
// `storageWrites()` counts the storage calls that write, `resetInstance()` resets the object
// as a crash would. `storageFaultsLeft()` says how many injected faults this instance has not hit yet, and
// `instances()` how many instances this object has had in this workerd run (a reset makes one
// more): a test checks that the failure it set up happened.
import * as build from "../build/worker.js";

export * from "../build/worker.js";
export default build.default;

/** Object id -> instances constructed; kept by the isolate across the objects' resets. */
const instances = new Map();

/** Storage calls that write (each counted once, whatever it writes). */
const WRITES = new Set(["put", "delete", "deleteAll", "setAlarm", "deleteAlarm", "transaction"]);

function faulty(ctx, faults, writes) {
  const storage = new Proxy(ctx.storage, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      return (...args) => {
        if (WRITES.has(prop)) writes.count++;
        const keys = [args[0]].flat().filter((k) => typeof k === "string");
        const fault = faults.find((f) => f.op === prop && f.times > 0 && keys.some((k) => k.startsWith(f.prefix)));
        if (fault) {
          fault.times--;
          const message = `injected storage fault: ${prop}(${keys.join(", ")})`;
          if (prop !== "get") setTimeout(() => ctx.abort(message), 0);
          return Promise.reject(new Error(message));
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
      const id = ctx.id.toString();
      instances.set(id, (instances.get(id) ?? 0) + 1);
      this.faults = [];
      this.writes = { count: 0 };
      this.realCtx = ctx;
      // The runtime's base class wants the real state; the Rust object gets the faulty one.
      Object.defineProperty(this, "ctx", { value: faulty(ctx, this.faults, this.writes) });
    }
    injectStorageFault(op, prefix, times) {
      this.faults.push({ op, prefix, times });
      // proxy-fetch keeps an instance's name on its state (proxy-fetch/src/system/ledger.rs)
      // and keeps the rows it read or wrote: without that name the object starts afresh, as a
      // restarted instance does, and its next reads reach storage.
      if (op === "get") delete this.realCtx.__proxyFetchInstance;
    }
    /** Storage calls this instance made that write (put, delete, setAlarm, ...). */
    storageWrites() {
      return this.writes.count;
    }
    /** Resets this object once the call has had its turn, as a crash does: its memory is gone
     *  and the next call gets a fresh instance. */
    resetInstance() {
      setTimeout(() => this.realCtx.abort("reset by the test"), 0);
    }
    storageFaultsLeft() {
      return this.faults.reduce((sum, f) => sum + f.times, 0);
    }
    instances() {
      return instances.get(this.realCtx.id.toString());
    }
  };
}

export const Inbox = withFaults(build.Inbox);
export const FetchOrchestrator = withFaults(build.FetchOrchestrator);
