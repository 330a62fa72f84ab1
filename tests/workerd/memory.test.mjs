// An origin's memory stays bounded by what it is asked for: a request body larger than 16 KiB
// that the record must keep (to send it again) is stored apart from the ledger, so listing the
// pending requests never loads it; only sending the job again does. Measured on the workerd
// process itself (its resident memory, from /proc), which runs the origin's isolate.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { jsWorker, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

let w, up;
before(async () => {
  up = await startUpstream();
  const shared = { scriptName: "proxy-test-worker", useSQLite: true };
  w = await startWorker("tests/proxy-worker", {
    bindings: { PROXY_FETCH_ALLOW: `http://127.0.0.1:${new URL(up.url("/")).port}` },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: { INBOX: { className: "Inbox", ...shared }, FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...shared } },
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

/** Resident memory (KiB) of the workerd process this test file started. */
function workerdRssKiB() {
  const found = [];
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    const m = stat.match(/^\d+ \((.*)\) \S+ (\d+)/);
    if (m && m[1].startsWith("workerd") && Number(m[2]) === process.pid) {
      const rss = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
      if (rss) found.push(Number(rss[1]));
    }
  }
  assert.equal(found.length, 1, `one workerd child of this process (found ${found.length})`);
  return found[0];
}

async function call(name, method, ...args) {
  return callOn("INBOX", name, method, ...args);
}

async function callOn(binding, name, method, ...args) {
  const res = await w.fetchPeer("driver", "http://driver/call", { method: "POST", body: JSON.stringify({ binding, name, method, args }) });
  const answer = await res.json();
  if (answer.error) throw new Error(`${method} failed: ${JSON.stringify(answer.error)}`);
  return answer.ok;
}

const body = (kib) => ({ $bytes: Array.from({ length: kib * 1024 }, (_, i) => i % 251) });

test("listing 40 pending PUTs of 700 KiB does not load their bodies: the workerd process grows by less than 12 MiB over 10 listings", async () => {
  const name = `memory-${process.pid}`;
  const bytes = body(700);
  for (let i = 0; i < 40; i++) {
    // Kept pending: a dead executor, and a backstop far away.
    await call(name, "start", { method: "PUT", url: up.url(`/put/${i}`), body: bytes }, { executor_binding: "DEAD_EXECUTOR", backstop_grace_ms: 3_600_000, max_age_ms: 7_200_000 }, `put-${i}`);
  }
  const before = workerdRssKiB();
  for (let i = 0; i < 10; i++) assert.equal((await call(name, "pending")).length, 40);
  const grown = workerdRssKiB() - before;
  console.log(`# workerd resident memory: ${before} KiB before 10 listings of 40 pending 700 KiB PUTs, ${grown} KiB more after`);
  assert.ok(grown < 12 * 1024, `grew by ${grown} KiB`);
});

test("a PUT whose 100 KiB body is stored apart is sent again with its body when its executor died", async () => {
  const name = `memory-again-${process.pid}`;
  await call(name, "start", { method: "PUT", url: up.url("/again"), body: body(100) }, { executor_binding: "DYING_ONCE_EXECUTOR", timeout_ms: 1000, backstop_grace_ms: 0, retry: { max_attempts: 1 } }, "t");
  const [r] = await waitFor(() => call(name, "results"), { until: (list) => list.length > 0, deadlineMs: 20000, what: "the result of the dispatch again" });
  assert.equal(r.status, 200, JSON.stringify(r));
  // The upstream echoes the body it got, base64 in JSON: 100 KiB is about 137 KB of it.
  assert.ok(r.body_len > 130_000, `the echo carries the whole body (${r.body_len} bytes)`);
  assert.deepEqual(await call(name, "pending"), []);
});

// ledger.rs. A body of at most 16 KiB stays in its record, and a row is stored as JSON text, where
// a byte takes up to 4 characters: rows are filled counting that, so that a row stays under the
// 128 KiB a value may take in a key-value-backed Durable Object (counted by the bytes alone, 3 of
// these records would share a row of about 190 KiB). A text with a character past U+00FF takes
// two bytes per character in storage: such a row, when that would pass 120 KiB, is stored as a
// JS Map, bodies as bytes.
test("8 PUTs with 16 KiB bodies kept in their records, started together from one origin: each row is JSON text under 120 KiB, or a Map for the one whose data holds a euro sign, and each request is sent again with its body when its executor died", async () => {
  const name = `memory-inline-${process.pid}`;
  const bytes = { $bytes: Array.from({ length: 16 * 1024 }, (_, i) => 200 + (i % 56)) };
  const tag = (i) => (i === 0 ? "inline-0-\u20ac" : `inline-${i}`);
  const calls = Array.from({ length: 8 }, (_, i) => ({
    name, method: "start", args: [{ method: "PUT", url: up.url(`/inline/${i}`), body: bytes }, { executor_binding: "DYING_ONCE_EXECUTOR", timeout_ms: 1000, backstop_grace_ms: 0, retry: { max_attempts: 1 } }, tag(i)],
  }));
  const started = await (await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify({ op: "burst", binding: "INBOX", calls }) })).json();
  assert.deepEqual(started.filter((s) => !s.ok), [], "every start succeeded");
  // Pending until the sweep sends them again (their first dispatch was dropped): one row each.
  const lengths = await call(name, "storageTextLengths", "proxy-fetch:request:");
  assert.equal(lengths.length, 8, `row lengths ${lengths}`);
  assert.equal(lengths.filter((n) => n === null).length, 1, `one row not text: ${lengths}`);
  assert.ok(lengths.every((n) => n === null || (n > 64 * 1024 && n < 120 * 1024)), `row lengths ${lengths}`);
  const results = await waitFor(() => call(name, "results"), { until: (list) => list.length === 8, deadlineMs: 20000, what: "the 8 results, each sent again" });
  // The upstream echoes the body it got, base64 in JSON: 16 KiB is about 22 KB of it.
  for (const r of results) assert.ok(r.status === 200 && r.body_len > 21_800, JSON.stringify({ ...r, text: undefined }));
  assert.deepEqual(results.map((r) => r.tag).sort(), calls.map((_, i) => tag(i)).sort());
  await waitFor(() => call(name, "pending"), { until: (list) => list.length === 0, deadlineMs: 5000, what: "no request pending once every result was handled" });
});

// orchestrator.rs. Before (80c183c): an entry of the queue held its job with the request's body,
// and `stats` (and the backstop) read and decoded every entry: 10 listings of these 40 entries
// each decoded 28 MB, and the process grew by far more than the bound below.
test("the orchestrator's stats over 40 pending orchestrated PUTs of 700 KiB do not load their bodies: the workerd process grows by less than 12 MiB over 10 listings", async () => {
  const name = `memory-orch-${process.pid}`;
  const shard = `memory-orch-${process.pid}`;
  const bytes = body(700);
  for (let i = 0; i < 40; i++) {
    await call(name, "start", { method: "PUT", url: up.url(`/put/${i}`), body: bytes }, { flow: "orchestrated", orchestrator_instance: shard, executor_binding: "DEAD_EXECUTOR", backstop_grace_ms: 3_600_000, max_age_ms: 7_200_000 }, `put-${i}`);
  }
  const before = workerdRssKiB();
  for (let i = 0; i < 10; i++) assert.equal((await callOn("FETCH_ORCHESTRATOR", shard, "stats")).pending, 40);
  const grown = workerdRssKiB() - before;
  console.log(`# workerd resident memory: ${before} KiB before 10 orchestrator stats over 40 pending 700 KiB PUTs, ${grown} KiB more after`);
  assert.ok(grown < 12 * 1024, `grew by ${grown} KiB`);
});
