// What a new user does, outside this repository: install the build CLI with cargo, make a crate
// from templates/worker (proxy-fetch by version, as on crates.io), run `wrangler dev`, whose
// [build] hook builds it with proxy-fetch-build, and proxy a fetch through it to a local
// upstream. What it builds is what a user would download: the crates as `cargo package` makes
// them (tools/package.mjs), the CLI installed from its .crate, the template's dependency taken
// from them through [patch.crates-io]. Also: examples/demo served by `wrangler dev` the same
// way (a short-path fetch, and a long-path one through its local queue and proxy-fetch's queue
// consumer), the README's snippets are the template's files, and the CLI refuses a crate built
// against another proxy-fetch version.
//
// Package names come from the crates' own Cargo.toml (a renamed package needs no change here).
// Cached between runs (so a rerun costs seconds): the unpacked crates (one folder per content),
// the installed CLI and its build folder, and the template crate's target folder, under
// $PF_CACHE/outside-test.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync,
  writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { settle, waitFor } from "../workerd/harness.mjs";
import { startUpstream } from "../workerd/upstream.mjs";
import { buildCli, wasmBuildEnv } from "../../tools/build-worker.mjs";
import { packageCrates } from "../../tools/package.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const template = join(root, "templates/worker");
const cache = join(process.env.PF_CACHE ?? join(process.env.HOME ?? tmpdir(), ".cache/proxy-fetch"), "outside-test");
const run = promisify(execFile);
const seconds = (t0) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

const cliRoot = join(cache, "cli");
// The pinned wrangler of package-lock.json, or another one (scripts/test also runs this file
// with the newest wrangler 4.x it tests, under the Node.js that one needs: tools/setup.sh).
const wrangler = process.env.PF_WRANGLER ?? join(root, "node_modules/.bin/wrangler");

/** Every file under `dir`, as paths relative to it, sorted. */
function files(dir, prefix = "") {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) => e.isDirectory()
    ? files(dir, join(prefix, e.name)) : [join(prefix, e.name)]).sort();
}

/**
 * Unpacks a .crate into $cache/crates/<name>-<version>-<hash of its files>/<name>-<version>:
 * one folder per content, written once (to a temporary folder, then renamed) and never changed,
 * so a rerun reuses cargo's build of it, and checkouts that share the cache never build from a
 * folder another one is rewriting. (`.cargo_vcs_info.json`, the commit packaged, is left out of
 * the hash: it changes with every commit.)
 */
function unpack(crate) {
  const crates = join(cache, "crates");
  mkdirSync(crates, { recursive: true });
  const tmp = mkdtempSync(join(crates, "tmp-"));
  try {
    execFileSync("tar", ["-xzf", crate.file, "-C", tmp]);
    const top = `${crate.name}-${crate.version}`;
    const hash = createHash("sha256");
    for (const file of files(join(tmp, top)).filter((f) => f !== ".cargo_vcs_info.json")) {
      hash.update(`${file}\0`).update(readFileSync(join(tmp, top, file)));
    }
    const keyed = join(crates, `${top}-${hash.digest("hex").slice(0, 16)}`);
    try {
      renameSync(tmp, keyed);
    } catch (error) {
      if (!existsSync(keyed)) throw error; // else another run unpacked the same content first
    }
    const now = new Date();
    utimesSync(keyed, now, now); // in use: kept by the pruning below
    return join(keyed, top);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Unpacked crates of earlier contents, unused for a week. */
function pruneUnpacked() {
  const crates = join(cache, "crates");
  const weekAgo = Date.now() - 7 * 24 * 3600_000;
  for (const entry of existsSync(crates) ? readdirSync(crates) : []) {
    const path = join(crates, entry);
    if (statSync(path).mtimeMs < weekAgo) rmSync(path, { recursive: true, force: true });
  }
}

// The published crates as `cargo package` makes them, unpacked: what the registry would serve.
// The crate `use`d as `proxy_fetch` is the template's dependency; the one without a library is
// the CLI.
let packaged, main, cliCrate;

// The CLI, installed with cargo as a user would, from its .crate (with the Cargo.lock packaged
// in it, as `cargo install --locked <name>` does). `--force`: the cached root may hold the
// binary from a package of another name (a checkout before a rename), which cargo would refuse
// to replace; an up-to-date build folder makes it a copy.
before(async () => {
  let t0 = Date.now();
  pruneUnpacked();
  packaged = packageCrates({ verify: false }).map((crate) => ({ ...crate, unpacked: unpack(crate) }));
  main = packaged.find((c) => c.lib === "proxy_fetch");
  cliCrate = packaged.find((c) => c.lib === null);
  assert.ok(main && cliCrate, `a proxy_fetch library and a CLI among the packaged crates: ${packaged.map((c) => c.name)}`);
  console.log(`# cargo package of ${packaged.map((c) => c.name).join(", ")}, unpacked: ${seconds(t0)}`);
  t0 = Date.now();
  await run("cargo", ["install", "--quiet", "--locked", "--force", "--path", cliCrate.unpacked,
    "--root", cliRoot, "--target-dir", join(cache, "cli-target")], { timeout: 15 * 60_000 });
  console.log(`# cargo install of the packaged ${cliCrate.name}: ${seconds(t0)}`);
});

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

/**
 * Starts `wrangler dev` (local only, on 127.0.0.1, metrics and the `cf` fetch off, a private
 * config folder) in `cwd` and waits until it built the worker and answers. Returns
 * { base, output(), stop() }.
 */
async function wranglerDev(cwd, { env, args = [], work }) {
  const port = await freePort();
  const inspectorPort = await freePort();
  const config = join(work, "config");
  mkdirSync(config, { recursive: true });
  let output = "";
  const t0 = Date.now();
  const child = spawn(wrangler, ["dev", "--local", "--ip", "127.0.0.1",
    "--port", String(port), "--inspector-port", String(inspectorPort), "--persist-to", join(work, "state"),
    "--show-interactive-dev-session=false", ...args], {
    cwd,
    env: { ...env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", XDG_CONFIG_HOME: config, NO_COLOR: "1" },
    detached: true, // its own process group: stop() ends wrangler and the workerd it started
    stdio: ["ignore", "pipe", "pipe"],
  });
  let exited = null;
  child.on("exit", (code, signal) => { exited = { code, signal }; });
  for (const stream of [child.stdout, child.stderr]) stream.on("data", (d) => { output += d; });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once("exit", r));
    process.kill(-child.pid, "SIGTERM");
    const stopped = await Promise.race([gone.then(() => true), new Promise((r) => setTimeout(r, 10_000, false))]);
    if (!stopped) process.kill(-child.pid, "SIGKILL");
    if (process.env.PF_VERBOSE) console.log(output);
  };
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor(async () => {
      if (exited) throw new Error(`wrangler dev exited (${JSON.stringify(exited)}):\n${output}`);
      if (!output.includes(`Ready on ${base}`)) return false;
      return fetch(`${base}/`, { signal: AbortSignal.timeout(10_000) }).then(() => true, () => false);
    }, { deadlineMs: 15 * 60_000, everyMs: 100, what: `wrangler dev in ${cwd} to build the worker and listen` });
  } catch (error) {
    await stop();
    throw error;
  }
  console.log(`# wrangler dev (${wrangler}, node ${process.version}) in ${cwd}: built and ready in ${seconds(t0)}`);
  return { base, output: () => output, stop };
}

describe("a crate made from templates/worker outside the repository, run by wrangler dev", () => {
  let work, crate, upstream, dev, base;
  const output = () => dev?.output() ?? "";

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "pf-template-"));
    crate = join(work, "my-worker");

    // The crate: the template as it is (its dependency by version, as a user writes it once the
    // crates are published), and [patch.crates-io] pointing that dependency and the crates it
    // depends on at the packaged crates. The workspace's Cargo.lock pins the same dependency
    // versions the other tests build with.
    cpSync(template, crate, { recursive: true, filter: (src) => !/\/(target|build|\.wrangler)$/.test(src) });
    const manifest = join(crate, "Cargo.toml");
    const original = readFileSync(manifest, "utf8");
    const requirement = main.version.split(".").slice(0, 2).join(".");
    assert.ok(original.includes(`\n${main.name} = "${requirement}"\n`),
      `the template depends on ${main.name} by version ("${requirement}"):\n${original}`);
    const patches = packaged.filter((c) => c.lib !== null)
      .map((c) => `${c.name} = { path = ${JSON.stringify(c.unpacked)} }\n`).join("");
    writeFileSync(manifest, `${original}\n# The packaged crates, as the registry would serve them.\n[patch.crates-io]\n${patches}`);
    cpSync(join(root, "Cargo.lock"), join(crate, "Cargo.lock"));
    // What cargo resolves is the packaged crates, not a registry crate of the same name.
    const metadata = JSON.parse((await run("cargo", ["metadata", "--format-version", "1", "--manifest-path", manifest],
      { maxBuffer: 64 << 20 })).stdout);
    for (const c of packaged.filter((c) => c.lib !== null)) {
      const used = metadata.packages.filter((p) => p.name === c.name).map((p) => dirname(p.manifest_path));
      assert.deepEqual(used, [c.unpacked], `${c.name} resolves to the packaged crate`);
    }

    // wrangler dev; its [build] command is `proxy-fetch-build`, the installed one on PATH.
    upstream = await startUpstream();
    const env = {
      // (With the rustc-web fallback of tools/setup.sh, its rustc and target folder.)
      ...wasmBuildEnv({ ...process.env, CARGO_TARGET_DIR: join(cache, "template-target") },
        (folder) => join(cache, `template-target-${folder}`)),
      PATH: `${join(cliRoot, "bin")}:${process.env.PATH}`,
    };
    // The CLI finds the wasm-bindgen CLI of the crate's Cargo.lock itself (in the shared cache).
    delete env.WASM_BINDGEN;
    dev = await wranglerDev(crate, { env, work, args: ["--var", `WEATHER_API:${upstream.base}`,
      "--var", "PROXY_FETCH_ALLOW:http://127.0.0.1:*"] });
    base = dev.base;
  });

  after(async () => {
    await dev?.stop();
    await upstream?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test("wrangler's build hook ran proxy-fetch-build, which wrote the main module", () => {
    assert.match(output(), /proxy-fetch-build: my-worker -> .*build\/worker\.js \(wasm \d+ KiB; entrypoints: FetchExecutorEntrypoint; durable objects: FetchOrchestrator, Inbox\)/);
    const main = readFileSync(join(crate, "build/worker.js"), "utf8");
    assert.match(main, /export const Inbox = durableObject\(wasm, "Inbox"\);/);
    assert.ok(existsSync(join(crate, "build/proxy-fetch-runtime.js")));
  });

  test("wrangler dev serves the long path's queue binding from the template's wrangler.toml", () => {
    assert.match(output(), /env\.PROXY_FETCH_LONG \(my-worker-pf-long\)/);
  });

  test("a fetch proxied through the worker reaches the local upstream and its handler stores the response", async () => {
    const res = await fetch(`${base}/check/lisbon`, { method: "POST", signal: AbortSignal.timeout(30_000) });
    const requestId = await res.text();
    assert.equal(res.status, 200, requestId);
    assert.match(requestId, /^[0-9a-f]{32}~\d+$/);
    const stored = await waitFor(async () => {
      const r = await fetch(`${base}/weather/lisbon`, { signal: AbortSignal.timeout(10_000) });
      return r.status === 200 ? r.text() : false;
    }, { deadlineMs: 30_000, everyMs: 50, what: "the handler to store the response" });
    const echo = JSON.parse(stored);
    assert.equal(echo.path, "/weather/lisbon");
    assert.equal(upstream.count("/weather/lisbon"), 1);
  });
});

describe("examples/demo run by wrangler dev", () => {
  let work, upstream, dev;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "pf-demo-"));
    upstream = await startUpstream();
    // Its [build] command finds the CLI built from this checkout (the one tools/build-worker.mjs
    // ran, so the build the workerd tests used is up to date).
    const cli = buildCli();
    const env = {
      ...wasmBuildEnv(process.env, (folder) => join(root, "target", folder)),
      PATH: `${dirname(cli)}:${process.env.PATH}`,
    };
    dev = await wranglerDev(join(root, "examples/demo"), { env, work });
  });

  after(async () => {
    await dev?.stop();
    await upstream?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test("a fetch proxied through the demo's Inbox reaches the local upstream and its handler files the response", async () => {
    const url = upstream.url("/weather/porto");
    const res = await fetch(`${dev.base}/inbox/wrangler/fetch`, {
      method: "POST", body: JSON.stringify({ url, tag: "wrangler-dev" }), signal: AbortSignal.timeout(30_000),
    });
    const started = await res.json();
    assert.equal(res.status, 200, JSON.stringify(started));
    const filed = await waitFor(async () => {
      const results = await (await fetch(`${dev.base}/inbox/wrangler/results`, { signal: AbortSignal.timeout(10_000) })).json();
      return results.find((r) => r.request_id === started.request_id);
    }, { deadlineMs: 30_000, everyMs: 50, what: "the handler to file the response" });
    assert.equal(filed.outcome, "response");
    assert.equal(filed.status, 200);
    assert.equal(JSON.parse(filed.text).path, "/weather/porto");
  });

  test("a long-path fetch (timeout_ms 30000, above the executor's 25 s) goes through the demo's local queue under wrangler dev and its handler files the response, once", async () => {
    assert.match(dev.output(), /env\.PROXY_FETCH_LONG \(proxy-fetch-demo-pf-long\)/, "wrangler dev serves the demo's queue binding");
    const key = "wrangler-long";
    const url = upstream.url("/weather/braga", { key, delay: 500 });
    const res = await fetch(`${dev.base}/inbox/wrangler-long/fetch`, {
      method: "POST", body: JSON.stringify({ url, tag: "wrangler-dev-long", timeout_ms: 30_000 }), signal: AbortSignal.timeout(30_000),
    });
    const started = await res.json();
    assert.equal(res.status, 200, JSON.stringify(started));
    const results = async () => (await fetch(`${dev.base}/inbox/wrangler-long/results`, { signal: AbortSignal.timeout(10_000) })).json();
    const filed = await waitFor(async () => (await results()).find((r) => r.request_id === started.request_id),
      { deadlineMs: 60_000, everyMs: 50, what: "the long-path handler to file the response" });
    assert.equal(filed.outcome, "response", filed.text);
    assert.equal(filed.status, 200);
    await settle();
    const all = (await results()).filter((r) => r.request_id === started.request_id);
    assert.equal(all.length, 1);
    assert.equal(all[0].deliveries, 1, "the handler ran once");
    assert.equal(JSON.parse(filed.text).path, new URL(url).pathname + new URL(url).search);
    assert.equal(upstream.count(key), 1, "fetched once");
  });
});

test("proxy-fetch-build refuses a crate that depends on another proxy-fetch version, before building", async () => {
  const work = mkdtempSync(join(tmpdir(), "pf-version-"));
  try {
    // A stand-in proxy-fetch of another version: the refusal comes from `cargo metadata`, so
    // nothing is compiled.
    mkdirSync(join(work, "proxy-fetch/src"), { recursive: true });
    writeFileSync(join(work, "proxy-fetch/Cargo.toml"), `[package]\nname = "${main.name}"\nversion = "0.0.1"\nedition = "2021"\n`);
    writeFileSync(join(work, "proxy-fetch/src/lib.rs"), "");
    mkdirSync(join(work, "old-worker/src"), { recursive: true });
    writeFileSync(join(work, "old-worker/Cargo.toml"), [
      '[package]\nname = "old-worker"\nversion = "0.1.0"\nedition = "2021"\n',
      '[lib]\ncrate-type = ["cdylib"]\n',
      `[dependencies]\n${main.name} = { path = "../proxy-fetch" }\nwasm-bindgen = "=0.2.129"\n`,
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
