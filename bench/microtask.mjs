#!/usr/bin/env node
// What a microtask costs in workerd, scheduled as Rust futures schedule theirs: with
// `queueMicrotask(f)` (wasm-bindgen's default) and with `Promise.resolve().then(f)` (what
// proxy-fetch-build rewrites it to; docs/build.md). Each of 200,000 microtasks queues the next,
// as a tick of woken Rust tasks does. Usage: node bench/microtask.mjs
import { Miniflare } from "miniflare";

const N = 200_000;
const mf = new Miniflare({
  modules: true,
  compatibilityDate: "2025-01-01",
  script: `export default { async fetch(request) {
    const how = new URL(request.url).searchParams.get("how");
    const ready = Promise.resolve();
    let left = ${N}, done;
    const finished = new Promise((resolve) => (done = resolve));
    const step = () => (--left === 0 ? done() : how === "queueMicrotask" ? queueMicrotask(step) : ready.then(step));
    step();
    await finished;
    return new Response("ok");
  } }`,
});
await mf.ready;
const runs = { queueMicrotask: [], then: [] };
for (let i = 0; i < 3; i++) {
  for (const how of Object.keys(runs)) {
    const t0 = performance.now();
    await (await mf.dispatchFetch(`http://bench/?how=${how}`)).text();
    runs[how].push(((performance.now() - t0) * 1000) / N);
  }
}
await mf.dispose();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [how, us] of Object.entries(runs)) {
  console.log(`${how === "then" ? "Promise.resolve().then" : how}: ${median(us).toFixed(2)} us per microtask (median of 3 runs of ${N}, request overhead included)`);
}
