// A Rust panic in a worker built with panic = "unwind" (PF_PANIC_UNWIND=1, docs/panics.md)
// fails only its own call: the Wasm instance lives on, with the calls and wait_until work that
// were in flight in it. Not part of scripts/test (the build compiles std from source); run it
// with scripts/test-unwind, which builds tests/worker/build-unwind first.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { jsWorker, root, startWorker, waitFor } from "./harness.mjs";

let w;
before(async () => {
  w = await startWorker("tests/worker", {
    scriptPath: join(root, "tests/worker/build-unwind/worker.js"),
    peers: [jsWorker("js-peer", "js-peer.js", {
      serviceBindings: {
        GREETER: { name: "rpc-test-worker", entrypoint: "GreeterEntrypoint" },
        CRASHER: { name: "rpc-test-worker", entrypoint: "CrasherEntrypoint" },
      },
      durableObjects: { COUNTER: { className: "Counter", scriptName: "rpc-test-worker", useSQLite: true } },
    })],
  });
});
after(() => w?.dispose());

const json = async (path) => (await w.fetchPeer("js-peer", path)).json();

describe("panic = unwind (tests/worker/build-unwind)", () => {
  test("a panicking call rejects with an RPC error naming the method and the panic; calls and wait_until work in flight complete in the same instance", async () => {
    const r = await json("/panic-isolated?key=unwind-1");
    assert.deepEqual(r.ack, {}, "the wait_until method was acknowledged (resolved with undefined, no error) before the panic");
    assert.equal(r.crash.error.message, "rpc `explode` failed (Remote): the handler panicked: the test panics on purpose");
    assert.deepEqual(r.crash.error.rpc, { kind: "Remote", method: "explode", message: "the handler panicked: the test panics on purpose" });
    assert.deepEqual(r.valueAtCrash, { ok: 0 }, "the wait_until work had not written yet when the panic was answered");
    assert.deepEqual(r.nap, { ok: 1500 }, "the awaited call in flight completed with its value");
    assert.deepEqual(r.settled, ["explode", "nap"], "the nap was still in flight when the panic was answered");
    assert.equal(r.ticksAfter, r.ticksBefore + 1, "the instance's memory was kept (no fresh instance)");
    await waitFor(async () => (await w.fetch("/counter?key=unwind-1")).text(), {
      until: (value) => value === "9", deadlineMs: 5000, what: "the wait_until work started before the panic to write 9",
    });
    assert.ok(w.logs.join("").includes("explode panicked: the test panics on purpose"), "the panic is logged with the method's name");
  });

  test("a Rust caller in the same instance gets the panic as CallError::Rpc with kind Remote", async () => {
    const res = await w.fetch("/explode");
    assert.equal(await res.text(),
      'Rpc(RpcError { kind: Remote, method: "explode", message: "the handler panicked: the test panics on purpose" })');
  });

  test("a panicking Durable Object method rejects only its call; the object's memory and storage are kept", async () => {
    const r = await json("/panic-do?key=unwind-do");
    assert.equal(r.crash.error.message, "rpc `explode` failed (Remote): the handler panicked: the Durable Object panics on purpose");
    assert.equal(r.explosions, 1, "the same Rust object answered after the panic (a rebuilt one would say 0)");
    assert.equal(r.value, 4);
  });

  test("a panic in the Rust fetch handler answers that request with a 500; the instance lives on", async () => {
    const before = await json("/ticks");
    const res = await w.fetch("/panic-fetch");
    const body = await res.text();
    assert.equal(res.status, 500);
    assert.match(body, /PanicError: the test's fetch handler panics on purpose/);
    assert.equal(await json("/ticks"), before + 1, "the instance's memory was kept (no fresh instance)");
  });

  test("a panic in wait_until work is logged with the method's name; the instance lives on", async () => {
    const r = await json("/panic-later");
    assert.deepEqual(r.ack, {}, "acknowledged (resolved with undefined, no error) before the panic");
    const line = "Crasher.explodeLater panicked in wait_until: the test panics on purpose in the background";
    await waitFor(() => w.logs.join("").includes(line), { deadlineMs: 5000, what: `the panic logged ("${line}")` });
    assert.equal(await json("/ticks"), r.ticks + 1, "the instance's memory was kept (no fresh instance)");
  });
});
