// Driver in workerd for the tests and the benchmarks: lets Node call Durable Object RPC methods by name with JSON
// (POST {binding, name, method, args}), start many requests at once from inside the runtime
// (POST {op: "burst", binding, calls: [{name, method, args}]}), and plays a
// FetchExecutorEntrypoint that acknowledges and then drops every job: an executor that dies
// mid-request (and one that answers only after a second before it drops them: a slow one), a
// flaky executor, one that fails a request's first call, one busy for its first 5, one that
// answers only when released,
// an unreachable one, an executor and an origin of an earlier build (without the packed
// methods), and an origin that is slow to take deliveries.
// In args, {"$bytes": [..]} becomes a Uint8Array; in results, Uint8Arrays become {"$bytes": [..]}.
import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";

// The fake executors below are real executors that fail in one way: asked for their terms (what
// they take), they give the real executor's, as a working executor would.
class FakeExecutor extends WorkerEntrypoint {
  terms() {
    return this.env.REAL_EXECUTOR.terms();
  }
}

export class DeadExecutor extends FakeExecutor {
  executeFetches(_jobs) {}
}

// An executor that answers a call only SLOW_ACK_MS after it came, and then drops its jobs: whoever
// dispatches to it waits that long (faults.test.mjs holds up an orchestrator's backstop round
// with it, so that other entries fall due meanwhile). A slow component, not a wait for anything.
const SLOW_ACK_MS = 1000;
export class SlowExecutor extends FakeExecutor {
  async executeFetches(_jobs) {
    await new Promise((r) => setTimeout(r, SLOW_ACK_MS));
  }
}

// An executor that dies on the first dispatch of each request and works from the second on
// (it forwards to REAL_EXECUTOR): a request lost with its executor, then recovered.
const dropped = new Set();
export class DyingOnceExecutor extends FakeExecutor {
  executeFetches(jobs) {
    const again = jobs.filter((job) => dropped.has(job.id));
    for (const job of jobs) dropped.add(job.id);
    if (again.length) return this.env.REAL_EXECUTOR.executeFetches(again);
  }
}

// An executor whose first dispatch of a request is acknowledged and then lost, whose next two
// calls for it fail (it is down), and which works from the fourth on (it forwards to
// REAL_EXECUTOR): redispatches that were never sent, between a lost one and one that works.
const flaky = new Map();
export class FlakyExecutor extends FakeExecutor {
  executeFetches(jobs) {
    const n = (flaky.get(jobs[0].id) ?? 0) + 1;
    for (const job of jobs) flaky.set(job.id, n);
    if (n === 1) return undefined;
    if (n <= 3) throw new Error("the executor is down");
    return this.env.REAL_EXECUTOR.executeFetches(jobs);
  }
}

// An executor whose first call for each request fails without an answer (it throws), and which
// works from the second on (it forwards to REAL_EXECUTOR): the origin cannot tell whether it
// took the job.
const failedOnce = new Set();
export class FailingOnceExecutor extends FakeExecutor {
  executeFetches(jobs) {
    const first = jobs.filter((job) => !failedOnce.has(job.id));
    for (const job of jobs) failedOnce.add(job.id);
    if (first.length) throw new Error("the executor failed mid-call");
    return this.env.REAL_EXECUTOR.executeFetches(jobs);
  }
}

// An executor that answers the first 5 calls for each request `busy` (proxy-fetch's typed
// refusal: nothing taken), more than the origin's own tries, and works from the sixth on; the
// sixth call for a request whose URL holds `then-fail` fails without an answer (it throws).
const busyCalls = new Map();
export class BusyExecutor extends FakeExecutor {
  executeFetches(jobs) {
    const n = Math.max(...jobs.map((job) => (busyCalls.get(job.id) ?? 0) + 1));
    for (const job of jobs) busyCalls.set(job.id, n);
    console.log(`BusyExecutor: try ${n} of ${jobs.map((job) => job.id).join(",")}`);
    if (n <= 5) {
      const message = "the executor holds its byte budget: nothing fetched";
      throw Object.assign(new Error(`busy: ${message}`), { proxyFetchHandlerError: { kind: "busy", message } });
    }
    if (n === 6 && jobs.some((job) => job.request.url.includes("then-fail"))) throw new Error("the executor failed mid-call");
    return this.env.REAL_EXECUTOR.executeFetches(jobs);
  }
}

// An executor that holds each call unanswered until the driver is asked to `release` them
// (POST {op: "release"}), then forwards it to REAL_EXECUTOR: a start made meanwhile shows what
// it waits for. (A call looks every 20 ms, for at most 30 s: a promise resolved by the release's
// request would be one workerd cancels as hung.)
let heldCalls = 0;
let releasedCalls = 0;
export class HeldExecutor extends FakeExecutor {
  async executeFetches(jobs) {
    const call = ++heldCalls;
    for (const deadline = Date.now() + 30_000; releasedCalls < call; ) {
      if (Date.now() > deadline) throw new Error("HeldExecutor: never released");
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.env.REAL_EXECUTOR.executeFetches(jobs);
  }
}

// An executor whose terms are the real executor's but whose calls go to BARE_EXECUTOR, a worker
// without the origin's binding: terms an origin learned before the executor's worker changed.
export class StaleTermsExecutor extends FakeExecutor {
  executeFetches(jobs) {
    return this.env.BARE_EXECUTOR.executeFetches(jobs);
  }
}

// An executor of an earlier build, which serves `executeFetches` but not `executeFetchesPacked`
// (it forwards to REAL_EXECUTOR, and logs each call).
export class EarlierExecutor extends FakeExecutor {
  executeFetches(jobs) {
    console.log(`EarlierExecutor: executeFetches of ${jobs.map((job) => job.id).join(",")}`);
    return this.env.REAL_EXECUTOR.executeFetches(jobs);
  }
}

// An executor that cannot be reached: every call to it fails, its terms too.
export class UnreachableExecutor extends WorkerEntrypoint {
  terms() {
    throw new Error("the executor cannot be reached");
  }
  executeFetches(_jobs) {
    throw new Error("the executor cannot be reached");
  }
}

// An origin whose deliveries answer only HANG_MS after they came: one slow origin among many.
const HANG_MS = 40_000;
export class HangingOrigin extends DurableObject {
  async __proxyFetchDeliver(deliveries) {
    await new Promise((r) => setTimeout(r, HANG_MS));
    return deliveries.map(() => ({ Ok: "Delivered" }));
  }
}

// An origin of an earlier build, which serves `__proxyFetchDeliver` but not
// `__proxyFetchDeliverPacked`: it keeps what it got (`received()`) and takes every result.
export class EarlierOrigin extends DurableObject {
  __proxyFetchDeliver(deliveries) {
    this.got = [...(this.got ?? []), ...deliveries];
    return deliveries.map(() => ({ Ok: "Delivered" }));
  }
  received() {
    return this.got ?? [];
  }
}

const revive = (v) =>
  Array.isArray(v) ? v.map(revive)
  : v && typeof v === "object" ? ("$bytes" in v ? new Uint8Array(v.$bytes)
    // A Set, and an empty array of a given length (sparse: its length costs nothing to send).
    : "$set" in v ? new Set(v.$set.map(revive))
    : "$sparse" in v ? Object.assign([], { length: v.$sparse })
    : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)])))
  : v;
const plain = (v) =>
  v instanceof Uint8Array ? { $bytes: [...v] }
  : Array.isArray(v) ? v.map(plain)
  : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
  : v;

export default {
  async fetch(request, env) {
    const body = await request.json();
    if (body.op === "burst") return burst(env, body);
    if (body.op === "release") {
      const released = heldCalls - releasedCalls;
      releasedCalls = heldCalls;
      return Response.json({ released });
    }
    const { binding, name, method, args = [] } = body;
    const ns = env[binding];
    const stub = ns.get(ns.idFromName(name));
    try {
      return Response.json({ ok: plain(await stub[method](...revive(args))) });
    } catch (e) {
      return Response.json({ error: { message: e.message, rpc: e.proxyFetchRpcError, handler: e.proxyFetchHandlerError } });
    }
  },
};

async function burst(env, { binding, calls }) {
  const ns = env[binding];
  // Each call's time until its answer reached the driver (output gate included).
  const settled = await Promise.allSettled(calls.map(async ({ name, method, args }) => {
    const t0 = Date.now();
    const value = await ns.get(ns.idFromName(name))[method](...revive(args));
    return { value, answered_ms: Date.now() - t0 };
  }));
  return Response.json(settled.map((s) => (s.status === "fulfilled" ? { ok: plain(s.value.value), answered_ms: s.value.answered_ms } : { error: String(s.reason?.message ?? s.reason) })));
}
