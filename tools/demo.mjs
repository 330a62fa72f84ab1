#!/usr/bin/env node
// The README's first command ends here: start a local upstream that answers slowly, start the
// demo worker (examples/demo, already built) in local workerd, proxy a fetch from its Inbox
// Durable Object, and show what arrived at the handler and how long each hop took.
import { startWorker, waitFor } from "../tests/workerd/harness.mjs";
import { startUpstream } from "../tests/workerd/upstream.mjs";

const delay = Number(process.env.UPSTREAM_DELAY_MS ?? 1000);
const up = await startUpstream();
const worker = await startWorker("examples/demo");
const ms = (n) => `${Math.round(n)} ms`;
try {
  const url = up.url("/weather/lisbon", { delay });
  console.log(`upstream:  ${up.base} (answers after ${delay} ms)`);
  console.log(`workerd:   ${worker.url} running examples/demo (wasm)`);
  console.log(`\nPOST /inbox/demo/fetch {"url": "${url}"}`);
  const res = await worker.fetch("/inbox/demo/fetch", { method: "POST", body: JSON.stringify({ url, tag: "demo" }) });
  const started = await res.json();
  if (!res.ok) throw new Error(`start failed: ${JSON.stringify(started)}`);
  console.log(`-> ${res.status} request_id=${started.request_id}, Inbox held ${ms(started.hold_ms)} (until the executor acknowledged)`);

  const filed = await waitFor(async () => {
    const results = await (await worker.fetch("/inbox/demo/results")).json();
    return results.find((r) => r.request_id === started.request_id);
  }, { deadlineMs: 30_000, what: `the result of ${started.request_id} at the demo's Inbox` });
  const total = filed.arrived_at_ms - started.started_at_ms;
  console.log(`\nInbox.on_response got: ${filed.outcome} ${filed.status ?? ""} after ${filed.attempts} attempt(s), ${filed.body_len} bytes`);
  console.log(`  body: ${filed.text.slice(0, 160)}${filed.text.length > 160 ? "..." : ""}`);
  console.log("\nhops:");
  console.log(`  origin hold (until executor ack)       ${ms(started.hold_ms)}`);
  console.log(`  executor fetch (upstream, whole body)  ${ms(filed.fetch_ms)}`);
  console.log(`  start -> handler ran                   ${ms(total)}`);
  console.log(`  added by proxy-fetch                   ${ms(total - filed.fetch_ms)}`);
} finally {
  await worker.dispose();
  await up.close();
}
