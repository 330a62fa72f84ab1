#!/usr/bin/env node
// proxy-fetch benchmarks in local workerd. Every proxied measurement takes the flow
// (`orchestrated`: origin -> FetchOrchestrator -> executor -> origin; `direct`: origin ->
// executor -> origin) as a parameter and is reported for each flow beside the baseline it is
// judged by, measured in the same run: the same fetch awaited in the Durable Object, a no-op RPC,
// an RPC carrying the same bytes one way. What a request costs (Durable Object requests, storage
// rows, workerd CPU) is counted by bench/worker/js/main.js and priced with bench/prices.json.
//
// Prints every table; a full run (not BENCH_QUICK=1) also writes bench/results.json and
// BENCHMARKS.md. BENCH_QUICK=1 is a small run for scripts/test: it fails on any broken
// measurement, lost or duplicate result, but never on a timing. BENCH_FLOWS=orchestrated,direct
// chooses the flows (default: every flow this commit's ProxyFetchOptions knows).
// Run through scripts/bench (it builds the bench and demo workers first).
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { jsWorker, root, settle, startWorker, waitFor } from "../tests/workerd/harness.mjs";
import { startUpstream } from "../tests/workerd/upstream.mjs";

const QUICK = process.env.BENCH_QUICK === "1";
/** Pairs of bursts (awaited, direct) the wall ratio and the origin hold are the medians of. */
const PAIRS = 15;
const began = Date.now();
/** Only to measure over a window (workerd's idle CPU): never to wait for something. */
const measureWindow = (ms) => new Promise((r) => setTimeout(r, ms));
const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const med = (xs) => quantile(xs, 0.5);
const p99 = (xs) => quantile(xs, 0.99);
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const round = (x, digits = 1) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);
const git = (...args) => execFileSync("git", ["-C", root, ...args], { encoding: "utf8" }).trim();

// ---- prices --------------------------------------------------------------------------------
const prices = JSON.parse(readFileSync(join(root, "bench/prices.json"), "utf8"));
const PER = 1e6;
const price = {
  request: prices.do_requests_per_million / PER,
  rowWritten: prices.rows_written_per_million / PER,
  rowRead: prices.rows_read_per_million / PER,
  cpuMs: prices.workers_cpu_per_million_ms / PER,
  // GB-s -> ms at the object's memory size.
  durationMs: (prices.do_duration_per_million_gb_s / PER) * prices.do_memory_gb / 1000,
  // The long path's queue: write, read, delete per message up to 64 KB (docs/long-fetches.md).
  queueOp: (prices.queue_operations_per_million ?? NaN) / PER,
};

// ---- the worker, its counters and workerd's CPU ---------------------------------------------
const commit = git("rev-parse", "HEAD");
const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const loadBefore = loadavg();
const dirty = git("status", "--porcelain").split("\n").filter(Boolean);
const up = await startUpstream();
// The tests' driver (tests/workerd/driver.js) starts requests from inside workerd.
const w = await startWorker("bench/worker", { peers: [jsWorker("driver", "driver.js", {
  durableObjects: { PROBE: { className: "Probe", scriptName: "proxy-fetch-bench", useSQLite: true } },
})] });
const drive = async (body) => (await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify(body) })).json();
const call = async (name, method, ...args) => {
  const r = await drive({ binding: "PROBE", name, method, args });
  if (r.error) throw new Error(`${method}: ${r.error.message}`);
  return r.ok;
};
const benchRoute = async (path, body) => {
  const r = await w.fetch(path, body === undefined ? undefined : { method: "POST", body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
};
const counters = () => benchRoute("/__bench/counters");
const resetCounters = () => benchRoute("/__bench/reset", {});
/** Resolves when every tag's arrival record is written (the bench worker waits for them, so no
 *  polling runs while a measurement does); throws at the deadline, naming the tags missing. */
async function awaitTags(tags, timeoutMs, what) {
  const { missing } = await benchRoute("/__bench/await", { tags, timeout_ms: timeoutMs });
  if (missing.length) {
    throw new Error(`bench: timed out after ${timeoutMs} ms waiting for ${what}: ${missing.length} of ${tags.length} results missing (${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""})`);
  }
}

/** Methods of the bench's own (its Probe's API, not proxy-fetch's): left out of the DO requests. */
const BENCH_METHODS = {
  Probe: new Set(["start", "onResult", "arrivals", "pending", "direct", "noopRpc", "gatedRpc", "echoRpc", "sendRpc", "awaited", "fetch"]),
  FetchOrchestrator: new Set(["stats"]),
};

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
/** The workerd process Miniflare started: the only `workerd` among this process's children. */
function findWorkerd() {
  const children = readdirSync("/proc/self/task").flatMap((t) => {
    try {
      return readFileSync(`/proc/self/task/${t}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    } catch {
      return [];
    }
  });
  const found = children.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "workerd";
    } catch {
      return false;
    }
  });
  if (found.length !== 1) throw new Error(`expected one workerd child process, found ${found.length} (${children.join(", ")})`);
  return found[0];
}
const workerdPid = findWorkerd();
/** workerd's CPU time so far (user + system), in ms; /proc counts in clock ticks (10 ms). */
function workerdCpuMs() {
  const stat = readFileSync(`/proc/${workerdPid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK; // utime, stime
}

/** Waits until the counters stop moving (work after the last arrival, e.g. a completion):
 *  three reads 100 ms apart that agree; throws if that takes over 20 s. */
async function quiesce() {
  const fingerprint = (c) => JSON.stringify([c.classes, c.entrypoints, c.sql]);
  let last;
  let unchanged = 0;
  await waitFor(async () => {
    const now = fingerprint(await counters());
    unchanged = now === last ? unchanged + 1 : 0;
    last = now;
    return unchanged;
  }, { until: (n) => n >= 2, deadlineMs: 20_000, everyMs: 100, what: "workerd to go quiet after the last arrival (reads of the counters that agree, 0 to 2)" });
}

// CPU of workerd doing nothing (timers, GC), per ms of wall time: subtracted from each window.
const idle = await (async () => {
  const ms = QUICK ? 500 : 3000;
  const c0 = workerdCpuMs();
  const t0 = Date.now();
  await measureWindow(ms);
  return (workerdCpuMs() - c0) / (Date.now() - t0);
})();

/** workerd's peak resident memory (KiB) since the last `resetPeakRss()` (VmHWM). */
function peakRssKiB() {
  const hwm = readFileSync(`/proc/${workerdPid}/status`, "utf8").match(/VmHWM:\s+(\d+) kB/);
  if (!hwm) throw new Error(`no VmHWM in /proc/${workerdPid}/status`);
  return Number(hwm[1]);
}
/** Starts a new peak: writing 5 to clear_refs resets VmHWM to the current resident size. */
function resetPeakRss() {
  writeFileSync(`/proc/${workerdPid}/clear_refs`, "5");
}
/** Peak resident memory of workerd per measured scenario (MiB), by label. */
const peaks = [];

/** Runs `fn` and measures workerd's CPU from its start until the counters go quiet, and its
 *  peak resident memory meanwhile (recorded under `label`). */
async function measured(fn, label) {
  await resetCounters();
  resetPeakRss();
  const c0 = workerdCpuMs();
  const t0 = Date.now();
  const out = await fn();
  await quiesce();
  const c1 = workerdCpuMs();
  const wallMs = Date.now() - t0;
  peaks.push([label, round(peakRssKiB() / 1024, 1)]);
  return { out, counts: await counters(), cpuMs: c1 - c0 - idle * wallMs, wallMs };
}

// ---- flows ------------------------------------------------------------------------------------
let tagSeq = 0;
/** Whether ProxyFetchOptions knows `flow`: an unknown flow is refused then, ignored before. */
async function availableFlows() {
  if (process.env.BENCH_FLOWS) return process.env.BENCH_FLOWS.split(",").map((f) => f.trim()).filter(Boolean);
  const tag = `flow-probe-${tagSeq++}`;
  const r = await drive({ binding: "PROBE", name: "flow-probe", method: "start", args: [up.url("/flow-probe"), { flow: "no-such-flow" }, tag] });
  if (r.error) return ["orchestrated", "direct", "lost_on_crash"];
  await awaitTags([tag], 10_000, "the flow probe's result");
  console.log("NOTE: ProxyFetchOptions has no `flow` at this commit (an unknown flow was accepted): the orchestrated flow only.");
  return ["orchestrated"];
}
const flows = await availableFlows();

/** DO requests by class and method, without the bench's own methods. */
function proxyInvocations(counts) {
  const out = {};
  for (const [cls, c] of Object.entries(counts.classes)) {
    for (const [method, n] of Object.entries(c.invocations)) {
      if (BENCH_METHODS[cls]?.has(method)) continue;
      out[`${cls}.${method}`] = n;
    }
  }
  return out;
}

/** A flow must be the one asked for: `direct` never touches an orchestrator. */
function checkFlow(flow, counts, what) {
  const orch = sum(Object.values(counts.classes.FetchOrchestrator?.invocations ?? {}));
  if (flow !== "orchestrated" && orch > 0) throw new Error(`${what}: the ${flow} flow called the orchestrator ${orch} times`);
  if (flow === "orchestrated" && orch === 0) throw new Error(`${what}: the orchestrated flow never called the orchestrator`);
}

/** Per-request cost figures from the counters of `n` requests. */
function costOf(counts, n, cpuMs) {
  const classes = Object.values(counts.classes);
  const invocations = sum(Object.values(proxyInvocations(counts)));
  const alarmsPending = sum(classes.map((c) => c.alarms_pending ?? 0));
  return {
    n,
    do_requests: (invocations + alarmsPending) / n,
    alarms_to_come: alarmsPending / n,
    // Keys left behind are deleted later (one row written each): counted now.
    rows_written: (sum(classes.map((c) => c.rows_written + (c.rows_left ?? 0))) + counts.sql.rows_written) / n,
    rows_left: sum(classes.map((c) => c.rows_left ?? 0)) / n,
    rows_read: (sum(classes.map((c) => c.rows_read)) + counts.sql.rows_read) / n,
    active_ms: sum(classes.map((c) => c.active_ms)) / n,
    cpu_ms: cpuMs / n,
    rows_by: Object.fromEntries(Object.entries(counts.classes).flatMap(([cls, c]) => [
      ...Object.entries(c.writes ?? {}).map(([k, v]) => [`${cls} ${k}`, v]),
      [`${cls} key left (its delete)`, c.rows_left ?? 0],
    ]).filter(([, v]) => v > 0).map(([k, v]) => [k, round(v / n, 3)]).concat(counts.sql.rows_written ? [["SQL", round(counts.sql.rows_written / n, 3)]] : [])),
    by_method: Object.fromEntries(Object.entries(proxyInvocations(counts)).map(([k, v]) => [k, round(v / n, 3)])),
  };
}

/** A cost that cannot be right means the counting broke: fail rather than report it. */
function checkCost(what, cost, proxied) {
  for (const [k, v] of Object.entries(cost)) {
    if (typeof v === "number" && !Number.isFinite(v)) throw new Error(`${what}: ${k} is ${v}`);
  }
  // Every result is delivered into its origin, up to 64 in one call (MAX_DELIVERIES_PER_CALL;
  // the executor sends at most the 6 jobs of one call together).
  if (proxied && cost.do_requests < 1 / 6) throw new Error(`${what}: ${cost.do_requests} DO requests per request counted (a delivery call carries at most 6 results from an executor)`);
  if (!proxied && cost.do_requests !== 0) throw new Error(`${what}: the awaited baseline made proxy-fetch DO requests: ${JSON.stringify(cost.by_method)}`);
}

/** Dollars per million requests, and the break-even upstream wait. `awaited`: the same requests
 *  with the fetch awaited in the DO (its CPU is subtracted); `awaitedAt0`: single awaited
 *  requests, whose DO time beyond the upstream's wait is what awaiting costs besides the wait. */
function dollars(cost, awaited, awaitedAt0) {
  const addedCpu = Math.max(0, cost.cpu_ms - awaited.cpu_ms);
  const d = {
    requests: cost.do_requests * price.request * PER,
    rows_written: cost.rows_written * price.rowWritten * PER,
    rows_read: cost.rows_read * price.rowRead * PER,
    duration: cost.active_ms * price.durationMs * PER,
    // The CPU the proxying adds over awaiting, all charged as the executor's Workers CPU (a
    // Durable Object's own CPU is billed as its duration, not separately).
    cpu: addedCpu * price.cpuMs * PER,
  };
  d.total = d.requests + d.rows_written + d.rows_read + d.duration + d.cpu;
  // Awaiting for N ms costs (N + what awaiting takes beyond the wait) of duration; proxying d.total.
  d.break_even_ms = d.total / (price.durationMs * PER) - awaitedAt0.active_beyond_wait_ms;
  d.added_cpu_ms = addedCpu;
  return d;
}

// ---- runs -------------------------------------------------------------------------------------
const SINGLE_DELAY = 100;
/** The options of a flow's requests. `lost_on_crash` is the direct flow with
 *  `durability: lost_on_crash` (no row, no alarm; README "Requests you can afford to lose"). */
const opts = (flow, instance, extra = {}) => ({
  ...(flow === "lost_on_crash" ? { flow: "direct", durability: "lost_on_crash" } : { flow }),
  orchestrator_instance: instance, timeout_ms: 25_000, ...extra,
});

/** Starts n proxied requests (in waves of `wave`, a wave started at once) over `origins` and
 *  waits until every result's handler ran. `each`: wait for each result before starting the next. */
async function startAll({ label, n, wave = n, origins, url, options, each = false, timeoutMs = 120_000 }) {
  const started = [];
  const errors = [];
  const tags = [];
  for (let done = 0; done < n; done += wave) {
    const k = Math.min(wave, n - done);
    const calls = [...Array(k).keys()].map((i) => {
      const tag = `${label}-${done + i}`;
      tags.push(tag);
      return { name: origins[(done + i) % origins.length], method: "start", args: [url.replace("{i}", done + i), options, tag] };
    });
    const before = started.length;
    for (const r of await drive({ op: "burst", binding: "PROBE", calls })) {
      if (r.ok) started.push({ ...r.ok, answered_ms: r.answered_ms });
      else errors.push(r.error);
    }
    if (each) await awaitTags(started.slice(before).map((s) => s.tag), 30_000, `the results of ${label} wave ${done / wave + 1}`);
  }
  await awaitTags(started.map((s) => s.tag), timeoutMs, `the results of ${label}`);
  return { label, n, origins, started, errors };
}

/** What arrived for a `startAll`, read from the origins' records after the settle window (so
 *  that a second delivery of a result is counted as a duplicate). */
async function collect({ label, n, origins, started, errors }) {
  await settle();
  const byTag = new Map();
  for (const o of new Set(origins)) for (const a of await call(o, "arrivals")) if (a.tag.startsWith(`${label}-`)) byTag.set(a.tag, a);
  const arrivals = started.map((s) => ({ ...s, ...byTag.get(s.tag) }));
  const got = arrivals.filter((a) => a.arrived_at_ms !== undefined);
  return {
    started: started.length,
    start_errors: errors,
    delivered: got.length,
    lost: started.length - got.length,
    duplicates: got.filter((a) => a.deliveries > 1).length,
    not_ok: got.filter((a) => a.outcome !== "response").length,
    outcomes: got.reduce((m, a) => ({ ...m, [a.outcome]: (m[a.outcome] ?? 0) + 1 }), {}),
    hold_ms: started.map((s) => s.hold_ms),
    answered_ms: started.map((s) => s.answered_ms),
    e2e_ms: got.map((a) => a.arrived_at_ms - a.started_at_ms),
    fetch_ms: got.map((a) => a.fetch_ms),
    wall_ms: got.length ? Math.max(...got.map((a) => a.arrived_at_ms)) - Math.min(...started.map((s) => s.started_at_ms)) : NaN,
  };
}

const run = async (args) => collect(await startAll(args));

/** Instantiates the origins' objects, so that a measurement does not include their cold start. */
const warm = (origins) => drive({ op: "burst", binding: "PROBE", calls: origins.map((name) => ({ name, method: "arrivals", args: [] })) });

/** A measured run of proxied requests: the counters and CPU cover starting them and their
 *  results, not reading the records afterwards. */
async function measuredRun(args) {
  await warm(args.origins);
  const m = await measured(() => startAll(args), args.label);
  return { ...m, out: await collect(m.out) };
}

/** The baseline of `run`: the same fetches awaited in the Durable Objects, with the same
 *  handler work (one arrival record each). */
async function runAwaited({ label, n, wave = n, origins, url, each = false }) {
  const done = [];
  for (let k0 = 0; k0 < n; k0 += wave) {
    const k = Math.min(wave, n - k0);
    const calls = [...Array(k).keys()].map((i) => ({ name: origins[(k0 + i) % origins.length], method: "awaited", args: [url.replace("{i}", k0 + i), `${label}-${k0 + i}`] }));
    for (const r of await drive({ op: "burst", binding: "PROBE", calls })) {
      if (!r.ok) throw new Error(`${label}: awaited fetch failed: ${r.error}`);
      done.push(r.ok);
    }
    if (each) await awaitTags(calls.map((c) => c.args[1]), 30_000, `the awaited fetches of ${label}`);
  }
  return {
    elapsed_ms: done.map((d) => d.done_at_ms - d.started_at_ms),
    wall_ms: Math.max(...done.map((d) => d.done_at_ms)) - Math.min(...done.map((d) => d.started_at_ms)),
  };
}

/** `n` calls of `fn(i)`, at most `concurrency` at a time. */
async function pool(n, concurrency, fn) {
  const out = new Array(n);
  let next = 0;
  await Promise.all([...Array(Math.min(n, concurrency))].map(async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  }));
  return out;
}

const failures = [];
const lostOrDuplicate = {};
function checkDelivery(flow, what, r) {
  lostOrDuplicate[flow] = (lostOrDuplicate[flow] ?? 0) + r.lost + r.duplicates;
  if (r.lost || r.duplicates || r.not_ok || r.start_errors.length) {
    failures.push(`${what}: ${r.lost} lost, ${r.duplicates} duplicates, ${r.not_ok} not ok (outcomes ${JSON.stringify(r.outcomes)}), ${r.start_errors.length} not started (${r.start_errors.slice(0, 3).join("; ")})`);
  }
}

// ---- the measurements -------------------------------------------------------------------------
const results = { when: new Date().toISOString(), quick: QUICK, commit, dirty, flows, prices, idle_cpu_ms_per_s: round(idle * 1000, 2), latency: [], cost: {}, burst: {}, big: {}, targets: [], other: [] };
const lat = (flow, name, value, unit, baseline, baselineName, note) =>
  results.latency.push({ flow, name, value: round(value), unit, baseline: baseline === undefined ? undefined : round(baseline), baselineName, ratio: baseline ? round(value / baseline, 2) : undefined, note });

try {
  const origins = [...Array(10)].map((_, i) => `probe-${i}`);

  // Baseline: a no-op RPC round trip from a Durable Object to the executor entrypoint.
  const noop = await call("probe-0", "noopRpc", QUICK ? 50 : 300);
  lat("-", "no-op RPC, DO -> executor (median)", med(noop), "ms");
  lat("-", "no-op RPC, DO -> executor (p99)", p99(noop), "ms");

  // Latency: requests started one after another (their fetches overlap), compared quantile for
  // quantile with the same number of fetches awaited in a DO, started at a like pace.
  for (const delay of QUICK ? [0] : [0, 100, 1000]) {
    const n = QUICK ? 10 : 200;
    const concurrency = delay >= 100 ? 20 : 1;
    const direct = await pool(n, concurrency, (i) => call(origins[i % origins.length], "direct", up.url(`/direct/${delay}/${i}`, { delay })));
    lat("-", `fetch awaited in the DO, upstream ${delay} ms (median)`, med(direct), "ms");
    if (delay === 0) results.awaited0_ms = med(direct);
    lat("-", `fetch awaited in the DO, upstream ${delay} ms (p99)`, p99(direct), "ms");
    for (const flow of flows) {
      const label = `${flow}-d${delay}`;
      const { out: r, counts } = await measuredRun({ label, n, wave: 1, origins, url: up.url(`/${label}/{i}`, { delay }), options: opts(flow, `hold-${label}`) });
      checkFlow(flow, counts, label);
      checkDelivery(flow, label, r);
      const ack = Object.entries(counts.dispatch_ms).filter(([k]) => k.includes("->FETCH_EXECUTOR.")).flatMap(([, v]) => v);
      if (ack.length < n) throw new Error(`${label}: ${ack.length} executor acknowledgements timed for ${n} requests`);
      lat(flow, `executor acknowledgement as its caller waits for it, upstream ${delay} ms (median)`, med(ack), "ms", med(noop), "no-op RPC median");
      lat(flow, `executor acknowledgement as its caller waits for it, upstream ${delay} ms (p99)`, p99(ack), "ms", p99(noop), "no-op RPC p99");
      lat(flow, `origin hold, upstream ${delay} ms (median)`, med(r.hold_ms), "ms", med(direct), "fetch awaited in the DO, median");
      lat(flow, `origin hold, upstream ${delay} ms (p99)`, p99(r.hold_ms), "ms", p99(direct), "fetch awaited in the DO, p99");
      lat(flow, `start -> handler, upstream ${delay} ms (median)`, med(r.e2e_ms), "ms", med(direct), "fetch awaited in the DO, median");
      lat(flow, `start -> handler, upstream ${delay} ms (p99)`, p99(r.e2e_ms), "ms", p99(direct), "fetch awaited in the DO, p99");
      lat(flow, `added latency, upstream ${delay} ms (median minus the baseline's median)`, med(r.e2e_ms) - med(direct), "ms");
      lat(flow, `added latency, upstream ${delay} ms (p99 minus the baseline's p99)`, p99(r.e2e_ms) - p99(direct), "ms");
      lat(flow, `start -> handler minus the executor's fetch, upstream ${delay} ms (median)`, med(r.e2e_ms.map((e, i) => e - r.fetch_ms[i])), "ms");
      if (delay === 0) results[`added0_${flow}`] = med(r.e2e_ms) - med(direct);
    }
  }

  // Cost of single requests: one at a time, each result awaited before the next starts, at an
  // upstream of SINGLE_DELAY ms (at 0 ms a result can beat the orchestrator's first write, which
  // then never happens: cheaper than any real upstream).
  const nSingle = QUICK ? 5 : 100;
  await warm(["aw-single"]);
  const single = await measured(() => runAwaited({ label: "aw-single", n: nSingle, wave: 1, origins: ["aw-single"], url: up.url("/aw-single/{i}", { delay: SINGLE_DELAY }), each: true }), "aw-single");
  const awaitedSingle = costOf(single.counts, nSingle, single.cpuMs);
  checkCost("awaited single", awaitedSingle, false);
  // What awaiting costs beyond the wait itself.
  awaitedSingle.active_beyond_wait_ms = Math.max(0, awaitedSingle.active_ms - SINGLE_DELAY);
  results.cost.awaited = { single: awaitedSingle };
  for (const flow of flows) {
    const label = `${flow}-single`;
    const m = await measuredRun({ label, n: nSingle, wave: 1, origins: [label], url: up.url(`/${label}/{i}`, { delay: SINGLE_DELAY }), options: opts(flow, label), each: true });
    checkFlow(flow, m.counts, label);
    checkDelivery(flow, label, m.out);
    const cost = costOf(m.counts, nSingle, m.cpuMs);
    checkCost(label, cost, true);
    results.cost[flow] = { single: { ...cost, dollars: dollars(cost, awaitedSingle, awaitedSingle) } };
  }
  // The same, each request alone in a fresh origin: what an origin that proxies one request
  // pays, its alarm included.
  const nAlone = QUICK ? 3 : 30;
  for (const flow of flows) {
    const label = `${flow}-alone`;
    const m = await measuredRun({ label, n: nAlone, wave: 1, origins: [...Array(nAlone)].map((_, i) => `${label}-${i}`), url: up.url(`/${label}/{i}`, { delay: SINGLE_DELAY }), options: opts(flow, label), each: true });
    checkFlow(flow, m.counts, label);
    checkDelivery(flow, label, m.out);
    const cost = costOf(m.counts, nAlone, m.cpuMs);
    checkCost(label, cost, true);
    results.cost[flow].alone = { ...cost, dollars: dollars(cost, awaitedSingle, awaitedSingle) };
  }

  // The long path (docs/long-fetches.md): single requests forced onto the queue consumer
  // (`path: long`, direct flow), counted as the single requests above, plus the queue's
  // operations (3 per message up to 64 KB, one more read per redelivery); and its added latency
  // at a 0 ms upstream, one request at a time, against the awaited fetch's median above.
  if (flows.includes("direct")) {
    const label = "long-single";
    const m = await measuredRun({ label, n: nSingle, wave: 1, origins: [label], url: up.url(`/${label}/{i}`, { delay: SINGLE_DELAY }), options: opts("direct", label, { path: "long" }), each: true });
    checkDelivery("direct", label, m.out);
    const cost = costOf(m.counts, nSingle, m.cpuMs);
    checkCost(label, cost, true);
    const q = m.counts.queue ?? { messages: 0, redelivered: 0, batches: 0 };
    if (q.messages < nSingle) throw new Error(`${label}: ${q.messages} queue messages for ${nSingle} requests: the long path was not taken`);
    cost.queue_operations = (3 * q.messages + q.redelivered) / nSingle;
    cost.queue_batches = q.batches / nSingle;
    const d = dollars(cost, awaitedSingle, awaitedSingle);
    d.queue = cost.queue_operations * price.queueOp * PER;
    d.total += d.queue;
    d.break_even_ms += d.queue / (price.durationMs * PER);
    results.cost.long = { single: { ...cost, dollars: d } };
    const n0 = QUICK ? 5 : 50;
    const l0 = await run({ label: "long-d0", n: n0, wave: 1, each: true, origins: ["long-d0"], url: up.url("/long-d0/{i}"), options: opts("direct", "long-d0", { path: "long" }) });
    checkDelivery("direct", "long-d0", l0);
    results.cost.long.e2e0_ms = med(l0.e2e_ms);
    results.cost.long.added0_ms = med(l0.e2e_ms) - (results.awaited0_ms ?? NaN);
    if (!QUICK) {
      // An upstream slower than the executor's window: 3 requests side by side against a 30 s
      // upstream, with a 35 s timeout (the Auto path takes the long path), as one awaits it.
      const LONG_DELAY = 30_000;
      const l30 = await run({ label: "long-d30", n: 3, origins: ["long-d30"], url: up.url("/long-d30/{i}", { delay: LONG_DELAY }), options: opts("direct", "long-d30", { timeout_ms: 35_000 }) });
      checkDelivery("direct", "long-d30", l30);
      results.cost.long.e2e30_ms = med(l30.e2e_ms);
      results.cost.long.added30_ms = med(l30.e2e_ms) - LONG_DELAY;
    }
  }

  // The burst: n concurrent requests from 50 origins, against the same burst with each fetch
  // awaited in its DO, in the same run.
  const burstN = QUICK ? 100 : 1000;
  const burstOrigins = (label) => [...Array(50)].map((_, i) => `${label}-${i}`);
  await warm(burstOrigins("aw-burst"));
  const aw = await measured(() => runAwaited({ label: "aw-burst", n: burstN, origins: burstOrigins("aw-burst"), url: up.url("/aw-burst/{i}") }), "aw-burst");
  results.cost.awaited.burst = costOf(aw.counts, burstN, aw.cpuMs);
  checkCost("awaited burst", results.cost.awaited.burst, false);
  results.burst.awaited = { wall_ms: aw.out.wall_ms, elapsed_median_ms: med(aw.out.elapsed_ms), elapsed_p99_ms: p99(aw.out.elapsed_ms) };
  for (const flow of flows) {
    const label = `${flow}-burst`;
    const m = await measuredRun({ label, n: burstN, origins: burstOrigins(label), url: up.url(`/${label}/{i}`), options: opts(flow, label) });
    checkFlow(flow, m.counts, label);
    checkDelivery(flow, label, m.out);
    const cost = costOf(m.counts, burstN, m.cpuMs);
    checkCost(label, cost, true);
    results.cost[flow].burst = { ...cost, dollars: dollars(cost, results.cost.awaited.burst, awaitedSingle) };
    const r = m.out;
    // The origins' calls to the executor or the orchestrator, as the origin waits for each.
    const dispatch = Object.entries(m.counts.dispatch_ms).filter(([k]) => k.startsWith("Probe->")).flatMap(([, v]) => v);
    results.burst[flow] = {
      n: burstN, wall_ms: r.wall_ms, wall_ratio: round(r.wall_ms / aw.out.wall_ms, 2),
      hold_median_ms: med(r.hold_ms), hold_p99_ms: p99(r.hold_ms), answered_median_ms: med(r.answered_ms), answered_p99_ms: p99(r.answered_ms), dispatch_median_ms: med(dispatch), dispatch_calls: dispatch.length,
      e2e_median_ms: med(r.e2e_ms), e2e_p99_ms: p99(r.e2e_ms),
      lost: r.lost, duplicates: r.duplicates, not_ok: r.not_ok,
    };
  }
  if (!QUICK && flows.includes("orchestrated")) {
    const label = "orchestrated-burst-4shards";
    const r = await run({ label, n: burstN, origins: burstOrigins(label), url: up.url(`/${label}/{i}`), options: opts("orchestrated", label, { shards: 4 }) });
    checkDelivery("orchestrated", label, r);
    results.burst.orchestrated.shards4_wall_ms = r.wall_ms;
    results.burst.orchestrated.lost += r.lost;
    results.burst.orchestrated.duplicates += r.duplicates;
  }
  if (!QUICK && flows.includes("direct")) {
    // A burst's wall time moves with the machine from one run to the next, and one pair's
    // ratio by +-0.3 within a run: fifteen more pairs of the awaited and the direct burst, each
    // pair run back to back (which goes first alternates), with the counting off (it has more to count on the proxied side, and
    // nothing of it ships); the ratio and the origin hold are those of these pairs.
    const ratios = [];
    const holds = [];
    await benchRoute("/__bench/counting", { on: false });
    try {
      for (let k = 1; k <= PAIRS; k++) {
        const awLabel = `aw-burst-${k}`, label = `direct-burst-${k}`;
        await warm([...burstOrigins(awLabel), ...burstOrigins(label)]);
        const awaitedRun = () => runAwaited({ label: awLabel, n: burstN, origins: burstOrigins(awLabel), url: up.url(`/${awLabel}/{i}`) });
        const directRun = () => run({ label, n: burstN, origins: burstOrigins(label), url: up.url(`/${label}/{i}`), options: opts("direct", label) });
        let awaited, r;
        if (k % 2) {
          awaited = await awaitedRun();
          r = await directRun();
        } else {
          r = await directRun();
          awaited = await awaitedRun();
        }
        checkDelivery("direct", label, r);
        ratios.push(round(r.wall_ms / awaited.wall_ms, 2));
        holds.push(...r.hold_ms);
      }
    } finally {
      await benchRoute("/__bench/counting", { on: true });
    }
    const b = results.burst.direct;
    b.measured_ratio = b.wall_ratio;
    b.wall_ratios = ratios;
    b.wall_ratio = med(ratios);
    b.pairs_hold_median_ms = med(holds);
    b.pairs_hold_p99_ms = p99(holds);
  }
  if (!QUICK && flows.includes("direct")) {
    // What an origin's start waits for under the burst: an RPC round trip to the executor, timed
    // by another Durable Object while a copy of the direct burst runs (not measured for cost).
    const label = "direct-burst-pinged";
    await warm([...burstOrigins(label), "ping-probe", "gated-probe"]);
    const [r, pings, gated] = await Promise.all([
      run({ label, n: burstN, origins: burstOrigins(label), url: up.url(`/${label}/{i}`), options: opts("direct", label) }),
      call("ping-probe", "noopRpc", 20),
      call("gated-probe", "gatedRpc", 20),
    ]);
    checkDelivery("direct", label, r);
    results.burst.direct.rpc_during = {
      n: pings.length, median_ms: med(pings), p99_ms: p99(pings), hold_median_ms: med(r.hold_ms),
      gated_median_ms: med(gated), gated_p99_ms: p99(gated),
    };
  }

  // A 10 MiB body, against an RPC carrying the same bytes one way (a result travels once,
  // executor -> origin) and the same fetch awaited in a DO.
  const big = 10 * 1024 * 1024;
  const nBig = QUICK ? 1 : 5;
  const oneWay = [];
  const roundTrip = [];
  const bigDirect = [];
  for (let i = 0; i < nBig; i++) {
    oneWay.push(await call("probe-0", "sendRpc", big));
    roundTrip.push(await call("probe-0", "echoRpc", big));
    bigDirect.push(await call("probe-0", "direct", up.url(`/big-direct/${i}`, { bytes: big })));
  }
  results.big.baselines = { one_way_rpc_ms: med(oneWay), round_trip_rpc_ms: med(roundTrip), fetch_awaited_ms: med(bigDirect) };
  for (const flow of flows) {
    const label = `${flow}-big`;
    const r = await run({ label, n: nBig, wave: 1, each: true, origins: [label], url: up.url(`/${label}/{i}`, { bytes: big }), options: opts(flow, label, { timeout_ms: 25_000 }) });
    checkDelivery(flow, label, r);
    results.big[flow] = { e2e_ms: med(r.e2e_ms), fetch_ms: med(r.fetch_ms), e2e_minus_fetch_ms: med(r.e2e_ms.map((e, i) => e - r.fetch_ms[i])) };
  }

  const wasmPath = join(root, "examples/demo/build/index_bg.wasm");
  const wasm = readFileSync(wasmPath);
  // gzip(1) where there is one (what an upload is compressed like); zlib's output is ~2% larger.
  let gzipped;
  try {
    gzipped = execFileSync("gzip", ["-9", "-c", wasmPath], { maxBuffer: 64 << 20 }).length;
  } catch {
    gzipped = gzipSync(wasm, { level: 9 }).length;
  }
  results.other.push({ name: "examples/demo wasm", value: round(wasm.length / 1000), unit: "KB" });
  results.other.push({ name: "examples/demo wasm gzip -9", value: round(gzipped / 1000), unit: "KB", target: "<= 250 KB" });

} finally {
  await w.dispose();
  await up.close();
}

// ---- targets (issue 8) ------------------------------------------------------------------------
/** A target row; `limit` undefined: reported without a target. */
const target = (flow, name, value, unit, limit, how = "<=") => {
  const measuredFlow = flows.includes(flow) && Number.isFinite(value);
  let verdict = "";
  if (!flows.includes(flow)) verdict = "not measured: no direct flow at this commit";
  else if (limit === undefined) verdict = "reported";
  else if (how === "<=" ? value <= limit : value === limit) verdict = "met";
  else verdict = how === "<=" ? `**missed by ${round(value - limit, 2)}${unit && unit !== "x" ? ` ${unit}` : ""} (${(value / limit).toFixed(2)}x the limit)**` : `**missed: ${value}**`;
  results.targets.push({ flow, name, value: measuredFlow ? round(value, 2) : undefined, unit, limit: limit === undefined ? "" : `${how} ${limit}`, verdict });
};
const burstName = QUICK ? "100" : "1,000";
// The targets of issue 21 (cost floor), per flow: [direct, lost_on_crash, orchestrated].
const TARGETS = {
  single_do_requests: { direct: 1, orchestrated: 3 },
  single_rows: { direct: 1.1, lost_on_crash: 0, orchestrated: 4 },
  single_break_even: { direct: 800, lost_on_crash: 300 },
  burst_do_requests: { orchestrated: 1.5 },
  burst_rows: { direct: 1.2, lost_on_crash: 0, orchestrated: 1.5 },
  burst_break_even: { direct: 900 },
  added0: { direct: 1 },
  wall_ratio: { direct: 1.25 },
  hold: { direct: 50 },
};
for (const flow of ["direct", "lost_on_crash", "orchestrated"]) {
  const c = results.cost[flow];
  const b = results.burst[flow];
  const t = (name) => TARGETS[name][flow];
  target(flow, "DO requests per single request", c?.single.do_requests, "", t("single_do_requests"));
  target(flow, "rows written per single request", c?.single.rows_written, "", t("single_rows"));
  target(flow, "break-even upstream wait, single requests", c?.single.dollars.break_even_ms, "ms", t("single_break_even"));
  target(flow, "DO requests per request alone in a fresh origin", c?.alone.do_requests, "", undefined);
  target(flow, "rows written per request alone in a fresh origin", c?.alone.rows_written, "", undefined);
  target(flow, "break-even upstream wait, a request alone in a fresh origin", c?.alone.dollars.break_even_ms, "ms", undefined);
  target(flow, `DO requests per request, ${burstName} burst amortized`, c?.burst.do_requests, "", t("burst_do_requests"));
  target(flow, `rows written per request, ${burstName} burst amortized`, c?.burst.rows_written, "", t("burst_rows"));
  target(flow, `break-even upstream wait, ${burstName} burst`, c?.burst.dollars.break_even_ms, "ms", t("burst_break_even"));
  target(flow, "added latency at a 0 ms upstream (median)", results[`added0_${flow}`], "ms", t("added0"));
  target(flow, `${burstName} burst from 50 origins: wall time / the same burst awaited in the DOs${b?.wall_ratios ? ` (median of ${b.wall_ratios.length} pairs, counting off: ${b.wall_ratios.join(", ")})` : ""}`, b?.wall_ratio, "x", t("wall_ratio"));
  target(flow, `origin hold under the ${burstName} burst (median${b?.pairs_hold_median_ms === undefined ? "" : ` of the ${b.wall_ratios.length} pairs' bursts, counting off`})`, b?.pairs_hold_median_ms ?? b?.hold_median_ms, "ms", t("hold"));
  target(flow, "lost + duplicate results, every run of this flow", lostOrDuplicate[flow], "", 0, "=");
}

// ---- report -----------------------------------------------------------------------------------
const f = (x, d = 2) => (x === undefined || Number.isNaN(x) ? "" : String(round(x, d)));
const md = (header, rows) => [`| ${header.join(" | ")} |`, `| ${header.map((_, i) => (i === 0 ? "---" : "---:")).join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");

const targetsTable = md(["flow", "target", "measured", "limit", "verdict"], results.targets.map((t) => [
  t.flow, t.name, t.value === undefined ? "" : `${f(t.value)} ${t.unit}`.trim(), t.limit ? `${t.limit} ${t.unit}`.trim() : "", t.verdict,
]));

const KINDS = ["single", "alone", "burst"];
const kindName = (kind, n) => ({
  single: `single: ${n} one at a time from one origin, ${SINGLE_DELAY} ms upstream`,
  alone: `alone: ${n} one at a time, each from a fresh origin, ${SINGLE_DELAY} ms upstream`,
  burst: `burst of ${n} from 50 origins, 0 ms upstream`,
})[kind];
const costRows = [];
for (const flow of flows) {
  for (const kind of KINDS) {
    const c = results.cost[flow][kind];
    costRows.push([flow, kindName(kind, c.n), f(c.do_requests), f(c.rows_written), f(c.rows_read), f(c.active_ms), f(c.cpu_ms), f(c.dollars.added_cpu_ms),
      f(c.dollars.requests), f(c.dollars.rows_written), f(c.dollars.rows_read, 4), f(c.dollars.duration, 4), f(c.dollars.cpu, 4), `**${f(c.dollars.total)}**`, `**${f(c.dollars.break_even_ms, 0)} ms**`]);
  }
}
for (const kind of ["single", "burst"]) {
  const c = results.cost.awaited[kind];
  costRows.push(["awaited in the DO (baseline)", kindName(kind, c.n), f(c.do_requests), f(c.rows_written), f(c.rows_read), f(c.active_ms), f(c.cpu_ms), "",
    f(c.do_requests * price.request * PER), f(c.rows_written * price.rowWritten * PER), "", f(c.active_ms * price.durationMs * PER, 4), "", f(c.active_ms * price.durationMs * PER, 4), ""]);
}
const costTable = md(["flow", "requests", "DO requests", "rows written", "rows read", "DO active ms", "workerd CPU ms", "CPU ms added", "$ requests", "$ rows written", "$ rows read", "$ duration", "$ CPU", "$ total", "break-even wait"], costRows);
const a0 = results.cost.awaited.single.active_beyond_wait_ms;
const awaitedCost = md(["upstream wait N", "DO duration billed", "$ per million requests"], [0, 100, 1000, 1400, 3000].map((n) => [`${n} ms`, `${f(a0 + n)} ms`, f((a0 + n) * price.durationMs * PER, 4)]));
const methodRows = [...flows, "awaited"].flatMap((flow) => KINDS.filter((k) => results.cost[flow][k]).map((kind) => [flow === "awaited" ? "awaited in the DO (baseline)" : flow, kind, Object.entries(results.cost[flow][kind].by_method).map(([m, n]) => `${m} ${n}`).join(", ") || "none", f(results.cost[flow][kind].alarms_to_come, 3),
  Object.entries(results.cost[flow][kind].rows_by).map(([m, n]) => `${m} ${n}`).join(", ") || "none"]));
const methodTable = md(["flow", "requests", "DO requests per request, by method", "of which alarms still to come", "rows written per request, by object and operation"], methodRows);

const latencyTable = md(["flow", "measure", "value", "baseline (same run)", "ratio"], results.latency.map((r) => [r.flow, r.name + (r.note ? ` (${r.note})` : ""), `${f(r.value)} ${r.unit}`, r.baseline === undefined ? "" : `${f(r.baseline)} ms (${r.baselineName})`, f(r.ratio)]));
const burstRows = [["awaited in the DO (baseline)", f(results.burst.awaited.wall_ms, 0), "1", "", "", "", "", "", f(results.burst.awaited.elapsed_median_ms), f(results.burst.awaited.elapsed_p99_ms), "", ""]];
for (const flow of flows) {
  const b = results.burst[flow];
  burstRows.push([flow, f(b.wall_ms, 0), f(b.measured_ratio ?? b.wall_ratio), f(b.hold_median_ms), f(b.hold_p99_ms), f(b.answered_median_ms), f(b.answered_p99_ms), `${f(b.dispatch_median_ms)} (${b.dispatch_calls} calls)`, f(b.e2e_median_ms), f(b.e2e_p99_ms), `${b.lost} / ${b.duplicates}`, b.shards4_wall_ms === undefined ? "" : `${f(b.shards4_wall_ms, 0)} ms with 4 shards`]);
}
const burstTable = md(["flow", "wall ms", "wall / awaited", "origin hold median ms", "origin hold p99 ms", "start answered to its caller median ms", "p99 ms", "origin's dispatch call median ms", "start -> handler median ms", "p99 ms", "lost / duplicates", ""], burstRows);
const bigRows = flows.map((flow) => {
  const b = results.big[flow];
  return [flow, f(b.e2e_ms), f(b.e2e_ms / results.big.baselines.one_way_rpc_ms), f(b.fetch_ms), f(b.e2e_minus_fetch_ms), f(b.e2e_minus_fetch_ms / results.big.baselines.one_way_rpc_ms)];
});
const bigTable = md(["flow", "end to end ms (median)", "/ one-way RPC", "of which the executor's fetch ms", "end to end minus the fetch ms", "/ one-way RPC"], bigRows);
results.peak_rss_mib = Object.fromEntries(peaks);
const peakTable = md(["scenario", "peak resident memory of workerd (MiB)"], peaks.map(([label, mib]) => [label, f(mib)]));
const otherTable = md(["measure", "value", "target"], results.other.map((o) => [o.name, `${o.value} ${o.unit}`, o.target ?? ""]));

const versions = {
  rustc: execFileSync("rustc", ["--version"], { encoding: "utf8" }).trim(),
  node: process.version,
  workerd: execFileSync(join(root, "node_modules/.bin/workerd"), ["--version"], { encoding: "utf8" }).trim(),
  cpu: `${cpus().length} x ${cpus()[0]?.model}`,
  memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
};
results.versions = versions;
results.duration_s = round((Date.now() - began) / 1000);

const report = `## Targets (issue 21)

${targetsTable}

## What a proxied request costs

Counted per proxied request by the bench worker's main module (\`bench/worker/js/main.js\`, which
wraps the classes the build generated; nothing is counted in shipped code). **DO requests**: every
RPC call, fetch and alarm into a Durable Object (origin or orchestrator) made by proxy-fetch, not
the bench's own calls (\`start\`, the baseline methods), plus alarms set and not yet fired (each will
be one invocation). **Rows**: KV put of N keys = N written, a delete = the rows it removed,
setAlarm/deleteAlarm = 1, plus one for each key written and still there at the end (the delete
that will remove it), get of N keys / list = N read, SQL cursors' \`rowsWritten\`/\`rowsRead\`;
the handler's own record (\`a:*\` keys) is left out. **DO active ms**: per object, the time it ran
an invocation or a \`waitUntil\` promise (concurrent ones counted once), summed over objects.
**workerd CPU**: the workerd process's user+system time (/proc/${"<pid>"}/stat, 10 ms ticks) from the
first start until the counters stop moving, minus its idle rate (${f(idle * 1000)} ms per s) over the
same time, per request. **CPU ms added**: that minus the same figure for awaiting the fetch in the
DO, charged at the Workers CPU price (a DO's own CPU is billed as its duration).

Prices: \`bench/prices.json\` (checked ${prices.checked}; ${prices.source}). Dollars are per million
proxied requests. The **break-even wait** is the upstream delay above which proxying costs less
than awaiting the same fetch in the DO: $ total / DO duration price per ms (128 MB:
$${f(price.durationMs * PER, 5)} per million ms) minus the DO time awaiting takes beyond the upstream's
wait (${f(a0)} ms). Single requests run one at a time against a ${SINGLE_DELAY} ms upstream; the burst
against a 0 ms upstream. It assumes the awaited fetches would not overlap in one object; where N fetches
overlap in one object, awaiting costs about 1/N as much per request.

${costTable}

${methodTable}

Awaiting the fetch in the DO for N ms (DO duration only: the DO request that started it is the
same on both sides):

${awaitedCost}

${results.cost.long ? `## The long path (queue consumer)

Single requests forced onto the long path (\`path: long\`, direct flow; docs/long-fetches.md), one
at a time against a ${SINGLE_DELAY} ms upstream, counted as above, plus the queue's operations
(3 per message up to 64 KB: write, read, delete; one more read per redelivery) at
$${f(prices.queue_operations_per_million, 2)} per million (\`bench/prices.json\`). Local workerd
enforces neither the 30 s \`waitUntil\` limit nor the consumer's 15 minutes.

${md(["measure", "per request"], [
  ["DO requests", f(results.cost.long.single.do_requests, 2)],
  ["rows written", f(results.cost.long.single.rows_written, 2)],
  ["queue operations", f(results.cost.long.single.queue_operations, 2)],
  ["consumer invocations (batches)", f(results.cost.long.single.queue_batches, 2)],
  ["$ per million requests (queue included)", f(results.cost.long.single.dollars.total, 2)],
  ["of which queue operations", f(results.cost.long.single.dollars.queue, 2)],
  ["break-even upstream wait", `${f(results.cost.long.single.dollars.break_even_ms, 0)} ms`],
  ["start -> handler, 0 ms upstream (median)", `${f(results.cost.long.e2e0_ms, 1)} ms`],
  ["added latency, 0 ms upstream (median minus the awaited fetch's)", `${f(results.cost.long.added0_ms, 1)} ms`],
  ...(results.cost.long.e2e30_ms === undefined ? [] : [
    ["start -> handler, 30 s upstream, Auto path (median of 3)", `${f(results.cost.long.e2e30_ms, 0)} ms`],
    ["added latency, 30 s upstream (median minus the upstream's 30 s)", `${f(results.cost.long.added30_ms, 0)} ms`],
  ]),
])}

` : ""}## The burst: ${results.burst[flows[0]]?.n ?? ""} concurrent requests from 50 origins

Wall time from the first start to the last handler, against the same burst with each fetch awaited
in its DO (the same HTTP starts, upstream fetches and handler work), measured in the same run. The
table's bursts are the counted ones (the awaited first, then each flow's).${results.burst.direct?.wall_ratios ? ` Then ${results.burst.direct.wall_ratios.length}
pairs of an awaited and a direct burst ran back to back (which went first alternating), with the
bench's counting off: wall / awaited ${results.burst.direct.wall_ratios.join(", ")} (median ${f(results.burst.direct.wall_ratio)}); the
direct bursts' origin hold median ${f(results.burst.direct.pairs_hold_median_ms)} ms, p99 ${f(results.burst.direct.pairs_hold_p99_ms)} ms. The targets take these.` : ""}

${burstTable}
${results.burst.direct?.rpc_during ? `
While a copy of the direct burst ran (origin hold median ${f(results.burst.direct.rpc_during.hold_median_ms)} ms in that copy), two other Durable
Objects timed ${results.burst.direct.rpc_during.n} no-op RPC round trips to the executor each, one after another: sent alone, median
${f(results.burst.direct.rpc_during.median_ms)} ms (p99 ${f(results.burst.direct.rpc_during.p99_ms)} ms); sent just after a storage write, as a job is (the output gate holds
it until the write is on disk), median ${f(results.burst.direct.rpc_during.gated_median_ms)} ms (p99 ${f(results.burst.direct.rpc_during.gated_p99_ms)} ms). A direct start waits for its
record to be on disk, after the round of its origin's writer already under way, not for its job's call ("origin's dispatch
call" above: its origin sends it afterwards); "start answered to its caller" is that time seen by the caller, the output
gate included. A LostOnCrash start, which has no record, waits for its job's call.
` : ""}
## Latency

Times are measured with \`Date.now()\` inside workerd (1 ms resolution, advancing only across I/O).
Each quantile is compared with the same quantile of its baseline. Requests are started one after
another (their fetches overlap); the awaited baseline runs as many fetches at a like pace.

${latencyTable}

## A 10 MiB body

Baselines in the same run: an RPC carrying the same 10 MiB one way (DO -> entrypoint, answer its
length) ${f(results.big.baselines.one_way_rpc_ms)} ms, both ways ${f(results.big.baselines.round_trip_rpc_ms)} ms; the same fetch awaited in a DO
${f(results.big.baselines.fetch_awaited_ms)} ms. Medians.

${bigTable}

## Peak memory

The workerd process's peak resident memory (VmHWM in /proc, reset before each scenario by
writing 5 to its clear_refs) while each measured scenario ran: every isolate of the run (origins,
orchestrator, executor, the bench's own objects), so it bounds what one isolate holds. Labels:
\`aw-*\` awaited in the DO (baselines), \`<flow>-single\` one request at a time,
\`<flow>-alone\` one request in each of fresh origins, \`<flow>-burst\` the burst.

${peakTable}

## Other

${otherTable}
`;

console.log(report);
console.log(`bench: ${QUICK ? "quick" : "full"} run of ${flows.join(" + ")} in ${results.duration_s} s`);
if (failures.length) {
  console.error(`bench: FAILED:\n  ${failures.join("\n  ")}`);
  process.exit(1);
}
if (!QUICK) {
  writeFileSync(join(root, "bench/results.json"), JSON.stringify(results, null, 2) + "\n");
  const old = (() => { try { return readFileSync(join(root, "BENCHMARKS.md"), "utf8"); } catch { return ""; } })();
  const notes = old.includes("<!-- notes -->") ? old.slice(old.indexOf("<!-- notes -->")) : "<!-- notes -->\n";
  writeFileSync(join(root, "BENCHMARKS.md"), `# Benchmarks

Command: \`scripts/bench\` (local workerd through Miniflare, upstream on 127.0.0.1), ${results.duration_s} s. Run ${results.when}
at commit \`${commit}\`${dirty.length ? ` with uncommitted changes in ${dirty.length} file(s) (${dirty.slice(0, 5).map((l) => l.replace(/^\s*\S+\s+/, "")).join(", ")}${dirty.length > 5 ? ", ..." : ""})` : " (clean tree)"}.
Flows: ${flows.join(", ")}${flows.includes("direct") ? "" : " (ProxyFetchOptions has no `flow` at this commit)"}.
Machine: ${versions.cpu}, ${versions.memory}, load average ${loadBefore} before the run and ${loadavg()} after (other
work on the machine slows wall times; counts and CPU seconds are not affected). ${versions.rustc}; node ${versions.node}; workerd ${versions.workerd}.

${report}
${notes}`);
}
