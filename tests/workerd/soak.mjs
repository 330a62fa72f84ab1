// The fault-injection soak: N proxied fetches through the test worker (half of them over the
// direct flow, half orchestrated) while the upstream
// injects 5xx, 429 with Retry-After, connection resets, hangs past the timeout and slow large
// bodies, a share of POSTs goes to an executor that dies after acknowledging, and workerd is
// killed (SIGKILL) during bursts of starts and restarted on the same storage. Afterwards every
// request must have had its handler run exactly once, with the outcome of its scenario (a GET
// lost with its executor is recovered, never Backstop), and no queue entry or pending record
// may be left. The results are read again after the queues drained and the settle window
// passed, so a delivery made while they drained counts. Every wait has a deadline and throws
// at it (harness.mjs's waitFor); a failed read of results, pending records or stats is an
// error, never an empty list. Used by soak.test.mjs (1,000) and scripts/soak.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jsWorker, settle, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

const SHARDS = 4;
const ORIGINS = 20;
/** How long the soak waits for its in-flight requests to fall under `maxInFlight` (ms). */
const IN_FLIGHT_DEADLINE_MS = 120_000;
/** How long it waits, after the last start, for every result and for the queues to drain (ms). */
const DRAIN_DEADLINE_MS = 180_000;
/** A random delay before a kill: when to strike, not a wait for anything. */
const killDelay = () => new Promise((r) => setTimeout(r, Math.random() * 300));

/** The value of one call of a burst that must succeed: a failed read is an error, never empty. */
function must(answer, what) {
  if (!answer || !("ok" in answer)) throw new Error(`soak: ${what} failed: ${JSON.stringify(answer?.error ?? answer)}`);
  return answer.ok;
}

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
      // The dying executor gives the real one's terms.
      serviceBindings: { REAL_EXECUTOR: { name: "proxy-test-worker", entrypoint: "FetchExecutorEntrypoint" } },
    })],
    serviceBindings: { DEAD_EXECUTOR: { name: "driver", entrypoint: "DeadExecutor" } },
  });
  const driver = async (body) => (await w.fetchPeer("driver", "http://driver/", { method: "POST", body: JSON.stringify(body) })).json();
  const origin = (i) => `soak-inbox-${i % ORIGINS}`;
  const origins = [...Array(ORIGINS).keys()].map(origin);
  /** Every origin's answer to `method`, each one required. */
  const ask = async (method) => {
    const answers = await driver({ op: "burst", binding: "INBOX", calls: origins.map((name) => ({ name, method, args: [] })) });
    return answers.map((a, i) => must(a, `${method} of ${origins[i]}`));
  };
  const inFlight = async () => (await ask("pending")).reduce((sum, p) => sum + p.length, 0);
  /** tag -> every result filed under that tag (more than one is a duplicate too). */
  const readFiled = async () => {
    const filed = new Map();
    for (const list of await ask("results")) for (const r of list) filed.set(r.tag, [...(filed.get(r.tag) ?? []), r]);
    return filed;
  };
  const readLeftovers = async () => {
    const shards = await driver({ op: "burst", binding: "FETCH_ORCHESTRATOR", calls: [...Array(SHARDS).keys()].map((s) => ({ name: `singleton-${s}`, method: "stats", args: [] })) });
    return {
      queue_entries: shards.reduce((sum, s, i) => sum + must(s, `stats of singleton-${i}`).pending, 0),
      pending_records: (await ask("pending")).reduce((sum, p) => sum + p.length, 0),
    };
  };
  const started = new Map(); // tag -> { expect }
  const startErrors = [];
  let kills = 0;
  const t0 = Date.now();
  try {
    const waves = restarts + 1;
    for (let wave = 0; wave < waves; wave++) {
      const from = Math.floor((n * wave) / waves);
      const to = Math.floor((n * (wave + 1)) / waves);
      // In each wave but the last, workerd is killed (SIGKILL, then restarted on the same
      // storage) at a random moment while one of its bursts is being started: some starts
      // are cut short, others are in flight or being delivered.
      const batches = Math.ceil((to - from) / batch);
      const killAt = wave < restarts ? Math.floor(Math.random() * batches) : -1;
      for (let b = from, k = 0; b < to; b += batch, k++) {
        const ids = [...Array(Math.min(batch, to - b)).keys()].map((j) => b + j);
        const calls = ids.map((i) => {
          const s = scenario(i, up);
          const flow = i % 2 === 0 ? "direct" : "orchestrated";
          // Local workerd runs every Durable Object and the executor on one thread: under a
          // burst of 250 a 50 ms upstream answer reaches the executor's code 1-4 s later
          // (measured), more on a loaded machine. So only the hanging scenario gets a short
          // timeout; the others' 10 s is far above what the upstream takes.
          // The request id is the caller's, so a start cut short by a kill can be asked again.
          const options = { flow, request_id: `r${i}`, timeout_ms: s.expect === "Timeout" ? 2000 : 10000, retry: { max_attempts: 3, base_delay_ms: 20, max_delay_ms: 200 }, backstop_grace_ms: 500, shards: SHARDS, executor_binding: s.executor ?? "FETCH_EXECUTOR" };
          return { name: origin(i), method: "start", args: [{ url: s.url, method: s.method ?? "GET" }, options, `r${i}`] };
        });
        let results;
        if (k === killAt) {
          const kill = killDelay().then(() => w.restart());
          const [burst] = await Promise.allSettled([driver({ op: "burst", binding: "INBOX", calls }), kill]);
          kills++;
          log(`workerd killed and restarted during a burst (${Date.now() - t0} ms)`);
          // Whatever the kill cut short is started again under the same ids: a start that got
          // through finds its request pending and starts nothing.
          const cut = burst.status === "rejected" ? calls.map(() => ({ error: "killed" })) : burst.value;
          const again = cut.map((r, j) => (r.ok ? null : calls[j])).filter(Boolean);
          const retried = again.length ? await driver({ op: "burst", binding: "INBOX", calls: again }) : [];
          results = cut.map((r) => (r.ok ? r : retried.shift()));
        } else {
          results = await driver({ op: "burst", binding: "INBOX", calls });
        }
        results.forEach((r, j) => {
          const i = ids[j];
          if (r.ok) started.set(`r${i}`, { expect: scenario(i, up).expect });
          else startErrors.push(`r${i}: ${r.error}`);
        });
        // A soak, not a stampede: keep at most maxInFlight requests waiting for their result.
        await waitFor(inFlight, { until: (n) => n <= maxInFlight, deadlineMs: IN_FLIGHT_DEADLINE_MS, everyMs: 100, what: `at most ${maxInFlight} requests in flight` });
      }
      log(`wave ${wave + 1}/${waves}: ${started.size} started (${Date.now() - t0} ms)`);
    }

    // Wait for every result, then for the queues to drain (completions and backstops), then
    // the settle window; only then read the results that are judged.
    const drainBy = Date.now() + DRAIN_DEADLINE_MS;
    const left = () => Math.max(1, drainBy - Date.now());
    await waitFor(async () => {
      const filed = await readFiled();
      const missing = [...started.keys()].filter((t) => !filed.has(t));
      return { missing: missing.length, examples: missing.slice(0, 10) };
    }, { until: (m) => m.missing === 0, deadlineMs: left(), everyMs: 250, what: `a result for each of the ${started.size} started requests` });
    const leftovers = await waitFor(readLeftovers, {
      until: (l) => l.queue_entries === 0 && l.pending_records === 0, deadlineMs: left(), everyMs: 250,
      what: "the orchestrators' queues and the origins' pending records to drain",
    });
    await settle();
    const filed = await readFiled();

    const report = { requests: n, kills, started: started.size, start_errors: startErrors.length, delivered: 0, lost: 0, duplicates: 0, wrong_outcome: 0, by_outcome: {}, leftovers, seconds: (Date.now() - t0) / 1000 };
    const wrong = [];
    for (const [tag, { expect }] of started) {
      const copies = filed.get(tag);
      if (!copies) {
        report.lost++;
        continue;
      }
      const [r] = copies;
      report.delivered++;
      if (copies.length !== 1 || r.deliveries !== 1) report.duplicates++;
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
      && report.orphans === 0 && leftovers.queue_entries === 0 && leftovers.pending_records === 0;
    return report;
  } finally {
    await w.dispose();
    await up.close();
    rmSync(persist, { recursive: true, force: true });
  }
}
