// A hostile caller holding a binding: to the orchestrator, the executor or an origin. It calls
// every method that changes a request's state with forged, replayed, mismatched and oversized
// input. Each call is refused and logged, changes nothing, and a real request in flight still
// completes with its real result. (README, Security: "no result is accepted without its token";
// "the executor's limits are its own".) Runs its own workerd: the crash-loop test aborts the
// isolate on purpose.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jsWorker, optionsFromWrangler, root, settle, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

const FORGED = "0".repeat(32);
let up;
before(async () => {
  up = await startUpstream();
});
after(async () => up?.close());

/** The proxy test worker in workerd of its own, with `vars` added to its own (and `peers` and
 *  `serviceBindings` to the test's). */
async function worker(vars = {}, { peers = [], serviceBindings = {}, driverBindings = {} } = {}) {
  const port = new URL(up.url("/")).port;
  const shared = { scriptName: "proxy-test-worker", useSQLite: true };
  return startWorker("tests/proxy-worker", {
    bindings: { PROXY_FETCH_ALLOW: `http://127.0.0.1:${port}`, ...vars },
    peers: [...peers, jsWorker("driver", "driver.js", {
      durableObjects: {
        INBOX: { className: "Inbox", ...shared },
        FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...shared },
      },
      serviceBindings: { REAL_EXECUTOR: { name: "proxy-test-worker", entrypoint: "FetchExecutorEntrypoint" }, ...driverBindings },
    })],
    serviceBindings: { DYING_ONCE_EXECUTOR: { name: "driver", entrypoint: "DyingOnceExecutor" }, ...serviceBindings },
  });
}

/** Calls `method` of the Durable Object `name` of `binding` through the driver. */
async function call(w, binding, name, method, ...args) {
  const res = await w.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ binding, name, method, args }) });
  return res.json();
}

let boxes = 0;
function origin(w) {
  const name = `hostile-${process.pid}-${++boxes}`;
  const rpc = (method) => (...args) => call(w, "INBOX", name, method, ...args);
  return {
    name,
    id: async () => (await w.env.INBOX.idFromName(name)).toString(),
    start: (request, options, tag = "t") => rpc("start")(typeof request === "string" ? { url: request } : request, options, tag),
    results: async () => (await rpc("results")()).ok,
    pending: async () => (await rpc("pending")()).ok,
    rpc,
  };
}

async function startOk(box, request, options, tag) {
  const r = await box.start(request, options, tag);
  assert.ok(r.ok, `start failed: ${JSON.stringify(r.error)}`);
  return r.ok.request_id;
}

/** The one result of `box`, once it came and no second one followed within the settle window. */
async function onlyResult(box, what, deadlineMs = 15000) {
  const [r] = await waitFor(async () => { const got = await box.results(); return got.length && got; }, { deadlineMs, what });
  await settle();
  const again = await box.results();
  assert.equal(again.length, 1);
  assert.equal(again[0].deliveries, 1, "its handler ran once");
  return r;
}

const forgedResult = (id) => ({ Ok: { request_id: id, status: 299, status_text: "forged", headers: [], body: { $bytes: [1] }, url: "", attempts: 1, duration_ms: 1 } });

function job(overrides = {}) {
  return {
    id: `forged-${++boxes}`,
    token: FORGED,
    request: { method: "GET", url: up.url("/never"), headers: [], body: null, redirect: "follow" },
    origin: { binding: "INBOX", id: "0".repeat(64) },
    queue: null,
    options: {},
    ...overrides,
  };
}

describe("a binding holder cannot forge, replay or oversize", () => {
  let w;
  before(async () => {
    w = await worker();
  });
  after(async () => w?.dispose());

  test("FetchOrchestrator: complete, forget, undelivered and recover with a request's id but not its token are refused and logged; the real result arrives once", async () => {
    const box = origin(w);
    const key = `orch-${box.name}`;
    const id = await startOk(box, up.url("/slow", { delay: 1500, key }), { flow: "orchestrated", timeout_ms: 5000 });
    const stats = (await call(w, "FETCH_ORCHESTRATOR", "singleton", "stats")).ok;
    const item = stats.items.find((i) => i.id === id);
    assert.ok(item, "stats list the request");
    assert.ok(!("token" in item) && !JSON.stringify(item).includes("token"), "stats show nothing that grants authority");
    const ticket = { id, token: FORGED };
    const queued = { id, origin: { binding: "INBOX", id: await box.id() }, queue: { binding: "FETCH_ORCHESTRATOR", shard: "singleton" } };
    for (const [method, args] of [["complete", [[ticket]]], ["forget", [ticket]], ["undelivered", [ticket, forgedResult(id)]], ["recover", [job(queued)]]]) {
      const r = await call(w, "FETCH_ORCHESTRATOR", "singleton", method, ...args);
      assert.equal(r.error?.handler?.kind, "forbidden", `${method}: ${JSON.stringify(r)}`);
      await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch refused FetchOrchestrator.${method} request ${id}`)), { what: `the log line of ${method}'s refusal` });
    }
    const other = await call(w, "FETCH_ORCHESTRATOR", "singleton", "undelivered", { id: "someone-else", token: FORGED }, forgedResult(id));
    assert.equal(other.error?.handler?.kind, "forbidden", "a result under another request's ticket");
    const replay = await call(w, "FETCH_ORCHESTRATOR", "singleton", "enqueue", [job(queued)]);
    assert.equal(replay.error?.handler?.kind, "conflict", `an enqueue of the queued id with another token: ${JSON.stringify(replay)}`);
    const r = await onlyResult(box, "the real result");
    assert.equal(r.status, 200, "the real response, not the forged 299");
    assert.equal(up.count(key), 1, "fetched once");
    assert.ok((await call(w, "FETCH_ORCHESTRATOR", "singleton", "stats")).ok.refused >= 6, "refusals are counted in stats");
  });

  test("an origin: a delivery with a forged token is refused and logged; the real result arrives once", async () => {
    const box = origin(w);
    const id = await startOk(box, up.url("/slow", { delay: 800 }), { timeout_ms: 5000 });
    const r = await box.rpc("__proxyFetchDeliver")([{ result: forgedResult(id), token: FORGED }]);
    assert.equal(r.ok?.[0]?.Err?.kind, "forbidden", JSON.stringify(r));
    await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch refused origin.__proxyFetchDeliver request ${id}`)), { what: "the log line of the refused delivery" });
    assert.equal((await onlyResult(box, "the real result")).status, 200);
  });

  test("FetchExecutor: a job beyond the start's limits, or for a URL outside the executor's policy, is never fetched, and the refusal is logged", async () => {
    const oversized = job({ request: { method: "GET", url: up.url("/oversized", { key: `ex-big-${process.pid}` }), headers: [], body: null, redirect: "follow" }, options: { max_body_bytes: 2 ** 40 } });
    const endless = job({ request: { method: "GET", url: up.url("/endless", { key: `ex-many-${process.pid}` }), headers: [], body: null, redirect: "follow" }, options: { retry: { max_attempts: 1000, base_delay_ms: 0, max_delay_ms: 0 } } });
    const elsewhere = job({ request: { method: "GET", url: up.url("/x", { key: `ex-host-${process.pid}` }).replace("127.0.0.1", "localhost"), headers: [], body: null, redirect: "follow" } });
    await w.env.FETCH_EXECUTOR.executeFetches([oversized, endless, elsewhere]);
    for (const j of [oversized, endless, elsewhere]) {
      await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch refused FetchExecutor job ${j.id}`)), { what: `the refusal of job ${j.id}` });
    }
    // Each job ends with a result its (made-up) origin cannot take: the executor is done.
    for (const j of [oversized, endless, elsewhere]) {
      await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch ${j.id}: result not delivered`)), { what: `the end of job ${j.id}` });
    }
    for (const k of ["ex-big", "ex-many", "ex-host"]) assert.equal(up.count(`${k}-${process.pid}`), 0, `${k}: the upstream was never asked`);
    assert.ok((await w.env.FETCH_EXECUTOR.health()).refused >= 3, "refusals are counted in health");
  });

  test("a start refuses at once what the executor's policy refuses, naming the entry to add; a binding of the wrong kind is refused too", async () => {
    const box = origin(w);
    const url = up.url("/x").replace("127.0.0.1", "localhost");
    const refused = await box.start(url, {});
    assert.equal(refused.error?.handler?.kind, "rejected", JSON.stringify(refused));
    assert.match(refused.error.message, /`http:\/\/localhost:\d+` is not allowed by the executor's PROXY_FETCH_ALLOW: add `http:\/\/localhost:\d+` to it/);
    const notService = await box.start(up.url("/x"), { executor_binding: "INBOX" });
    assert.match(notService.error?.message ?? "", /`INBOX` \(executor_binding\) is not a service binding/);
    const notNamespace = await box.start(up.url("/x"), { flow: "orchestrated", orchestrator_binding: "FETCH_EXECUTOR" });
    assert.match(notNamespace.error?.message ?? "", /`FETCH_EXECUTOR` \(orchestrator_binding\) is not a Durable Object namespace/);
    assert.deepEqual(await box.pending(), [], "nothing was stored");
  });

  test("a method written `get` is idempotent: its lost executor is replaced by dispatching it again", async () => {
    const box = origin(w);
    const key = `lower-${box.name}`;
    await startOk(box, { method: "get", url: up.url("/lower", { key }) }, { timeout_ms: 1000, backstop_grace_ms: 0, retry: { max_attempts: 1 }, executor_binding: "DYING_ONCE_EXECUTOR" });
    const r = await onlyResult(box, "the result of the dispatch again", 20000);
    assert.equal(r.status, 200, `not a Backstop: ${JSON.stringify(r)}`);
  });
});

describe("refusals are visible, not a flood", () => {
  test("refusals past 20 a minute are counted, not logged", async () => {
    const w = await worker();
    try {
      const box = origin(w);
      const id = await startOk(box, up.url("/slow", { delay: 3000 }), { timeout_ms: 10000 });
      for (let i = 0; i < 30; i++) {
        const r = await box.rpc("__proxyFetchDeliver")([{ result: forgedResult(id), token: FORGED }]);
        assert.equal(r.ok?.[0]?.Err?.kind, "forbidden", JSON.stringify(r));
      }
      const lines = () => w.logs.filter((l) => l.includes("proxy-fetch refused")).length;
      await waitFor(lines, { until: (n) => n >= 20, what: "the first 20 refusals logged" });
      assert.equal(lines(), 20, "the 21st to 30th refusals are not logged");
      assert.ok((await w.env.FETCH_EXECUTOR.health()).refused >= 30, "but all 30 are counted");
      assert.equal((await onlyResult(box, "the real result")).status, 200);
    } finally {
      await w.dispose();
    }
  });
});

describe("credentials stay with their origin", () => {
  test("a redirect to another allowed origin drops Authorization and Cookie; one to the same origin keeps them", async () => {
    const port = new URL(up.url("/")).port;
    const w = await worker({ PROXY_FETCH_ALLOW: `http://127.0.0.1:${port}, http://localhost:${port}` });
    try {
      const headers = [["authorization", "Bearer secret"], ["cookie", "session=1"], ["x-trace", "kept"]];
      const echoed = async (to, tag) => {
        const box = origin(w);
        await startOk(box, { method: "GET", url: up.url("/moved", { redirect: to }), headers }, { timeout_ms: 5000 }, tag);
        const r = await onlyResult(box, `the result through ${to}`);
        assert.equal(r.status, 200, JSON.stringify(r));
        return JSON.parse(r.text).headers;
      };
      const other = await echoed(up.url("/landed").replace("127.0.0.1", "localhost"), "other");
      assert.equal(other.authorization, undefined, "Authorization is dropped on the way to another origin");
      assert.equal(other.cookie, undefined, "so is Cookie");
      assert.equal(other["x-trace"], "kept", "other headers go on");
      const same = await echoed(up.url("/landed"), "same");
      assert.equal(same.authorization, "Bearer secret", "the same origin keeps Authorization");
    } finally {
      await w.dispose();
    }
  });
});

describe("the executor's own limits", () => {
  test("PROXY_FETCH_MAX_BODY_BYTES caps what a job asks for", async () => {
    const w = await worker({ PROXY_FETCH_MAX_BODY_BYTES: "1000" });
    try {
      const box = origin(w);
      await startOk(box, up.url("/big", { bytes: 5000 }), { timeout_ms: 5000 });
      const r = await onlyResult(box, "the rejection");
      assert.equal(r.outcome, "Rejected");
      assert.match(r.text, /larger than max_body_bytes \(1000 bytes\)/);
      assert.deepEqual((await w.env.FETCH_EXECUTOR.health()).policy, { Ok: undefined });
    } finally {
      await w.dispose();
    }
  });

  test("a limit var that is not a number in range makes the executor refuse every job, saying why", async () => {
    const w = await worker({ PROXY_FETCH_MAX_ATTEMPTS: "lots" });
    try {
      const health = await w.env.FETCH_EXECUTOR.health();
      assert.match(health.policy.Err, /`PROXY_FETCH_MAX_ATTEMPTS` is `lots`: a number from 1 to 10/);
    } finally {
      await w.dispose();
    }
  });
});

describe("what a call to the executor may carry", () => {
  let w;
  before(async () => {
    const port = new URL(up.url("/")).port;
    // The same build as a worker of its own with no Durable Object bindings (and no queue: the
    // long path's queue has one consumer, the test worker): an executor whose worker lacks the
    // origin's and the orchestrator's bindings.
    const bare = optionsFromWrangler(`${root}/tests/proxy-worker`, {
      name: "bare-executor", durableObjects: {}, serviceBindings: {}, queueProducers: {}, queueConsumers: {},
      bindings: { PROXY_FETCH_ALLOW: `http://127.0.0.1:${port}` },
    });
    const bareExecutor = { name: "bare-executor", entrypoint: "FetchExecutorEntrypoint" };
    w = await worker({}, {
      peers: [bare],
      serviceBindings: { BARE_EXECUTOR: bareExecutor, STALE_EXECUTOR: { name: "driver", entrypoint: "StaleTermsExecutor" } },
      driverBindings: { BARE_EXECUTOR: bareExecutor },
    });
  });
  after(async () => w?.dispose());

  test("FetchExecutor: a call of more than 6 jobs is refused whole with a typed error, logged and counted; none of its jobs is fetched", async () => {
    const key = `seven-${process.pid}`;
    const jobs = Array.from({ length: 7 }, () => job({ request: { method: "GET", url: up.url("/seven", { key }), headers: [], body: null, redirect: "follow" } }));
    const refusedBefore = (await w.env.FETCH_EXECUTOR.health()).refused;
    await assert.rejects(async () => { await w.env.FETCH_EXECUTOR.executeFetches(jobs); }, /7 jobs in one call; at most 6: nothing fetched/);
    await waitFor(() => w.logs.some((l) => l.includes("proxy-fetch refused FetchExecutor.executeFetches a call of 7 jobs")), { what: "the log line of the refused call" });
    assert.equal((await w.env.FETCH_EXECUTOR.health()).refused, refusedBefore + 1, "counted once");
    // A call of 6 of them, after it, is fetched: the upstream counts only those.
    await w.env.FETCH_EXECUTOR.executeFetches(jobs.slice(0, 6));
    await waitFor(() => up.count(key), { until: (n) => n === 6, what: "the 6 jobs of the call that was taken" });
    await settle();
    assert.equal(up.count(key), 6, "none of the refused call's 7 jobs was fetched");
  });

  test("a start whose executor's worker lacks the origin's binding gets Err(MissingBinding) from proxy_fetch, in both flows, from the executor's terms: nothing stored, nothing fetched", async () => {
    for (const flow of ["direct", "orchestrated"]) {
      const box = origin(w);
      const key = `bare-${flow}-${box.name}`;
      const r = await box.start(up.url("/bare", { key }), { flow, executor_binding: "BARE_EXECUTOR" });
      assert.equal(r.error?.handler?.kind, "missing_binding", `${flow}: ${JSON.stringify(r)}`);
      assert.match(r.error.message, /the executor's worker has no binding `INBOX`/);
      assert.deepEqual(await box.pending(), [], `${flow}: nothing stored`);
      assert.equal(up.count(key), 0, `${flow}: nothing fetched`);
    }
    assert.deepEqual((await w.env.BARE_EXECUTOR.terms()).namespaces, [], "its terms name no Durable Object binding");
  });

  test("FetchExecutor.terms tells a binding holder its PROXY_FETCH_ALLOW and the names of its worker's Durable Object bindings, and nothing else of its configuration", async () => {
    const port = new URL(up.url("/")).port;
    const terms = await w.env.FETCH_EXECUTOR.terms();
    assert.deepEqual(Object.keys(terms).sort(), ["allow", "namespaces"]);
    assert.equal(terms.allow, `http://127.0.0.1:${port}`);
    assert.deepEqual([...terms.namespaces].sort(), ["CLOCK", "FETCH_ORCHESTRATOR", "INBOX"]);
  });

  test("a call refused as missing_binding after its start was answered (the executor's worker changed since its terms were learned): the handler gets Rejected with the refusal, nothing fetched", async () => {
    const box = origin(w);
    const key = `stale-${box.name}`;
    const started = await box.start({ method: "POST", url: up.url("/stale", { key }) }, { executor_binding: "STALE_EXECUTOR" });
    assert.ok(started.ok, JSON.stringify(started));
    const r = await onlyResult(box, "the refusal at the handler");
    assert.equal(r.outcome, "Rejected", JSON.stringify(r));
    assert.match(r.text, /the executor refused it: .*the executor's worker has no binding `INBOX`/);
    assert.deepEqual(await box.pending(), []);
    await settle();
    assert.equal(up.count(key), 0, "nothing fetched");
  });

  test("FetchExecutor: a call whose job names an origin binding the executor's worker lacks is refused (missing_binding), logged, and listed by health; nothing fetched", async () => {
    const key = `bare-call-${process.pid}`;
    const bare = job({ request: { method: "GET", url: up.url("/bare", { key }), headers: [], body: null, redirect: "follow" } });
    await assert.rejects(async () => { await w.env.BARE_EXECUTOR.executeFetches([bare]); }, /the executor's worker has no binding `INBOX`/);
    assert.deepEqual((await w.env.BARE_EXECUTOR.health()).missing_bindings, ["INBOX"]);
    await waitFor(() => w.logs.some((l) => l.includes("proxy-fetch refused FetchExecutor.executeFetches a call of 1 jobs") && l.includes("no binding `INBOX`")), { what: "the log line of the refusal" });
    await settle();
    assert.equal(up.count(key), 0, "nothing fetched");
  });
});

describe("the executor's byte budget", () => {
  test("a call that does not fit PROXY_FETCH_MAX_INFLIGHT_BYTES now is answered busy, and the origin sends it again later: both PUTs fetched once, neither failed", async () => {
    const w = await worker({ PROXY_FETCH_MAX_INFLIGHT_BYTES: "300000" });
    try {
      const body = { $bytes: Array.from({ length: 200 * 1024 }, (_, i) => i % 251) };
      const [a, b] = [origin(w), origin(w)];
      const keys = [`budget-a-${a.name}`, `budget-b-${b.name}`];
      // A holds its 200 KiB for the 1.2 s its upstream takes; B's 200 KiB does not fit beside it.
      await startOk(a, { method: "PUT", url: up.url("/slow", { delay: 1200, key: keys[0] }), body }, { timeout_ms: 5000, max_body_bytes: 300000 });
      const started = await b.start({ method: "PUT", url: up.url("/slow", { key: keys[1] }), body }, { timeout_ms: 5000, max_body_bytes: 300000 });
      assert.ok(started.ok, `B was started, not failed: ${JSON.stringify(started)}`);
      await waitFor(() => w.logs.some((l) => l.includes("proxy-fetch refused FetchExecutor.executeFetchesPacked a call of 1 jobs") && l.includes("PROXY_FETCH_MAX_INFLIGHT_BYTES (300000)")), { what: "the log line of B's first call, refused as busy" });
      for (const box of [a, b]) assert.equal((await onlyResult(box, `the result at ${box.name}`)).status, 200);
      for (const k of keys) assert.equal(up.count(k), 1, `${k} fetched once`);
      await waitFor(() => w.env.FETCH_EXECUTOR.health(), { until: (h) => h.in_flight_bytes === 0, what: "the budget given back" });
    } finally {
      await w.dispose();
    }
  });
});

describe("one crash policy for both flows", () => {
  test("direct: a handler that crashes its instance every time is stopped after a bounded number of runs, with a log line naming the request", async () => {
    const w = await worker();
    try {
      const box = origin(w);
      const id = await startOk(box, up.url("/crash-loop"), { timeout_ms: 500, backstop_grace_ms: 0, retry: { max_attempts: 1 } }, "panic-always");
      await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch ${id}: handler \`onResponse\` was started 5 times without finishing`)), { deadlineMs: 150000, what: "the log line that stops the handler" });
      await waitFor(async () => (await box.pending()).length === 0, { what: "the request settled at the origin" });
      const [r] = await box.results();
      assert.ok(r.deliveries <= 8, `the handler ran ${r.deliveries} times: 3 dispatches at most, then 5 counted runs`);
    } finally {
      await w.dispose();
    }
  });

  test("orchestrated: a handler that crashes its instance every time is stopped after a bounded number of runs, with a log line naming the request", async () => {
    const w = await worker();
    try {
      const box = origin(w);
      const id = await startOk(box, up.url("/crash-loop"), { flow: "orchestrated", timeout_ms: 500, backstop_grace_ms: 0, retry: { max_attempts: 1 } }, "panic-always");
      await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch ${id}: handler \`onResponse\` was started 5 times without finishing`)), { deadlineMs: 150000, what: "the log line that stops the handler" });
      await waitFor(async () => (await box.pending()).length === 0, { what: "the request settled at the origin" });
      const [r] = await box.results();
      assert.ok(r.deliveries <= 8, `the handler ran ${r.deliveries} times: 3 dispatches at most, then 5 counted runs`);
    } finally {
      await w.dispose();
    }
  });
});

// In a workerd of their own: their refusals would use up the log lines other tests look for
// (20 a minute per isolate).
describe("a binding holder cannot forge or malform packed calls", () => {
  let w;
  before(async () => {
    w = await worker();
  });
  after(async () => w?.dispose());

  test("an origin: a packed delivery with a forged token is refused and logged, a malformed packed call (not JSON, an unknown key, a body on a failed result or none on a response, JSON nested 100,000 deep, more than 1,000,000 values, a lone surrogate) is refused whole; the real result arrives once", async () => {
    const box = origin(w);
    const id = await startOk(box, up.url("/slow", { delay: 800 }), { timeout_ms: 5000 });
    const head = { request_id: id, status: 299, status_text: "forged", headers: [], url: "", attempts: 1, duration_ms: 1 };
    const packed = (delivery, body) => ({ json: JSON.stringify(delivery), ...(body ? { body: { $bytes: body } } : {}) });
    const deliver = box.rpc("__proxyFetchDeliverPacked");
    const r = await deliver([packed({ result: { Ok: head }, token: FORGED, again: false }, [1])]);
    assert.equal(r.ok?.[0]?.Err?.kind, "forbidden", JSON.stringify(r));
    await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch refused origin.__proxyFetchDeliver request ${id}`)), { what: "the log line of the refused delivery" });
    const failed = { Err: { request_id: id, kind: "Network", message: "forged", attempts: 1 } };
    for (const [what, item, message] of [
      ["not JSON", { json: "{", body: { $bytes: [1] } }, /field `\[0\]\.json`: EOF/],
      ["an unknown key", { ...packed({ result: { Ok: head }, token: FORGED, again: false }, [1]), extra: 1 }, /unknown field `extra`/],
      ["a body on a failed result", packed({ result: failed, token: FORGED, again: false }, [1]), /a failed result has no body/],
      ["a response without its body", packed({ result: { Ok: head }, token: FORGED, again: false }), /expected a Uint8Array/],
      ["a lone surrogate escaped in the JSON text", packed({ result: { Ok: head }, token: "\ud800", again: false }, [1]), /field `\[0\]\.json`: unexpected end of hex escape/],
      ["JSON nested 100,000 deep", { json: `{"result":{"Ok":{"deep":${"[".repeat(100_000)}`, body: { $bytes: [1] } }, /field `\[0\]\.json`: EOF while parsing a list at line 1 column 100024/],
      ["more than 1,000,000 values", { json: `{"deep":[${"0,".repeat(1_000_000)}0]}`, body: { $bytes: [1] } }, /argument `deliveries`: more than 1000000 nested values/],
      ["a lone surrogate in the JSON text", { json: `{"token":"${"\ud800"}"}`, body: { $bytes: [1] } }, /lone surrogate/],
    ]) {
      const refused = await deliver([item]);
      assert.equal(refused.error?.rpc?.kind, "BadArgument", `${what}: ${JSON.stringify(refused)}`);
      assert.match(refused.error.rpc.message, message, what);
    }
    await waitFor(() => w.logs.some((l) => l.includes("proxy-fetch refused origin.__proxyFetchDeliverPacked a delivery call")), { what: "the log line of a refused packed call" });
    assert.equal((await onlyResult(box, "the real result")).status, 200);
  });

  test("FetchExecutor: a packed call with a job that does not read as one (not JSON, an unknown field, a body in the JSON), of more than 6 jobs, or of more than 1,000,000 values is refused whole with bad_job and logged; a packed job outside the executor's policy is refused as an unpacked one is; nothing is fetched", async () => {
    const key = `ex-packed-${process.pid}`;
    const fine = job({ request: { method: "GET", url: up.url("/fine", { key }), headers: [], body: null, redirect: "follow" } });
    const item = (j) => ({ json: JSON.stringify(j) });
    for (const [what, bad, message] of [
      ["not JSON", { json: "<html>" }, /job \[1\]: expected value at line 1 column 1/],
      ["an unknown field", item({ ...job(), extra: 1 }), /job \[1\]: unknown field `extra`/],
      ["a body in the JSON", item(job({ request: { method: "POST", url: up.url("/x", { key }), headers: [], body: [1, 2], redirect: "follow" } })), /job \[1\]: the request's body is in the JSON text/],
    ]) {
      await assert.rejects(async () => { await w.env.FETCH_EXECUTOR.executeFetchesPacked([item(fine), bad]); }, (e) => {
        assert.match(e.message, message, what);
        return true;
      });
    }
    await waitFor(() => w.logs.some((l) => l.includes("proxy-fetch refused FetchExecutor.executeFetchesPacked a call of 2 jobs")), { what: "the log line of a refused packed call" });
    await assert.rejects(async () => { await w.env.FETCH_EXECUTOR.executeFetchesPacked(Array(7).fill(item(fine))); }, /7 jobs in one call; at most 6: nothing fetched/);
    await assert.rejects(async () => { await w.env.FETCH_EXECUTOR.executeFetchesPacked([{ json: `{"x":[${"0,".repeat(1_000_000)}0]}` }]); }, /more than 1000000 nested values/);
    const elsewhere = job({ request: { method: "GET", url: up.url("/x", { key }).replace("127.0.0.1", "localhost"), headers: [], body: null, redirect: "follow" } });
    await w.env.FETCH_EXECUTOR.executeFetchesPacked([item(elsewhere)]);
    await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch refused FetchExecutor job ${elsewhere.id}`)), { what: `the refusal of job ${elsewhere.id}` });
    await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch ${elsewhere.id}: result not delivered`)), { what: `the end of job ${elsewhere.id}` });
    assert.equal(up.count(key), 0, "the upstream was never asked");
  });
});
