// TypeScript callers of Rust entrypoints (docs/typescript.md): the declarations that
// `proxy-fetch-build --dts` generated from tests/worker (scripts/test writes them into
// tests/worker/build/worker.d.ts before this runs) type a TS worker's bindings; tsc accepts
// tests/ts-caller/caller.ts, refuses each marked line of tests/ts-caller/wrong.ts and no other,
// and the compiled caller runs in workerd against the Rust worker.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { jsWorker, root, startWorker } from "./harness.mjs";

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
  });

  test("examples/demo's worker.d.ts: Inbox's RPC methods, not its continuation; tsc accepts it", () => {
    const demo = join(root, "examples", "demo", "build", "worker.d.ts");
    assert.ok(existsSync(demo), `${demo} is missing: run node tools/build-worker.mjs --dts-only examples/demo`);
    const text = readFileSync(demo, "utf8");
    assert.match(text, /export interface Inbox extends Rpc\.DurableObjectBranded \{/);
    assert.match(text, /results\(\): Promise<Array<Filed>>;/);
    assert.match(text, /status\?: number \| null/, "#[ts(optional_fields = nullable)]: a None field may be undefined");
    assert.doesNotMatch(text, /onResponse/, "a continuation handler is not an RPC method");
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
  let w;
  before(async () => {
    // The caller must be compiled: the tests above do it, and so does this (idempotent).
    const { status, output } = runTsc(callerDir);
    assert.equal(status, 0, output);
    w = await startWorker("tests/worker", {
      // The Rust worker's JS_MATH binding (served by js-peer.js in rpc.test.mjs) is not called
      // here; it must still name a service for workerd to start.
      serviceBindings: { JS_MATH: { name: "ts-caller" } },
      peers: [jsWorker("ts-caller", join(callerDir, "build", "caller.js"), {
        serviceBindings: {
          GREETER: { name: "rpc-test-worker", entrypoint: "GreeterEntrypoint" },
          RUST_DEFAULT: { name: "rpc-test-worker" },
        },
        durableObjects: { COUNTER: { className: "Counter", scriptName: "rpc-test-worker", useSQLite: true } },
      })],
    });
  });
  after(() => w?.dispose());

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

  test("the default entrypoint through Service<DefaultEntrypoint>", async () => {
    assert.deepEqual(await call("/version"), { version: "rpc-test-worker 1" });
  });

  test("a #[wait_until] method resolves to undefined; its work shows later", async () => {
    assert.deepEqual(await call("/record-later?key=ts-late"), { ackIsUndefined: true });
    const deadline = Date.now() + 5000;
    let got;
    for (;;) {
      ({ got } = await call("/counter-get?key=ts-late"));
      if (got === 7 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(got, 7, "the background work wrote 7 under waitUntil");
  });
});
