// TypeScript callers of Rust entrypoints (docs/typescript.md): the declarations that
// `proxy-fetch-build --dts` generated from tests/worker and examples/demo (scripts/test writes
// them into <crate>/build/worker.d.ts before this runs) type a TS worker's bindings; tsc accepts
// tests/ts-caller/caller.ts, refuses each marked line of tests/ts-caller/wrong.ts and no other,
// and the compiled caller runs in workerd against the Rust worker and the demo (which serves
// proxy-fetch's FetchOrchestrator and FetchExecutorEntrypoint).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { jsWorker, optionsFromWrangler, root, startWorker, waitFor } from "./harness.mjs";
import { startUpstream } from "./upstream.mjs";

const tsc = join(root, "node_modules", ".bin", "tsc");
const callerDir = join(root, "tests", "ts-caller");
const dts = join(root, "tests", "worker", "build", "worker.d.ts");

/** Runs tsc on a project; returns its exit status and output. */
function runTsc(project) {
  try {
    return { status: 0, output: execFileSync(tsc, ["-p", project, "--pretty", "false"], { encoding: "utf8" }) };
  } catch (e) {
    return { status: e.status, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

describe("TypeScript declarations of tests/worker's entrypoints", () => {
  test("worker.d.ts declares each entrypoint with the bindings' brands", () => {
    assert.ok(existsSync(dts), `${dts} is missing: run node tools/build-worker.mjs --dts-only tests/worker`);
    const text = readFileSync(dts, "utf8");
    assert.match(text, /export interface GreeterEntrypoint extends Rpc\.WorkerEntrypointBranded \{/);
    assert.match(text, /export interface DefaultEntrypoint extends Rpc\.WorkerEntrypointBranded \{/);
    assert.match(text, /export interface Counter extends Rpc\.DurableObjectBranded \{/);
    assert.match(text, /greet\(g: Greeting, suffix: string\): Promise<Reply>;/);
    assert.match(text, /recordLater\(key: string, value: number, ms: number\): Promise<undefined>;/);
    assert.match(text, /export type Greeting = \{ name: string, times: number, blob: Uint8Array, \};/);
    // The trait JsMath is served by JS, not by this worker: it is not declared.
    assert.doesNotMatch(text, /JsMath/);
    // This worker does not say serve_system!(): proxy-fetch's classes are not declared.
    assert.doesNotMatch(text, /FetchOrchestrator|FetchExecutorEntrypoint/);
  });

  test("128-bit integers are declared bigint, 64-bit ones number, without annotations", () => {
    const text = readFileSync(dts, "utf8");
    assert.match(text, /export type Wide = \{ big: bigint, negative: bigint, \};/);
    assert.match(text, /export type WideReply = \{ wide: Wide, doubled: number, \};/);
    assert.match(text, /wide\(w: Wide, n: number\): Promise<WideReply>;/);
    assert.match(text, /echoU128\(n: bigint\): Promise<bigint>;/);
  });

  test("examples/demo's worker.d.ts: Inbox's RPC methods, not its continuation; tsc accepts it", () => {
    const demo = join(root, "examples", "demo", "build", "worker.d.ts");
    assert.ok(existsSync(demo), `${demo} is missing: run node tools/build-worker.mjs --dts-only examples/demo`);
    const text = readFileSync(demo, "utf8");
    assert.match(text, /export interface Inbox extends Rpc\.DurableObjectBranded \{/);
    assert.match(text, /results\(\): Promise<Array<Filed>>;/);
    assert.match(text, /status\?: number \| null/, "#[ts(optional_fields = nullable)]: a None field may be undefined");
    assert.doesNotMatch(text, /onResponse/, "a continuation handler is not an RPC method");
    // serve_system!(): the orchestrator's and executor's methods for binding holders, typed;
    // the protocol's methods (and their messages) are not declared.
    assert.match(text, /export interface FetchOrchestrator extends Rpc\.DurableObjectBranded \{/);
    assert.match(text, /  stats\(\): Promise<QueueStats>;/);
    assert.match(text, /  statsWithQueries\(\): Promise<QueueStats>;/);
    assert.match(text, /export interface FetchExecutorEntrypoint extends Rpc\.WorkerEntrypointBranded \{/);
    assert.match(text, /  health\(\): Promise<ExecutorHealth>;/);
    // Its fields carry their Rust doc comments.
    assert.match(text, /export type QueueStats = \{\s*\/\*\*\s*\* Requests in the queue[^]*?\*\/\s*pending: number,/);
    assert.match(text, /policy: \{ Ok: undefined \} \| \{ Err: string \}/);
    for (const method of ["enqueue", "complete", "forget", "undelivered", "executeFetches", "executeFetchesPacked", "__proxyFetchDeliver", "__proxyFetchDeliverPacked"]) {
      assert.doesNotMatch(text, new RegExp(`^  ${method}\\(`, "m"), `the protocol's ${method} is not declared`);
    }
    assert.doesNotMatch(text, /FetchJob/, "nor the protocol's messages");
    assert.doesNotMatch(text, /Written `unknown`/, "every type the demo's RPC methods use is declared");
    const { status, output } = runTsc(join(callerDir, "tsconfig.demo.json"));
    assert.equal(status, 0, output);
  });

  test("tsc accepts the TS caller (tests/ts-caller/caller.ts) and compiles it", () => {
    const { status, output } = runTsc(callerDir);
    assert.equal(status, 0, output);
    assert.ok(existsSync(join(callerDir, "build", "caller.js")));
  });

  test("tsc refuses exactly the lines of tests/ts-caller/wrong.ts marked @expect-error", () => {
    const { status, output } = runTsc(join(callerDir, "tsconfig.wrong.json"));
    assert.notEqual(status, 0, "tsc accepted the wrong calls");
    const source = readFileSync(join(callerDir, "wrong.ts"), "utf8").split("\n");
    const marked = source.flatMap((line, i) => (/\/\/ @expect-error/.test(line) ? [i + 1] : []));
    assert.ok(marked.length >= 10, "wrong.ts marks its wrong lines");
    const reported = [...output.matchAll(/wrong\.ts\((\d+),\d+\): error TS\d+/g)].map((m) => Number(m[1]));
    assert.deepEqual([...new Set(reported)].sort((a, b) => a - b), marked, output);
    const elsewhere = output.split("\n").filter((l) => /error TS\d+/.test(l) && !/wrong\.ts\(/.test(l));
    assert.deepEqual(elsewhere, [], "no error outside wrong.ts");
  });
});

describe("the compiled TS caller in workerd, calling the Rust worker", () => {
  let w, up;
  before(async () => {
    // The caller must be compiled: the tests above do it, and so does this (idempotent).
    const { status, output } = runTsc(callerDir);
    assert.equal(status, 0, output);
    up = await startUpstream();
    const demo = { scriptName: "proxy-fetch-demo", useSQLite: true };
    w = await startWorker("tests/worker", {
      // The Rust worker's JS_MATH binding (served by js-peer.js in rpc.test.mjs) is not called
      // here; it must still name a service for workerd to start.
      serviceBindings: { JS_MATH: { name: "ts-caller" } },
      peers: [
        jsWorker("ts-caller", join(callerDir, "build", "caller.js"), {
          serviceBindings: {
            GREETER: { name: "rpc-test-worker", entrypoint: "GreeterEntrypoint" },
            RUST_DEFAULT: { name: "rpc-test-worker" },
            DEMO_EXECUTOR: { name: "proxy-fetch-demo", entrypoint: "FetchExecutorEntrypoint" },
          },
          durableObjects: {
            COUNTER: { className: "Counter", scriptName: "rpc-test-worker", useSQLite: true },
            DEMO_INBOX: { className: "Inbox", ...demo },
            DEMO_ORCHESTRATOR: { className: "FetchOrchestrator", ...demo },
          },
        }),
        // examples/demo as its wrangler.toml configures it: it serves proxy-fetch's classes.
        optionsFromWrangler(join(root, "examples", "demo")),
      ],
    });
  });
  after(async () => {
    await w?.dispose();
    await up?.close();
  });

  const call = async (path) => (await w.fetchPeer("ts-caller", path)).json();

  test("a struct with bytes goes in and comes back: Uint8Array both ways", async () => {
    assert.deepEqual(await call("/greet"), { text: "hello ts! hello ts!", blobIsUint8Array: true, blob: [3, 2, 1] });
  });

  test("a handler's Err(HandlerError) is thrown as an Error with proxyFetchHandlerError", async () => {
    assert.deepEqual(await call("/greet-error"), {
      isError: true,
      kind: "zero_times",
      message: "cannot greet ts zero times",
    });
  });

  test("Durable Object methods through DurableObjectNamespace<Counter>: numbers round-trip", async () => {
    assert.deepEqual(await call("/counter?key=ts-counter"), { set: 41, got: 41 });
  });

  test("u128/i128 cross as bigint both ways, a u64 as a number", async () => {
    assert.deepEqual(await call("/wide"), {
      big: String(2n ** 100n + 1n),
      bigType: "bigint",
      negative: String(-(2n ** 100n) - 1n),
      doubled: 2 ** 53 - 2,
      doubledType: "number",
      max: String(2n ** 128n - 1n),
      maxType: "bigint",
    });
  });

  test("a u64 result beyond 2^53 does not cross: the call rejects with an RpcError", async () => {
    const { isError, rpc } = await call("/wide-u64-beyond-2-53");
    assert.equal(isError, true);
    assert.match(rpc?.message ?? "", /can't be represented as a JavaScript number/, JSON.stringify(rpc));
  });

  test("a number where a u128 is declared (bigint) is refused by the callee", async () => {
    const { isError, rpc } = await call("/wide-u128-as-number");
    assert.equal(isError, true);
    assert.equal(rpc?.method, "echoU128", JSON.stringify(rpc));
    assert.match(rpc?.message ?? "", /invalid type/, JSON.stringify(rpc));
  });

  test("serve_system!(): the demo's FetchOrchestrator.stats/statsWithQueries and executor health, typed", async () => {
    const upstream = up.base;
    const started = await call(`/system-start?key=ts-system&upstream=${encodeURIComponent(upstream)}`);
    assert.match(started.requestId, /^[0-9a-f]{32}~\d+$/);
    assert.equal(started.pending, 1, JSON.stringify(started));
    assert.deepEqual(started.ids, [started.requestId]);
    assert.equal(started.url, `${upstream}/slow?…`, "stats redacts the query string");
    assert.equal(started.urlWithQuery, `${upstream}/slow?delay=1500&key=secret`);
    assert.equal(started.healthOk, true);
    assert.equal(started.policyOk, true, "policy crosses as { Ok: undefined }");
    // The request completes: the orchestrator's queue empties and the Inbox filed the response.
    const after = await waitFor(() => call("/system-results?key=ts-system"), {
      until: (r) => r.pending === 0 && r.filed.length > 0, deadlineMs: 15000, everyMs: 50,
      what: "the orchestrator's queue to empty and the Inbox to file the response",
    });
    assert.deepEqual(after, { pending: 0, filed: [{ id: started.requestId, outcome: "response", status: 200 }] });
  });

  test("the default entrypoint through Service<DefaultEntrypoint>", async () => {
    assert.deepEqual(await call("/version"), { version: "rpc-test-worker 1" });
  });

  test("a #[wait_until] method resolves to undefined; its work shows later", async () => {
    assert.deepEqual(await call("/record-later?key=ts-late"), { ackIsUndefined: true });
    await waitFor(async () => (await call("/counter-get?key=ts-late")).got, {
      until: (got) => got === 7, deadlineMs: 5000, what: "the background work to write 7 under waitUntil",
    });
  });
});
