// Durability::LostOnCrash in real workerd: no row, no alarm, only the origin's memory holds the
// request. Each promise of the README's "LostOnCrash" row is a test here: the result reaches
// its handler once; a result without its token is refused; a result whose origin instance is
// gone (reset, runtime restarted) or whose executor was lost runs no handler and is reported in
// a log line.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jsWorker, settle, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
process.on("exit", () => process.env.PF_DUMP && console.log(w?.logs.join("")));
before(async () => {
  up = await startUpstream();
  const worker = { scriptName: "proxy-test-worker", useSQLite: true };
  w = await startWorker("tests/proxy-worker", {
    bindings: { PROXY_FETCH_ALLOW: `http://127.0.0.1:${new URL(up.url("/")).port}` },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: {
        INBOX: { className: "Inbox", ...worker },
        FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...worker },
      },
      serviceBindings: { REAL_EXECUTOR: { name: "proxy-test-worker", entrypoint: "FetchExecutorEntrypoint" } },
    })],
    serviceBindings: { DEAD_EXECUTOR: { name: "driver", entrypoint: "DeadExecutor" } },
  });
});
after(async () => {
  await w?.dispose();
  await up?.close();
});

/** One RPC call through the driver: `{ ok: value }` or `{ error }`, as the callee answered. */
async function call(name, method, ...args) {
  const res = await w.fetchPeer("driver", "http://driver/call", {
    method: "POST",
    body: JSON.stringify({ binding: "INBOX", name, method, args }),
  });
  return res.json();
}

function must(answer, what) {
  if (answer.error !== undefined) throw new Error(`${what} failed: ${JSON.stringify(answer.error)}`);
  return answer.ok;
}

let inboxes = 0;
function origin() {
  const name = `lost-${process.pid}-${++inboxes}`;
  const rpc = (method) => async (...args) => must(await call(name, method, ...args), `${name}.${method}`);
  return {
    name,
    start: (request, options, tag = "t") => call(name, "start", typeof request === "string" ? { url: request } : request, options, tag),
    results: rpc("results"),
    pending: rpc("pending"),
    cancel: rpc("cancel"),
    writes: rpc("storageWrites"),
    reset: rpc("resetInstance"),
    /** One delivery as an executor of a LostOnCrash request makes it. */
    deliver: async (result, token) => {
      const [outcome] = must(await call(name, "__proxyFetchDeliver", [{ result, token, lost_on_crash: true }]), "deliver");
      return outcome;
    },
  };
}

const LOST = { durability: "lost_on_crash", timeout_ms: 3000 };
const ok = (id) => ({ Ok: { request_id: id, status: 200, status_text: "OK", headers: [], body: { $bytes: [] }, url: "", attempts: 1, duration_ms: 1 } });

async function startOk(box, request, options = LOST, tag = "t") {
  const started = await box.start(request, options, tag);
  assert.ok(started.ok, `start failed: ${JSON.stringify(started.error)}`);
  return started.ok.request_id;
}

/** Waits for a log line containing `text` (throws at the deadline). */
const logged = (text, what) => waitFor(() => w.logs.join(""), { until: (l) => l.includes(text), what });

describe("LostOnCrash", () => {
  test("the response reaches its handler once, and the origin writes nothing to storage", async () => {
    const box = origin();
    const id = await startOk(box, up.url(`/lost/${box.name}`));
    await waitFor(() => box.results(), { until: (r) => r.length >= 1, what: "the result" });
    await settle();
    const got = await box.results();
    assert.equal(got.length, 1);
    assert.equal(got[0].request_id, id);
    assert.equal(got[0].status, 200);
    assert.equal(got[0].deliveries, 1);
    // The Inbox files each result in its own storage: that is the one write.
    assert.equal(await box.writes(), 1, "no row and no alarm for the request: only the handler's own write");
    assert.deepEqual(await box.pending(), []);
  });

  test("a result without the request's token is refused, and the real one still arrives once", async () => {
    const box = origin();
    const id = await startOk(box, up.url("/lost-forged", { delay: 400 }));
    assert.deepEqual(await box.pending(), [id]);
    const forged = await box.deliver(ok(id), "f".repeat(32));
    assert.equal(forged.Err?.kind, "forbidden");
    await waitFor(() => box.results(), { until: (r) => r.length >= 1, what: "the real result" });
    await settle();
    const got = await box.results();
    assert.equal(got.length, 1);
    assert.equal(got[0].status, 200);
    assert.equal(got[0].deliveries, 1);
  });

  test("a second delivery of a delivered result runs no handler and is logged as lost", async () => {
    const box = origin();
    const id = await startOk(box, up.url("/lost-twice"));
    await waitFor(() => box.results(), { until: (r) => r.length >= 1, what: "the result" });
    const again = await box.deliver(ok(id), "0".repeat(32));
    assert.deepEqual(again, { Ok: "Duplicate" });
    await logged(`the LostOnCrash result of request ${id}`, "the lost result's log line");
    await settle();
    assert.equal((await box.results()).length, 1);
  });

  test("the origin's instance reset mid-fetch: no handler runs, the result is logged as lost", async () => {
    const box = origin();
    const id = await startOk(box, up.url("/lost-reset", { delay: 800 }));
    await box.reset();
    await logged(`the LostOnCrash result of request ${id}`, "the lost result's log line");
    await settle();
    assert.deepEqual(await box.results(), []);
    assert.deepEqual(await box.pending(), []);
  });

  test("its executor lost: given up at its due time with a log line, no handler runs", async () => {
    const box = origin();
    const id = await startOk(box, up.url("/never"), { ...LOST, timeout_ms: 200, retry: { max_attempts: 1 }, backstop_grace_ms: 0, executor_binding: "DEAD_EXECUTOR" });
    assert.deepEqual(await box.pending(), [id]);
    // Any call that looks at the origin's memory gives up what is past due.
    await waitFor(() => box.pending(), { until: (p) => p.length === 0, what: "the lost request given up", deadlineMs: 15_000, everyMs: 250 });
    await logged(`proxy-fetch ${id}: a LostOnCrash request had no result by its due time`, "the given-up log line");
    assert.deepEqual(await box.results(), []);
  });

  test("starting it again with its caller id while it is pending starts nothing", async () => {
    const box = origin();
    const opts = { ...LOST, request_id: `mine-${box.name}` };
    const path = `/lost-once/${box.name}`;
    const first = await startOk(box, up.url(path, { delay: 300 }), opts);
    const second = await startOk(box, up.url(path, { delay: 300 }), opts);
    assert.equal(first, second);
    await waitFor(() => box.results(), { until: (r) => r.length >= 1, what: "the result" });
    await settle();
    assert.equal((await box.results()).length, 1);
    assert.equal(up.count(path), 1, "fetched once");
  });

  test("cancel runs its handler with Cancelled, and the response that comes later is dropped", async () => {
    const box = origin();
    const id = await startOk(box, up.url("/lost-cancel", { delay: 500 }));
    assert.equal(await box.cancel(id), true);
    await logged(`the LostOnCrash result of request ${id}`, "the late result's log line");
    await settle();
    const got = await box.results();
    assert.equal(got.length, 1);
    assert.equal(got[0].outcome, "Cancelled");
  });

  test("the orchestrated flow cannot be LostOnCrash: a typed error, nothing started", async () => {
    const box = origin();
    const started = await box.start(up.url("/x"), { ...LOST, flow: "orchestrated" });
    assert.match(JSON.stringify(started.error), /durability/);
    assert.deepEqual(await box.pending(), []);
  });

  // It restarts the runtime under the other tests: after them.
  test("the runtime restarted mid-fetch: nothing is delivered and nothing is left", async () => {
    const box = origin();
    const path = `/lost-restart/${box.name}`;
    await startOk(box, up.url(path, { delay: 1000 }));
    await waitFor(() => up.count(path), { until: (n) => n === 1, what: "the upstream reached" });
    await w.restart();
    // Answered, or cut by the restart: no executor can deliver it after that.
    await waitFor(() => up.closed(path).length, { until: (n) => n === 1, what: "the upstream exchange ended" });
    await settle();
    assert.deepEqual(await box.results(), []);
    assert.deepEqual(await box.pending(), []);
  });

  // Last: it fills the isolate's memory for LostOnCrash requests until their due time.
  test("an isolate holds at most 4,096 LostOnCrash requests across its origins: the next start is refused with Rejected, nothing started", async () => {
    const opts = { ...LOST, timeout_ms: 1000, retry: { max_attempts: 1 }, backstop_grace_ms: 300_000, executor_binding: "DEAD_EXECUTOR" };
    const names = [...Array(64)].map((_, i) => `lost-cap-${process.pid}-${i}`);
    let started = 0;
    for (let wave = 0; wave < 8; wave++) {
      const calls = [...Array(512)].map((_, i) => ({ name: names[i % names.length], method: "start", args: [{ url: up.url(`/cap/${wave}/${i}`) }, opts, "cap"] }));
      const res = await w.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ op: "burst", binding: "INBOX", calls }) });
      const answers = await res.json();
      const failed = answers.filter((a) => a.error);
      assert.deepEqual(failed, [], `wave ${wave}: every start within the cap starts`);
      started += answers.length;
    }
    assert.equal(started, 4096);
    const box = origin();
    const refused = await box.start(up.url("/cap/one-more"), opts);
    assert.match(JSON.stringify(refused.error), /4096 LostOnCrash requests .* already wait for their result in this isolate/);
    assert.deepEqual(await box.pending(), []);
  });
});
