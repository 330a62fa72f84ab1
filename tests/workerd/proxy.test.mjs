// proxy-fetch end to end in real workerd: the demo worker's Inbox (origin Durable Object) ->
// FetchOrchestrator -> FetchExecutorEntrypoint -> a local upstream server -> Inbox.onResponse.
// Each test uses its own Inbox, so tests share nothing but the orchestrator.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jsWorker, startWorker } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
process.on("exit", () => process.env.PF_DUMP && console.log(w?.logs.join("")));
before(async () => {
  up = await startUpstream();
  const demo = { scriptName: "proxy-fetch-demo", useSQLite: true };
  w = await startWorker("examples/demo", {
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: { INBOX: { className: "Inbox", ...demo }, FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...demo } },
    })],
    serviceBindings: { DEAD_EXECUTOR: { name: "driver", entrypoint: "DeadExecutor" } },
  });
});
after(async () => {
  await w?.dispose();
  await up?.close();
});

async function call(binding, name, method, ...args) {
  const res = await w.fetchPeer("driver", "http://driver/call", {
    method: "POST",
    body: JSON.stringify({ binding, name, method, args }),
  });
  return res.json();
}

let inboxes = 0;
/** A fresh Inbox for one test. */
function inbox() {
  const name = `inbox-${process.pid}-${++inboxes}`;
  const rpc = (method) => (...args) => call("INBOX", name, method, ...args);
  return {
    name,
    ids: [],
    start: (request, options = {}, tag = "") =>
      rpc("start")(typeof request === "string" ? { url: request } : request, options, tag),
    results: async () => (await rpc("results")()).ok,
    pending: async () => (await rpc("pending")()).ok,
    cancel: rpc("cancel"),
    deliver: rpc("__proxyFetchDeliver"),
  };
}

const FAST = { timeout_ms: 3000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 } };
const stats = async (shard = "singleton") => (await call("FETCH_ORCHESTRATOR", shard, "stats")).ok;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls the inbox until `n` results arrived (or `ms` passed), then returns them by tag. */
async function results(box, n = 1, ms = 15000) {
  const deadline = Date.now() + ms;
  let got = [];
  while (Date.now() < deadline) {
    got = await box.results();
    if (got.length >= n) break;
    await sleep(20);
  }
  return Object.fromEntries(got.map((r) => [r.tag || r.request_id, r]));
}

async function startOk(box, request, options = FAST, tag = "t") {
  const started = await box.start(request, options, tag);
  assert.ok(started.ok, `start failed: ${JSON.stringify(started.error)}`);
  box.ids.push(started.ok.request_id);
  return started.ok.request_id;
}

/** No pending record at the origin, and none of its requests left in the orchestrator's queue
 *  (a completion follows its delivery by a moment: wait up to 5 s for it). */
async function assertClean(box, shards = ["singleton"]) {
  assert.deepEqual(await box.pending(), [], "no pending record left at the origin");
  const mine = new Set(box.ids);
  for (const shard of shards) {
    let left = [];
    for (let i = 0; i < 100; i++) {
      left = (await stats(shard)).items.filter((e) => mine.has(e.id));
      if (left.length === 0) break;
      await sleep(50);
    }
    assert.deepEqual(left, [], `no queue entry left in ${shard}`);
  }
}

describe("results reach the origin's handler", () => {
  test("a successful fetch delivers the response once, and nothing is left in storage", async () => {
    const box = inbox();
    const started = (await box.start(up.url(`/hello/${box.name}`), FAST, "t")).ok;
    box.ids.push(started.request_id);
    const { t } = await results(box);
    assert.equal(t.request_id, started.request_id);
    assert.equal(t.outcome, "response");
    console.log(`end to end: origin held ${started.hold_ms} ms; handler ran ${t.arrived_at_ms - started.started_at_ms} ms after the start, upstream fetch took ${t.fetch_ms} ms`);
    assert.equal(t.status, 200);
    assert.equal(JSON.parse(t.text).path, `/hello/${box.name}`);
    assert.equal(t.deliveries, 1);
    await assertClean(box);
  });

  test("a plain URL string through the worker's HTTP route", async () => {
    const box = inbox();
    const res = await w.fetch(`/inbox/${box.name}/fetch`, { method: "POST", body: JSON.stringify({ url: up.url(`/plain/${box.name}`), tag: "p" }) });
    assert.equal(res.status, 200);
    const { p } = await results(box);
    assert.equal(p.status, 200);
  });

  test("404 and 500 are responses, not errors", async () => {
    const box = inbox();
    await startOk(box, up.url(`/${box.name}`, { status: 404 }), FAST, "404");
    await startOk(box, up.url(`/${box.name}`, { status: 500 }), FAST, "500");
    const r = await results(box, 2);
    assert.equal(r["404"].outcome, "response");
    assert.equal(r["404"].status, 404);
    assert.equal(r["500"].status, 500);
    assert.equal(r["500"].attempts, 1, "500 is not retried");
  });

  test("request with method, headers and a JSON body reaches the upstream intact", async () => {
    const box = inbox();
    const body = [...Buffer.from(JSON.stringify({ hello: "world" }))];
    await startOk(box, { method: "POST", url: up.url(`/echo/${box.name}`), headers: [["x-test", "yes"], ["content-type", "application/json"]], body: { $bytes: body } });
    const echo = JSON.parse((await results(box)).t.text);
    assert.equal(echo.method, "POST");
    assert.equal(echo.headers["x-test"], "yes");
    assert.equal(Buffer.from(echo.body, "base64").toString(), '{"hello":"world"}');
  });

  test("redirects are followed by default and returned as they are with redirect: manual", async () => {
    const box = inbox();
    const target = `/landed/${box.name}`;
    await startOk(box, { url: up.url("/moved", { redirect: target }) }, FAST, "follow");
    await startOk(box, { url: up.url("/moved", { redirect: target }), redirect: "manual" }, FAST, "manual");
    await startOk(box, { url: up.url("/moved", { redirect: target }), redirect: "error" }, FAST, "error");
    const r = await results(box, 3);
    assert.equal(r.follow.status, 200);
    assert.equal(JSON.parse(r.follow.text).path, target);
    assert.equal(r.manual.status, 302);
    assert.equal(r.error.outcome, "Network", "redirect: error makes a redirect a failed fetch");
  });

  test("an explicit origin_binding is used instead of the inferred one", async () => {
    const box = inbox();
    await startOk(box, up.url(`/explicit/${box.name}`), { ...FAST, origin_binding: "INBOX" });
    assert.equal((await results(box)).t.status, 200);
  });

  test("binary body round trip: every byte value intact", async () => {
    const box = inbox();
    await startOk(box, up.url(`/bin/${box.name}`, { bytes: 256 * 4 }));
    const { t } = await results(box);
    assert.equal(t.body_len, 1024);
    assert.equal(t.body_checksum, 4 * (255 * 256) / 2);
  });

  test("a 10 MiB body through the whole path arrives intact", async () => {
    const box = inbox();
    const n = 10 * 1024 * 1024;
    await startOk(box, up.url(`/big/${box.name}`, { bytes: n }), { ...FAST, timeout_ms: 20000 });
    const { t } = await results(box, 1, 30000);
    assert.equal(t.outcome, "response");
    assert.equal(t.body_len, n);
    let sum = 0;
    for (let i = 0; i < n; i++) sum = (sum + (i % 256)) >>> 0;
    assert.equal(t.body_checksum, sum);
  });

  test("ten parallel requests each get exactly one result", async () => {
    const box = inbox();
    await Promise.all([...Array(10)].map((_, i) => startOk(box, up.url(`/p/${box.name}/${i}`, { delay: 50 }), FAST, `p${i}`)));
    const r = await results(box, 10);
    assert.equal(Object.keys(r).length, 10);
    for (const x of Object.values(r)) assert.equal(x.deliveries, 1);
    await assertClean(box);
  });
});

describe("errors are delivered, typed, exactly once", () => {
  test("network error (connection reset) after retries", async () => {
    const box = inbox();
    await startOk(box, up.url(`/reset/${box.name}`, { reset: 1, key: `reset-${box.name}` }));
    const { t } = await results(box);
    assert.equal(t.outcome, "Network");
    assert.equal(t.attempts, 3);
    assert.equal(up.count(`reset-${box.name}`), 3, "GET is retried on network errors");
  });

  test("timeout aborts the fetch and delivers Timeout", async () => {
    const box = inbox();
    await startOk(box, up.url(`/hang/${box.name}`, { hang: 1 }), { ...FAST, timeout_ms: 300 });
    const { t } = await results(box);
    assert.equal(t.outcome, "Timeout");
    await assertClean(box);
  });

  test("5xx gateway statuses are retried until success", async () => {
    const box = inbox();
    const key = `flaky-${box.name}`;
    await startOk(box, up.url(`/flaky`, { fail: 2, key }));
    const { t } = await results(box);
    assert.equal(t.status, 200);
    assert.equal(t.attempts, 3);
    assert.equal(up.count(key), 3);
  });

  test("4xx is never retried, and POST is not retried on 503", async () => {
    const box = inbox();
    await startOk(box, up.url(`/x`, { status: 400, key: `400-${box.name}` }), FAST, "400");
    await startOk(box, { method: "POST", url: up.url(`/x`, { status: 503, key: `post-${box.name}` }) }, FAST, "post");
    const r = await results(box, 2);
    assert.equal(r["400"].attempts, 1);
    assert.equal(r.post.attempts, 1);
    assert.equal(up.count(`400-${box.name}`), 1);
    assert.equal(up.count(`post-${box.name}`), 1);
  });

  test("429 Retry-After is honoured before the next attempt", async () => {
    const box = inbox();
    const key = `429-${box.name}`;
    await startOk(box, up.url(`/limited`, { fail: 1, failStatus: 429, header: "retry-after:1", key }), { ...FAST, retry: { max_attempts: 2, base_delay_ms: 10, max_delay_ms: 5000 } });
    const { t } = await results(box);
    assert.equal(t.status, 200);
    const [first, second] = up.times(key);
    assert.ok(second - first >= 950, `second attempt waited ${second - first} ms, Retry-After asked 1000`);
  });

  test("a body over max_body_bytes is rejected with a clear error", async () => {
    const box = inbox();
    await startOk(box, up.url(`/big/${box.name}`, { bytes: 5000 }), { ...FAST, max_body_bytes: 1000 });
    const { t } = await results(box);
    assert.equal(t.outcome, "Rejected");
    assert.match(t.text, /larger than max_body_bytes \(1000 bytes\)/);
  });

  test("allow-list, bad URL and missing bindings are refused at once, nothing stored", async () => {
    const box = inbox();
    const denied = await box.start({ url: "http://127.0.0.1:1/x" }, { allowed_hosts: ["api.example.com"] }, "x");
    assert.match(denied.error.message, /rejected by policy: host `127.0.0.1` is not in allowed_hosts/);
    const bad = await box.start({ url: "not a url" }, {}, "x");
    assert.match(bad.error.message, /invalid request: `not a url` is not a URL/);
    const noOrch = await box.start({ url: up.url("/") }, { orchestrator_binding: "NOPE" }, "x");
    assert.match(noOrch.error.message, /`NOPE` is not in env; .*ProxyFetchOptions::orchestrator_binding/);
    const noOrigin = await box.start({ url: up.url("/") }, { origin_binding: "WRONG" }, "x");
    assert.match(noOrigin.error.message, /`WRONG` is not in env; .*ProxyFetchOptions::origin_binding/);
    await assertClean(box);
  });

  test("under an allow-list, redirects are followed hop by hop and refused off the list", async () => {
    const box = inbox();
    const listed = { ...FAST, allowed_hosts: ["127.0.0.1"] };
    const offList = up.url("/elsewhere").replace("127.0.0.1", "localhost");
    await startOk(box, up.url("/moved", { redirect: `/landed/${box.name}` }), listed, "inside");
    await startOk(box, up.url("/moved", { redirect: offList, key: `off-${box.name}` }), listed, "outside");
    const r = await results(box, 2);
    assert.equal(r.inside.status, 200);
    assert.equal(JSON.parse(r.inside.text).path, `/landed/${box.name}`);
    assert.equal(r.outside.outcome, "Rejected");
    assert.match(r.outside.text, /redirect to host `localhost` is not in allowed_hosts/);
    assert.equal(up.count("/elsewhere"), 0, "the off-list host was never fetched");
  });

  test("a missing executor binding is delivered to the handler as a Dispatch error", async () => {
    const box = inbox();
    await startOk(box, up.url("/"), { ...FAST, executor_binding: "NO_EXECUTOR" });
    const { t } = await results(box);
    assert.equal(t.outcome, "Dispatch");
    assert.match(t.text, /executor `NO_EXECUTOR` not reached: no binding `NO_EXECUTOR`/);
    await assertClean(box);
  });
});

describe("exactly once, across the races", () => {
  test("executor dies mid-request: the backstop fires once; a late success is dropped", async () => {
    const box = inbox();
    const id = await startOk(box, up.url("/"), { timeout_ms: 200, backstop_grace_ms: 300, retry: { max_attempts: 1 }, executor_binding: "DEAD_EXECUTOR" });
    const { t } = await results(box, 1, 20000);
    assert.equal(t.outcome, "Backstop");
    assert.equal(t.request_id, id);
    const late = await box.deliver({ Ok: { request_id: id, status: 200, status_text: "OK", headers: [], body: { $bytes: [] }, url: "", attempts: 1, duration_ms: 1 } });
    assert.equal(late.ok, "Duplicate");
    assert.equal((await results(box)).t.deliveries, 1);
    await assertClean(box);
  });

  test("a duplicate delivery is acknowledged and dropped", async () => {
    const box = inbox();
    const id = await startOk(box, up.url("/"));
    await results(box);
    const again = await box.deliver({ Err: { request_id: id, kind: "Network", message: "dup", attempts: 1 } });
    assert.equal(again.ok, "Duplicate");
    const { t } = await results(box);
    assert.equal(t.outcome, "response");
    assert.equal(t.deliveries, 1);
  });

  test("a result for an unknown request id is rejected", async () => {
    const box = inbox();
    const r = await box.deliver({ Err: { request_id: "no-such-id", kind: "Network", message: "?", attempts: 1 } });
    assert.deepEqual(r.error.handler, { kind: "unknown_request", message: "no proxy fetch no-such-id is pending here" });
  });

  test("a malformed result is a typed error and the origin stays healthy", async () => {
    const box = inbox();
    const r = await box.deliver({ Maybe: 1 });
    assert.equal(r.error.rpc.kind, "BadArgument");
    assert.equal(r.error.rpc.method, "__proxyFetchDeliver");
    const id = await startOk(box, up.url("/slow-enough", { delay: 300 }), FAST, "real");
    const notBytes = await box.deliver({ Ok: { request_id: id, status: 200, status_text: "OK", headers: [], body: "text", url: "", attempts: 1, duration_ms: 1 } });
    assert.match(notBytes.error.rpc.message, /field `Ok.body`: expected a Uint8Array/);
    assert.equal((await results(box)).real.status, 200, "the malformed result did not consume the request");
    await startOk(box, up.url("/after-garbage"));
    assert.equal((await results(box, 2)).t.status, 200);
  });

  test("cancel during the fetch: Cancelled once, the late response dropped", async () => {
    const box = inbox();
    const key = `cancel-${box.name}`;
    const id = await startOk(box, up.url("/slow", { delay: 1200, key }));
    assert.deepEqual((await box.cancel(id)).ok, true);
    assert.deepEqual((await box.cancel(id)).ok, false, "second cancel finds nothing to cancel");
    const { t } = await results(box);
    assert.equal(t.outcome, "Cancelled");
    while (up.count(key) < 1) await sleep(20);
    await sleep(1500);
    const after = (await results(box)).t;
    assert.equal(after.outcome, "Cancelled");
    assert.equal(after.deliveries, 1);
    await assertClean(box);
  });

  test("a failing handler is reported with the request id and breaks nothing", async () => {
    const box = inbox();
    const id = await startOk(box, up.url("/"), FAST, "fail-handler");
    await results(box);
    const logged = () => w.logs.join("").includes(`proxy-fetch ${id}: handler \`onResponse\` failed: demo: this handler fails on purpose`);
    for (let i = 0; i < 100 && !logged(); i++) await sleep(20);
    assert.ok(logged(), "the failure is logged with the request id");
    await startOk(box, up.url("/"), FAST, "next");
    assert.equal((await results(box, 2)).next.status, 200);
    await assertClean(box);
  });
});

describe("the origin is not held, the queue is observable", () => {
  test("the origin serves other calls while its fetch is in flight; stats show it queued", async () => {
    const box = inbox();
    const key = `inflight-${box.name}`;
    const id = await startOk(box, up.url(`/slow/${box.name}`, { delay: 800, key }));
    while (up.count(key) < 1) await sleep(10);
    assert.deepEqual(await box.pending(), [id], "the origin answers while the upstream is still busy");
    assert.deepEqual(await box.results(), []);
    const s = await stats();
    const entry = s.items.find((e) => e.id === id);
    assert.ok(entry, "the orchestrator lists the request");
    assert.ok(s.pending >= 1 && s.in_flight >= 1 && s.oldest_age_ms >= 0);
    assert.match(entry.url, /\/slow\//);
    assert.equal((await results(box)).t.status, 200);
    await assertClean(box);
  });

  test("100 concurrent requests through a 4-shard orchestrator: all delivered once, storage empty", async () => {
    const box = inbox();
    const shards = ["singleton-0", "singleton-1", "singleton-2", "singleton-3"];
    const ids = await Promise.all([...Array(100)].map((_, i) =>
      startOk(box, up.url(`/many/${box.name}/${i}`, { delay: 20 }), { ...FAST, shards: 4 }, `m${i}`)));
    assert.equal(new Set(ids).size, 100);
    const r = await results(box, 100, 30000);
    assert.equal(Object.keys(r).length, 100);
    assert.ok(Object.values(r).every((x) => x.deliveries === 1 && x.status === 200));
    const used = await Promise.all(shards.map(async (s) => (await stats(s)).pending));
    assert.deepEqual(used, [0, 0, 0, 0]);
    await assertClean(box, shards);
  });
});
