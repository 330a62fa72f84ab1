#!/usr/bin/env node
// proxy-fetch benchmarks in local workerd, each figure beside the baseline it is judged by,
// measured in the same run. Prints a table; a full run (not BENCH_QUICK=1) also writes
// bench/results.json and BENCHMARKS.md.
// Run through scripts/bench (it builds the bench and demo workers first).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { jsWorker, root, startWorker } from "../tests/workerd/harness.mjs";
import { startUpstream } from "../tests/workerd/upstream.mjs";

const QUICK = process.env.BENCH_QUICK === "1";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const quantile = (xs, q) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const med = (xs) => quantile(xs, 0.5);
const p99 = (xs) => quantile(xs, 0.99);
const r1 = (x) => Math.round(x * 10) / 10;

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
const stats = async (instance) => (await w.env.FETCH_ORCHESTRATOR.get(w.env.FETCH_ORCHESTRATOR.idFromName(instance)).stats());

/** Starts n requests (in waves of `wave`) over `origins` and waits for every result. */
async function run({ label, n, wave = n, origins, url, options, timeoutMs = 120_000 }) {
  const started = [];
  const errors = [];
  for (let done = 0; done < n; done += wave) {
    const k = Math.min(wave, n - done);
    const calls = [...Array(k).keys()].map((i) => ({
      name: origins[(done + i) % origins.length],
      method: "start",
      args: [url.replace("{i}", done + i), options, `${label}-${done + i}`],
    }));
    for (const r of await drive({ op: "burst", binding: "PROBE", calls })) {
      if (r.ok) started.push(r.ok);
      else errors.push(r.error);
    }
  }
  const byTag = new Map();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    byTag.clear();
    for (const o of origins) for (const a of await call(o, "arrivals")) if (a.tag.startsWith(`${label}-`)) byTag.set(a.tag, a);
    if (byTag.size >= started.length) break;
    await sleep(100);
  }
  const arrivals = started.map((s) => ({ ...s, ...byTag.get(s.tag) }));
  const got = arrivals.filter((a) => a.arrived_at_ms !== undefined);
  return {
    started: started.length,
    start_errors: errors.length,
    delivered: got.length,
    lost: started.length - got.length,
    duplicates: got.filter((a) => a.deliveries > 1).length,
    not_ok: got.filter((a) => a.outcome !== "response").length,
    hold_ms: started.map((s) => s.hold_ms),
    e2e_ms: got.map((a) => a.arrived_at_ms - a.started_at_ms),
    fetch_ms: got.map((a) => a.fetch_ms),
    wall_ms: got.length ? Math.max(...got.map((a) => a.arrived_at_ms)) - Math.min(...started.map((s) => s.started_at_ms)) : NaN,
  };
}

const results = { when: new Date().toISOString(), quick: QUICK, rows: [] };
const row = (name, value, unit, baseline, baselineName, target) => {
  const ratio = baseline ? value / baseline : undefined;
  results.rows.push({ name, value: r1(value), unit, baseline: baseline === undefined ? undefined : r1(baseline), baselineName, ratio: ratio === undefined || !Number.isFinite(ratio) ? undefined : Number(ratio.toFixed(2)), target });
};

try {
  const origins = [...Array(10)].map((_, i) => `probe-${i}`);
  const opts = (instance, extra = {}) => ({ orchestrator_instance: instance, timeout_ms: 10_000, ...extra });

  // Baseline: a no-op RPC round trip from a Durable Object to the executor entrypoint.
  const noop = await call("probe-0", "noopRpc", QUICK ? 50 : 300);
  row("no-op RPC DO -> executor (median)", med(noop), "ms", undefined, undefined, "baseline");

  for (const delay of [0, 100, 1000]) {
    // Started one after another (their fetches overlap): the hold a single request causes,
    // not the queueing of a burst, which the throughput rows below measure.
    const n = QUICK ? 20 : 200;
    const url = up.url(`/d${delay}/{i}`, { delay });
    const direct = [];
    for (let i = 0; i < (QUICK ? 5 : 20); i++) direct.push(await call(origins[i % origins.length], "direct", up.url(`/direct/${delay}`, { delay })));
    const r = await run({ label: `d${delay}`, n, wave: 1, origins, url, options: opts(`hold-${delay}`) });
    const dispatch = (await stats(`hold-${delay}`)).recent_dispatch_ms.slice(-n);
    row(`orchestrator hold, upstream ${delay} ms (median)`, med(dispatch), "ms", med(noop), "no-op RPC", "<= 2x, flat");
    row(`orchestrator hold, upstream ${delay} ms (p99)`, p99(dispatch), "ms", p99(noop), "no-op RPC p99");
    row(`origin hold, upstream ${delay} ms (median)`, med(r.hold_ms), "ms", med(direct), "fetch awaited in the DO", "<= 1 ms");
    row(`added latency, upstream ${delay} ms (median)`, med(r.e2e_ms) - med(direct), "ms", med(direct), "direct fetch", "<= 1 ms");
    row(`added latency, upstream ${delay} ms (p99)`, p99(r.e2e_ms) - med(direct), "ms", med(direct), "direct fetch");
    const overhead = r.e2e_ms.map((e, i) => e - r.fetch_ms[i]);
    row(`start -> handler minus the executor's fetch, upstream ${delay} ms (median)`, med(overhead), "ms");
    if (r.lost || r.duplicates || r.not_ok) throw new Error(`delay ${delay}: ${JSON.stringify({ ...r, hold_ms: undefined, e2e_ms: undefined, fetch_ms: undefined })}`);
  }

  const burstN = QUICK ? 200 : 1000;
  const burstOrigins = [...Array(50)].map((_, i) => `burst-${i}`);
  const one = await run({ label: "tp1", n: burstN, origins: burstOrigins, url: up.url("/tp1/{i}"), options: opts("tp1") });
  const burstDispatch = (await stats("tp1")).recent_dispatch_ms.slice(-burstN);
  const four = await run({ label: "tp4", n: burstN, origins: burstOrigins, url: up.url("/tp4/{i}"), options: opts("tp4", { shards: 4 }) });
  row(`${burstN} concurrent, 1 orchestrator: wall`, one.wall_ms, "ms", undefined, undefined, "<= 800 ms");
  row(`${burstN} concurrent, 1 orchestrator: req/s`, (one.delivered / one.wall_ms) * 1000, "req/s");
  row(`${burstN} concurrent, 4 shards: wall`, four.wall_ms, "ms", one.wall_ms, "1 orchestrator", ">= 2x faster (ratio <= 0.5)");
  row(`${burstN} concurrent, 4 shards: req/s`, (four.delivered / four.wall_ms) * 1000, "req/s");
  row("dispatch ack under the burst (median)", med(burstDispatch), "ms", med(noop), "no-op RPC", "<= 20 ms");
  row("dispatch ack under the burst (p99)", p99(burstDispatch), "ms", p99(noop), "no-op RPC p99", "<= 20 ms");
  row("burst lost / duplicates (1 orch + 4 shards)", one.lost + four.lost + one.duplicates + four.duplicates, "count", undefined, undefined, "0");

  const big = 10 * 1024 * 1024;
  const raw = [];
  for (let i = 0; i < (QUICK ? 2 : 5); i++) raw.push(await call("probe-0", "echoRpc", big));
  const bigRun = await run({ label: "big", n: QUICK ? 2 : 5, wave: 1, origins: ["probe-big"], url: up.url("/big/{i}", { bytes: big }), options: opts("big", { timeout_ms: 60_000 }) });
  row("10 MiB body end to end (median)", med(bigRun.e2e_ms), "ms", med(raw), "raw RPC round trip of 10 MiB", "<= 2x");
  const bigDirect = [];
  for (let i = 0; i < (QUICK ? 2 : 5); i++) bigDirect.push(await call("probe-0", "direct", up.url("/big-direct", { bytes: big })));
  row("10 MiB: of which the executor's fetch (median)", med(bigRun.fetch_ms), "ms", med(bigDirect), "same fetch awaited in a DO");
  row("10 MiB: end to end minus the executor's fetch (median)", med(bigRun.e2e_ms.map((e, i) => e - bigRun.fetch_ms[i])), "ms", med(raw), "raw RPC round trip of 10 MiB");

  const wasmPath = join(root, "examples/demo/build/index_bg.wasm");
  const wasm = readFileSync(wasmPath);
  // gzip(1) where there is one (what an upload is compressed like); zlib's output is ~2% larger.
  let gzipped;
  try {
    gzipped = execFileSync("gzip", ["-9", "-c", wasmPath], { maxBuffer: 64 << 20 }).length;
  } catch {
    gzipped = gzipSync(wasm, { level: 9 }).length;
  }
  row("examples/demo wasm", wasm.length / 1000, "KB");
  row("examples/demo wasm gzip -9", gzipped / 1000, "KB", undefined, undefined, "<= 250 KB");

  const native = execFileSync("cargo", ["bench", "-q", "-p", "proxy-fetch", "--bench", "codec"], { cwd: root, encoding: "utf8" });
  for (const line of native.split("\n").filter((l) => l.startsWith("{"))) {
    const m = JSON.parse(line);
    row(`native: ${m.name}`, m.micros, "µs/op");
  }
} finally {
  await w.dispose();
  await up.close();
}

const versions = {
  rustc: execFileSync("rustc", ["--version"], { encoding: "utf8" }).trim(),
  node: process.version,
  workerd: execFileSync(join(root, "node_modules/.bin/workerd"), ["--version"], { encoding: "utf8" }).trim(),
  cpu: `${cpus().length} x ${cpus()[0]?.model}`,
  memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
};
results.versions = versions;

const table = [
  "| measure | value | baseline (same run) | ratio | target |",
  "| --- | ---: | --- | ---: | --- |",
  ...results.rows.map((r) => `| ${r.name} | ${r.value} ${r.unit} | ${r.baseline === undefined ? "" : `${r.baseline} ms (${r.baselineName})`} | ${r.ratio ?? ""} | ${r.target ?? ""} |`),
].join("\n");
console.log(table);
if (!QUICK) {
  writeFileSync(join(root, "bench/results.json"), JSON.stringify(results, null, 2) + "\n");
  const old = (() => { try { return readFileSync(join(root, "BENCHMARKS.md"), "utf8"); } catch { return ""; } })();
  const notes = old.includes("<!-- notes -->") ? old.slice(old.indexOf("<!-- notes -->")) : "<!-- notes -->\n";
  writeFileSync(join(root, "BENCHMARKS.md"), `# Benchmarks

Command: \`scripts/bench\` (local workerd through Miniflare, upstream on 127.0.0.1). Run ${results.when}.
Machine: ${versions.cpu}, ${versions.memory}. ${versions.rustc}; node ${versions.node}; workerd ${versions.workerd}.
Times are measured with \`Date.now()\` inside workerd (1 ms resolution, advancing only across I/O).

${table}

${notes}`);
}
