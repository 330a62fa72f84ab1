// The test kit of the workerd tests, the template test, the bench and tools/demo.mjs. Its helpers:
//
//   startWorker(crateDir, opts)  starts a built worker in real workerd (Miniflare's API) from its
//                                own wrangler.toml, so the configuration a user copies is the one
//                                under test; returns { mf, env, fetch, fetchPeer, logs, restart,
//                                dispose }.
//   optionsFromWrangler(dir)     the Miniflare options a wrangler.toml stands for.
//   jsWorker(name, file, opts)   Miniflare options of a JS worker beside it (a driver, a peer).
//   waitFor(read, { what, until, deadlineMs, everyMs })
//                                the one way to wait for something: calls `read()` every
//                                `everyMs` (default POLL_MS, at most MAX_POLL_MS) until
//                                `until(value)` holds (default: the value is truthy) and returns
//                                that value; at `deadlineMs` (default DEADLINE_MS) it THROWS,
//                                naming `what` it waited for and the last value read. An error
//                                thrown by `read` is not retried: it fails the wait at once.
//   settle()                     waits SETTLE_MS. Only for exactly-once checks, after the last
//                                expected delivery, to give an unexpected extra delivery the
//                                time to show before the count is asserted; never to wait for
//                                something expected (that is waitFor's job).
//   SETTLE_MS, POLL_MS, MAX_POLL_MS, DEADLINE_MS, READ_GRACE_MS  the constants they use (a read
//                                that has not answered READ_GRACE_MS after the deadline fails the
//                                wait too).
//
// Nothing in tests/ or bench/ loops without a deadline: every wait goes through waitFor (or, in
// the bench, through its worker's own /__bench/await, which answers at its deadline with what is
// still missing, and the caller throws).
import { Miniflare, Log, LogLevel } from "miniflare";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseToml } from "smol-toml";

export const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Miniflare options equivalent to a wrangler.toml (the subset proxy-fetch workers use). */
export function optionsFromWrangler(crateDir, overrides = {}) {
  const config = parseToml(readFileSync(join(crateDir, "wrangler.toml"), "utf8"));
  const scriptPath = join(crateDir, config.main);
  if (!existsSync(scriptPath)) {
    throw new Error(`${scriptPath} is missing: build the worker first (node tools/build-worker.mjs ${crateDir})`);
  }
  const sqlite = new Set((config.migrations ?? []).flatMap((m) => m.new_sqlite_classes ?? []));
  const durableObjects = Object.fromEntries((config.durable_objects?.bindings ?? []).map((b) => [
    b.name, { className: b.class_name, useSQLite: sqlite.has(b.class_name), ...(b.script_name ? { scriptName: b.script_name } : {}) },
  ]));
  const serviceBindings = Object.fromEntries((config.services ?? []).map((s) => [
    s.binding, { name: s.service, ...(s.entrypoint ? { entrypoint: s.entrypoint } : {}) },
  ]));
  // Queues (the long path): producers by binding, consumers by queue name with their batch
  // settings, as wrangler.toml spells them.
  const queueProducers = Object.fromEntries((config.queues?.producers ?? []).map((p) => [p.binding, { queueName: p.queue }]));
  const queueConsumers = Object.fromEntries((config.queues?.consumers ?? []).map((c) => [c.queue, {
    ...(c.max_batch_size !== undefined ? { maxBatchSize: c.max_batch_size } : {}),
    ...(c.max_batch_timeout !== undefined ? { maxBatchTimeout: c.max_batch_timeout } : {}),
    ...(c.max_retries !== undefined ? { maxRetries: c.max_retries } : {}),
    ...(c.dead_letter_queue !== undefined ? { deadLetterQueue: c.dead_letter_queue } : {}),
  }]));
  return {
    name: config.name,
    modules: true,
    modulesRoot: crateDir,
    scriptPath,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags ?? [],
    durableObjects,
    serviceBindings,
    bindings: config.vars ?? {},
    ...(Object.keys(queueProducers).length ? { queueProducers } : {}),
    ...(Object.keys(queueConsumers).length ? { queueConsumers } : {}),
    cf: false,
    ...overrides,
  };
}

/**
 * Starts the worker in `crateDir` (plus `peers`, extra Miniflare worker options, e.g. a JS
 * worker beside it; `serviceBindings` and `durableObjects` are added to the worker's own);
 * returns { mf, env, fetch(path), fetchPeer(name, path), logs, dispose }.
 * `logs` collects what the workers printed (console.log/error), for asserting on reported errors.
 */
export async function startWorker(crateDir, { peers = [], serviceBindings = {}, durableObjects = {}, shared = {}, ...overrides } = {}) {
  const logs = [];
  class Capture extends Log {
    log(message) {
      logs.push(message);
      if (process.env.PF_VERBOSE) super.log(message);
    }
  }
  const main = optionsFromWrangler(resolve(root, crateDir), overrides);
  main.serviceBindings = { ...main.serviceBindings, ...serviceBindings };
  main.durableObjects = { ...main.durableObjects, ...durableObjects };
  const options = {
    ...shared,
    workers: [main, ...peers],
    // Never let Miniflare fetch the `cf` object from Cloudflare: tests stay on loopback.
    cf: false,
    log: new Capture(LogLevel.INFO),
    handleRuntimeStdio(stdout, stderr) {
      const keep = (stream) => stream.on("data", (chunk) => logs.push(String(chunk)));
      keep(stdout);
      keep(stderr);
    },
  };
  const mf = new Miniflare(options);
  const url = await mf.ready;
  const env = await mf.getBindings();
  return {
    mf,
    env,
    /** Restarts workerd: every isolate and Durable Object instance is recycled (what
     *  persists is what `shared.durableObjectsPersist` keeps). */
    restart: () => mf.setOptions(options),
    logs,
    url,
    fetch: (path, init) => mf.dispatchFetch(new URL(path, url), init),
    fetchPeer: async (name, path, init) => (await mf.getWorker(name)).fetch(new URL(path, url), init),
    dispose: () => mf.dispose(),
  };
}

/** Miniflare options of a JS worker module (a path relative to tests/workerd, or absolute). */
export function jsWorker(name, file, options = {}) {
  const scriptPath = resolve(dirname(fileURLToPath(import.meta.url)), file);
  return { name, modules: true, modulesRoot: dirname(scriptPath), scriptPath, compatibilityDate: "2026-07-30", ...options };
}

/** How often waitFor reads by default, and the most it waits between two reads (ms). */
export const POLL_MS = 25;
export const MAX_POLL_MS = 1000;
/** waitFor's deadline when none is given (ms), and how long past it one read may take. */
export const DEADLINE_MS = 15_000;
export const READ_GRACE_MS = 10_000;
/**
 * The settle window (ms): how long an exactly-once check looks for an unexpected extra delivery
 * after the last expected one before it asserts the count. A second delivery of one result (a
 * job sent twice, a delivery retried after it was applied) follows the first within tens of ms
 * in local workerd; 500 ms covers that on a loaded machine. A duplicate from a backstop comes
 * only after the request's `backstop_grace_ms`: a test that rules one out waits past it itself.
 */
export const SETTLE_MS = 500;

/** The last value a wait saw, short enough for an error message. */
function show(value) {
  let text;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 600 ? `${text.slice(0, 600)}... (${text.length} chars)` : text;
}

/**
 * Polls `read()` until `until(value)` holds (default: `value` is truthy) and returns the value;
 * throws at the deadline with `what` it waited for and the last value read. `read` may be async;
 * an error it throws ends the wait (it is not taken as "not yet").
 */
export async function waitFor(read, { what, until = Boolean, deadlineMs = DEADLINE_MS, everyMs = POLL_MS } = {}) {
  if (typeof what !== "string" || what === "") throw new TypeError("waitFor: say what it waits for ({ what: \"...\" })");
  if (!(deadlineMs > 0 && Number.isFinite(deadlineMs))) throw new TypeError(`waitFor(${what}): deadlineMs must be a positive number of ms, got ${deadlineMs}`);
  const every = Math.min(Math.max(1, everyMs), MAX_POLL_MS);
  const started = Date.now();
  const deadline = started + deadlineMs;
  let reads = 0;
  for (;;) {
    // A read that never answers must not hold the wait past its deadline either.
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`waiting for ${what}: a read did not answer within ${READ_GRACE_MS} ms of the ${deadlineMs} ms deadline`)),
        Math.max(deadline - Date.now(), 0) + READ_GRACE_MS);
    });
    const reading = Promise.resolve().then(read);
    reading.catch(() => {}); // its error is the race's when it loses too: never unhandled
    const value = await Promise.race([reading, late]).finally(() => clearTimeout(timer));
    reads++;
    if (until(value)) return value;
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(`timed out after ${Date.now() - started} ms (${reads} reads) waiting for ${what}; last value: ${show(value)}`);
    }
    await new Promise((r) => setTimeout(r, Math.min(every, left)));
  }
}

/** The settle window (SETTLE_MS): only to look for unexpected extra deliveries before an
 *  exactly-once count is asserted, after every expected delivery has been seen. */
export function settle() {
  return new Promise((r) => setTimeout(r, SETTLE_MS));
}
