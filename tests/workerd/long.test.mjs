// The long path end to end in real workerd: the test worker's Inbox (an origin Durable Object)
// -> Miniflare's local queue (producer binding PROXY_FETCH_LONG, consumer: proxy-fetch's own, in
// the same worker, batch size 6, batch timeout 0, 3 retries, from tests/proxy-worker/wrangler.toml)
// -> __proxyFetchClaim at the origin -> a local upstream server -> __proxyFetchDeliver ->
// Inbox.onResponse. The consumer hooks (a duplicate message, a consumer that dies after its claim,
// a delivery that fails) live in tests/proxy-worker/src/main.js only.
//
// Local workerd enforces neither the 30 s waitUntil limit nor the consumer's 15-minute wall clock
// (docs/long-fetches.md, section 2): the 40 s test shows the long path carries a fetch the short
// path could not in production; it does not show production's limits. Miniflare's broker has one
// batch per queue in flight with a batch timeout of 0, so these tests run one after another.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { jsWorker, settle, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
process.on("exit", () => process.env.PF_DUMP && console.log(w?.logs.join("")));
before(async () => {
  up = await startUpstream();
  const worker = { scriptName: "proxy-test-worker", useSQLite: true };
  w = await startWorker("tests/proxy-worker", {
    bindings: {
      PROXY_FETCH_ALLOW: `http://127.0.0.1:${new URL(up.url("/")).port}`,
      PROXY_FETCH_QUEUE: "proxy-test-pf-long",
    },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: { INBOX: { className: "Inbox", ...worker } },
    })],
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

function must(answer, what) {
  if (answer.error !== undefined) throw new Error(`${what} failed: ${JSON.stringify(answer.error)}`);
  return answer.ok;
}

let boxes = 0;
function origin() {
  const name = `long-${process.pid}-${++boxes}`;
  const rpc = (method) => (...args) => call("INBOX", name, method, ...args);
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
