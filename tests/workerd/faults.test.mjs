// The loss and duplicate paths of issue 19 (item 5), each driven in real workerd with the test
// worker's storage faults (tests/proxy-worker/src/main.js: `injectStorageFault(op, prefix,
// times)`; a failed write also resets the object, as workerd does, and `instances()` counts the
// resets). Each test says above it what the code before the fix (148ff2a: system/origin.rs,
// system/orchestrator.rs) did, and so why it fails there; run against the test worker built with
// 148ff2a's library, each does fail where its comment says. Runs its own workerd, like
// hostile.test.mjs; PF_DUMP=1 prints the workers' logs at the end.
//
// Timing: every request here uses `timeout_ms` and one attempt, so its backstop period is
// `timeout_ms` + 3 000 ms (the delivery reserve) + `backstop_grace_ms`: the orchestrator's
// backstop acts after one period, the origin's sweep after one (direct flow) or two
// (orchestrated). No test waits for time to pass: the absence of a Backstop is shown by a
// witness request whose Backstop can only come after the sweep looked at the request under test.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { jsWorker, settle, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

/** The delivery reserve every backstop period includes (DELIVERY_RESERVE_MS in options.rs). */
const RESERVE_MS = 3000;
const LEDGER = "proxy-fetch:request:";

let w, up;
before(async () => {
  up = await startUpstream();
  const shared = { scriptName: "proxy-test-worker", useSQLite: true };
  w = await startWorker("tests/proxy-worker", {
    bindings: { PROXY_FETCH_ALLOW: `http://127.0.0.1:${new URL(up.url("/")).port}` },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: {
        INBOX: { className: "Inbox", ...shared },
        FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...shared },
        HANGING_ORIGIN: { className: "HangingOrigin", useSQLite: true },
        EARLIER_ORIGIN: { className: "EarlierOrigin", useSQLite: true },
      },
      serviceBindings: { REAL_EXECUTOR: { name: "proxy-test-worker", entrypoint: "FetchExecutorEntrypoint" } },
    })],
    serviceBindings: {
      DEAD_EXECUTOR: { name: "driver", entrypoint: "DeadExecutor" },
      SLOW_EXECUTOR: { name: "driver", entrypoint: "SlowExecutor" },
      FLAKY_EXECUTOR: { name: "driver", entrypoint: "FlakyExecutor" },
      FAILING_ONCE_EXECUTOR: { name: "driver", entrypoint: "FailingOnceExecutor" },
      BUSY_EXECUTOR: { name: "driver", entrypoint: "BusyExecutor" },
      HELD_EXECUTOR: { name: "driver", entrypoint: "HeldExecutor" },
      UNREACHABLE_EXECUTOR: { name: "driver", entrypoint: "UnreachableExecutor" },
      // The real executor under a name no other test uses: its terms are unknown to the isolate.
      FRESH_EXECUTOR: { name: "proxy-test-worker", entrypoint: "FetchExecutorEntrypoint" },
      DYING_ONCE_EXECUTOR: { name: "driver", entrypoint: "DyingOnceExecutor" },
      EARLIER_EXECUTOR: { name: "driver", entrypoint: "EarlierExecutor" },
    },
    durableObjects: {
      HANGING_ORIGIN: { className: "HangingOrigin", scriptName: "driver", useSQLite: true },
      EARLIER_ORIGIN: { className: "EarlierOrigin", scriptName: "driver", useSQLite: true },
    },
  });
});
after(async () => {
  if (process.env.PF_DUMP) console.log(w?.logs.join(""));
  await w?.dispose();
  await up?.close();
});

/** One RPC call through the driver: `{ ok: value }` or `{ error }`, as the callee answered. */
async function call(binding, name, method, ...args) {
  const res = await w.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ binding, name, method, args }) });
  return res.json();
}

/** The value of a call that must succeed: a failed call throws, it never reads as empty. */
function must(answer, what) {
  if (answer.error !== undefined) throw new Error(`${what} failed: ${JSON.stringify(answer.error)}`);
  return answer.ok;
}

let boxes = 0;
/** A fresh origin (an Inbox) for one test. */
function origin() {
  const name = `faults-${process.pid}-${++boxes}`;
  const rpc = (method) => async (...args) => must(await call("INBOX", name, method, ...args), `${name}.${method}`);
  return {
    name,
    /** The start's answer as the Inbox gave it: `{ ok: Started }` or `{ error }`. */
    start: (request, options, tag = "t") => call("INBOX", name, "start", request, options, tag),
    results: rpc("results"),
    pending: rpc("pending"),
    cancel: rpc("cancel"),
    instances: rpc("instances"),
    inject: rpc("injectStorageFault"),
    deleteKey: rpc("deleteStorageKey"),
    putValue: rpc("putStorageValue"),
    keys: rpc("storageKeys"),
    storeRowAsEarlierBuilds: rpc("storeRowAsEarlierBuilds"),
    faultsLeft: rpc("storageFaultsLeft"),
    /** This origin's filed result of request `id`, if any. */
    result: async (id) => (await rpc("results")()).find((r) => r.request_id === id),
  };
}

/** The orchestrator instance `shard`. */
function orchestrator(shard) {
  const rpc = (method) => async (...args) => must(await call("FETCH_ORCHESTRATOR", shard, method, ...args), `${shard}.${method}`);
  return {
    shard,
    stats: rpc("stats"),
    /** The ids it has queued. */
    queued: async () => (await rpc("stats")()).items.map((i) => i.id),
    instances: rpc("instances"),
    inject: rpc("injectStorageFault"),
  };
}

async function startOk(box, request, options, tag = "t") {
  const started = await box.start(request, options, tag);
  assert.ok(started.ok, `start failed: ${JSON.stringify(started.error)}`);
  return started.ok;
}

/** Waits for a log line containing every one of `parts`. */
function logged(what, ...parts) {
  return waitFor(() => w.logs.some((l) => parts.every((p) => l.includes(p))), { deadlineMs: 5000, what: `the log line ${what}` });
}

/**
 * Starts a witness at `box`: a direct-flow POST to an executor that drops it, due at the origin's
 * sweep `dueMs` after its start, whose row sorts after every row proxy-fetch names (`zz-...`
 * after hex). The sweep reads rows in key order and acts on each overdue request in turn, so the
 * witness's Backstop comes only after the sweep acted on every request of `box` due before it.
 */
async function startWitness(box, dueMs) {
  const id = `zz-witness-${box.name}`;
  const timeout = 200;
  await startOk(box, { method: "POST", url: up.url("/witness") }, {
    timeout_ms: timeout, backstop_grace_ms: dueMs - timeout - RESERVE_MS, retry: { max_attempts: 1 },
    executor_binding: "DEAD_EXECUTOR", request_id: id,
  }, "witness");
  return id;
}

describe("no loss or duplicate path (issue 19, item 5)", () => {
  // receive.rs. Before (148ff2a, origin.rs `deliver`): when the record could not be removed
  // after the handler ran, the failure was logged and the delivery answered Delivered. The
  // executor stopped and the record stayed: direct, the origin's alarm later gave this POST's
  // handler a Backstop (a GET would have been fetched again); orchestrated, the executor
  // completed the queue entry and the origin's sweep queued the POST again (it ignored
  // may_resend), so the upstream got it twice and the handler's second run came only then.
  // Either way the checks below fail: the second run is a Backstop, or it comes after the
  // backstop's time with the upstream counting 2.
  //
  // Who delivers again: the executor's next try, on a new stub (the one that reached the reset
  // instance fails every later call), or in the orchestrated flow the orchestrator, to which the
  // executor hands a result it could not deliver.
  for (const flow of ["direct", "orchestrated"]) {
    test(`${flow}: a handler that ran but whose record could not be removed is answered "retry": the result comes again before the backstop's time, the handler runs again, the record goes, the POST reached the upstream once and no Backstop follows`, async () => {
      const box = origin();
      const q = orchestrator(`faults-removal-${process.pid}`);
      const key = `removal-${flow}-${box.name}`;
      const timeout = 1000;
      // When the origin's sweep would act on the request: one backstop period, two orchestrated.
      const dueMs = (timeout + RESERVE_MS) * (flow === "orchestrated" ? 2 : 1);
      const before = await box.instances();
      // The upstream answers 600 ms after the request came: the fault is in place by then, and it
      // hits the removal after the handler, not the start (which wrote with `put`).
      const started = await startOk(box, { method: "POST", url: up.url("/removal", { delay: 600, key }) }, {
        flow, orchestrator_instance: q.shard, timeout_ms: timeout, backstop_grace_ms: 0, retry: { max_attempts: 1 },
      });
      const id = started.request_id;
      await box.inject("delete", LEDGER, 1);
      const witness = await startWitness(box, dueMs);

      const again = await waitFor(() => box.result(id), { until: (r) => r?.deliveries >= 2, deadlineMs: 20000, what: `the handler of ${id} to run a second time` });
      assert.equal(again.outcome, "response", `the second run got the response, not a Backstop: ${JSON.stringify(again)}`);
      assert.equal(again.status, 200);
      assert.ok(again.arrived_at_ms < started.started_at_ms + dueMs,
        `the result came again before the backstop's time (${again.arrived_at_ms - started.started_at_ms} ms after the start, due after ${dueMs} ms)`);
      assert.equal(await box.instances(), before + 1, "the injected failure hit the removal (and reset the origin)");
      await waitFor(() => box.pending(), { until: (p) => !p.includes(id), deadlineMs: 5000, what: `the record of ${id} to be removed` });

      // No Backstop later: the witness's Backstop shows the sweep has looked past the request's due time.
      await waitFor(() => box.result(witness), { until: (r) => r?.outcome === "Backstop", deadlineMs: dueMs + 15000, what: `the witness's Backstop at ${box.name}` });
      await settle();
      const last = await box.result(id);
      assert.deepEqual([last.outcome, last.deliveries], ["response", 2], `no further run of the handler: ${JSON.stringify(last)}`);
      assert.equal((await box.result(witness)).deliveries, 1);
      assert.equal(up.count(key), 1, "the POST reached the upstream once");
      assert.deepEqual(await box.pending(), [], "nothing pending");
      if (flow === "orchestrated") assert.ok(!(await q.queued()).includes(id), "the orchestrator completed it");
    });
  }

  // orchestrator.rs. Before (148ff2a, `backstop`): the entries of a round were handled in one
  // loop whose storage writes ended in `?`: the first failure returned from the round, so the
  // overdue entries after it were not handled and the alarm was not set again (workerd retries a
  // failed alarm, about 2 s later, and the next round started with the failing entry again). So B
  // was told only in a later round, after A's entry had gone (A comes first in every round);
  // "B told while A is still queued" cannot happen there. Had A failed every time, B would never
  // have been told.
  test("orchestrator: an entry whose backstop step fails does not end the round: the next overdue entry is told in that same round, and the failing one is retried later", async () => {
    const box = origin();
    const held = origin();
    const q = orchestrator(`faults-round-${process.pid}`);
    const [a, b, x] = ["a", "b", "x"].map((p) => `${p}-${box.name}`);
    // A and B: POSTs whose executor drops them, so the orchestrator's backstop tells their
    // handler (A before B: the queue is read in key order). X: a GET whose executor answers only
    // after 1 s (SlowExecutor): it falls due 500 ms before A and B, and the round that dispatches
    // it again waits for that executor meanwhile, so the next round finds A and B both overdue.
    // X's max age ends its second dispatch early (its handler then gets Backstop).
    const lost = (id) => ({
      flow: "orchestrated", orchestrator_instance: q.shard, request_id: id, executor_binding: "DEAD_EXECUTOR",
      timeout_ms: 200, backstop_grace_ms: 500, retry: { max_attempts: 1 },
    });
    await Promise.all([
      startOk(box, { method: "POST", url: up.url("/round", { key: a }) }, lost(a)),
      startOk(box, { method: "POST", url: up.url("/round", { key: b }) }, lost(b)),
      startOk(held, { url: up.url("/round", { key: x }) }, {
        flow: "orchestrated", orchestrator_instance: q.shard, request_id: x, executor_binding: "SLOW_EXECUTOR",
        timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 }, max_age_ms: 9000,
      }),
    ]);
    const due = Object.fromEntries((await q.stats()).items.map((i) => [i.id, i.due_ms]));
    for (const id of [a, b]) {
      const later = due[id] - due[x];
      assert.ok(later > 0 && later < 1000, `${id} falls due ${later} ms after ${x}: while the round that dispatches ${x} again waits 1 s for its executor`);
    }
    const before = await q.instances();
    await q.inject("delete", `q:${a}`, 1);

    // B's handler is told while A is still queued: in the round where A's step failed.
    const seen = await waitFor(async () => {
      if (!(await box.result(b))) return null;
      return { queued: await q.queued(), a: await box.result(a) };
    }, { deadlineMs: 15000, what: `the Backstop of ${b}` });
    assert.ok(seen.queued.includes(a), `when ${b} was told, ${a} was still queued (its failed step not yet tried again): queue ${JSON.stringify(seen.queued)}`);
    assert.equal(seen.a?.outcome, "Backstop", `${a} was told before its entry's removal failed: ${JSON.stringify(seen.a)}`);
    await logged(`of ${a}'s failed step`, `proxy-fetch ${a}: backstop failed, tried again`, `injected storage fault: delete(q:${a}`);
    assert.equal(await q.instances(), before + 1, "the injected failure happened (and reset the orchestrator)");

    // A is retried later, and its handler is not told twice.
    await waitFor(() => q.queued(), { until: (ids) => !ids.includes(a) && !ids.includes(b), deadlineMs: 15000, what: `${a} and ${b} to leave the queue` });
    await settle();
    for (const id of [a, b]) {
      const r = await box.result(id);
      assert.deepEqual([r.outcome, r.deliveries], ["Backstop", 1], `${id}: one Backstop: ${JSON.stringify(r)}`);
    }
    assert.deepEqual(await box.pending(), []);
    // X ends too, and the queue is empty.
    await waitFor(() => held.result(x), { until: (r) => r?.outcome === "Backstop", deadlineMs: 20000, what: `the Backstop of ${x}` });
    await waitFor(() => q.stats(), { until: (s) => s.pending === 0, deadlineMs: 5000, what: `${q.shard} to be empty` });
    for (const id of [a, b, x]) assert.equal(up.count(id), 0, `${id} was never fetched`);
  });

  // writer.rs. Before (148ff2a, origin.rs `start_all`): a failed start's record was removed with
  // `let _ = edit_row(..)`; when that failed too, the start still answered Err (Dispatch) while
  // its record stayed, and the origin's sweep later queued the request again: a start that
  // answered Err ran its handler.
  //
  // Not produced: a start whose job *went out* and whose storage then failed with its row
  // written. That is only the alarm's write (`ledger::arm`) failing, and the hooks cannot fail
  // it: they match a key prefix, and setAlarm/getAlarm take no key (a failed row write leaves no
  // record to clean up). Here the job is refused instead (the orchestrator's write fails), which
  // reaches the same branch: the start failed, its row was written, its removal failed.
  test("a start that failed after its record was written, and whose record could not be removed, answers Ok: the record stays and the backstop takes the request over (a GET is queued again and fetched once)", async () => {
    const box = origin();
    const q = orchestrator(`faults-start-get-${process.pid}`);
    const key = `kept-${box.name}`;
    const [boxBefore, qBefore] = [await box.instances(), await q.instances()];
    await q.inject("put", "q:", 1);
    await box.inject("delete", LEDGER, 1);
    const started = await box.start({ url: up.url("/kept", { key }) }, {
      flow: "orchestrated", orchestrator_instance: q.shard, timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    });
    assert.ok(started.ok, `the start answered Ok: ${JSON.stringify(started)}`);
    const id = started.ok.request_id;
    await logged("of the kept record", "proxy-fetch: failed starts' records could not be removed", `injected storage fault: delete(${LEDGER}`, "the backstop takes their requests over");
    assert.equal(await q.instances(), qBefore + 1, "the orchestrator's write failed (and reset it): the job was refused");
    assert.equal(await box.instances(), boxBefore + 1, "the record's removal failed (and reset the origin)");
    assert.deepEqual(await box.pending(), [id], "its record stayed");
    assert.equal((await q.stats()).pending, 0, "the orchestrator does not have it");
    assert.equal(up.count(key), 0);

    // The origin's sweep asks the orchestrator (recover), which queues the GET again.
    const r = await waitFor(() => box.result(id), { deadlineMs: 25000, what: `the result of ${id}` });
    await settle();
    assert.deepEqual([r.outcome, r.status], ["response", 200], JSON.stringify(r));
    assert.equal((await box.result(id)).deliveries, 1, "its handler ran once");
    assert.equal(up.count(key), 1, "fetched once");
    await waitFor(() => box.pending(), { until: (p) => p.length === 0, deadlineMs: 5000, what: "no pending record" });
    await waitFor(() => q.stats(), { until: (s) => s.pending === 0, deadlineMs: 5000, what: `${q.shard} to be empty` });
  });

  // sweep.rs and the orchestrator's `recover`. Before (148ff2a, origin.rs `overdue`): in the
  // orchestrated flow the sweep sent every request within its max age to `enqueue` again,
  // whatever its method; an orchestrator that did not have it stored it and sent it, so this
  // POST went to the upstream from the sweep (a second time, had its first dispatch reached the
  // upstream) and the handler got its response instead of Backstop. (With the old code this test
  // already fails at the start, which answered Err: see the test above; with only the sweep
  // reverted it fails on the outcome and the upstream count.)
  //
  // Lost, as a crash during `enqueue` loses it: the orchestrator's write fails before the
  // executor is called, and the origin keeps its record (as above). "Sent, then lost" cannot be
  // produced: `enqueue` writes the entry before it calls the executor (the output gate holds the
  // call until the write is on disk), and after the call it writes only if the call failed (a
  // delete, whose failure keeps the entry). So the upstream's "at most once" is "never" here.
  test("orchestrated: a POST the orchestrator lost is not sent by the origin's sweep: its handler gets Backstop and the upstream never sees it", async () => {
    const box = origin();
    const q = orchestrator(`faults-start-post-${process.pid}`);
    const key = `lost-${box.name}`;
    const qBefore = await q.instances();
    await q.inject("put", "q:", 1);
    await box.inject("delete", LEDGER, 1);
    const id = (await startOk(box, { method: "POST", url: up.url("/lost", { key }) }, {
      flow: "orchestrated", orchestrator_instance: q.shard, timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    })).request_id;
    assert.equal(await q.instances(), qBefore + 1, "the orchestrator's write failed: it does not have the request");
    assert.deepEqual(await box.pending(), [id], "the origin kept its record");

    const r = await waitFor(() => box.result(id), { deadlineMs: 25000, what: `the result of ${id}` });
    await settle();
    assert.equal(r.outcome, "Backstop", `not the POST's response: ${JSON.stringify(r)}`);
    assert.match(r.text, /the upstream may have received the request, which is not sent twice/);
    assert.equal((await box.result(id)).deliveries, 1, "its handler ran once");
    assert.equal(up.count(key), 0, "the upstream never saw it: the sweep did not send it");
    assert.equal((await q.stats()).pending, 0, "the orchestrator did not queue it");
    assert.deepEqual(await box.pending(), []);
  });

  // sweep.rs. Before (80c183c, `overdue`): a redispatch that failed (the executor was down) was
  // counted as a dispatch all the same, as the count was stored before the send; after the lost
  // first dispatch and two failed ones the GET had used its 3 dispatches, and its handler got
  // Backstop, though the upstream never saw it after the first.
  test("direct: a redispatch that was not sent does not count against the 3 dispatches: a GET whose executor was lost, then down twice, is fetched by the dispatch after", async () => {
    const box = origin();
    const key = `flaky-${box.name}`;
    const id = (await startOk(box, { url: up.url("/flaky", { key }) }, {
      executor_binding: "FLAKY_EXECUTOR", timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    })).request_id;
    const r = await waitFor(() => box.result(id), { deadlineMs: 40000, what: `the result of ${id}` });
    await settle();
    assert.deepEqual([r.outcome, r.status], ["response", 200], `fetched, not a Backstop: ${JSON.stringify(r)}`);
    await logged("of a redispatch that failed", `proxy-fetch ${id}: dispatch again failed`);
    assert.equal((await box.result(id)).deliveries, 1);
    assert.equal(up.count(key), 1, "fetched once");
  });

  // sweep.rs. Before (80c183c, `overdue`): a body kept apart that was gone was logged ("its
  // body is missing; not sent again") and looked at again every 5 s until the request's max age
  // (here an hour): its handler got nothing for that long.
  test("direct: a PUT whose body kept apart is missing is answered Backstop at the sweep at once, saying why, not retried until its max age", async () => {
    const box = origin();
    const key = `nobody-${box.name}`;
    const body = { $bytes: Array.from({ length: 20 * 1024 }, (_, i) => i % 251) };
    const id = (await startOk(box, { method: "PUT", url: up.url("/nobody", { key }), body }, {
      executor_binding: "DEAD_EXECUTOR", timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 }, max_age_ms: 3_600_000,
    })).request_id;
    await box.deleteKey(`proxy-fetch:body:${id}`);
    const r = await waitFor(() => box.result(id), { deadlineMs: 15000, what: `the Backstop of ${id}` });
    assert.equal(r.outcome, "Backstop", JSON.stringify(r));
    assert.match(r.text, /its request body is missing from storage, so it cannot be sent again/);
    await logged("of the missing body", `proxy-fetch ${id}: its request body is missing from storage; its handler gets Backstop now`);
    assert.equal(up.count(key), 0);
    assert.deepEqual(await box.pending(), []);
  });

  // sweep.rs. Before (80c183c): a row that could not be decoded was logged "left alone" by
  // every sweep, and stayed in the ledger for ever.
  test("direct: a ledger row that cannot be decoded is moved aside by the sweep with one log line, and no later sweep meets it", async () => {
    const box = origin();
    const junk = `proxy-fetch:request:zz-junk-${box.name}`;
    await box.putValue(junk, "not a row");
    const id = (await startOk(box, { method: "POST", url: up.url("/junk") }, {
      executor_binding: "DEAD_EXECUTOR", timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    })).request_id;
    await waitFor(() => box.result(id), { deadlineMs: 15000, what: `the Backstop of ${id}` });
    const aside = `proxy-fetch:unreadable:zz-junk-${box.name}`;
    await waitFor(() => box.keys("proxy-fetch:"), { until: (k) => k.includes(aside) && !k.includes(junk), what: `${junk} moved to ${aside}` });
    await logged("of the row set aside", `ledger row ${junk} cannot be decoded`, `moved to ${aside}`);
    // A second request and its sweep: the row is not met again.
    const again = (await startOk(box, { method: "POST", url: up.url("/junk") }, {
      executor_binding: "DEAD_EXECUTOR", timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    })).request_id;
    await waitFor(() => box.result(again), { deadlineMs: 15000, what: `the Backstop of ${again}` });
    await settle();
    assert.equal(w.logs.filter((l) => l.includes(`ledger row ${junk} cannot be decoded`)).length, 1, "logged once");
    assert.deepEqual(await box.pending(), []);
  });

  // ledger.rs. Rows are stored as JSON text; builds before stored a JS Map of records, and a
  // deploy leaves such rows pending: they must still be read.
  test("direct: a ledger row in the form earlier builds stored (a JS Map, not JSON text) is read back: the sweep sends its request again, body included, and its response arrives", async () => {
    const box = origin();
    const key = `earlier-row-${box.name}`;
    // Its executor drops the first dispatch: the request is sent again from its stored row.
    const id = (await startOk(box, { method: "PUT", url: up.url("/earlier-row", { key }), body: [1, 2, 255] }, {
      executor_binding: "DYING_ONCE_EXECUTOR", timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    })).request_id;
    const rows = await box.keys(LEDGER);
    assert.equal(rows.length, 1, `one row: ${rows}`);
    assert.equal(await box.storeRowAsEarlierBuilds(rows[0]), "string", "this build stores JSON text");
    await waitFor(() => box.result(id), { deadlineMs: 15000, what: `the result of ${id}` });
    assert.equal((await box.result(id)).outcome, "response");
    assert.deepEqual(up.bodies(key), [{ length: 3, sha256: createHash("sha256").update(Buffer.from([1, 2, 255])).digest("hex") }]);
    assert.deepEqual(await box.pending(), []);
  });

  // orchestrator.rs. Before (80c183c, `backstop`): overdue entries were acted on one after the
  // other, each delivery awaited with no bound: an origin that takes 40 s to answer held the
  // round, and every entry due after its start, for those 40 s. Now the round tells up to 8
  // origins side by side and waits at most 10 s for one (then tries it again later), so an entry
  // falling due meanwhile is told when that round ends, at most about 10 s late.
  test("orchestrator: an origin that takes 40 s to answer a delivery holds the backstop's round for at most 10 s: another origin's Backstop comes long before it answers", async () => {
    const box = origin();
    const q = orchestrator(`faults-hang-${process.pid}`);
    const options = { executor_binding: "DEAD_EXECUTOR", timeout_ms: 200, backstop_grace_ms: 0, retry: { max_attempts: 1 } };
    // First in key order: a request whose origin hangs on delivery.
    const hanging = (await w.env.HANGING_ORIGIN.idFromName(`hang-${box.name}`)).toString();
    const slow = {
      id: `a-hang-${box.name}`, token: "1".repeat(32),
      request: { method: "POST", url: up.url("/hang"), headers: [], body: null, redirect: "follow" },
      origin: { binding: "HANGING_ORIGIN", id: hanging },
      queue: { binding: "FETCH_ORCHESTRATOR", shard: q.shard },
      options: { ...options, flow: "orchestrated", orchestrator_instance: q.shard },
    };
    must(await call("FETCH_ORCHESTRATOR", q.shard, "enqueue", [slow]), "enqueue");
    const id = `b-real-${box.name}`;
    const started = await startOk(box, { method: "POST", url: up.url("/hang") }, { ...options, flow: "orchestrated", orchestrator_instance: q.shard, request_id: id });
    const r = await waitFor(() => box.result(id), { deadlineMs: 20000, what: `the Backstop of ${id}` });
    assert.equal(r.outcome, "Backstop", JSON.stringify(r));
    const late = r.arrived_at_ms - started.started_at_ms;
    assert.ok(late < 200 + RESERVE_MS + 10_000 + 4000, `told ${late} ms after its start (due after ${200 + RESERVE_MS} ms; the slow origin answers after 40 000 ms)`);
    assert.ok((await q.queued()).includes(slow.id), "the hanging origin's entry is still being told");
  });

  // sweep.rs. Before (80c183c, `overdue`): the origin's sweep sent the orchestrator the whole job,
  // its body read from storage, every two backstop periods, whether or not the orchestrator held
  // the request. So the body's read hit the fault injected here, which stayed unused only if the
  // body was not read.
  test("orchestrated: the origin's sweep asks the orchestrator by ticket and does not read or ship a body kept apart while the orchestrator holds the request", async () => {
    const box = origin();
    const q = orchestrator(`faults-ticket-${process.pid}`);
    const body = { $bytes: Array.from({ length: 20 * 1024 }, (_, i) => i % 251) };
    const timeout = 200;
    const id = (await startOk(box, { method: "PUT", url: up.url("/held"), body }, {
      flow: "orchestrated", orchestrator_instance: q.shard, executor_binding: "DEAD_EXECUTOR",
      timeout_ms: timeout, backstop_grace_ms: 0, retry: { max_attempts: 1 },
    })).request_id;
    await box.inject("get", "proxy-fetch:body:", 1);
    // The origin's sweep looks at the PUT two periods after its start; the witness after that.
    const witness = await startWitness(box, 2 * (timeout + RESERVE_MS) + 1000);
    await waitFor(() => box.result(witness), { until: (r) => r?.outcome === "Backstop", deadlineMs: 20000, what: `the witness's Backstop at ${box.name}` });
    assert.ok((await q.queued()).includes(id), "the orchestrator still holds the PUT");
    assert.equal(await box.faultsLeft(), 1, "the body was never read at the origin");
    assert.ok(!w.logs.some((l) => l.includes(`proxy-fetch ${id}: its body was not read`)));
  });
});

describe("a start that does not wait for the executor (issue 21)", () => {
  /** Releases the calls HeldExecutor holds: how many it released. */
  const release = async () => (await (await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify({ op: "release" }) })).json()).released;

  test("direct: a start is answered once its record is stored, while the executor still holds its call unanswered; the job is fetched once the executor takes it", async () => {
    const box = origin();
    const key = `held-${box.name}`;
    const { request_id: id } = await startOk(box, { method: "POST", url: up.url("/held", { key }) }, { executor_binding: "HELD_EXECUTOR" });
    assert.deepEqual(await box.pending(), [id], "recorded at the origin");
    assert.equal(up.count(key), 0, "not fetched: the executor holds the call");
    await waitFor(release, { until: (n) => n === 1, what: "the executor's held call, released" });
    const r = await waitFor(() => box.result(id), { deadlineMs: 15000, what: `the result of ${id}` });
    assert.deepEqual([r.outcome, r.status, r.deliveries], ["response", 200, 1]);
    assert.equal(up.count(key), 1, "fetched once");
  });

  test("direct: a job the executor refused (busy through the origin's tries) after its start was answered is sent again by the origin's alarm at once, not at its due time, whatever its method: a POST fetched once, its handler run once", async () => {
    const box = origin();
    const key = `busy-${box.name}`;
    // Due at the sweep 40 s or more after the start: a result within 20 s is the alarm's resend.
    const options = { executor_binding: "BUSY_EXECUTOR", timeout_ms: 5000, retry: { max_attempts: 1 }, backstop_grace_ms: 40000 };
    const { request_id: id } = await startOk(box, { method: "POST", url: up.url("/busy", { key }) }, options);
    await logged("of the call the executor did not take", `proxy-fetch ${id}: the executor \`BUSY_EXECUTOR\` did not take it`, "busy");
    const r = await waitFor(() => box.result(id), { deadlineMs: 20000, what: `the result of ${id}` });
    await settle();
    assert.deepEqual([r.outcome, r.status], ["response", 200], JSON.stringify(r));
    assert.equal((await box.result(id)).deliveries, 1, "its handler ran once");
    assert.equal(up.count(key), 1, "fetched once");
    assert.deepEqual(await box.pending(), []);
  });

  test("direct: jobs the executor refused (busy) are sent again by the origin's alarm together, in calls of up to 6, not one call per job; each fetched and delivered once", async () => {
    const box = origin();
    const options = { executor_binding: "BUSY_EXECUTOR", timeout_ms: 5000, retry: { max_attempts: 1 }, backstop_grace_ms: 40000 };
    const calls = Array.from({ length: 8 }, (_, i) => ({
      name: box.name, method: "start", args: [{ url: up.url("/busy-many", { key: `busy-many-${box.name}-${i}` }) }, options, `many-${i}`],
    }));
    const res = await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify({ op: "burst", binding: "INBOX", calls }) });
    const started = await res.json();
    assert.deepEqual(started.filter((s) => s.error), [], "every start succeeded");
    const ids = started.map((s) => s.ok.request_id);
    await waitFor(() => box.results(), { until: (r) => r.length === 8, deadlineMs: 30000, what: `the 8 results at ${box.name}` });
    await settle();
    // Each job's sixth call (the first after the start's five busy tries) is the alarm's resend.
    const lines = w.logs.join("\n").split("\n");
    const resends = lines.filter((l) => l.includes("BusyExecutor: try 6 of") && ids.some((id) => l.includes(id)));
    const resent = resends.flatMap((l) => l.split("try 6 of ")[1].trim().split(","));
    assert.deepEqual([...resent].sort(), [...ids].sort(), "each job sent again once");
    // The 8 starts share two rounds of the origin's writer (the first start, then the 7 that
    // came during its flush): at most one call for the first and two for the others.
    assert.ok(resends.length <= 3, `${resends.length} calls sent the 8 jobs again: ${resends.join(" | ")}`);
    const results = await box.results();
    assert.deepEqual(results.map((r) => [r.outcome, r.status, r.deliveries]), Array(8).fill(["response", 200, 1]));
    for (let i = 0; i < 8; i++) assert.equal(up.count(`busy-many-${box.name}-${i}`), 1, `request ${i} fetched once`);
  });

  test("direct: a call that failed without the executor's answer after the starts were answered: the GET is sent again at once and fetched once; the POST, which the executor may have taken, is not sent again and its handler gets Backstop at its due time", async () => {
    const box = origin();
    const [getKey, postKey] = [`failing-get-${box.name}`, `failing-post-${box.name}`];
    const options = { executor_binding: "FAILING_ONCE_EXECUTOR", timeout_ms: 300, retry: { max_attempts: 1 }, backstop_grace_ms: 0 };
    const { request_id: getId } = await startOk(box, { url: up.url("/failing", { key: getKey }) }, options, "get");
    const { request_id: postId } = await startOk(box, { method: "POST", url: up.url("/failing", { key: postKey }) }, options, "post");
    await logged("of the GET's failed call", `proxy-fetch ${getId}: the executor \`FAILING_ONCE_EXECUTOR\` did not take it`, "failed mid-call");
    const get = await waitFor(() => box.result(getId), { deadlineMs: 15000, what: `the result of ${getId}` });
    const post = await waitFor(() => box.result(postId), { deadlineMs: 20000, what: `the Backstop of ${postId}` });
    await settle();
    assert.deepEqual([get.outcome, get.status, get.deliveries], ["response", 200, 1], JSON.stringify(get));
    assert.equal(post.outcome, "Backstop", JSON.stringify(post));
    assert.match(post.text, /the upstream may have received the request/);
    assert.equal(up.count(getKey), 1, "the GET fetched once");
    assert.equal(up.count(postKey), 0, "the POST never sent again");
  });

  test("direct: a POST the executor refused at the start, whose resend by the alarm then fails without the executor's answer, is not sent a third time: its handler gets Backstop at its due time, and the upstream never saw it", async () => {
    const box = origin();
    const key = `busy-then-fail-${box.name}`;
    // Due 5 s or more after the start, past the start's busy tries (3.75 s): the alarm that
    // resends it is the one the refusal set, not its due time's.
    const options = { executor_binding: "BUSY_EXECUTOR", timeout_ms: 300, retry: { max_attempts: 1 }, backstop_grace_ms: 5000 };
    const { request_id: id } = await startOk(box, { method: "POST", url: up.url("/then-fail", { key }) }, options);
    // After the start's 5 busy calls (3.75 s of the origin's tries), the alarm's resend.
    await waitFor(() => w.logs.some((l) => l.includes(`proxy-fetch ${id}: dispatch again failed without the executor's answer`)), { deadlineMs: 15000, what: "the log line of the alarm's resend that failed" });
    const r = await waitFor(() => box.result(id), { deadlineMs: 30000, what: `the Backstop of ${id}` });
    await settle();
    assert.equal(r.outcome, "Backstop", JSON.stringify(r));
    assert.match(r.text, /the upstream may have received the request/);
    assert.equal((await box.result(id)).deliveries, 1);
    assert.equal(up.count(key), 0, "never fetched");
  });

  test("direct: 60 starts side by side from 6 origins while the isolate does not know their executor's terms: all started, each fetched and delivered once", async () => {
    const boxes = Array.from({ length: 6 }, () => origin());
    const calls = Array.from({ length: 60 }, (_, i) => ({
      name: boxes[i % 6].name, method: "start",
      args: [{ url: up.url("/fresh", { key: `fresh-${boxes[0].name}-${i}` }) }, { executor_binding: "FRESH_EXECUTOR" }, `fresh-${i}`],
    }));
    const res = await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify({ op: "burst", binding: "INBOX", calls }) });
    const started = await res.json();
    assert.deepEqual(started.filter((s) => s.error), [], "every start succeeded");
    for (const box of boxes) {
      await waitFor(() => box.results(), { until: (r) => r.length === 10, deadlineMs: 20000, what: `the 10 results at ${box.name}` });
    }
    await settle();
    for (const box of boxes) {
      const results = await box.results();
      assert.deepEqual(results.map((r) => [r.outcome, r.status, r.deliveries]), Array(10).fill(["response", 200, 1]), box.name);
    }
    for (let i = 0; i < 60; i++) assert.equal(up.count(`fresh-${boxes[0].name}-${i}`), 1, `request ${i} fetched once`);
  });

  test("direct: an executor that cannot be reached when the origin asks its terms fails the start with Dispatch: nothing stored, nothing fetched, no handler runs", async () => {
    const box = origin();
    const key = `unreachable-${box.name}`;
    const r = await box.start({ url: up.url("/unreachable", { key }) }, { executor_binding: "UNREACHABLE_EXECUTOR" });
    assert.equal(r.error?.handler?.kind, "dispatch", JSON.stringify(r));
    assert.match(r.error.message, /the executor cannot be reached/);
    assert.deepEqual(await box.pending(), [], "no record");
    assert.deepEqual(await box.keys("proxy-fetch:"), [], "nothing of it stored");
    await settle();
    assert.equal(up.count(key), 0, "nothing fetched");
    assert.deepEqual(await box.results(), [], "no handler ran");
  });
});

describe("a peer of an earlier build, without the packed methods (a deploy in progress)", () => {
  test("direct: an executor without executeFetchesPacked gets the jobs through executeFetches, and each request is fetched and delivered once", async () => {
    const box = origin();
    const keys = [0, 1].map((i) => `earlier-ex-${box.name}-${i}`);
    for (const [i, key] of keys.entries()) {
      const r = await box.start({ url: up.url(`/earlier/${i}`, { key }) }, { executor_binding: "EARLIER_EXECUTOR", timeout_ms: 5000 }, `e${i}`);
      assert.ok(r.ok, JSON.stringify(r.error));
      const got = await waitFor(async () => (await box.results()).find((x) => x.tag === `e${i}`), { what: `the result of request ${i}` });
      assert.equal(got.status, 200);
      await waitFor(() => w.logs.some((l) => l.includes(`EarlierExecutor: executeFetches of ${r.ok.request_id}`)), { what: `the earlier executor's call of request ${i}` });
    }
    await settle();
    const results = await box.results();
    assert.deepEqual(results.map((x) => x.deliveries), [1, 1], "each handler ran once");
    for (const key of keys) assert.equal(up.count(key), 1, `${key}: fetched once`);
  });

  test("an origin without __proxyFetchDeliverPacked gets its result through __proxyFetchDeliver, in the earlier form, once", async () => {
    const name = `earlier-origin-${process.pid}`;
    const id = (await w.env.EARLIER_ORIGIN.idFromName(name)).toString();
    const key = `earlier-origin-${process.pid}`;
    const job = {
      id: `earlier-${process.pid}`, token: "2".repeat(32),
      request: { method: "GET", url: up.url("/earlier-origin", { key }), headers: [], body: null, redirect: "follow" },
      origin: { binding: "EARLIER_ORIGIN", id }, queue: null, options: { timeout_ms: 5000 },
    };
    await w.env.FETCH_EXECUTOR.executeFetchesPacked([{ json: JSON.stringify(job) }]);
    const [delivery] = await waitFor(async () => {
      const got = must(await call("EARLIER_ORIGIN", name, "received"), "received");
      return got.length && got;
    }, { what: "the earlier origin's delivery" });
    assert.equal(delivery.token, job.token);
    assert.equal(delivery.result.Ok.request_id, job.id);
    assert.equal(delivery.result.Ok.status, 200);
    assert.ok(Array.isArray(delivery.result.Ok.body.$bytes) && delivery.result.Ok.body.$bytes.length > 0, "the body as bytes in the result, as earlier builds read it");
    await settle();
    assert.equal(must(await call("EARLIER_ORIGIN", name, "received"), "received").length, 1, "delivered once");
    assert.equal(up.count(key), 1, "fetched once");
  });
});
