// templates/rpc as a user's crate: copied outside the repository (proxy-fetch as a path
// dependency on this checkout, without its `system` feature), built to wasm32 by
// proxy-fetch-build, and run in workerd (Miniflare, from the crate's own wrangler.toml) beside
// a JS worker that calls it. The Rust target folder is kept under $PF_CACHE/rpc-template-target.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildCli, wasmBuildEnv } from "../../tools/build-worker.mjs";
import { jsWorker, startWorker } from "../workerd/harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const template = join(root, "templates/rpc");
const cache = join(process.env.PF_CACHE ?? join(process.env.HOME ?? tmpdir(), ".cache/proxy-fetch"), "rpc-template-target");

let work, crate, built, w;

before(async () => {
  work = mkdtempSync(join(tmpdir(), "pf-rpc-template-"));
  crate = join(work, "my-rpc-worker");
  cpSync(template, crate, { recursive: true, filter: (src) => !/\/(target|build|\.wrangler)$/.test(src) });
  const manifest = join(crate, "Cargo.toml");
  const original = readFileSync(manifest, "utf8");
  const pointed = original.replace('path = "../../proxy-fetch"', `path = ${JSON.stringify(join(root, "proxy-fetch"))}`);
  assert.notEqual(pointed, original, "the template's Cargo.toml has the path dependency this test rewrites");
  writeFileSync(manifest, pointed);
  cpSync(join(root, "Cargo.lock"), join(crate, "Cargo.lock"));

  const env = wasmBuildEnv({ ...process.env, CARGO_TARGET_DIR: cache }, (folder) => `${cache}-${folder}`);
  built = execFileSync(buildCli(), [crate], { env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 20 * 60_000 });
  console.log(built.trim());

  w = await startWorker(crate, {
    peers: [jsWorker("js-caller", join(here, "js-caller.js"), {
      serviceBindings: { GREETER: { name: "my-rpc-worker", entrypoint: "GreeterEntrypoint" } },
      durableObjects: { COUNTER: { className: "Counter", scriptName: "my-rpc-worker", useSQLite: true } },
    })],
  });
});

after(async () => {
  await w?.dispose();
  if (work) rmSync(work, { recursive: true, force: true });
});

test("the build exports the named entrypoint and the Durable Object, and nothing of the proxy-fetch system", () => {
  assert.match(built, /my-rpc-worker -> .*build\/worker\.js \(wasm \d+ KiB; entrypoints: GreeterEntrypoint; durable objects: Counter\)/);
  const main = readFileSync(join(crate, "build/worker.js"), "utf8");
  assert.match(main, /export const Counter = /);
  assert.match(main, /export const GreeterEntrypoint = /);
  assert.doesNotMatch(main, /FetchOrchestrator|FetchExecutorEntrypoint/);
});

test("Rust to Rust: the fetch handler calls the entrypoint, which calls the Durable Object, which calls the entrypoint back", async () => {
  const first = await w.fetch("/greet/ann");
  assert.equal(first.status, 200);
  assert.deepEqual(await first.json(), { text: "Hello, ann!", visits: 1 });
  const second = await w.fetch("/greet/ann");
  assert.deepEqual(await second.json(), { text: "Welcome back, ann (visit 2).", visits: 2 });
});

test("a handler's error reaches the Rust caller typed", async () => {
  const res = await w.fetch("/greet/");
  assert.equal(res.status, 400);
  assert.equal(await res.text(), "empty_name: a greeting needs a name");
});

test("JS to Rust: plain values in and out, the Durable Object's RPC methods, typed errors", async () => {
  const peer = async (path) => (await w.fetchPeer("js-caller", path)).json();
  assert.deepEqual(await peer("/greet?name=bo"), { ok: { text: "Hello, bo!", visits: 1 } });
  assert.equal(await peer("/visits?name=bo"), 1);
  const failed = await peer("/greet?name=");
  assert.deepEqual(failed.error.handler, { kind: "empty_name", message: "a greeting needs a name" });
  assert.match(failed.error.message, /empty_name: a greeting needs a name/);
  const bad = await peer("/bad-payload?name=bo");
  assert.equal(bad.error.rpc?.kind, "BadArgument", JSON.stringify(bad));
  assert.equal(bad.error.rpc.method, "phrase");
});

/** The fenced code blocks of a markdown section `## heading`. */
function blocks(file, heading) {
  const text = readFileSync(join(root, file), "utf8");
  const start = text.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `${file} has a "## ${heading}" section`);
  const end = text.indexOf("\n## ", start + 1);
  return [...text.slice(start, end < 0 ? undefined : end).matchAll(/```(toml|rust)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], code: m[2] }));
}

test("every toml and rust block of docs/rpc.md's minimal example is verbatim in templates/rpc", () => {
  const files = {
    toml: ["Cargo.toml", "wrangler.toml"].map((f) => readFileSync(join(template, f), "utf8")),
    rust: [readFileSync(join(template, "src/lib.rs"), "utf8")],
  };
  const found = blocks("docs/rpc.md", "A minimal worker");
  assert.ok(found.some((b) => b.lang === "rust") && found.some((b) => b.lang === "toml"));
  for (const block of found) {
    assert.ok(files[block.lang].some((file) => file.includes(block.code)), `docs/rpc.md block not found verbatim in templates/rpc:\n${block.code}`);
  }
});
