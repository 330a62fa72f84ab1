// The long path end to end in real workerd: the test worker's Inbox (an origin Durable Object)
// -> Miniflare's local queue (producer binding PROXY_FETCH_LONG, consumer: proxy-fetch's own, in
// the same worker, batch size 6, batch timeout 0, 3 retries, from tests/proxy-worker/wrangler.toml)
// -> __proxyFetchClaim at the origin -> a local upstream server -> __proxyFetchDeliver ->
// Inbox.onResponse. The queue hooks (a duplicate message, a consumer that dies after its claim or
// whose invocation throws mid-fetch, a delivery that fails, a message lost in the queue, a
// failing send()) live in tests/proxy-worker/src/main.js only. The restart test runs a workerd of
// its own with persisted storage.
//
// Local workerd enforces neither the 30 s waitUntil limit nor the consumer's 15-minute wall clock
// (docs/long-fetches.md, section 2): the 40 s test shows the long path carries a fetch the short
// path could not in production; it does not show production's limits. Miniflare's broker has one
// batch per queue in flight with a batch timeout of 0, so these tests run one after another.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jsWorker, settle, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
process.on("exit", () => process.env.PF_DUMP && console.log(w?.logs.join("")));

/** The test worker with its driver, in a workerd of its own (`shared`: Miniflare options). */
function startLongWorker(shared = {}) {
  const worker = { scriptName: "proxy-test-worker", useSQLite: true };
  return startWorker("tests/proxy-worker", {
    bindings: {
      PROXY_FETCH_ALLOW: `http://127.0.0.1:${new URL(up.url("/")).port}`,
      PROXY_FETCH_QUEUE: "proxy-test-pf-long",
    },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: { INBOX: { className: "Inbox", ...worker } },
    })],
    shared,
  });
}

before(async () => {
  up = await startUpstream();
  w = await startLongWorker();
});
after(async () => {
  await w?.dispose();
  await up?.close();
});

async function call(binding, name, method, ...args) {
  return callIn(w, binding, name, method, ...args);
}

async function callIn(worker, binding, name, method, ...args) {
  const res = await worker.fetchPeer("driver", "http://driver/call", {
    method: "POST",
    body: JSON.stringify({ binding, name, method, args }),
  });
  return res.json();
}

function must(answer, what) {
  if (answer.error !== undefined) throw new Error(`${what} failed: ${JSON.stringify(answer.error)}`);
  return answer.ok;
}

let boxes = 0;
function origin(worker = null) {
  const name = `long-${process.pid}-${++boxes}`;
  const rpc = (method) => (...args) => (worker ? callIn(worker, "INBOX", name, method, ...args) : call("INBOX", name, method, ...args));
  return {
    name,
    start: (request, options = {}, tag = "") => rpc("start")(typeof request === "string" ? { url: request } : request, options, tag),
    results: async () => must(await rpc("results")(), `${name}.results`),
    pending: async () => must(await rpc("pending")(), `${name}.pending`),
    rpc,
  };
}

const byTag = (list) => Object.fromEntries(list.map((r) => [r.tag || r.request_id, r]));

async function results(box, n = 1, deadlineMs = 20_000) {
  const got = await waitFor(() => box.results(), { until: (r) => r.length >= n, deadlineMs, what: `${n} result(s) at ${box.name}` });
  return byTag(got);
}

/** Exactly once: `n` results, the settle window, then exactly `n` filed, each delivered once. */
async function resultsOnce(box, n = 1, deadlineMs = 20_000) {
  await results(box, n, deadlineMs);
  await settle();
  const got = await box.results();
  const seen = JSON.stringify(got.map((r) => ({ tag: r.tag, id: r.request_id, deliveries: r.deliveries, outcome: r.outcome })));
  assert.equal(got.length, n, `exactly ${n} result(s) at ${box.name}: ${seen}`);
  for (const r of got) assert.equal(r.deliveries, 1, `${r.tag || r.request_id} reached its handler once: ${seen}`);
  return byTag(got);
}

async function startOk(box, request, options, tag = "t") {
  const started = await box.start(request, options, tag);
  assert.ok(started.ok, `start failed: ${JSON.stringify(started.error)}`);
  return started.ok.request_id;
}

async function assertClean(box) {
  await waitFor(() => box.pending(), { until: (p) => p.length === 0, deadlineMs: 5000, what: `no pending record left at ${box.name}` });
}

const LONG = { path: "long", timeout_ms: 3000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 } };
const bytes = (n, seed = 7) => Array.from({ length: n }, (_, i) => (i * 31 + seed) % 256);
const sha256 = (array) => createHash("sha256").update(Buffer.from(array)).digest("hex");

test("auto path: an upstream that answers after 40 s, timeout_ms 45000, reaches the handler as a 200, once (local workerd enforces no 30 s waitUntil limit: see the file's header)", async () => {
  const box = origin();
  const key = `slow40-${box.name}`;
  const began = Date.now();
  const id = await startOk(box, up.url("/slow", { delay: 40_000, key }), { timeout_ms: 45_000 });
  const { t } = await resultsOnce(box, 1, 70_000);
  const took = Date.now() - began;
  console.log(`long path, 40 s upstream: handler ran ${took} ms after the start; upstream fetch took ${t.fetch_ms} ms`);
  assert.equal(t.request_id, id);
  assert.equal(t.outcome, "response");
  assert.equal(t.status, 200);
  assert.equal(t.attempts, 1);
  assert.ok(t.fetch_ms >= 40_000, `the fetch took ${t.fetch_ms} ms`);
  assert.equal(up.count(key), 1, "the upstream was asked once");
  await assertClean(box);
});

test("no queue binding: LongPathUnavailable at the start (auto with a long timeout, and path: long), nothing stored; orchestrated + long is refused", async () => {
  const box = origin();
  const auto = await box.start(up.url("/never"), { timeout_ms: 45_000, queue_binding: "NO_SUCH_QUEUE" }, "x");
  assert.equal(auto.error?.handler?.kind, "long_path_unavailable", JSON.stringify(auto));
  assert.match(auto.error.message, /timeout_ms 45000 needs the queue consumer .* at most 25000 ms.*no queue binding `NO_SUCH_QUEUE`/);
  const forced = await box.start(up.url("/never"), { path: "long", timeout_ms: 1000, queue_binding: "NO_SUCH_QUEUE" }, "x");
  assert.equal(forced.error?.handler?.kind, "long_path_unavailable", JSON.stringify(forced));
  const orchestrated = await box.start(up.url("/never"), { flow: "orchestrated", timeout_ms: 45_000 }, "x");
  assert.equal(orchestrated.error?.handler?.kind, "invalid_options");
  assert.match(orchestrated.error.message, /option `path`: the long path .* direct flow only/);
  const short = await box.start(up.url("/never"), { path: "short", timeout_ms: 45_000 }, "x");
  assert.match(short.error.message, /option `timeout_ms`: 45000 is outside 1 \.\.= 25000/);
  assert.deepEqual(await box.pending(), [], "nothing stored");
  assert.equal(up.count("/never"), 0);
  await settle();
  assert.deepEqual(await box.results(), [], "no handler ran");
});

test("the same message delivered twice with the first and once more after the result: the upstream is asked once and the handler runs once", async () => {
  const box = origin();
  const key = `dup-${box.name}`;
  const id = await startOk(box, up.url("/dup", { key, "pf-dup": 1, delay: 300 }), LONG);
  const { t } = await results(box, 1);
  assert.equal(t.status, 200);
  must(await box.rpc("resendLongJob")(id), "resendLongJob");
  await waitFor(async () => must(await box.rpc("longMessages")(id), "longMessages"), { until: (n) => n >= 3, what: `3 messages of ${id} at the consumer` });
  await resultsOnce(box);
  assert.equal(up.count(key), 1, "fetched once");
  await assertClean(box);
});

test("the consumer dies after its claim: a GET is fetched again and delivered once; a POST gets Backstop at once and reached the upstream once", async () => {
  const box = origin();
  const getKey = `die-get-${box.name}`;
  const postKey = `die-post-${box.name}`;
  await startOk(box, up.url("/die", { key: getKey, "pf-die-after-claim": 1 }), LONG, "get");
  await startOk(box, { method: "POST", url: up.url("/die", { key: postKey, "pf-die-after-claim": 1 }), body: { $bytes: bytes(100) } }, LONG, "post");
  const { get, post } = await resultsOnce(box, 2);
  assert.equal(get.outcome, "response");
  assert.equal(get.status, 200);
  assert.equal(up.count(getKey), 2, "the GET was fetched by the dead consumer and again");
  assert.equal(post.outcome, "Backstop");
  assert.match(post.text, /the upstream may have received the request/);
  assert.equal(up.count(postKey), 1, "the POST was sent once");
  await assertClean(box);
});

test("request bodies of 100 B, 200 KB and 700 KiB reach an echo upstream intact (the two larger ones through the claim), each delivered once", async () => {
  const box = origin();
  const sizes = { small: 100, kb200: 200_000, kib700: 700 * 1024 };
  const sent = {};
  for (const [tag, n] of Object.entries(sizes)) {
    const body = bytes(n, n % 251);
    sent[tag] = { length: n, sha256: sha256(body) };
    await startOk(box, { method: "POST", url: up.url("/echo", { key: `${tag}-${box.name}` }), body: { $bytes: body } }, LONG, tag);
  }
  const got = await resultsOnce(box, 3);
  for (const tag of Object.keys(sizes)) {
    assert.equal(got[tag].status, 200, tag);
    assert.deepEqual(up.bodies(`${tag}-${box.name}`), [sent[tag]], `${tag}: the upstream got the body once, intact`);
  }
  const claimed = w.logs.join("").match(/body is missing/);
  assert.equal(claimed, null, "no body went missing");
  await assertClean(box);
});

test("an upstream that answers 502 then 200: the consumer retries and the handler gets the 200 with attempts 2", async () => {
  const box = origin();
  const key = `flaky-${box.name}`;
  await startOk(box, up.url("/flaky", { key, fail: 1, failStatus: 502 }), LONG);
  const { t } = await resultsOnce(box);
  assert.equal(t.status, 200);
  assert.equal(t.attempts, 2);
  assert.equal(up.count(key), 2);
  await assertClean(box);
});

test("the consumer cannot deliver (the origin unreachable for its deliveries): the origin's alarm sends the GET again, which is delivered once; the POST gets Backstop, sent once", async () => {
  const box = origin();
  const getKey = `undeliverable-get-${box.name}`;
  const postKey = `undeliverable-post-${box.name}`;
  const options = { path: "long", timeout_ms: 2000, backstop_grace_ms: 0, retry: { max_attempts: 1 } };
  await startOk(box, up.url("/lost", { key: getKey, "pf-undeliverable": 1 }), options, "get");
  await startOk(box, { method: "POST", url: up.url("/lost", { key: postKey, "pf-undeliverable": 1 }) }, options, "post");
  // The claim moves the due time to the claimed window's end: 2 s of fetch + 15 s of delivery reserve.
  const { get, post } = await resultsOnce(box, 2, 45_000);
  assert.equal(get.outcome, "response");
  assert.equal(get.status, 200);
  assert.equal(up.count(getKey), 2, "the GET was fetched twice: by the consumer that could not deliver, and again");
  assert.equal(post.outcome, "Backstop");
  assert.match(post.text, /the upstream may have received the request/);
  assert.equal(up.count(postKey), 1, "the POST was sent once");
  assert.match(w.logs.join(""), /result not delivered after 5 tries/);
  await assertClean(box);
});

test("forged claims are refused and logged and change nothing: a wrong token is forbidden, an unknown id is Done, more than 64 claims are refused whole; the real result arrives once", async () => {
  const box = origin();
  const key = `forged-claim-${box.name}`;
  const id = await startOk(box, up.url("/forged", { key, delay: 1500 }), LONG, "real");
  const claim = box.rpc("__proxyFetchClaim");
  const wrong = must(await claim([{ id, token: "f".repeat(32), attempts: 1 }]), "claim with a wrong token");
  assert.equal(wrong[0].Err?.kind, "forbidden", JSON.stringify(wrong));
  const unknown = must(await claim([{ id: "nobody~0", token: "0".repeat(32), attempts: 2 }]), "claim of an unknown id");
  assert.deepEqual(unknown, [{ Ok: "Done" }]);
  const many = await claim(Array.from({ length: 65 }, () => ({ id, token: "f".repeat(32), attempts: 1 })));
  assert.equal(many.error?.rpc?.kind, "BadArgument", JSON.stringify(many));
  assert.match(w.logs.join(""), /does not carry the request's token/);
  const { real } = await resultsOnce(box);
  assert.equal(real.status, 200);
  assert.equal(up.count(key), 1, "fetched once");
  await assertClean(box);
});

test("a job lost in the queue (its first message acknowledged unrun): the origin's alarm sends it again after queue_wait_ms and the backstop time, a GET and a POST alike; each fetched once, delivered once", async () => {
  const box = origin();
  const getKey = `drop-get-${box.name}`;
  const postKey = `drop-post-${box.name}`;
  const options = { path: "long", timeout_ms: 1000, queue_wait_ms: 1000, backstop_grace_ms: 0, retry: { max_attempts: 1 } };
  const began = Date.now();
  const getId = await startOk(box, up.url("/drop", { key: getKey, "pf-drop": 1 }), options, "get");
  const postId = await startOk(box, { method: "POST", url: up.url("/drop", { key: postKey, "pf-drop": 1 }), body: { $bytes: bytes(100) } }, options, "post");
  // Due: queue_wait_ms 1 s + the attempt's 1 s + the long path's 15 s delivery reserve.
  const { get, post } = await resultsOnce(box, 2, 45_000);
  for (const [r, key] of [[get, getKey], [post, postKey]]) {
    assert.equal(r.outcome, "response", `${r.tag}: ${r.text.slice(0, 200)}`);
    assert.equal(r.status, 200);
    assert.equal(up.count(key), 1, `${r.tag}: fetched once`);
    assert.ok(up.times(key)[0] - began >= 17_000, `${r.tag} was fetched ${up.times(key)[0] - began} ms after the start, not before its due time`);
  }
  assert.equal(must(await box.rpc("longMessages")(getId), "longMessages"), 2, "the GET's message came twice: the lost one and the alarm's");
  assert.equal(must(await box.rpc("longMessages")(postId), "longMessages"), 2, "the POST's message came twice: the lost one and the alarm's");
  await assertClean(box);
});

test("send() failing at the start: proxy_fetch returns Err(Dispatch), nothing stored, nothing fetched, no handler runs", async () => {
  const box = origin();
  const key = `send-fails-${box.name}`;
  const started = await box.start(up.url("/send-fails", { key, "pf-send-fails": 1 }), LONG, "x");
  assert.equal(started.error?.handler?.kind, "dispatch", JSON.stringify(started));
  assert.match(started.error.message, /queue `PROXY_FETCH_LONG`: .*injected: the queue's send\(\) fails/);
  assert.deepEqual(await box.pending(), [], "no record");
  assert.deepEqual(must(await box.rpc("storageKeys")("proxy-fetch:"), "storageKeys"), [], "nothing of it stored");
  await settle();
  assert.equal(up.count(key), 0, "nothing fetched");
  assert.deepEqual(await box.results(), [], "no handler ran");
});

test("the consumer's invocation throws mid-fetch, once the upstream answered it: the queue delivers the batch again; the GET is delivered once with its 200 (fetched at most 3 times, once per claim), the POST gets Backstop and reached the upstream once", async () => {
  const box = origin();
  const getKey = `throw-get-${box.name}`;
  const postKey = `throw-post-${box.name}`;
  const getId = await startOk(box, up.url("/throw", { key: getKey, "pf-throw": 1, delay: 300 }), LONG, "get");
  const postId = await startOk(box, { method: "POST", url: up.url("/throw", { key: postKey, "pf-throw": 1, delay: 300 }), body: { $bytes: bytes(100) } }, LONG, "post");
  const { get, post } = await resultsOnce(box, 2);
  assert.match(w.logs.join(""), /injected: the consumer's invocation throws mid-fetch/);
  assert.ok(must(await box.rpc("longMessages")(getId), "longMessages") >= 2, "the GET's message came again after the throw");
  assert.ok(must(await box.rpc("longMessages")(postId), "longMessages") >= 2, "the POST's message came again after the throw");
  assert.equal(get.outcome, "response", get.text.slice(0, 200));
  assert.equal(get.status, 200);
  assert.equal(post.outcome, "Backstop", post.text.slice(0, 200));
  assert.match(post.text, /the upstream may have received the request/);
  assert.equal(up.count(postKey), 1, "the POST was sent once");
  // A throw takes its whole batch back to the queue: when the GET's redelivery shares a batch
  // with the POST's first delivery, that invocation throws too, and the GET is claimed again.
  assert.ok(up.count(getKey) >= 1 && up.count(getKey) <= 3, `the GET was fetched at most 3 times (one per claim): ${up.count(getKey)}`);
  await assertClean(box);
});

test("the origin's instance dies while the handler runs (a handler that crashes it once): the result is delivered again and the handler completes; nothing lost", async () => {
  const box = origin();
  const key = `crash-${box.name}`;
  const id = await startOk(box, up.url("/crash", { key }), { ...LONG, backstop_grace_ms: 0 }, "panic-once");
  const [r] = await waitFor(() => box.results(), {
    until: (got) => got.length === 1 && got[0].deliveries === 2, deadlineMs: 45_000, what: `the result to come again after the crash at ${box.name}`,
  });
  await assertClean(box);
  await settle();
  const all = await box.results();
  assert.equal(all.length, 1);
  assert.equal(all[0].deliveries, 2, "the handler ran twice: the crashed run and the one after it");
  assert.equal(r.request_id, id);
  assert.equal(r.outcome, "response");
  assert.equal(r.status, 200);
});

test("long path: an upstream slower than timeout_ms ends in Timeout, and a response over max_body_bytes in Rejected, each delivered once", async () => {
  const box = origin();
  const slowKey = `timeout-${box.name}`;
  await startOk(box, up.url("/timeout", { key: slowKey, delay: 3000 }), { ...LONG, timeout_ms: 1000, retry: { max_attempts: 1 } }, "slow");
  await startOk(box, up.url("/too-big", { key: `too-big-${box.name}`, bytes: 5000 }), { ...LONG, max_body_bytes: 1000 }, "big");
  const { slow, big } = await resultsOnce(box, 2);
  assert.equal(slow.outcome, "Timeout", slow.text);
  assert.equal(slow.attempts, 1);
  assert.equal(up.count(slowKey), 1, "a timed-out attempt is not retried");
  assert.equal(big.outcome, "Rejected", big.text);
  assert.match(big.text, /larger than max_body_bytes \(1000 bytes\)/);
  await assertClean(box);
});

test("long path: a 10 MiB response arrives intact, once", async () => {
  const box = origin();
  const n = 10 * 1024 * 1024;
  await startOk(box, up.url(`/big/${box.name}`, { bytes: n }), { ...LONG, timeout_ms: 20_000 });
  const { t } = await resultsOnce(box, 1, 30_000);
  assert.equal(t.outcome, "response");
  assert.equal(t.body_len, n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum = (sum + (i % 256)) >>> 0;
  assert.equal(t.body_checksum, sum);
  assert.equal(up.count(`/big/${box.name}`), 1);
  await assertClean(box);
});

test("workerd restarted while a burst of 30 long-path GETs is queued and being fetched (Miniflare's local queue loses its messages): the alarms send them again; each delivered once with its 200, none lost", async () => {
  const persist = mkdtempSync(join(tmpdir(), "pf-long-restart-"));
  const wr = await startLongWorker({ durableObjectsPersist: persist });
  try {
    const boxesOf = Array.from({ length: 3 }, () => origin(wr));
    const options = { path: "long", timeout_ms: 1000, queue_wait_ms: 500, backstop_grace_ms: 0, retry: { max_attempts: 1 } };
    const path = (b, i) => `/restart/${b}/${i}/${boxesOf[b].name}`;
    const calls = boxesOf.flatMap((box, b) => Array.from({ length: 10 }, (_, i) => ({
      name: box.name,
      method: "start",
      args: [{ url: up.url(path(b, i), { delay: 300 }) }, options, `${b}-${i}`],
    })));
    const res = await wr.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ op: "burst", binding: "INBOX", calls }) });
    const started = await res.json();
    const failed = started.filter((s) => s.error);
    assert.equal(failed.length, 0, `starts failed: ${JSON.stringify(failed.slice(0, 3))}`);
    const fetched = () => calls.reduce((n, _, k) => n + up.count(path(Math.floor(k / 10), k % 10)), 0);
    await waitFor(fetched, { until: (n) => n >= 1, what: "the consumer's first fetch of the burst" });
    const before = (await Promise.all(boxesOf.map((box) => box.results()))).flat().length;
    await wr.restart();
    for (const box of boxesOf) await results(box, 10, 60_000);
    await settle();
    for (const [b, box] of boxesOf.entries()) {
      const got = await box.results();
      assert.equal(got.length, 10, `${box.name}: 10 results`);
      for (const r of got) {
        assert.equal(r.deliveries, 1, `${r.tag} delivered once`);
        assert.equal(r.status, 200, `${r.tag}: ${r.outcome} ${r.text.slice(0, 200)}`);
      }
      for (let i = 0; i < 10; i++) assert.ok(up.count(path(b, i)) >= 1, `${b}-${i} fetched`);
    }
    console.log(`long path restart: ${before} of 30 delivered before the restart`);
    assert.ok(before < 30, "the restart came before the burst was done");
    for (const box of boxesOf) await assertClean(box);
  } finally {
    await wr.dispose();
    rmSync(persist, { recursive: true, force: true });
  }
});

test("a burst of 1,000 long-path requests (path: long) from 10 origins: every one delivered once, none lost, each fetched once", async () => {
  const boxesOf = Array.from({ length: 10 }, () => origin());
  const began = Date.now();
  const calls = boxesOf.flatMap((box, b) => Array.from({ length: 100 }, (_, i) => ({
    name: box.name,
    method: "start",
    args: [{ url: up.url(`/burst/${b}/${i}/${box.name}`) }, LONG, `${b}-${i}`],
  })));
  const res = await w.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ op: "burst", binding: "INBOX", calls }) });
  const started = await res.json();
  const failed = started.filter((s) => s.error);
  assert.equal(failed.length, 0, `starts failed: ${JSON.stringify(failed.slice(0, 3))}`);
  const startedIn = Date.now() - began;
  for (const box of boxesOf) await results(box, 100, 120_000);
  const deliveredIn = Date.now() - began;
  await settle();
  let total = 0;
  for (const [b, box] of boxesOf.entries()) {
    const got = await box.results();
    total += got.length;
    assert.equal(got.length, 100, `${box.name}: 100 results`);
    for (const r of got) {
      assert.equal(r.deliveries, 1, `${r.tag} delivered once`);
      assert.equal(r.status, 200, `${r.tag}: ${r.outcome} ${r.text.slice(0, 200)}`);
    }
    for (let i = 0; i < 100; i++) assert.equal(up.count(`/burst/${b}/${i}/${box.name}`), 1, `${b}-${i} fetched once`);
  }
  console.log(`long path burst: ${total} requests started in ${startedIn} ms, all delivered ${deliveredIn} ms after the first start`);
  for (const box of boxesOf) await assertClean(box);
});
