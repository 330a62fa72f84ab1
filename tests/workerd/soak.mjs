// The fault-injection soak: N proxied fetches through the test worker (half of them over the
// direct flow, half orchestrated) while the upstream
// injects 5xx, 429 with Retry-After, connection resets, hangs past the timeout and slow large
// bodies, a share of requests goes to an executor that dies after acknowledging, and workerd is
// restarted mid-run (every Durable Object and isolate recycled, storage kept). Afterwards every
// request must have had its handler run exactly once, with the right outcome class, and no
// queue entry or pending record may be left. Used by soak.test.mjs (1,000) and scripts/soak.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jsWorker, startWorker } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

const SHARDS = 4;
const ORIGINS = 20;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What request i asks of the upstream, and the outcome its handler must see. */
function scenario(i, up) {
  const key = `soak-${i}`;
  switch (i % 10) {
    case 4: return { url: up.url("/flaky", { fail: 2, key }), expect: "response" };
    case 5: return { url: up.url("/limited", { fail: 1, failStatus: 429, header: "retry-after:1", key }), expect: "response" };
    case 6: return { url: up.url("/reset", { reset: 1, key }), expect: "Network" };
    case 7: return { url: up.url("/hang", { hang: 1, key }), expect: "Timeout" };
    case 8: return { url: up.url("/large", { bytes: 200_000, delay: 100, key }), expect: "response" };
    // A POST whose executor dies is not sent twice: the backstop tells the handler.
    case 9: return { url: up.url("/lost", { key }), method: "POST", expect: "Backstop", executor: "DEAD_EXECUTOR" };
    default: return { url: up.url("/ok", { delay: i % 50, key }), expect: "response" };
  }
}

export async function soak({ n = 1000, restarts = 2, batch = 250, maxInFlight = 500, log = () => {} } = {}) {
  const persist = mkdtempSync(join(tmpdir(), "proxy-fetch-soak-"));
  const up = await startUpstream();
  const worker = { scriptName: "proxy-test-worker", useSQLite: true };
  const w = await startWorker("tests/proxy-worker", {
    shared: { durableObjectsPersist: persist },
    peers: [jsWorker("driver", "driver.js", {
      durableObjects: { INBOX: { className: "Inbox", ...worker }, FETCH_ORCHESTRATOR: { className: "FetchOrchestrator", ...worker } },
    })],
    serviceBindings: { DEAD_EXECUTOR: { name: "driver", entrypoint: "DeadExecutor" } },
  });
  const driver = async (body) => (await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify(body) })).json();
  const origin = (i) => `soak-inbox-${i % ORIGINS}`;
  const inFlight = async () => {
    const pending = await driver({ op: "burst", binding: "INBOX", calls: [...Array(ORIGINS).keys()].map((i) => ({ name: origin(i), method: "pending", args: [] })) });
    return pending.reduce((sum, p) => sum + (p.ok?.length ?? 0), 0);
  };
  const started = new Map(); // tag -> { expect, restarted }
  const startErrors = [];
  const t0 = Date.now();
  try {
    const waves = restarts + 1;
    for (let wave = 0; wave < waves; wave++) {
      const from = Math.floor((n * wave) / waves);
      const to = Math.floor((n * (wave + 1)) / waves);
      for (let b = from; b < to; b += batch) {
        const ids = [...Array(Math.min(batch, to - b)).keys()].map((k) => b + k);
        const calls = ids.map((i) => {
          const s = scenario(i, up);
          const flow = i % 2 === 0 ? "direct" : "orchestrated";
          // 5 s, not less: right after a (re)start the burst keeps the one workerd thread busy for
          // seconds (cold wasm), and a direct-flow fetch started inside it can wait that long.
          const options = { flow, timeout_ms: 5000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 }, backstop_grace_ms: 500, shards: SHARDS, executor_binding: s.executor ?? "FETCH_EXECUTOR" };
          return { name: origin(i), method: "start", args: [{ url: s.url, method: s.method ?? "GET" }, options, `r${i}`] };
        });
        const results = await driver({ op: "burst", binding: "INBOX", calls });
        results.forEach((r, k) => {
          const i = ids[k];
          if (r.ok) started.set(`r${i}`, { expect: scenario(i, up).expect, wave });
          else startErrors.push(`r${i}: ${r.error}`);
        });
        // A soak, not a stampede: keep at most maxInFlight requests waiting for their result.
        while ((await inFlight()) > maxInFlight) await sleep(100);
      }
      log(`wave ${wave + 1}/${waves}: ${started.size} started (${Date.now() - t0} ms)`);
      if (wave < restarts) {
        await sleep(150); // some fetches in flight, some results arriving
        await w.restart();
        log(`workerd restarted: all instances recycled (${Date.now() - t0} ms)`);
      }
    }

    // Wait for every result, then for the queues to drain (completions and backstops).
    const filed = new Map();
    const deadline = Date.now() + 180_000;
    while (Date.now() < deadline) {
      const lists = await driver({ op: "burst", binding: "INBOX", calls: [...Array(ORIGINS).keys()].map((i) => ({ name: origin(i), method: "results", args: [] })) });
      filed.clear();
      for (const l of lists) for (const r of l.ok ?? []) filed.set(r.tag, r);
      if ([...started.keys()].every((t) => filed.has(t))) break;
      await sleep(250);
    }
    let leftovers;
    while (Date.now() < deadline) {
      const shards = await driver({ op: "burst", binding: "FETCH_ORCHESTRATOR", calls: [...Array(SHARDS).keys()].map((s) => ({ name: `singleton-${s}`, method: "stats", args: [] })) });
      const pending = await driver({ op: "burst", binding: "INBOX", calls: [...Array(ORIGINS).keys()].map((i) => ({ name: origin(i), method: "pending", args: [] })) });
      // A failed stats or pending call is an error, never a zero.
      const count = (r, f) => {
        if (!r.ok) throw new Error(`soak: a leftover check failed: ${JSON.stringify(r.error)}`);
        return f(r.ok);
      };
      leftovers = {
        queue_entries: shards.reduce((sum, s) => sum + count(s, (x) => x.pending), 0),
        pending_records: pending.reduce((sum, p) => sum + count(p, (x) => x.length), 0),
      };
      if (leftovers.queue_entries === 0 && leftovers.pending_records === 0) break;
      await sleep(250);
    }

    const report = { requests: n, started: started.size, start_errors: startErrors.length, delivered: 0, lost: 0, duplicates: 0, wrong_outcome: 0, by_outcome: {}, leftovers, seconds: (Date.now() - t0) / 1000 };
    const wrong = [];
    for (const [tag, { expect, wave }] of started) {
      const r = filed.get(tag);
      if (!r) {
        report.lost++;
        continue;
      }
      report.delivered++;
      if (r.deliveries !== 1) report.duplicates++;
      report.by_outcome[r.outcome] = (report.by_outcome[r.outcome] ?? 0) + 1;
      // A GET in flight when workerd restarted lost its executor: it is dispatched again, so
      // even then its outcome is the scenario's, never Backstop.
      if (r.outcome !== expect) {
        report.wrong_outcome++;
        if (wrong.length < 5) wrong.push(`${tag}: expected ${expect}, got ${r.outcome} (${r.text.slice(0, 100)}); the upstream saw it ${up.count(`soak-${tag.slice(1)}`)} time(s)`);
      }
    }
    const orphans = [...filed.keys()].filter((t) => !started.has(t)).length;
    report.orphans = orphans;
    report.examples = { wrong, start_errors: startErrors.slice(0, 5) };
    report.ok = report.lost === 0 && report.duplicates === 0 && report.wrong_outcome === 0 && report.start_errors === 0
      && leftovers?.queue_entries === 0 && leftovers?.pending_records === 0;
    return report;
  } finally {
    await w.dispose();
    await up.close();
    rmSync(persist, { recursive: true, force: true });
  }
}
