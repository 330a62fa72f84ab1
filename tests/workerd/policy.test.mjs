// The executor's policy is its worker's own configuration: without PROXY_FETCH_ALLOW it fetches
// nothing, and the handler hears why, on both flows.
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
  test(`${flow}: an executor without PROXY_FETCH_ALLOW refuses every job, saying how to allow it`, async () => {
    const name = `no-policy-${flow}`;
    const key = `no-policy-${flow}`;
    const started = await call(name, "start", { url: up.url("/x", { key }) }, { flow }, "t");
    assert.ok(started.ok, JSON.stringify(started.error));
    const results = await waitFor(async () => {
      const answer = await call(name, "results");
      if (answer.error) throw new Error(`results failed: ${JSON.stringify(answer.error)}`);
      return answer.ok;
    }, { until: (list) => list.length > 0, deadlineMs: 15000, what: `the result at ${name}` });
    assert.equal(results.length, 1, "one result arrived");
    assert.equal(results[0].outcome, "Rejected");
    assert.match(results[0].text, /has no `PROXY_FETCH_ALLOW` var, so it fetches nothing: set it/);
    assert.equal(up.count(key), 0, "the upstream was never asked");
  });
}
