// A continuation handler (a method of an origin Durable Object whose first argument is a
// FetchResult) is not an RPC method: proxy-fetch's delivery reaches it, a direct call does not.
// On the demo worker's Inbox, whose handler is `on_response`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
before(async () => {
  up = await startUpstream();
  w = await startWorker("examples/demo");
});
after(async () => {
  await w?.dispose();
  await up?.close();
});

const inbox = (name) => w.env.INBOX.get(w.env.INBOX.idFromName(`${name}-${process.pid}`));
// Values that came through Miniflare's RPC proxy, as plain data.
const plain = (value) => JSON.parse(JSON.stringify(value));

test("a direct RPC call of a continuation handler fails and runs nothing; the RPC methods answer", async () => {
  const box = inbox("direct");
  assert.deepEqual(plain(await box.results()), [], "the same stub reaches the Inbox's RPC methods");
  const forged = { Ok: { request_id: "forged", status: 200, headers: [], body: [], attempts: 1, duration_ms: 0 } };
  await assert.rejects(async () => box.onResponse(forged, "forged"), (e) => {
    assert.match(e.message, /does not implement the method "onResponse"/);
    return true;
  });
  assert.deepEqual(plain(await box.results()), [], "the handler did not run");
});

test("the handler still receives a proxied fetch's result, through proxy-fetch's delivery", async () => {
  const box = inbox("delivered");
  const options = { timeout_ms: 3000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 } };
  const started = await box.start({ url: up.url("/handlers/delivered") }, options, "d");
  const filed = await waitFor(async () => plain(await box.results()), {
    until: (list) => list.length > 0, deadlineMs: 15000, what: "the result at the demo's Inbox",
  });
  assert.equal(filed.length, 1, "one result");
  assert.equal(filed[0].request_id, started.request_id);
  assert.equal(filed[0].outcome, "response");
  assert.equal(filed[0].status, 200);
});
