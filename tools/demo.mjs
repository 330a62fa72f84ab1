#!/usr/bin/env node
// The README's first command ends here: start a local upstream that answers slowly, start the
// demo worker (examples/demo, already built) in local workerd, proxy a fetch from its Inbox
// Durable Object, and show what arrived at the handler and how long each hop took.
// `--long` (scripts/demo --long): an upstream that answers after 38 s, slower than the
// executor's 25 s window, with `timeout_ms` 45000, so the request takes the long path: a queue
// message to the demo's local queue, fetched by proxy-fetch's queue consumer.
import { startWorker, waitFor } from "../tests/workerd/harness.mjs";
import { startUpstream } from "../tests/workerd/upstream.mjs";

const long = process.argv.includes("--long");
const delay = Number(process.env.UPSTREAM_DELAY_MS ?? (long ? 38_000 : 1000));
const timeoutMs = long ? 45_000 : undefined;
const up = await startUpstream();
const worker = await startWorker("examples/demo");
const ms = (n) => `${Math.round(n)} ms`;
const host = long ? "consumer" : "executor";
try {
  const url = up.url("/weather/lisbon", { delay });
  console.log(`upstream:  ${up.base} (answers after ${delay} ms)`);
  console.log(`workerd:   ${worker.url} running examples/demo (wasm)`);
  const body = { url, tag: "demo", ...(long ? { timeout_ms: timeoutMs } : {}) };
  console.log(`\nPOST /inbox/demo/fetch ${JSON.stringify(body)}`);
  if (long) console.log(`   timeout_ms ${timeoutMs} > 25000 (the executor's waitUntil window): the long path, through the queue`);
  const res = await worker.fetch("/inbox/demo/fetch", { method: "POST", body: JSON.stringify(body) });
  const started = await res.json();
  if (!res.ok) throw new Error(`start failed: ${JSON.stringify(started)}`);
  console.log(`-> ${res.status} request_id=${started.request_id}, Inbox held ${ms(started.hold_ms)} (until ${long ? "the queue took its message" : "its record was stored"})`);

  const filed = await waitFor(async () => {
    const results = await (await worker.fetch("/inbox/demo/results")).json();
    return results.find((r) => r.request_id === started.request_id);
  }, { deadlineMs: delay + 30_000, what: `the result of ${started.request_id} at the demo's Inbox` });
  const total = filed.arrived_at_ms - started.started_at_ms;
  console.log(`\nInbox.on_response got: ${filed.outcome} ${filed.status ?? ""} after ${filed.attempts} attempt(s), ${filed.body_len} bytes`);
  console.log(`  body: ${filed.text.slice(0, 160)}${filed.text.length > 160 ? "..." : ""}`);
  console.log("\nhops:");
  const hop = (what, n) => console.log(`  ${what.padEnd(39)}${ms(n)}`);
  hop(`origin hold (until ${long ? "queued" : "recorded"})`, started.hold_ms);
  hop(`${host} fetch (upstream, whole body)`, filed.fetch_ms);
  hop("start -> handler ran", total);
  hop("added by proxy-fetch", total - filed.fetch_ms);
} finally {
  await worker.dispose();
  await up.close();
}
