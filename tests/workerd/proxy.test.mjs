// proxy-fetch end to end in real workerd, over both flows: the test worker's Inbox (an origin
// Durable Object) -> [FetchOrchestrator ->] FetchExecutorEntrypoint -> a local upstream
// server -> Inbox.onResponse. Every test of `suite` runs once per flow; each uses its own Inbox.
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
    // The executor's policy: exactly the upstream's host and port.
    bindings: { PROXY_FETCH_ALLOW: `http://127.0.0.1:${new URL(up.url("/")).port}` },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: {
        INBOX: { className: "Inbox", ...worker },
        CLOCK: { className: "Clock", ...worker },
        FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...worker },
      },
      serviceBindings: { REAL_EXECUTOR: { name: "proxy-test-worker", entrypoint: "FetchExecutorEntrypoint" } },
    })],
    serviceBindings: {
      DEAD_EXECUTOR: { name: "driver", entrypoint: "DeadExecutor" },
      DYING_ONCE_EXECUTOR: { name: "driver", entrypoint: "DyingOnceExecutor" },
    },
  });
});
after(async () => {
  await w?.dispose();
  await up?.close();
});

/** One RPC call through the driver: `{ ok: value }` or `{ error }`, as the callee answered. */
async function call(binding, name, method, ...args) {
  const res = await w.fetchPeer("driver", "http://driver/call", {
    method: "POST",
    body: JSON.stringify({ binding, name, method, args }),
  });
  return res.json();
}

/** The value of a call that must succeed: a failed call throws, it never reads as empty. */
function must(answer, what) {
  if (answer.error !== undefined) throw new Error(`${what} failed: ${JSON.stringify(answer.error)}`);
  return answer.ok;
}

let inboxes = 0;
/** A fresh origin for one test (binding INBOX or CLOCK). */
function origin(binding = "INBOX") {
  const name = `${binding.toLowerCase()}-${process.pid}-${++inboxes}`;
  const rpc = (method) => (...args) => call(binding, name, method, ...args);
  const box = {
    name,
    /** Every request id a start of this origin returned (for the queue checks of assertClean). */
    ids: [],
    start: async (request, options = {}, tag = "") => {
      const started = await rpc("start")(typeof request === "string" ? { url: request } : request, options, tag);
      if (started.ok) box.ids.push(started.ok.request_id);
      return started;
    },
    results: async () => must(await rpc("results")(), `${name}.results`),
    pending: async () => must(await rpc("pending")(), `${name}.pending`),
    cancel: rpc("cancel"),
    /** One delivery, as an executor makes it: the call's error, or the delivery's outcome. */
    deliver: async (result, token) => {
      const r = await rpc("__proxyFetchDeliver")([{ result, token }]);
      if (r.error) return r;
      const [outcome] = r.ok;
      return "Ok" in outcome ? { ok: outcome.Ok } : { error: { handler: outcome.Err } };
    },
    rpc,
  };
  return box;
}

const stats = async (shard = "singleton") => must(await call("FETCH_ORCHESTRATOR", shard, "stats"), `stats of ${shard}`);

const byTag = (list) => Object.fromEntries(list.map((r) => [r.tag || r.request_id, r]));

/** Waits until at least `n` results arrived at the origin (throws at the deadline); returns
 *  them by tag. Says nothing about duplicates: see resultsOnce. */
async function results(box, n = 1, deadlineMs = 15000) {
  const got = await waitFor(() => box.results(), { until: (r) => r.length >= n, deadlineMs, what: `${n} result(s) at ${box.name}` });
  return byTag(got);
}

/** Exactly once: waits for `n` results, then the settle window, then asserts that exactly `n`
 *  results are filed and each reached its handler once; returns them by tag. */
async function resultsOnce(box, n = 1, deadlineMs = 15000) {
  await results(box, n, deadlineMs);
  await settle();
  const got = await box.results();
  const seen = JSON.stringify(got.map((r) => ({ tag: r.tag, id: r.request_id, deliveries: r.deliveries })));
  assert.equal(got.length, n, `exactly ${n} result(s) at ${box.name}: ${seen}`);
  for (const r of got) assert.equal(r.deliveries, 1, `${r.tag || r.request_id} reached its handler once: ${seen}`);
  return byTag(got);
}

async function startOk(box, request, options, tag = "t") {
  const started = await box.start(request, options, tag);
  assert.ok(started.ok, `start failed: ${JSON.stringify(started.error)}`);
  return started.ok.request_id;
}

/** No pending record at the origin; in the orchestrated flow none of its requests left in the
 *  queue either (a completion follows its delivery by a moment: waits up to 5 s for each). */
async function assertClean(box, flow, shards = ["singleton"]) {
  await waitFor(() => box.pending(), { until: (p) => p.length === 0, deadlineMs: 5000, what: `no pending record left at ${box.name}` });
  if (flow !== "orchestrated") return;
  const mine = new Set(box.ids);
  for (const shard of shards) {
    await waitFor(async () => (await stats(shard)).items.filter((e) => mine.has(e.id)), {
      until: (left) => left.length === 0, deadlineMs: 5000, everyMs: 50, what: `no queue entry of ${box.name} left in ${shard}`,
    });
  }
}

const ok = (id) => ({ Ok: { request_id: id, status: 200, status_text: "OK", headers: [], body: { $bytes: [] }, url: "", attempts: 1, duration_ms: 1 } });

function suite(flow) {
  const FAST = { flow, timeout_ms: 3000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 } };
  const clean = (box, shards) => assertClean(box, flow, shards);

  describe(`${flow}: results reach the origin's handler`, () => {
    test("a successful fetch delivers the response once, and nothing is left in storage", async () => {
      const box = origin();
      const answer = await box.start(up.url(`/hello/${box.name}`), FAST, "t");
      const started = must(answer, "start");
      const { t } = await resultsOnce(box);
      assert.equal(t.request_id, started.request_id);
      assert.equal(t.outcome, "response");
      console.log(`${flow} end to end: origin held ${started.hold_ms} ms; handler ran ${t.arrived_at_ms - started.started_at_ms} ms after the start, upstream fetch took ${t.fetch_ms} ms`);
      assert.equal(t.status, 200);
      assert.equal(JSON.parse(t.text).path, `/hello/${box.name}`);
      await clean(box);
    });

    test("404 and 500 are responses, not errors", async () => {
      const box = origin();
      await startOk(box, up.url(`/${box.name}`, { status: 404 }), FAST, "404");
      await startOk(box, up.url(`/${box.name}`, { status: 500 }), FAST, "500");
      const r = await results(box, 2);
      assert.equal(r["404"].outcome, "response");
      assert.equal(r["404"].status, 404);
      assert.equal(r["500"].status, 500);
      assert.equal(r["500"].attempts, 1, "500 is not retried");
    });

    test("request with method, headers and a JSON body reaches the upstream intact", async () => {
      const box = origin();
      const body = [...Buffer.from(JSON.stringify({ hello: "world" }))];
      await startOk(box, { method: "POST", url: up.url(`/echo/${box.name}`), headers: [["x-test", "yes"], ["content-type", "application/json"]], body: { $bytes: body } }, FAST);
      const echo = JSON.parse((await results(box)).t.text);
      assert.equal(echo.method, "POST");
      assert.equal(echo.headers["x-test"], "yes");
      assert.equal(Buffer.from(echo.body, "base64").toString(), '{"hello":"world"}');
    });

    test("redirects: followed by default, returned as they are with redirect: manual, a Network error with redirect: error", async () => {
      const box = origin();
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
      const box = origin();
      await startOk(box, up.url(`/explicit/${box.name}`), { ...FAST, origin_binding: "INBOX" });
      assert.equal((await results(box)).t.status, 200);
    });

    test("binary body round trip: every byte value intact", async () => {
      const box = origin();
      await startOk(box, up.url(`/bin/${box.name}`, { bytes: 256 * 4 }), FAST);
      const { t } = await results(box);
      assert.equal(t.body_len, 1024);
      assert.equal(t.body_checksum, 4 * (255 * 256) / 2);
    });

    test("a 10 MiB body through the whole path arrives intact", async () => {
      const box = origin();
      const n = 10 * 1024 * 1024;
      await startOk(box, up.url(`/big/${box.name}`, { bytes: n }), { ...FAST, timeout_ms: 20000 });
      const { t } = await results(box, 1, 30000);
      assert.equal(t.outcome, "response");
      assert.equal(t.body_len, n);
      let sum = 0;
      for (let i = 0; i < n; i++) sum = (sum + (i % 256)) >>> 0;
      assert.equal(t.body_checksum, sum);
    });

    test("results too large to share one delivery call (4 of 12 MiB started together) each arrive once, without the backstop", async () => {
      const box = origin();
      const n = 12 * 1024 * 1024;
      // The backstop would act only after a minute: whatever arrives within 40 s was delivered.
      const options = { ...FAST, timeout_ms: 20000, backstop_grace_ms: 60000 };
      await Promise.all([...Array(4)].map((_, i) => startOk(box, up.url(`/big4/${box.name}/${i}`, { bytes: n }), options, `b${i}`)));
      const r = await resultsOnce(box, 4, 40000);
      for (const x of Object.values(r)) {
        assert.equal(x.outcome, "response");
        assert.equal(x.body_len, n);
      }
      assert.ok(!w.logs.join("").includes("limited to 32MiB"), "no call went over the RPC size limit");
      await clean(box);
    });

    test("requests whose records keep bodies beyond the origin's 4 MiB row cache (7 PUTs of 700 KiB) each get exactly one result", async () => {
      const box = origin();
      // A PUT may be sent again, so its record keeps its body: the cache drops what it holds
      // when it would pass 4 MiB, and the results are found in storage.
      const body = { $bytes: Array.from({ length: 700 * 1024 }, (_, i) => i % 251) };
      await Promise.all([...Array(7)].map((_, i) => startOk(box, { method: "PUT", url: up.url(`/put/${box.name}/${i}`, { bytes: 16 }), body }, FAST, `u${i}`)));
      const r = await resultsOnce(box, 7, 30000);
      for (const x of Object.values(r)) assert.equal(x.status, 200);
      await clean(box);
    });

    test("six requests started together, the upstream answering them at one moment: each executor call's results go back in one delivery call", async () => {
      const box = origin();
      const gate = `gate-${box.name}`;
      await Promise.all([...Array(6)].map((_, i) => startOk(box, up.url(`/gate/${box.name}/${i}`, { gate, n: 6 }), FAST, `g${i}`)));
      const r = await resultsOnce(box, 6);
      for (const x of Object.values(r)) assert.equal(x.status, 200);
      const calls = must(await box.rpc("calls")(), `${box.name}.calls`);
      assert.ok(calls.executions >= 1, JSON.stringify(calls));
      assert.equal(calls.deliveries, calls.executions, `as many delivery calls as executor calls: ${JSON.stringify(calls)}`);
      await clean(box);
    });

    test("ten parallel requests each get exactly one result", async () => {
      const box = origin();
      await Promise.all([...Array(10)].map((_, i) => startOk(box, up.url(`/p/${box.name}/${i}`, { delay: 50 }), FAST, `p${i}`)));
      await resultsOnce(box, 10);
      await clean(box);
    });

    test(flow === "direct"
      ? "two origins starting the same caller-supplied request id at once each start their own request"
      : "two origins starting the same caller-supplied request id at once: the orchestrator queues one, the other start fails with a typed error", async () => {
      const [a, b] = [origin(), origin()];
      const request_id = `shared-${a.name}`;
      const started = await Promise.all([a, b].map((box) => box.start(up.url(`/shared/${box.name}`, { delay: 100 }), { ...FAST, request_id }, "t")));
      let ran = [a, b];
      if (flow === "orchestrated") {
        const refused = started.filter((s) => s.error);
        assert.equal(refused.length, 1, JSON.stringify(started));
        assert.equal(refused[0].error.handler.kind, "dispatch");
        assert.match(refused[0].error.handler.message, /already queued here for another origin/);
        ran = [a, b].filter((_, i) => started[i].ok);
      } else {
        for (const s of started) assert.ok(s.ok, JSON.stringify(s.error));
      }
      for (const box of ran) {
        const { t } = await results(box);
        assert.equal(t.status, 200);
        assert.equal(t.request_id, request_id);
        assert.equal(JSON.parse(t.text).path, `/shared/${box.name}?delay=100`);
        await clean(box);
      }
    });

    test("a caller-supplied request id makes starting idempotent", async () => {
      const box = origin();
      const request_id = `mine-${box.name}`;
      const key = `idem-${box.name}`;
      // Two starts at once, then one more while the request is pending.
      const [first, concurrent] = await Promise.all([1, 2].map(() => startOk(box, up.url("/idem", { delay: 300, key }), { ...FAST, request_id })));
      const again = await startOk(box, up.url("/idem", { delay: 300, key }), { ...FAST, request_id });
      assert.deepEqual([first, concurrent, again], [request_id, request_id, request_id]);
      const { t } = await resultsOnce(box);
      assert.equal(t.request_id, request_id);
      await clean(box);
      assert.equal(up.count(key), 1, "the second start fetched nothing");
    });
  });

  describe(`${flow}: errors are delivered, typed, exactly once`, () => {
    test("network error (connection reset) after retries", async () => {
      const box = origin();
      await startOk(box, up.url(`/reset/${box.name}`, { reset: 1, key: `reset-${flow}-${box.name}` }), FAST);
      const { t } = await resultsOnce(box);
      assert.equal(t.outcome, "Network");
      assert.equal(t.attempts, 3);
      assert.equal(up.count(`reset-${flow}-${box.name}`), 3, "GET is retried on network errors");
    });

    test("an upstream that never answers ends in Timeout", async () => {
      const box = origin();
      await startOk(box, up.url(`/hang/${box.name}`, { hang: 1 }), { ...FAST, timeout_ms: 300, retry: { max_attempts: 1 } });
      const { t } = await resultsOnce(box);
      assert.equal(t.outcome, "Timeout");
      await clean(box);
    });

    test("an upstream that sends its headers and part of its body, then nothing, ends in Timeout (a body of declared length, and a chunked one)", async () => {
      const box = origin();
      const options = { ...FAST, timeout_ms: 300, retry: { max_attempts: 1 } };
      await startOk(box, up.url(`/stall/${box.name}/length`, { stall: "length" }), options, "length");
      await startOk(box, up.url(`/stall/${box.name}/chunked`, { stall: "chunked" }), options, "chunked");
      const r = await resultsOnce(box, 2);
      assert.equal(r.length.outcome, "Timeout", JSON.stringify(r.length));
      assert.equal(r.chunked.outcome, "Timeout", JSON.stringify(r.chunked));
      await clean(box);
    });

    test("5xx gateway statuses are retried until success", async () => {
      const box = origin();
      const key = `flaky-${box.name}`;
      await startOk(box, up.url(`/flaky`, { fail: 2, key }), FAST);
      const { t } = await resultsOnce(box);
      assert.equal(t.status, 200);
      assert.equal(t.attempts, 3);
      assert.equal(up.count(key), 3);
    });

    test("4xx is never retried, and POST is not retried on 503", async () => {
      const box = origin();
      await startOk(box, up.url(`/x`, { status: 400, key: `400-${box.name}` }), FAST, "400");
      await startOk(box, { method: "POST", url: up.url(`/x`, { status: 503, key: `post-${box.name}` }) }, FAST, "post");
      const r = await resultsOnce(box, 2);
      assert.equal(r["400"].attempts, 1);
      assert.equal(r.post.attempts, 1);
      assert.equal(up.count(`400-${box.name}`), 1);
      assert.equal(up.count(`post-${box.name}`), 1);
    });

    test("429 Retry-After is honoured before the next attempt", async () => {
      const box = origin();
      const key = `429-${box.name}`;
      await startOk(box, up.url(`/limited`, { fail: 1, failStatus: 429, header: "retry-after:1", key }), { ...FAST, retry: { max_attempts: 2, base_delay_ms: 10, max_delay_ms: 5000 } });
      const { t } = await resultsOnce(box);
      assert.equal(t.status, 200);
      assert.equal(up.times(key).length, 2, "two attempts reached the upstream");
      const [first, second] = up.times(key);
      assert.ok(second - first >= 950, `second attempt waited ${second - first} ms, Retry-After asked 1000`);
    });

    test("a body over max_body_bytes is rejected with a clear error", async () => {
      const box = origin();
      await startOk(box, up.url(`/big/${box.name}`, { bytes: 5000 }), { ...FAST, max_body_bytes: 1000 });
      const { t } = await resultsOnce(box);
      assert.equal(t.outcome, "Rejected");
      assert.match(t.text, /larger than max_body_bytes \(1000 bytes\)/);
    });

    test("a response without a body (HEAD, 304) is delivered empty whatever Content-Length it declares over max_body_bytes", async () => {
      const box = origin();
      const header = "content-length:5000000";
      await startOk(box, { method: "HEAD", url: up.url(`/head/${box.name}`, { header }) }, { ...FAST, max_body_bytes: 1000 }, "head");
      await startOk(box, up.url(`/not-modified/${box.name}`, { status: 304, header }), { ...FAST, max_body_bytes: 1000 }, "304");
      const r = await resultsOnce(box, 2);
      for (const [tag, status] of [["head", 200], ["304", 304]]) {
        assert.equal(r[tag].outcome, "response", `${tag}: ${JSON.stringify(r[tag])}`);
        assert.equal(r[tag].status, status, tag);
        assert.equal(r[tag].body_len, 0, tag);
      }
    });

    test("allow-list, bad URL and missing bindings are refused at once, nothing stored", async () => {
      const box = origin();
      const denied = await box.start({ url: "http://127.0.0.1:1/x" }, { flow, allowed_hosts: ["api.example.com"] }, "x");
      assert.match(denied.error.message, /rejected by policy: host `127.0.0.1` is not in allowed_hosts/);
      const bad = await box.start({ url: "not a url" }, { flow }, "x");
      assert.match(bad.error.message, /invalid request: `not a url` is not a URL/);
      const binding = flow === "direct" ? "executor_binding" : "orchestrator_binding";
      const missing = await box.start({ url: up.url("/") }, { flow, [binding]: "NOPE" }, "x");
      assert.match(missing.error.message, new RegExp(`\`NOPE\` is not in env; .*ProxyFetchOptions::${binding}`));
      const noOrigin = await box.start({ url: up.url("/") }, { flow, origin_binding: "WRONG" }, "x");
      assert.match(noOrigin.error.message, /`WRONG` is not in env; .*ProxyFetchOptions::origin_binding/);
      await clean(box);
    });

    test("out-of-range options get a typed error and the origin stays healthy; a misspelled key is refused", async () => {
      const box = origin();
      const huge = await box.start({ url: up.url("/") }, { flow, timeout_ms: 1e15 }, "x");
      assert.equal(huge.error.handler.kind, "invalid_options");
      assert.match(huge.error.message, /option `timeout_ms`: 1000000000000000 is outside 1 \.\.= 780000/);
      const big = await box.start({ url: up.url("/") }, { flow, max_body_bytes: 64 * 1024 * 1024 }, "x");
      assert.match(big.error.message, /option `max_body_bytes`/);
      const typo = await box.start({ url: up.url("/") }, { flow, timout_ms: 5 }, "x");
      assert.equal(typo.error.rpc.kind, "BadArgument");
      assert.match(typo.error.rpc.message, /unknown field `timout_ms`/);
      await startOk(box, up.url(`/after-bad-options/${box.name}`), FAST);
      assert.equal((await resultsOnce(box)).t.status, 200);
      await clean(box);
    });

    test("the executor's own policy refuses, at the start, a host that the job's allowed_hosts allows", async () => {
      const box = origin();
      const key = `policy-${box.name}`;
      const url = up.url("/policy", { key }).replace("127.0.0.1", "localhost");
      const refused = await box.start(url, { ...FAST, allowed_hosts: ["localhost"] }, "t");
      assert.equal(refused.error?.handler?.kind, "rejected", JSON.stringify(refused));
      assert.match(refused.error.message, /`http:\/\/localhost:\d+` is not allowed by the executor's PROXY_FETCH_ALLOW/);
      assert.equal(up.count(key), 0, "the upstream was never asked");
      await clean(box);
    });

    test("a redirect to a port outside the executor's policy is refused", async () => {
      const box = origin();
      await startOk(box, up.url("/moved", { redirect: "http://127.0.0.1:1/elsewhere" }), FAST);
      const { t } = await resultsOnce(box);
      assert.equal(t.outcome, "Rejected");
      assert.match(t.text, /redirect refused: `http:\/\/127.0.0.1:1` is not allowed by the executor's PROXY_FETCH_ALLOW/);
    });
  });

  describe(`${flow}: exactly once, across the races`, () => {
    test("executor dies mid-request on a POST: the backstop delivers once, saying the upstream may have seen it; a late success is dropped", async () => {
      const box = origin();
      const id = await startOk(box, { method: "POST", url: up.url("/") }, { flow, timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 }, executor_binding: "DEAD_EXECUTOR" });
      const { t } = await results(box, 1, 20000);
      assert.equal(t.outcome, "Backstop");
      assert.equal(t.request_id, id);
      assert.match(t.text, /the upstream may have received the request/);
      const late = await box.deliver(ok(id), "0".repeat(32));
      assert.equal(late.ok, "Duplicate");
      assert.equal((await resultsOnce(box)).t.outcome, "Backstop");
      await clean(box);
    });

    test("executor dies mid-request on a GET: the request is dispatched again and the response arrives", async () => {
      const box = origin();
      const key = `again-${flow}-${box.name}`;
      await startOk(box, up.url("/again", { key }), { flow, timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 }, executor_binding: "DYING_ONCE_EXECUTOR" });
      const { t } = await resultsOnce(box, 1, 20000);
      assert.equal(t.outcome, "response");
      assert.equal(t.status, 200);
      assert.equal(up.count(key), 1, "fetched once: by the second executor");
      await clean(box);
    });

    test("a forged delivery (wrong token) is refused and the real result is still delivered once", async () => {
      const box = origin();
      const id = await startOk(box, up.url("/forged", { delay: 300 }), FAST, "real");
      const forged = await box.deliver(ok(id), "f".repeat(32));
      assert.equal(forged.error.handler.kind, "forbidden");
      const { real } = await resultsOnce(box);
      assert.equal(real.status, 200);
      assert.equal(JSON.parse(real.text).path.startsWith("/forged"), true, "the handler got the upstream's response");
      await clean(box);
    });

    test("a duplicate delivery of a settled request is acknowledged and dropped", async () => {
      const box = origin();
      const id = await startOk(box, up.url("/"), FAST);
      await results(box);
      const again = await box.deliver({ Err: { request_id: id, kind: "Network", message: "dup", attempts: 1 } }, "0".repeat(32));
      assert.equal(again.ok, "Duplicate");
      const { t } = await resultsOnce(box);
      assert.equal(t.outcome, "response");
    });

    test("one delivery call carries several results: each gets its own outcome, in order; more than 64 are refused", async () => {
      const box = origin();
      const id = await startOk(box, up.url("/several", { delay: 300 }), FAST, "real");
      const deliver = box.rpc("__proxyFetchDeliver");
      const r = await deliver([
        { result: ok(id), token: "f".repeat(32) },
        { result: { Err: { request_id: "never-started", kind: "Network", message: "x", attempts: 1 } }, token: "0".repeat(32) },
      ]);
      assert.equal(r.ok.length, 2);
      assert.equal(r.ok[0].Err.kind, "forbidden");
      assert.deepEqual(r.ok[1], { Ok: "Duplicate" });
      const many = await deliver([...Array(65)].map(() => ({ result: ok(id), token: "0".repeat(32) })));
      assert.equal(many.error.rpc.kind, "BadArgument");
      assert.match(many.error.rpc.message, /65 results in one call; at most 64/);
      assert.equal((await resultsOnce(box)).real.status, 200, "the real result still arrives, once");
      await clean(box);
    });

    test("a malformed result is a typed error and the origin stays healthy", async () => {
      const box = origin();
      const r = await box.deliver({ Maybe: 1 }, "x");
      assert.equal(r.error.rpc.kind, "BadArgument");
      assert.equal(r.error.rpc.method, "__proxyFetchDeliver");
      const id = await startOk(box, up.url("/slow-enough", { delay: 300 }), FAST, "real");
      const notBytes = await box.deliver({ Ok: { request_id: id, status: 200, status_text: "OK", headers: [], body: 42, url: "", attempts: 1, duration_ms: 1 } }, "x");
      assert.match(notBytes.error.rpc.message, /field `\[0\].result.Ok.body`/);
      const deep = await box.deliver(JSON.parse("[".repeat(2000) + "]".repeat(2000)), "x");
      assert.match(deep.error.rpc.message, /nested deeper than 128 levels/);
      const lone = await box.deliver({ Ok: { request_id: id, status: 200, status_text: JSON.parse('"\\ud800"'), headers: [], body: 42, url: "", attempts: 1, duration_ms: 1 } }, "x");
      assert.match(lone.error.rpc.message, /a string is not valid Unicode \(lone surrogate\)/);
      const loneKey = await box.deliver(JSON.parse('{"Ok": {"\\ud800": 1}}'), "x");
      assert.match(loneKey.error.rpc.message, /a string is not valid Unicode \(lone surrogate\)/, "in a key too");
      let sets = { $set: [] };
      for (let i = 0; i < 200; i++) sets = { $set: [sets] };
      const deepSets = await box.deliver(sets, "x");
      assert.match(deepSets.error.rpc.message, /nested deeper than 128 levels/, "Sets are walked as serde decodes them");
      const sparse = await box.deliver({ $sparse: 2 ** 32 - 1 }, "x");
      assert.match(sparse.error.rpc.message, /more than 1000000 nested values/, "a sparse array's length is counted before it is walked");
      assert.equal((await results(box)).real.status, 200, "the malformed results did not consume the request");
      await startOk(box, up.url("/after-garbage"), FAST);
      assert.equal((await resultsOnce(box, 2)).t.status, 200);
    });

    test("a storage failure at the origin during delivery is retried, never taken as a refusal", async () => {
      const box = origin();
      // Injected while the upstream takes its time: the delivery's reads find storage failing.
      await startOk(box, up.url(`/storage-fault/${box.name}`, { delay: 400 }), FAST);
      must(await box.rpc("injectStorageFault")("get", "proxy-fetch:request:", 2), "injectStorageFault");
      const { t } = await resultsOnce(box);
      assert.equal(t.status, 200);
      assert.equal(must(await box.rpc("storageFaultsLeft")(), "storageFaultsLeft"), 0, "both injected read faults were hit");
      assert.ok(!w.logs.join("").includes(`proxy-fetch ${t.request_id}: origin refused`), "never read as a refusal");
      await clean(box);
    });

    test("an origin that cannot take a POST's response for seconds: orchestrated, the orchestrator delivers it later; direct, the handler hears the upstream may have seen it", async () => {
      const box = origin();
      const key = `handover-${flow}-${box.name}`;
      await startOk(box, { method: "POST", url: up.url("/handover", { key, delay: 400 }) }, { flow, timeout_ms: 1000, backstop_grace_ms: 0, retry: { max_attempts: 1 } });
      // Every delivery try of the executor (5, over about 1.5 s) finds the origin failing.
      must(await box.rpc("injectStorageFault")("get", "proxy-fetch:request:", 5), "injectStorageFault");
      const { t } = await resultsOnce(box, 1, 20000);
      if (flow === "orchestrated") {
        assert.equal(t.outcome, "response");
        assert.equal(t.status, 200);
      } else {
        assert.equal(t.outcome, "Backstop");
        assert.match(t.text, /the upstream may have received the request/);
      }
      assert.equal(up.count(key), 1, "the POST was sent once");
      assert.equal(must(await box.rpc("storageFaultsLeft")(), "storageFaultsLeft"), 0, "every injected read fault was hit");
      await clean(box);
    });

    test("a failed write at the start fails the start and resets the origin; nothing is left behind and the next start works", async () => {
      const box = origin();
      const instances = async () => must(await box.rpc("instances")(), "instances");
      const before = await instances();
      must(await box.rpc("injectStorageFault")("put", "proxy-fetch:request:", 1), "injectStorageFault");
      const r = await box.start(up.url("/never-recorded"), FAST, "x");
      assert.ok(r.error, `the start failed: ${JSON.stringify(r)}`);
      assert.match(r.error.message, /injected storage fault/);
      // Typed, unless the reset overtook the failing call's answer (then it is the reset's).
      if (r.error.handler) assert.equal(r.error.handler.kind, "storage");
      await clean(box);
      assert.equal(await instances(), before + 1, "the failed write reset the origin: a fresh instance answers");
      await startOk(box, up.url(`/after-fault/${box.name}`), FAST);
      assert.equal((await resultsOnce(box)).t.status, 200);
    });

    test("cancel during the fetch: Cancelled once, the late response dropped", async () => {
      const box = origin();
      const key = `cancel-${flow}-${box.name}`;
      // The upstream answers 1 s after the request reached it: cancelled once it is there, the
      // fetch is surely under way, and a late response surely comes.
      const id = await startOk(box, up.url("/slow", { delay: 1000, key }), FAST);
      await waitFor(() => up.count(key) >= 1, { deadlineMs: 5000, what: `the upstream to receive ${key}` });
      assert.deepEqual((await box.cancel(id)).ok, true);
      assert.deepEqual((await box.cancel(id)).ok, false, "second cancel finds nothing to cancel");
      const { t } = await results(box);
      assert.equal(t.outcome, "Cancelled");
      // The late response goes from the executor to the origin, which drops it: once the
      // upstream has answered, the settle window gives it the time to show.
      await waitFor(() => up.answered(key).length >= 1, { deadlineMs: 5000, what: `the upstream's answer to ${key}` });
      const after = (await resultsOnce(box)).t;
      assert.equal(after.outcome, "Cancelled");
      assert.equal(up.count(key), 1, "fetched once");
      await clean(box);
    });

    test("a failing handler is reported with the request id and breaks nothing", async () => {
      const box = origin();
      const id = await startOk(box, up.url("/"), FAST, "fail-handler");
      await results(box);
      const line = `proxy-fetch ${id}: handler \`onResponse\` failed: test: this handler fails on purpose`;
      await waitFor(() => w.logs.join("").includes(line), { deadlineMs: 5000, what: `the log line "${line}"` });
      await startOk(box, up.url("/"), FAST, "next");
      assert.equal((await resultsOnce(box, 2)).next.status, 200);
      await clean(box);
    });

    test("a handler that crashes its instance gets the result again (at least once), then the request is settled", async () => {
      const box = origin();
      // The crash also ends the executor's work when it runs in the same worker (as here): the
      // backstop sends the request again, so a short one is used.
      const id = await startOk(box, up.url(`/crash/${box.name}`), { flow, timeout_ms: 1000, backstop_grace_ms: 0, retry: { max_attempts: 1 } }, "panic-once");
      await waitFor(() => box.results(), {
        until: (r) => r.length === 1 && r[0].deliveries === 2, deadlineMs: 20000, what: `the result to come again after the crash at ${box.name}`,
      });
      await clean(box);
      // Settled: no third run.
      await settle();
      const all = await box.results();
      assert.equal(all.length, 1);
      const [r] = all;
      assert.equal(r.deliveries, 2, "the handler ran twice: the crashed run and the one after it");
      assert.equal(r.request_id, id);
      assert.equal(r.status, 200);
    });

    test("an origin with an alarm of its own: its alarm still rings and proxy-fetch's backstop still acts", async () => {
      const clock = origin("CLOCK");
      must(await clock.rpc("ringIn")(300), "ringIn");
      const id = await startOk(clock, { method: "POST", url: up.url("/") }, { flow, timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 }, executor_binding: "DEAD_EXECUTOR" });
      const rings = async () => must(await clock.rpc("rings")(), "rings");
      await waitFor(rings, { until: (n) => n >= 1, deadlineMs: 10000, what: "the Clock's own alarm to ring" });
      const { t } = await resultsOnce(clock, 1, 20000);
      assert.equal(t.request_id, id);
      assert.equal(t.outcome, "Backstop");
      assert.equal(await rings(), 1, "and rang once");
      await clean(clock);
    });
  });
}

suite("direct");
suite("orchestrated");

describe("orchestrated: the queue is observable and sharded", () => {
  const FAST = { flow: "orchestrated", timeout_ms: 3000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 } };

  test("the origin serves other calls while its fetch is in flight; stats show it queued with its query redacted", async () => {
    const box = origin();
    const key = `inflight-${box.name}`;
    const id = await startOk(box, up.url(`/slow/${box.name}`, { delay: 800, key }), FAST);
    await waitFor(() => up.count(key) >= 1, { deadlineMs: 5000, everyMs: 10, what: `the upstream to receive ${key}` });
    assert.deepEqual(await box.pending(), [id], "the origin answers while the upstream is still busy");
    assert.deepEqual(await box.results(), []);
    const s = await stats();
    const entry = s.items.find((e) => e.id === id);
    assert.ok(entry, "the orchestrator lists the request");
    assert.ok(s.pending >= 1 && s.in_flight >= 1 && s.oldest_age_ms >= 0);
    assert.match(entry.url, /\/slow\/.*\?…$/);
    assert.ok(!entry.url.includes(key), "the query string is redacted");
    const full = must(await call("FETCH_ORCHESTRATOR", "singleton", "statsWithQueries"), "statsWithQueries");
    assert.ok(full.items.find((e) => e.id === id).url.includes(key));
    assert.equal((await results(box)).t.status, 200);
    await assertClean(box, "orchestrated");
  });

  test("a failed write in the orchestrator's enqueue fails the start with Dispatch and resets the orchestrator; nothing is left behind and the next start works", async () => {
    const box = origin();
    const shard = "faulty-queue";
    const instances = async () => must(await call("FETCH_ORCHESTRATOR", shard, "instances"), "instances");
    const before = await instances();
    must(await call("FETCH_ORCHESTRATOR", shard, "injectStorageFault", "put", "q:", 1), "injectStorageFault");
    const r = await box.start(up.url("/not-queued"), { ...FAST, orchestrator_instance: shard }, "x");
    assert.ok(r.error, `the start failed: ${JSON.stringify(r)}`);
    assert.equal(r.error.handler.kind, "dispatch");
    assert.match(r.error.message, /injected storage fault/);
    assert.deepEqual(await box.pending(), [], "no pending record at the origin");
    assert.equal((await stats(shard)).pending, 0);
    assert.equal(await instances(), before + 1, "the failed write reset the orchestrator: a fresh instance answers");
    await startOk(box, up.url(`/queued-after-fault/${box.name}`), { ...FAST, orchestrator_instance: shard });
    assert.equal((await resultsOnce(box)).t.status, 200);
    await assertClean(box, "orchestrated", [shard]);
  });

  test("100 concurrent requests through a 4-shard orchestrator: all delivered once, queues empty", async () => {
    const box = origin();
    const shards = ["singleton-0", "singleton-1", "singleton-2", "singleton-3"];
    const ids = await Promise.all([...Array(100)].map((_, i) =>
      startOk(box, up.url(`/many/${box.name}/${i}`, { delay: 20 }), { ...FAST, shards: 4 }, `m${i}`)));
    assert.equal(new Set(ids).size, 100);
    const r = await resultsOnce(box, 100, 30000);
    for (const x of Object.values(r)) assert.equal(x.status, 200, JSON.stringify(x));
    await assertClean(box, "orchestrated", shards);
  });
});
