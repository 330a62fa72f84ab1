#!/usr/bin/env node
// A V8 CPU profile of workerd while a burst of proxied fetches runs through the bench worker:
// where the runtime's time goes, by function (Rust functions by name: build the bench worker
// with `proxy-fetch-build bench/worker --no-opt` first, so the wasm keeps its name section).
// Usage: node bench/profile.mjs [flow=direct] [n=1000] [origins=50]
// PROFILE_OUT=file.cpuprofile also writes the whole profile (Chrome DevTools opens it).
import { writeFileSync } from "node:fs";
import WebSocket from "ws";
import { jsWorker, startWorker } from "../tests/workerd/harness.mjs";
import { startUpstream } from "../tests/workerd/upstream.mjs";

const [flow = "direct", n = "1000", origins = "50"] = process.argv.slice(2);
const port = 9230 + Math.floor(Math.random() * 500);
const up = await startUpstream();
const w = await startWorker("bench/worker", {
  shared: { inspectorPort: port },
  peers: [jsWorker("driver", "driver.js", {
    durableObjects: { PROBE: { className: "Probe", scriptName: "proxy-fetch-bench", useSQLite: true } },
  })],
});
const drive = async (body) => (await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify(body) })).json();
const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
const target = targets.find((t) => t.url?.includes("proxy-fetch-bench") || t.title?.includes("proxy-fetch-bench")) ?? targets[0];
const ws = new WebSocket(target.webSocketDebuggerUrl);
await new Promise((r, e) => { ws.once("open", r); ws.once("error", e); });
let seq = 0;
const pending = new Map();
ws.on("message", (m) => {
  const msg = JSON.parse(m);
  if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
});
const send = (method, params = {}) => new Promise((r) => { const id = ++seq; pending.set(id, r); ws.send(JSON.stringify({ id, method, params })); });

const names = [...Array(Number(origins)).keys()].map((i) => `prof-${i}`);
const calls = (tag) => [...Array(Number(n)).keys()].map((i) => ({
  name: names[i % names.length], method: "start", args: [up.url(`/p/${tag}/${i}`), { flow, timeout_ms: 25000 }, `${tag}-${i}`],
}));
// Waits for every handler of the burst `tag` through the bench worker's own record of arrivals
// (bench/worker/js/main.js), so the profile holds no polling of the origins' storage.
const settle = async (tag) => {
  const tags = [...Array(Number(n)).keys()].map((i) => `${tag}-${i}`);
  const r = await w.fetch("/__bench/await", { method: "POST", body: JSON.stringify({ tags, timeout_ms: 120_000 }) });
  const { missing } = await r.json();
  if (missing.length) throw new Error(`burst did not settle in 120 s: ${missing.length} results missing`);
};
await drive({ op: "burst", binding: "PROBE", calls: calls("warm") });
await settle("warm");
await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 200 });
await send("Profiler.start");
const t0 = Date.now();
await drive({ op: "burst", binding: "PROBE", calls: calls("prof") });
await settle("prof");
const { result } = await send("Profiler.stop");
console.log(`${flow}: ${n} requests from ${origins} origins in ${Date.now() - t0} ms (profiled)`);
if (process.env.PROFILE_OUT) writeFileSync(process.env.PROFILE_OUT, JSON.stringify(result.profile));
const { nodes, samples, timeDeltas } = result.profile;
const byId = new Map(nodes.map((node) => [node.id, node]));
const self = new Map();
// A sample stands for the time since the one before, at most 1 ms: when the sampler could not
// run (the process was descheduled), one sample would otherwise stand for the whole gap, and
// whatever ran at its end would take all of it.
const CAP_US = 1000;
let gaps = 0;
samples.forEach((id, i) => {
  const f = byId.get(id).callFrame;
  const key = `${f.functionName || "(anonymous)"} ${f.url ? f.url.split("/").pop() : ""}`.trim();
  const delta = timeDeltas[i] ?? 0;
  if (delta > CAP_US) gaps += delta - CAP_US;
  self.set(key, (self.get(key) ?? 0) + Math.min(delta, CAP_US));
});
const total = [...self.values()].reduce((a, b) => a + b, 0);
const idle = (self.get("(idle)") ?? 0) + (self.get("(program)") ?? 0);
console.log(`sampled ${(total / 1000).toFixed(0)} ms, of which idle/program ${(idle / 1000).toFixed(0)} ms (gaps between samples over 1 ms left out: ${(gaps / 1000).toFixed(0)} ms)`);
for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
  console.log(`${(us / 1000).toFixed(1).padStart(8)} ms  ${(100 * us / total).toFixed(1).padStart(5)}%  ${key}`);
}
ws.close();
await w.dispose();
await up.close();
