// The executor's policy is its worker's own configuration: without PROXY_FETCH_ALLOW it fetches
// nothing, and says why: at the start, on both flows, and to a job sent to it directly.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { jsWorker, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
before(async () => {
  up = await startUpstream();
  const worker = { scriptName: "proxy-test-worker", useSQLite: true };
  w = await startWorker("tests/proxy-worker", {
    bindings: {}, // no PROXY_FETCH_ALLOW
    peers: [jsWorker("driver", "driver.js", { durableObjects: { INBOX: { className: "Inbox", ...worker } } })],
  });
});
after(async () => {
  await w?.dispose();
  await up?.close();
});

const call = async (name, method, ...args) =>
  (await w.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ binding: "INBOX", name, method, args }) })).json();

for (const flow of ["direct", "orchestrated"]) {
  test(`${flow}: without PROXY_FETCH_ALLOW at the executor, a start is refused at once, saying how to allow it`, async () => {
    const name = `no-policy-${flow}`;
    const key = `no-policy-${flow}`;
    const started = await call(name, "start", { url: up.url("/x", { key }) }, { flow }, "t");
    assert.equal(started.error?.handler?.kind, "rejected", JSON.stringify(started));
    assert.match(started.error.message, /has no `PROXY_FETCH_ALLOW` var, so it fetches nothing: set it/);
    const pending = await call(name, "pending");
    assert.deepEqual(pending.ok, [], "nothing was stored");
    assert.equal(up.count(key), 0, "the upstream was never asked");
  });
}

test("without PROXY_FETCH_ALLOW the executor itself refuses a job sent to it directly", async () => {
  const key = "no-policy-direct-job";
  const job = {
    id: "no-policy-job~0",
    token: "0".repeat(32),
    request: { method: "GET", url: up.url("/x", { key }), headers: [], body: null, redirect: "follow" },
    origin: { binding: "INBOX", id: "0".repeat(64) }, // no such origin
    queue: null,
    options: {},
  };
  await w.env.FETCH_EXECUTOR.executeFetches([job]);
  // Its Rejected result finds no origin to take it: then the executor is done with the job.
  await waitFor(() => w.logs.some((l) => l.includes("proxy-fetch no-policy-job~0: result not delivered")), { what: "the end of the job" });
  assert.equal(up.count(key), 0, "the upstream was never asked");
});
