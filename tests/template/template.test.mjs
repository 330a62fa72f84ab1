// What a new user does, outside this repository: install the build CLI with cargo, make a crate
// from templates/worker (proxy-fetch as a path dependency on this checkout), run `wrangler dev`,
// whose [build] hook builds it with proxy-fetch-build, and proxy a fetch through it to a local
// upstream. Also: the README's snippets are the template's files, and the CLI refuses a crate
// built against another proxy-fetch version.
//
// Cached between runs (so a rerun costs seconds): the installed CLI and its build folder, and
// the template crate's target folder, under $PF_CACHE/outside-test.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startUpstream } from "../workerd/upstream.mjs";
import { wasmBuildEnv } from "../../tools/build-worker.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const template = join(root, "templates/worker");
const cache = join(process.env.PF_CACHE ?? join(process.env.HOME ?? tmpdir(), ".cache/proxy-fetch"), "outside-test");
const run = promisify(execFile);
const seconds = (t0) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

const cliRoot = join(cache, "cli");

// The CLI, installed with cargo as a user would (from this checkout instead of crates.io).
before(async () => {
  const t0 = Date.now();
  await run("cargo", ["install", "--quiet", "--locked", "--path", join(root, "proxy-fetch-build"),
    "--root", cliRoot, "--target-dir", join(cache, "cli-target")], { timeout: 15 * 60_000 });
  console.log(`# cargo install --path proxy-fetch-build: ${seconds(t0)}`);
});

/** Waits until `check()` returns a truthy value, polling every `every` ms until `ms` pass. */
async function until(what, ms, check, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer().once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** The fenced code blocks (toml, rust) of a README section. */
function readmeBlocks(heading) {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README has a "## ${heading}" section`);
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```(toml|rust)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], code: m[2] }));
}

test("every toml and rust snippet of the README's 'Use it in your worker' is verbatim in templates/worker", () => {
  const files = {
    toml: ["Cargo.toml", "wrangler.toml"].map((f) => readFileSync(join(template, f), "utf8")),
    rust: [readFileSync(join(template, "src/lib.rs"), "utf8")],
  };
  const blocks = readmeBlocks("Use it in your worker");
  assert.ok(blocks.some((b) => b.lang === "rust") && blocks.some((b) => b.lang === "toml"));
  for (const block of blocks) {
    assert.ok(files[block.lang].some((file) => file.includes(block.code)),
      `README block not found verbatim in templates/worker:\n${block.code}`);
  }
  // The release profile is what makes the wasm small; the template must keep it.
  assert.match(files.toml[0], /\[profile\.release\]\nopt-level = "z"\nlto = true\ncodegen-units = 1\n/);
});

describe("a crate made from templates/worker outside the repository, run by wrangler dev", () => {
  let work, crate, upstream, wrangler, base;
  let output = "";

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "pf-template-"));
    crate = join(work, "my-worker");

    // The crate: the template with proxy-fetch pointing at this checkout. The workspace's
    //    Cargo.lock pins the same dependency versions the other tests build with.
    cpSync(template, crate, { recursive: true, filter: (src) => !/\/(target|build|\.wrangler)$/.test(src) });
    const manifest = join(crate, "Cargo.toml");
    const original = readFileSync(manifest, "utf8");
    const pointed = original.replace('path = "../../proxy-fetch"', `path = ${JSON.stringify(join(root, "proxy-fetch"))}`);
    assert.notEqual(pointed, original, "the template's Cargo.toml has the path dependency this test rewrites");
    writeFileSync(manifest, pointed);
    cpSync(join(root, "Cargo.lock"), join(crate, "Cargo.lock"));

    // wrangler dev, local only; its [build] command is `proxy-fetch-build`, found on PATH.
    upstream = await startUpstream();
    const port = await freePort();
    const inspectorPort = await freePort();
    const config = join(work, "config");
    mkdirSync(config);
    const env = {
      // (With the rustc-web fallback of tools/setup.sh, its rustc and target folder.)
      ...wasmBuildEnv({ ...process.env, CARGO_TARGET_DIR: join(cache, "template-target") },
        (folder) => join(cache, `template-target-${folder}`)),
      PATH: `${join(cliRoot, "bin")}:${process.env.PATH}`,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      XDG_CONFIG_HOME: config,
      NO_COLOR: "1",
    };
    // The CLI finds the wasm-bindgen CLI of the crate's Cargo.lock itself (in the shared cache).
    delete env.WASM_BINDGEN;
    const t0 = Date.now();
    wrangler = spawn(join(root, "node_modules/.bin/wrangler"), ["dev", "--local", "--ip", "127.0.0.1",
      "--port", String(port), "--inspector-port", String(inspectorPort),
      "--var", `WEATHER_API:${upstream.base}`, "--show-interactive-dev-session=false"],
    { cwd: crate, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let exited = null;
    wrangler.on("exit", (code, signal) => { exited = { code, signal }; });
    for (const stream of [wrangler.stdout, wrangler.stderr]) stream.on("data", (d) => { output += d; });
    base = `http://127.0.0.1:${port}`;
    await until("wrangler dev to build the crate and listen", 15 * 60_000, async () => {
      if (exited) throw new Error(`wrangler dev exited (${JSON.stringify(exited)}):\n${output}`);
      if (!output.includes(`Ready on ${base}`)) return false;
      return fetch(`${base}/`, { signal: AbortSignal.timeout(10_000) }).then((r) => r.status === 404, () => false);
    }, 100);
    console.log(`# wrangler dev: built (proxy-fetch-build) and ready in ${seconds(t0)}`);
  });

  after(async () => {
    if (wrangler?.exitCode === null && wrangler.signalCode === null) {
      const gone = new Promise((r) => wrangler.once("exit", r));
      process.kill(-wrangler.pid, "SIGTERM"); // wrangler and the workerd it started
      const stopped = await Promise.race([gone.then(() => true), new Promise((r) => setTimeout(r, 10_000, false))]);
      if (!stopped) process.kill(-wrangler.pid, "SIGKILL");
    }
    await upstream?.close();
    if (work) rmSync(work, { recursive: true, force: true });
    if (process.env.PF_VERBOSE) console.log(output);
  });

  test("wrangler's build hook ran proxy-fetch-build, which wrote the main module", () => {
    assert.match(output, /proxy-fetch-build: my-worker -> .*build\/worker\.js \(wasm \d+ KiB; entrypoints: FetchExecutorEntrypoint; durable objects: FetchOrchestrator, Inbox\)/);
    const main = readFileSync(join(crate, "build/worker.js"), "utf8");
    assert.match(main, /export const Inbox = durableObject\(wasm, "Inbox"\);/);
    assert.ok(existsSync(join(crate, "build/proxy-fetch-runtime.js")));
  });

  test("a fetch proxied through the worker reaches the local upstream and its handler stores the response", async () => {
    const res = await fetch(`${base}/check/lisbon`, { method: "POST", signal: AbortSignal.timeout(30_000) });
    const requestId = await res.text();
    assert.equal(res.status, 200, requestId);
    assert.match(requestId, /^[0-9a-f-]{36}$/);
    const stored = await until("the handler to store the response", 30_000, async () => {
      const r = await fetch(`${base}/weather/lisbon`, { signal: AbortSignal.timeout(10_000) });
      return r.status === 200 ? r.text() : false;
    });
    const echo = JSON.parse(stored);
    assert.equal(echo.path, "/weather/lisbon");
    assert.equal(upstream.count("/weather/lisbon"), 1);
  });
});

test("proxy-fetch-build refuses a crate that depends on another proxy-fetch version, before building", async () => {
  const work = mkdtempSync(join(tmpdir(), "pf-version-"));
  try {
    // A stand-in proxy-fetch of another version: the refusal comes from `cargo metadata`, so
    // nothing is compiled.
    mkdirSync(join(work, "proxy-fetch/src"), { recursive: true });
    writeFileSync(join(work, "proxy-fetch/Cargo.toml"), '[package]\nname = "proxy-fetch"\nversion = "0.0.1"\nedition = "2021"\n');
    writeFileSync(join(work, "proxy-fetch/src/lib.rs"), "");
    mkdirSync(join(work, "old-worker/src"), { recursive: true });
    writeFileSync(join(work, "old-worker/Cargo.toml"), [
      '[package]\nname = "old-worker"\nversion = "0.1.0"\nedition = "2021"\n',
      '[lib]\ncrate-type = ["cdylib"]\n',
      '[dependencies]\nproxy-fetch = { path = "../proxy-fetch" }\nwasm-bindgen = "=0.2.129"\n',
    ].join("\n"));
    writeFileSync(join(work, "old-worker/src/lib.rs"), "");
    cpSync(join(root, "Cargo.lock"), join(work, "old-worker/Cargo.lock"));
    const cli = join(cliRoot, "bin/proxy-fetch-build");
    const failed = await run(cli, [], { cwd: join(work, "old-worker"), timeout: 120_000 }).then(() => null, (e) => e);
    assert.ok(failed, "proxy-fetch-build succeeded on a crate of proxy-fetch 0.0.1");
    assert.match(failed.stderr, /built against proxy-fetch 0\.0\.1, but this proxy-fetch-build is 0\.1\.0/);
    assert.ok(!existsSync(join(work, "old-worker/build")), "nothing was written");
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
