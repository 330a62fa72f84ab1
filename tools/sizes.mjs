#!/usr/bin/env node
// Measures the wasm of templates/worker (scripts/sizes): a copy of the template outside the
// repository, built by proxy-fetch-build from this checkout with the template's release profile
// and with cargo's default one, each with and without wasm-opt. Writes docs/sizes.md with the
// commit it measured, and the figures into the marked sentences of README.md and docs/build.md
// (between `<!-- sizes:... -->` and `<!-- /sizes -->`), so the figures users read are measured.
// After `. tools/setup.sh` (WASM_BINDGEN, WASM_OPT; PF_WASM_* for the rustc-web fallback).
// Target folders are kept under $PF_CACHE/sizes-target*, so a rerun rebuilds only what changed.
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir, loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { buildCli, wasmBuildEnv } from "./build-worker.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const cache = process.env.PF_CACHE ?? join(process.env.HOME ?? tmpdir(), ".cache/proxy-fetch");
const git = (...args) => execFileSync("git", ["-C", root, ...args], { encoding: "utf8" }).trim();
const kib = (bytes) => `${Math.round(bytes / 1024).toLocaleString("en-US")} KiB`;

/** A template as a user's crate: outside the repository, proxy-fetch by path on this checkout. */
function makeCrate(work, template) {
  const crate = join(work, template);
  cpSync(join(root, "templates", template), crate, { recursive: true, filter: (src) => !/\/(target|build|\.wrangler)$/.test(src) });
  const manifest = join(crate, "Cargo.toml");
  const original = readFileSync(manifest, "utf8");
  const pointed = original.replace('path = "../../proxy-fetch"', `path = ${JSON.stringify(join(root, "proxy-fetch"))}`);
  if (pointed === original) throw new Error(`templates/${template}/Cargo.toml has no \`path = "../../proxy-fetch"\` to point at this checkout`);
  writeFileSync(manifest, pointed);
  cpSync(join(root, "Cargo.lock"), join(crate, "Cargo.lock"));
  return crate;
}

const PROFILES = [
  { key: "template", label: "`[profile.release]` of the template (`opt-level = \"z\"`, `lto`, `codegen-units = 1`)", env: {} },
  // Cargo's defaults for release, whatever the crate's manifest says.
  { key: "default", label: "cargo's default release profile", env: { CARGO_PROFILE_RELEASE_OPT_LEVEL: "3", CARGO_PROFILE_RELEASE_LTO: "false", CARGO_PROFILE_RELEASE_CODEGEN_UNITS: "16" } },
];

function measure(cli, crate, profile, opt, out) {
  const env = wasmBuildEnv({ ...process.env, ...profile.env, CARGO_TARGET_DIR: join(cache, `sizes-target-${profile.key}`) },
    (folder) => join(cache, `sizes-target-${profile.key}-${folder}`));
  execFileSync(cli, [crate, "--out-dir", out, ...(opt ? [] : ["--no-opt"])], { stdio: "inherit", env });
  const wasm = readFileSync(join(out, "index_bg.wasm"));
  return { wasm: statSync(join(out, "index_bg.wasm")).size, gzip: gzipSync(wasm, { level: 9 }).length };
}

/** Replaces the text between `<!-- sizes:<name> -->` and `<!-- /sizes -->` in `file`. */
function fill(file, name, text) {
  const path = join(root, file);
  const content = readFileSync(path, "utf8");
  const pattern = new RegExp(`(<!-- sizes:${name} -->)[\\s\\S]*?(<!-- /sizes -->)`);
  if (!pattern.test(content)) throw new Error(`${file} has no <!-- sizes:${name} --> ... <!-- /sizes --> section`);
  writeFileSync(path, content.replace(pattern, (_, open, close) => `${open}${text}${close}`));
}

const started = Date.now();
const load = loadavg().map((x) => x.toFixed(2)).join(" ");
const commit = git("rev-parse", "HEAD");
const short = commit.slice(0, 10);
const dirty = git("status", "--porcelain").split("\n").filter(Boolean);
const cli = buildCli();
const work = mkdtempSync(join(tmpdir(), "pf-sizes-"));
const results = {};
try {
  const crate = makeCrate(work, "worker");
  for (const profile of PROFILES) {
    for (const opt of [true, false]) {
      results[`${profile.key}${opt ? "+opt" : ""}`] = measure(cli, crate, profile, opt, join(work, `out-${profile.key}-${opt}`));
    }
  }
  // templates/rpc: typed RPC alone (proxy-fetch without its `system` feature), its own profile.
  const rpc = makeCrate(work, "rpc");
  const rpcProfile = { key: "rpc", env: {} };
  for (const opt of [true, false]) {
    results[`rpc${opt ? "+opt" : ""}`] = measure(cli, rpc, rpcProfile, opt, join(work, `out-rpc-${opt}`));
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const wasmOptVersion = process.env.WASM_OPT && execFileSync(process.env.WASM_OPT, ["--version"], { encoding: "utf8" }).match(/version (\d+)/)?.[1];
const wasmOpt = wasmOptVersion ? `wasm-opt of binaryen ${wasmOptVersion}` : "the wasm-opt proxy-fetch-build found";
const rustc = execFileSync(process.env.PF_WASM_RUSTC ?? "rustc", ["--version"], {
  encoding: "utf8", env: { ...process.env, LD_LIBRARY_PATH: [process.env.PF_WASM_LD_LIBRARY_PATH, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") },
}).trim();
const at = `commit \`${short}\`${dirty.length ? ` with uncommitted changes in ${dirty.length} file(s)` : ""}`;
const r = results;
const row = (label, s) => `| ${label} | ${kib(s.wasm)} | ${kib(s.gzip)} |`;
const less = (a, b) => Math.round((1 - a / b) * 100);

writeFileSync(join(root, "docs/sizes.md"), `# Wasm sizes of the templates

Generated by \`scripts/sizes\` (do not edit; README.md, docs/build.md and docs/rpc.md quote it): a copy of
\`templates/worker\` outside the repository (one origin Durable Object, the orchestrator and the
executor), built by \`proxy-fetch-build\` from this checkout at ${at}
(\`${commit}\`), ${new Date().toISOString().slice(0, 10)}; ${rustc}; ${wasmOpt}. gzip -9 for the
second column; \`proxy-fetch-build\` prints the wasm size of every build.

| build | wasm | gzipped |
| --- | ---: | ---: |
${row(`${PROFILES[0].label} + wasm-opt`, r["template+opt"])}
${row("that profile, no wasm-opt", r.template)}
${row(`${PROFILES[1].label} + wasm-opt`, r["default+opt"])}
${row("default profile, no wasm-opt", r.default)}

\`templates/rpc\` (typed RPC alone: a named entrypoint and a Durable Object, proxy-fetch without
its \`system\` feature), its own release profile (the same as the template's):

| build | wasm | gzipped |
| --- | ---: | ---: |
${row("`templates/rpc` + wasm-opt", r["rpc+opt"])}
${row("`templates/rpc`, no wasm-opt", r.rpc)}

The template's profile makes the optimized wasm ${less(r["template+opt"].wasm, r["default+opt"].wasm)}% smaller than cargo's default
(${less(r["template+opt"].gzip, r["default+opt"].gzip)}% gzipped); wasm-opt takes ${less(r["template+opt"].wasm, r.template.wasm)}% off the template's
(${less(r["template+opt"].gzip, r.template.gzip)}% gzipped). Measured in ${Math.round((Date.now() - started) / 1000)} s (load average ${load} at the start).
`);

fill("README.md", "readme", `with the release profile the template's wasm is ${kib(r["template+opt"].wasm)}, ${kib(r["template+opt"].gzip)}
gzipped, instead of ${kib(r["default+opt"].wasm)}, ${kib(r["default+opt"].gzip)} gzipped; both after wasm-opt, at ${at}:
[docs/sizes.md](docs/sizes.md)`);
fill("docs/build.md", "build", `\`templates/worker\`, measured by \`scripts/sizes\` at ${at} (${rustc.split(" ").slice(0, 2).join(" ")}, ${wasmOpt};
the whole table, with how it was built: [sizes.md](sizes.md)):

| build | wasm | gzipped |
| --- | ---: | ---: |
${row("the template's `[profile.release]` + wasm-opt", r["template+opt"])}
${row("that profile, no wasm-opt", r.template)}
${row("cargo's default release profile + wasm-opt", r["default+opt"])}
${row("default profile, no wasm-opt", r.default)}
`);
fill("docs/rpc.md", "rpc", `the built wasm of templates/rpc is ${kib(r["rpc+opt"].wasm)}, ${kib(r["rpc+opt"].gzip)} gzipped, after
wasm-opt (${kib(r.rpc.wasm)}, ${kib(r.rpc.gzip)} gzipped without it), measured by \`scripts/sizes\` at ${at}
([sizes.md](sizes.md))`);
console.log(`sizes: docs/sizes.md, README.md, docs/build.md and docs/rpc.md written (at ${at})`);
for (const [key, s] of Object.entries(results)) console.log(`  ${key.padEnd(14)} ${kib(s.wasm).padStart(10)} ${kib(s.gzip).padStart(10)} gzipped`);
