// Every tests/ui/pass case, built to wasm as a module of tests/pass-worker and loaded in real
// workerd: what compiles also loads, and each shape answers, from JS and from its Rust client.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { jsWorker, startWorker } from "./harness.mjs";

let w;
before(async () => {
  w = await startWorker("tests/pass-worker", {
    peers: [jsWorker("pass-peer", "pass-peer.js", { durableObjects: { ROOM: "RemoteRoom" } })],
  });
});
after(() => w?.dispose());

const text = async (path) => {
  const res = await w.fetch(path);
  return { status: res.status, body: await res.text() };
};
// Values that came through Miniflare's RPC proxy, as plain data.
const plain = (value) => JSON.parse(JSON.stringify(value));
// A call that must fail because the method is not exported (the proxy may throw at once).
const notExported = (call, what) =>
  assert.rejects(async () => call(), (e) => {
    assert.match(e.message, /does not implement the method/, `${what}: ${e.message}`);
    return true;
  });
const durable = (binding, name) => w.env[binding].get(w.env[binding].idFromName(name));

describe("all_shapes.rs", () => {
  test("named entrypoint: awaited, wait_until, many arguments, renamed method, from JS", async () => {
    const executor = w.env.SHAPES_EXECUTOR;
    assert.equal(await executor.health(), "ok");
    assert.equal(await executor.executeFetch({ url: "http://127.0.0.1/", body: new Uint8Array([1]), headers: {} }), undefined);
    assert.equal(await executor.manyArgs(7, null, [1, 2], [3, true]), 7);
    assert.equal(await executor.custom_name(), undefined);
  });

  test("a second named entrypoint with a method of the same name, and the default entrypoint", async () => {
    assert.equal(await w.env.ADMIN.health(), "admin ok");
    assert.equal(await w.env.SELF.version(), "1");
  });

  test("Durable Object methods, awaited and wait_until, from JS", async () => {
    const origin = durable("ORIGIN", "js");
    assert.equal(await origin.onResult("id", 200), undefined);
    assert.equal(await origin.cleanup(), undefined);
  });

  test("every generated client, trait clients of JS implementations included, from Rust", async () => {
    assert.deepEqual(await text("/all_shapes"), {
      status: 200,
      body: "ok 1 admin ok 1 bad_id_refused=true 3 1",
    });
  });
});

describe("names_and_helpers.rs", () => {
  test("arguments named like generated locals arrive intact; raw identifiers get their JS name", async () => {
    const names = w.env.NAMES;
    assert.deepEqual(plain(await names.echo("e", "c", 1, 2, 3, 4)), { env: "e", ctx: "c", args: 1, this: 2, stub: 3 });
    assert.equal(await names.type(21), 42);
    assert.equal(await names.stub(41), 42);
    assert.equal(await names.local(), "local");
    assert.equal(await names.kept(), "kept");
  });

  test("helpers (not pub) and cfg'd-out methods are not exported", async () => {
    const names = w.env.NAMES;
    assert.equal(await names.kept(), "kept", "the stub works");
    for (const missing of ["count", "crateHelper", "associated", "gone"]) await notExported(() => names[missing](), missing);
  });

  test("clients whose methods take the constructors' names, from Rust", async () => {
    const { status, body } = await text("/names_and_helpers");
    assert.equal(status, 200, body);
    assert.equal(
      body,
      'Echo { env: "e", ctx: "c", args: 1, this: 2, stub: 3 } 42 local x 42 kept 0 reg Some("reg")',
    );
  });
});

describe("bytes.rs", () => {
  const isBytes = (v) => v instanceof Uint8Array;

  test("a plain Vec<u8> travels as an array of numbers, and accepts an array or a Uint8Array", async () => {
    const fromArray = await w.env.BYTES.reversePlain([1, 2, 3]);
    assert.ok(Array.isArray(fromArray) && !isBytes(fromArray));
    assert.deepEqual(plain(fromArray), [3, 2, 1]);
    assert.deepEqual(plain(await w.env.BYTES.reversePlain(new Uint8Array([4, 5]))), [5, 4]);
  });

  test("a ByteBuf travels as a Uint8Array, and accepts an array too", async () => {
    const reversed = await w.env.BYTES.reverseBuf(new Uint8Array([1, 2, 255]));
    assert.ok(isBytes(reversed));
    assert.deepEqual([...reversed], [255, 2, 1]);
    const fromArray = await w.env.BYTES.reverseBuf([7, 8]);
    assert.ok(isBytes(fromArray));
    assert.deepEqual([...fromArray], [8, 7]);
  });

  test("a #[serde(with = \"serde_bytes\")] field is a Uint8Array, a plain Vec<u8> field an array", async () => {
    const blob = await w.env.BYTES.echoBlob({ data: new Uint8Array([1, 2]), plain: [3, 4] });
    assert.ok(isBytes(blob.data));
    assert.deepEqual([...blob.data], [1, 2]);
    assert.ok(Array.isArray(blob.plain));
    assert.deepEqual(plain(blob.plain), [3, 4]);
  });
});

describe("origin_struct.rs", () => {
  test("#[origin] makes a Durable Object: its constructor defaults the other fields, fetch answers 404, RPC works", async () => {
    const counter = durable("COUNTER", "origin-struct");
    assert.equal(await counter.started(), 0);
    const res = await counter.fetch("http://do/");
    assert.equal(res.status, 404);
    assert.equal(await res.text(), "Counter serves RPC, not HTTP fetch");
    await notExported(() => counter.done({}, 1), "done");
  });
});

describe("readme_origin.rs", () => {
  test("the origin loads beside the proxy-fetch system; its handler is not an RPC method", async () => {
    // `check` would fetch api.example.com; the tests stay on loopback, so only the classes
    // load and the system's executor answers.
    assert.equal((await w.env.FETCH_EXECUTOR.health()).ok, true);
    const inbox = durable("INBOX", "readme");
    await notExported(() => inbox.onResponse({}, "x"), "onResponse");
  });
});
