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
// `deleteStorageKey(key)` removes one key, `putStorageValue(key, value)` stores one,
// `storageKeys(prefix)` lists them, `storageTextLengths(prefix)` measures them,
// `storeRowAsEarlierBuilds(key)` rewrites a ledger row in
// the form earlier builds stored. `storageWrites()` counts the storage calls that
// write, `resetInstance()` resets the object as a crash would. `storageFaultsLeft()` says how
// many injected faults this instance has not hit yet, and
// `instances()` how many instances this object has had in this workerd run (a reset makes one
// more): a test checks that the failure it set up happened. `calls()` counts, for this object,
// the executor's `executeFetches` and `executeFetchesPacked` calls of its jobs and its own
// `__proxyFetchDeliver` and `__proxyFetchDeliverPacked` calls.
//
// Long path (queue) hooks, chosen by a marker in the request's URL (tests/workerd/long.test.mjs):
// - `pf-dup`: the origin's producer sends the job's message twice; the Inbox's
//   `resendLongJob(id)` sends it once more (a duplicate after the result).
// - `pf-die-after-claim`: on a message's first delivery the consumer "dies" after its claim: the
//   hook claims the job from its origin (`__proxyFetchClaim`, as the consumer does), sends the
//   request to the upstream (a consumer that died mid-fetch did), and hands the message back to
//   the queue unacknowledged (`retry()`), so the queue delivers it again with `attempts` 2.
// - `pf-undeliverable`: the first consumer run of that request cannot deliver its result: every
//   `__proxyFetchDeliver` or `__proxyFetchDeliverPacked` call it makes fails as a call to an
//   unreachable origin does.
// - `pf-drop`: the first message of that request is lost in the queue: acknowledged, never run
//   (no claim, no fetch), as a message the queue dropped.
// - `pf-send-fails`: the origin's producer `send()` of that request's message rejects, as a
//   failing queue does.
// - `pf-throw`: the consumer's invocation throws mid-fetch: on a batch's first delivery that
//   holds such a message, the real consumer runs, and once its fetch of that request has its
//   response headers from the upstream (so the upstream has the request) the invocation's
//   `queue()` throws, as a crashed consumer invocation does: the queue delivers the batch again.
// The Inbox's `longMessages(id)` says how many messages of request `id` the consumer got.
import * as build from "../build/worker.js";

export * from "../build/worker.js";

/** Request id -> messages of it the queue handed to the consumer (this isolate's count). */
const longSeen = new Map();
/** Request id -> [body, options] of its `pf-dup` message, for resendLongJob. */
const longSent = new Map();
/** Requests whose first consumer run already failed to deliver (`pf-undeliverable`). */
const undeliverable = new Set();
/** Requests whose first message was dropped (`pf-drop`). */
const dropped = new Set();
/** Waiters for the consumer's fetch of a `pf-throw` URL to get its response headers. */
const throwWaiters = new Set();

// Watches the isolate's fetches for `pf-throw` URLs (the consumer's Rust code calls the global
// fetch): once such a fetch has its response, the waiting `queue()` throws. Every fetch is
// passed through unchanged.
const realFetch = globalThis.fetch;
globalThis.fetch = function (input, init) {
  const response = realFetch.call(this, input, init);
  const url = typeof input === "string" ? input : input?.url ?? "";
  if (url.includes("pf-throw")) {
    response.then(() => {
      for (const wake of throwWaiters) wake();
      throwWaiters.clear();
    }, () => {});
  }
  return response;
};

const urlOf = (body) => body?.job?.request?.url ?? "";

/** Durable Object id -> { executions, deliveries }: the executor's calls of the object's jobs,
 *  and the delivery calls it got, packed or not (this isolate's count). */
const callCounts = new Map();
const countsOf = (id) => {
  if (!callCounts.has(id)) callCounts.set(id, { executions: 0, deliveries: 0 });
  return callCounts.get(id);
};

const countExecution = (jobs, originOf) => {
  for (const id of new Set((Array.isArray(jobs) ? jobs : []).map(originOf))) countsOf(id).executions++;
};
/** A packed job's origin id (its JSON text), or undefined when it does not read as one. */
const packedOrigin = (item) => {
  try {
    return JSON.parse(item?.json)?.origin?.id;
  } catch {
    return undefined;
  }
};

export class FetchExecutorEntrypoint extends build.FetchExecutorEntrypoint {
  executeFetches(jobs) {
    countExecution(jobs, (j) => j?.origin?.id);
    return super.executeFetches(jobs);
  }
  executeFetchesPacked(jobs) {
    countExecution(jobs, packedOrigin);
    return super.executeFetchesPacked(jobs);
  }
}

/** env in which every origin Durable Object's `__proxyFetchDeliver` fails (unreachable). */
function unreachableOrigins(env) {
  const stub = (real) => new Proxy(real, {
    get(target, prop) {
      if (prop === "__proxyFetchDeliver" || prop === "__proxyFetchDeliverPacked") return () => Promise.reject(new Error("injected: the origin is unreachable"));
      // An RPC stub's members are remote methods: `.bind` would be one too, so call through.
      return (...args) => target[prop](...args);
    },
  });
  const namespace = (real) => new Proxy(real, {
    get(target, prop) {
      if (prop === "get") return (id, ...rest) => stub(target.get(id, ...rest));
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return new Proxy(env, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      return prop === "INBOX" ? namespace(value) : value;
    },
  });
}

/** The consumer dies after its claim: claim, send the request upstream, hand the message back. */
async function dieAfterClaim(env, message) {
  const { job } = message.body;
  const ns = env[job.origin.binding];
  const origin = ns.get(ns.idFromString(job.origin.id));
  const [answer] = await origin.__proxyFetchClaim([{ id: job.id, token: job.token, attempts: message.attempts }]);
  if (answer?.Ok?.Fetch !== undefined) {
    const { method, headers, body } = job.request;
    const res = await fetch(job.request.url, { method, headers, body: body ?? undefined });
    await res.arrayBuffer();
  }
  message.retry();
}

export default class extends build.default {
  async queue(batch) {
    const normal = [];
    const broken = [];
    const dying = [];
    let throws = false;
    for (const message of batch.messages) {
      const id = message.body?.job?.id;
      const url = urlOf(message.body);
      if (id) longSeen.set(id, (longSeen.get(id) ?? 0) + 1);
      if (url.includes("pf-drop") && !dropped.has(id)) {
        dropped.add(id);
        message.ack();
        continue;
      }
      if (url.includes("pf-throw") && message.attempts === 1) throws = true;
      if (url.includes("pf-die-after-claim") && message.attempts === 1) dying.push(message);
      else if (url.includes("pf-undeliverable") && !undeliverable.has(id)) {
        undeliverable.add(id);
        broken.push(message);
      } else normal.push(message);
    }
    const part = (messages) => ({ queue: batch.queue, messages });
    const consume = super.queue;
    if (throws) {
      // (A consumer that ends without that fetch, having claimed nothing, ends the wait too.)
      await new Promise((wake) => {
        throwWaiters.add(wake);
        consume.call(this, part(normal)).then(wake, wake);
      });
      console.log("injected: the consumer's invocation throws mid-fetch (pf-throw)");
      throw new Error("injected: the consumer's invocation throws mid-fetch");
    }
    await Promise.all([
      normal.length ? consume.call(this, part(normal)) : null,
      broken.length ? consume.call({ env: unreachableOrigins(this.env), ctx: this.ctx }, part(broken)) : null,
      ...dying.map((m) => dieAfterClaim(this.env, m)),
    ]);
  }
}

/** env whose long-path queue sends `pf-dup` messages twice (and keeps them for resendLongJob). */
function duplicatingQueue(env) {
  return new Proxy(env, {
    get(target, prop) {
      const queue = Reflect.get(target, prop);
      if (prop !== "PROXY_FETCH_LONG" || !queue) return queue;
      return new Proxy(queue, {
        get(q, method) {
          const value = Reflect.get(q, method);
          if (method !== "send") return typeof value === "function" ? value.bind(q) : value;
          return async (body, options) => {
            if (urlOf(body).includes("pf-send-fails")) throw new Error("injected: the queue's send() fails");
            await q.send(body, options);
            if (urlOf(body).includes("pf-dup")) {
              longSent.set(body.job.id, [body, options]);
              await q.send(body, options);
            }
          };
        },
      });
    },
  });
}

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
      this.realEnv = env;
      Object.defineProperty(this, "env", { value: duplicatingQueue(env) });
    }
    async resendLongJob(id) {
      const sent = longSent.get(id);
      if (!sent) throw new Error(`no pf-dup message of ${id} was sent`);
      await this.realEnv.PROXY_FETCH_LONG.send(...sent);
    }
    longMessages(id) {
      return longSeen.get(id) ?? 0;
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
    __proxyFetchDeliver(...args) {
      countsOf(this.realCtx.id.toString()).deliveries++;
      return super.__proxyFetchDeliver(...args);
    }
    __proxyFetchDeliverPacked(...args) {
      countsOf(this.realCtx.id.toString()).deliveries++;
      return super.__proxyFetchDeliverPacked(...args);
    }
    calls() {
      return countsOf(this.realCtx.id.toString());
    }
    // Removes one stored key, as a lost write would leave it: faults.test.mjs takes away a
    // request's body kept apart.
    deleteStorageKey(key) {
      return this.realCtx.storage.delete(key);
    }
    // Stores `value` under `key` as a corrupted write would leave it, and lists the keys under
    // `prefix`: faults.test.mjs puts a ledger row proxy-fetch cannot decode.
    putStorageValue(key, value) {
      return this.realCtx.storage.put(key, value);
    }
    async storageKeys(prefix) {
      return [...(await this.realCtx.storage.list({ prefix })).keys()];
    }
    // The length of each string value stored under `prefix` (null for other values).
    async storageTextLengths(prefix) {
      return [...(await this.realCtx.storage.list({ prefix })).values()].map((v) => (typeof v === "string" ? v.length : null));
    }
    // Rewrites ledger row `key` (JSON text) in the form builds before it stored rows in
    // (serde-wasm-bindgen's: a JS Map of records, maps in them as Maps, bodies as bytes), and
    // drops the instance's memory of its rows, so that it reads that form back from storage.
    // Returns the type of the value it found.
    async storeRowAsEarlierBuilds(key) {
      const text = await this.realCtx.storage.get(key);
      if (typeof text !== "string") return typeof text;
      const maps = (v) => (v && typeof v === "object" && !Array.isArray(v) ? new Map(Object.entries(v).map(([k, x]) => [k, maps(x)])) : v);
      const records = Object.entries(JSON.parse(text)).map(([id, r]) => {
        const body = r.job.request.body;
        const request = { ...r.job.request, body: body == null ? body : new Uint8Array(body) };
        return [id, { ...r, data: maps(r.data), job: { ...r.job, request } }];
      });
      await this.realCtx.storage.put(key, new Map(records));
      delete this.realCtx.__proxyFetchInstance;
      return "string";
    }
  };
}

export const Inbox = withFaults(build.Inbox);
export const FetchOrchestrator = withFaults(build.FetchOrchestrator);
