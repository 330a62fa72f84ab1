// #[entrypoint] in real workerd: generated clients and handlers between Rust and JS, named and
// Durable Object entrypoints, wait_until acknowledgement, typed errors, bad payloads.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jsWorker, startWorker, waitFor } from "./harness.mjs";

let w;
before(async () => {
  w = await startWorker("tests/worker", {
    peers: [jsWorker("js-peer", "js-peer.js", {
      serviceBindings: {
        GREETER: { name: "rpc-test-worker", entrypoint: "GreeterEntrypoint" },
        ADMIN: { name: "rpc-test-worker", entrypoint: "AdminEntrypoint" },
        RUST_DEFAULT: { name: "rpc-test-worker" },
        CRASHER: { name: "rpc-test-worker", entrypoint: "CrasherEntrypoint" },
      },
      durableObjects: { COUNTER: { className: "Counter", scriptName: "rpc-test-worker", useSQLite: true } },
    })],
  });
});
after(() => w?.dispose());

const text = async (path) => {
  const res = await w.fetch(path);
  return { status: res.status, body: await res.text() };
};
const json = async (path) => (await w.fetchPeer("js-peer", path)).json();

describe("Rust caller, Rust callee", () => {
  test("the worker's fetch handler answers from Rust", async () => {
    assert.deepEqual(await text("/"), { status: 200, body: "hello from Rust in workerd" });
  });

  test("awaited method on a named entrypoint returns the value, bytes intact", async () => {
    assert.deepEqual(await text("/greet?name=ann&times=2"), { status: 200, body: "hello ann! hello ann! [3, 2, 1]" });
  });

  test("a handler's error reaches the Rust caller typed, kind and message intact", async () => {
    const { body } = await text("/greet?name=bob&times=0");
    assert.equal(body, 'Handler(HandlerError { kind: "zero_times", message: "cannot greet bob zero times" })');
  });

  test("wait_until method acknowledges before its work ends; the work's effect shows later", async () => {
    const { body } = await text("/record-later?key=late-1");
    assert.match(body, /value_at_ack=0$/, "the caller was answered before the work wrote 7");
    await waitFor(async () => (await text("/counter?key=late-1")).body, {
      until: (body) => body === "7", deadlineMs: 5000, what: "the background work to write 7 under waitUntil",
    });
  });

  test("a wait_until method's failure is logged with the method's name, not lost", async () => {
    const { body } = await text("/record-later?key=fail");
    assert.match(body, /^ack_ms=/, "the caller was acknowledged");
    const line = "Greeter.recordLater failed in wait_until: refused: the key `fail` is refused after the acknowledgement";
    await waitFor(() => w.logs.join("").includes(line), { deadlineMs: 5000, what: `the log line "${line}"` });
  });

  test("Durable Object RPC methods through the generated client; fetch still works", async () => {
    const res = await json("/counter?key=do-1&value=41");
    assert.deepEqual(res, { set: 41, get: 41, fetched: "counter=41" });
    assert.deepEqual(await text("/counter?key=do-1"), { status: 200, body: "41" });
  });

  test("a missing binding is a typed MissingBinding error naming the binding and the constructor called", async () => {
    const { body } = await text("/missing-binding");
    assert.match(body, /^MissingBinding: no binding `NOPE` in env/);
    assert.match(body, /\nrpc `from_env` failed \(MissingBinding\): no binding `NOPE` in env/);
  });
});

describe("JS and Rust across the boundary", () => {
  test("a JS caller calls the Rust entrypoint with plain objects and gets Uint8Array back", async () => {
    assert.deepEqual(await json("/greet"), { text: "hello js? hello js?", blobIsUint8Array: true, blob: [3, 2, 1] });
  });

  test("two entrypoints with a method of the same name, and the default entrypoint's methods", async () => {
    assert.deepEqual(await json("/same-name"), { greeter: "hello x", admin: "admin sees x", version: "rpc-test-worker 1" });
  });

  test("a JS caller sees a handler error as a thrown Error with the handler's message", async () => {
    const { error } = await json("/greet-error");
    assert.equal(error.message, "zero_times: cannot greet js zero times");
    assert.deepEqual(error.handler, { kind: "zero_times", message: "cannot greet js zero times" });
  });

  test("a mismatched payload gets a typed error naming method and field; the next call succeeds", async () => {
    const r = await json("/bad-payload");
    assert.equal(r.bad.error.rpc.kind, "BadArgument");
    assert.equal(r.bad.error.rpc.method, "greet");
    assert.match(r.bad.error.rpc.message, /argument `g`: field `times`: .*invalid type: string "many", expected u32/);
    assert.match(r.missing.error.rpc.message, /argument `g`: .*missing field `times`/);
    assert.match(r.arity.error.rpc.message, /expected 2 argument\(s\), got 1/);
    assert.equal(r.next, "hello again.");
  });

  test("a Rust panic: the caller gets an error at once, acknowledged background work lost with it is logged, the next calls get a fresh instance", async () => {
    const r = await json("/panic");
    assert.match(r.crash.error.message, /the Wasm instance crashed/);
    const line = "acknowledged background work lost: GreeterEntrypoint.recordLater";
    await waitFor(() => w.logs.join("").includes(line), { deadlineMs: 5000, what: `the lost wait_until work named in the log ("${line}")` });
    console.log(`panic reported to the caller after ${r.crashMs} ms`);
    assert.equal(r.after, "hello after!");
    assert.equal(r.counterAfter, 5, "the Durable Object's Rust value is rebuilt; its storage is kept");
  });

  test("a Rust client calls a JS entrypoint declared by a trait", async () => {
    const { body } = await text("/js-math");
    assert.equal(
      body,
      "sum=42 text=rust seen by JS (blob is Uint8Array: true) blob=[0, 255] failed=Remote: JsMath.fail says no",
    );
  });
});
