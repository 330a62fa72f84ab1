// The bench worker's main module (wrangler.toml `main`): the classes tools/build-worker.mjs
// generated in build/worker.js, subclassed to count what each request costs on Cloudflare's
// bill. Nothing here ships: proxy-fetch's own code runs unchanged underneath.
//
// Counted per Durable Object class:
//   invocations   every RPC method call, fetch and alarm INTO an object (billed DO requests)
//   rows_written  KV put of N keys = N, delete = the rows it deleted, setAlarm/deleteAlarm = 1,
//                 SQL cursors' rowsWritten
//   rows_read     KV get of N keys = N, list = rows returned, SQL cursors' rowsRead
//   active_ms     per object, the union of the intervals in which it ran an invocation or a
//                 ctx.waitUntil promise (what duration is billed for), summed over objects
//   rows_left     KV keys written since the reset and not deleted by its end: each is a row
//                 write still to come when proxy-fetch removes it (e.g. a pruned `Done` record)
//   alarms_pending objects called since the reset whose alarm is set and has not fired yet:
//                 invocations still to come
// and the time each call from a Durable Object to a service binding (the executor) took to be
// acknowledged, and the invocations of each named entrypoint.
// Storage keys under a class's `ownKeys` prefix are the bench's own records (the handler's
// arrival log), not proxy-fetch's, and are left out.
//
// The default entrypoint answers, besides the worker's own fetch:
//   GET  /__bench/counters        the counts since the last reset
//   POST /__bench/reset           zero them
//   POST /__bench/await {tags, timeout_ms}  resolves when every tag's arrival record is written
//                                 (answers {missing: [...]} with those still missing at the deadline)
//   POST /__bench/counting {on}   counting on (the default) or off: off, every call goes straight
//                                 to proxy-fetch's code and only arrivals are recorded, for wall
//                                 times the counting does not slow (it has more to count on the
//                                 proxied side than on the awaited)
import { DurableObject } from "cloudflare:workers";
import * as built from "../build/worker.js";

const DURABLE_OBJECTS = {
  Probe: { ownKeys: "a:" },
  FetchOrchestrator: {},
};

let counters = fresh();
let counting = true;
function fresh() {
  return { since: Date.now(), classes: {}, entrypoints: {}, dispatch_ms: {}, cursors: [], arrived: new Set(), touched: new Set(), stray_alarms: 0, created: new Set(), queue: { batches: 0, messages: 0, redelivered: 0 } };
}
const waiters = new Set();

function klass(name) {
  return (counters.classes[name] ??= {
    invocations: {},
    rows_written: 0,
    // rows_written by what wrote them: put, delete, alarm (setAlarm/deleteAlarm)
    writes: { put: 0, delete: 0, alarm: 0 },
    rows_read: 0,
    alarms_set: 0,
    alarms_deleted: 0,
    active_ms: 0,
  });
}
// Objects with an alarm set that has not fired: class -> Set of object ids. Not reset.
const alarmsPending = {};

function arrived(tag) {
  counters.arrived.add(tag);
  for (const w of waiters) w();
}

function ownKey(config, key) {
  return config.ownKeys !== undefined && typeof key === "string" && key.startsWith(config.ownKeys);
}

/** Runs `after` once `result` settles (with its value, if any); returns `result` as it is. */
function then(result, after) {
  Promise.resolve(result).then(after, () => {});
  return result;
}

/** The KV-style calls of `ctx.storage` or a transaction, counted. */
function countingKv(target, name, config, objectId) {
  const c = () => klass(name);
  const keysOf = (k) => (Array.isArray(k) ? k : typeof k === "string" ? [k] : Object.keys(k ?? {}));
  const theirs = (keys) => keys.filter((k) => !ownKey(config, k)).length;
  const wrap = {
    get: (fn) => (k, ...rest) => {
      if (!counting) return fn(k, ...rest);
      c().rows_read += theirs(keysOf(k));
      return fn(k, ...rest);
    },
    put: (fn) => (k, ...rest) => {
      const keys = keysOf(k);
      if (!counting) {
        const own = keys.filter((key) => ownKey(config, key));
        return own.length ? then(fn(k, ...rest), () => own.forEach((key) => arrived(key.slice(config.ownKeys.length)))) : fn(k, ...rest);
      }
      c().rows_written += theirs(keys);
      c().writes.put += theirs(keys);
      for (const key of keys) if (!ownKey(config, key)) counters.created.add(`${name}/${objectId}/${key}`);
      const own = keys.filter((key) => ownKey(config, key));
      return own.length ? then(fn(k, ...rest), () => own.forEach((key) => arrived(key.slice(config.ownKeys.length)))) : fn(k, ...rest);
    },
    // A delete writes the rows that existed: delete(key) answers whether it did, delete(keys)
    // how many there were.
    delete: (fn) => (k, ...rest) => {
      if (!counting) return fn(k, ...rest);
      const keys = keysOf(k);
      for (const key of keys) counters.created.delete(`${name}/${objectId}/${key}`);
      if (keys.some((key) => ownKey(config, key))) {
        c().rows_written += theirs(keys);
        c().writes.delete += theirs(keys);
        return fn(k, ...rest);
      }
      return then(fn(k, ...rest), (deleted) => {
        const rows = typeof deleted === "number" ? deleted : deleted ? 1 : 0;
        c().rows_written += rows;
        c().writes.delete += rows;
      });
    },
    list: (fn) => (...args) => !counting ? fn(...args) : then(fn(...args), (map) => {
      if (map instanceof Map) c().rows_read += theirs([...map.keys()]);
    }),
    deleteAll: () => () => {
      throw new Error("bench counters: deleteAll is not counted (rows unknown); count it before using it");
    },
    setAlarm: (fn) => (...args) => {
      if (!counting) return fn(...args);
      c().rows_written += 1;
      c().writes.alarm += 1;
      c().alarms_set += 1;
      (alarmsPending[name] ??= new Set()).add(objectId);
      return fn(...args);
    },
    deleteAlarm: (fn) => (...args) => {
      if (!counting) return fn(...args);
      c().rows_written += 1;
      c().writes.alarm += 1;
      c().alarms_deleted += 1;
      alarmsPending[name]?.delete(objectId);
      return fn(...args);
    },
    transaction: (fn) => (closure, ...rest) => fn((txn) => closure(countingKv(txn, name, config, objectId)), ...rest),
    sql: (sql) => countingSql(sql),
    kv: (kv) => countingSyncKv(kv, name, config, objectId),
  };
  const cache = new Map();
  return new Proxy(target, {
    get(t, prop) {
      if (cache.has(prop)) return cache.get(prop);
      const value = t[prop];
      let out = value;
      if (prop in wrap && value !== undefined && value !== null) {
        out = wrap[prop](typeof value === "function" ? value.bind(t) : value);
      } else if (typeof value === "function") {
        out = value.bind(t);
      }
      if (typeof value === "function" || prop in wrap) cache.set(prop, out);
      return out;
    },
  });
}

function countingSql(sql) {
  return new Proxy(sql, {
    get(t, prop) {
      const value = t[prop];
      if (prop === "exec") {
        return (...args) => {
          const cursor = value.apply(t, args);
          if (counting) counters.cursors.push(cursor);
          return cursor;
        };
      }
      return typeof value === "function" ? value.bind(t) : value;
    },
  });
}

/** `ctx.storage.kv`, the synchronous KV API of SQLite-backed objects. */
function countingSyncKv(kv, name, config, objectId) {
  const c = () => klass(name);
  return new Proxy(kv, {
    get(t, prop) {
      const value = t[prop];
      if (typeof value !== "function") return value;
      const fn = value.bind(t);
      switch (prop) {
        case "get":
          return (k, ...rest) => {
            if (counting && !ownKey(config, k)) c().rows_read += 1;
            return fn(k, ...rest);
          };
        case "put":
          return (k, ...rest) => {
            if (counting && !ownKey(config, k)) {
              c().rows_written += 1;
              c().writes.put += 1;
              counters.created.add(`${name}/${objectId}/${k}`);
            }
            const r = fn(k, ...rest);
            if (ownKey(config, k)) arrived(k.slice(config.ownKeys.length));
            return r;
          };
        case "delete":
          return (k, ...rest) => {
            if (!counting) return fn(k, ...rest);
            counters.created.delete(`${name}/${objectId}/${k}`);
            const deleted = fn(k, ...rest);
            if (!ownKey(config, k) && deleted) {
              c().rows_written += 1;
              c().writes.delete += 1;
            }
            return deleted;
          };
        case "list":
          return (...args) => {
            const it = fn(...args);
            if (!counting) return it;
            return (function* () {
              for (const entry of it) {
                if (!ownKey(config, entry[0])) c().rows_read += 1;
                yield entry;
              }
            })();
          };
        default:
          return fn;
      }
    },
  });
}

function countedDurableObject(Parent, name) {
  if (typeof Parent !== "function" || !(Parent.prototype instanceof DurableObject)) {
    throw new Error(`bench/worker/js/main.js: build/worker.js exports no Durable Object ${name}`);
  }
  const config = DURABLE_OBJECTS[name];
  const Counted = {
    [name]: class extends Parent {
      constructor(ctx, env) {
        super(ctx, env);
        const objectId = ctx.id.toString();
        this.benchActive = 0;
        this.benchSince = 0;
        const storage = countingKv(ctx.storage, name, config, objectId);
        const self = this;
        const counted = new Proxy(ctx, {
          get(t, prop) {
            if (prop === "storage") return storage;
            const value = t[prop];
            if (prop === "waitUntil") {
              return (promise) => {
                if (!counting) return value.call(t, promise);
                const end = self.benchBegin();
                Promise.resolve(promise).then(end, end);
                return value.call(t, promise);
              };
            }
            return typeof value === "function" ? value.bind(t) : value;
          },
        });
        this.ctx = counted;
        if (this.ctx !== counted) throw new Error("bench counters: ctx of a Durable Object could not be replaced");
        this.env = countingEnv(env, name);
      }
      benchBegin() {
        if (this.benchActive++ === 0) this.benchSince = Date.now();
        let ended = false;
        return () => {
          if (ended) return;
          ended = true;
          if (--this.benchActive === 0) klass(name).active_ms += Date.now() - Math.max(this.benchSince, counters.since);
        };
      }
    },
  }[name];
  for (const method of Object.getOwnPropertyNames(Parent.prototype)) {
    const d = Object.getOwnPropertyDescriptor(Parent.prototype, method);
    if (method === "constructor" || typeof d.value !== "function") continue;
    Counted.prototype[method] = function (...args) {
      if (!counting) return d.value.apply(this, args);
      // An alarm is counted where its object was called since the reset; one of an object this
      // measurement never touched (set by an earlier one) is counted apart.
      const object = `${name}/${this.ctx.id}`;
      if (method !== "alarm") counters.touched.add(object);
      if (method !== "alarm" || counters.touched.has(object)) {
        const inv = klass(name).invocations;
        inv[method] = (inv[method] ?? 0) + 1;
      } else {
        counters.stray_alarms += 1;
      }
      if (method === "alarm") alarmsPending[name]?.delete(this.ctx.id.toString());
      const end = this.benchBegin();
      try {
        return then(d.value.apply(this, args), end);
      } catch (e) {
        end();
        throw e;
      }
    };
  }
  return Counted;
}

/** `env` whose service bindings time each call (the acknowledgement a caller waits for). */
function countingEnv(env, caller) {
  return new Proxy(env, {
    get(t, prop) {
      const value = t[prop];
      if (value?.constructor?.name !== "Fetcher") return value;
      return new Proxy(value, {
        get(f, method) {
          const m = f[method];
          if (typeof m !== "function") return m;
          return (...args) => {
            if (!counting) return Reflect.apply(m, f, args);
            const start = Date.now();
            const result = Reflect.apply(m, f, args);
            const record = () => {
              const key = `${caller}->${String(prop)}.${String(method)}`;
              (counters.dispatch_ms[key] ??= []).push(Date.now() - start);
            };
            Promise.resolve(result).then(record, record);
            return result;
          };
        },
      });
    },
  });
}

function countedEntrypoint(Parent, name) {
  if (typeof Parent !== "function") throw new Error(`bench/worker/js/main.js: build/worker.js exports no entrypoint ${name}`);
  const Counted = { [name]: class extends Parent {} }[name];
  for (const method of Object.getOwnPropertyNames(Parent.prototype)) {
    const d = Object.getOwnPropertyDescriptor(Parent.prototype, method);
    if (method === "constructor" || typeof d.value !== "function") continue;
    Counted.prototype[method] = function (...args) {
      if (!counting) return d.value.apply(this, args);
      const inv = (counters.entrypoints[name] ??= {});
      inv[method] = (inv[method] ?? 0) + 1;
      return d.value.apply(this, args);
    };
  }
  return Counted;
}

function snapshot() {
  let sqlWritten = 0;
  let sqlRead = 0;
  for (const cursor of counters.cursors) {
    sqlWritten += cursor.rowsWritten ?? 0;
    sqlRead += cursor.rowsRead ?? 0;
  }
  const classes = structuredClone(counters.classes);
  for (const name of Object.keys(DURABLE_OBJECTS)) {
    const c = (classes[name] ??= structuredClone(klass(name)));
    c.rows_left = [...counters.created].filter((k) => k.startsWith(`${name}/`)).length;
    c.alarms_pending = [...(alarmsPending[name] ?? [])].filter((id) => counters.touched.has(`${name}/${id}`)).length;
  }
  return {
    since_ms: counters.since,
    now_ms: Date.now(),
    classes,
    // SQL cursors are not attributed to a class; proxy-fetch's code is the only SQL user here.
    sql: { rows_written: sqlWritten, rows_read: sqlRead, statements: counters.cursors.length },
    entrypoints: counters.entrypoints,
    dispatch_ms: counters.dispatch_ms,
    arrived: counters.arrived.size,
    stray_alarms: counters.stray_alarms,
    // The long path's queue: batches and messages its consumer got (a redelivered one is
    // another read operation).
    queue: counters.queue,
  };
}

async function awaitTags({ tags, timeout_ms = 60_000 }) {
  const missing = () => tags.filter((t) => !counters.arrived.has(t));
  if (missing().length === 0) return { missing: [] };
  await new Promise((resolve) => {
    const check = () => {
      if (missing().length === 0) done();
    };
    const timer = setTimeout(() => done(), timeout_ms);
    function done() {
      clearTimeout(timer);
      waiters.delete(check);
      resolve();
    }
    waiters.add(check);
  });
  return { missing: missing() };
}

export default class BenchMain extends built.default {
  async queue(batch) {
    if (!counting) return super.queue(batch);
    counters.queue.batches++;
    counters.queue.messages += batch.messages.length;
    counters.queue.redelivered += batch.messages.filter((m) => m.attempts > 1).length;
    return super.queue(batch);
  }

  async fetch(request) {
    const url = new URL(request.url);
    if (!url.pathname.startsWith("/__bench/")) return super.fetch(request);
    switch (url.pathname) {
      case "/__bench/counters":
        return Response.json(snapshot());
      case "/__bench/reset":
        counters = fresh();
        return Response.json({ ok: true });
      case "/__bench/counting":
        counting = (await request.json()).on !== false;
        return Response.json({ counting });
      case "/__bench/await":
        return Response.json(await awaitTags(await request.json()));
      default:
        return new Response("no such bench route", { status: 404 });
    }
  }
}

export const Probe = countedDurableObject(built.Probe, "Probe");
export const FetchOrchestrator = countedDurableObject(built.FetchOrchestrator, "FetchOrchestrator");
export const FetchExecutorEntrypoint = countedEntrypoint(built.FetchExecutorEntrypoint, "FetchExecutorEntrypoint");
export const EchoEntrypoint = countedEntrypoint(built.EchoEntrypoint, "EchoEntrypoint");

// A class the build declares that this module does not wrap would be served uncounted.
for (const [exported, value] of Object.entries(built)) {
  if (exported === "default") continue;
  const known = exported in DURABLE_OBJECTS || exported === "FetchExecutorEntrypoint" || exported === "EchoEntrypoint";
  if (!known) throw new Error(`bench/worker/js/main.js: build/worker.js exports ${exported}, which this module does not count: add it`);
}
