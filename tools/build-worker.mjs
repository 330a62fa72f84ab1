#!/usr/bin/env node
// Builds Rust worker crates with proxy-fetch-build (the CLI in proxy-fetch-build/, which a user
// installs with cargo), compiled from this checkout. It writes <crate>/build/worker.js and the
// wasm beside it; see docs/build.md.
// Usage: node tools/build-worker.mjs <crate-dir>... [--debug] [--no-opt] [--dts | --dts-only]
//        (--dts: also build/worker.d.ts, TypeScript declarations; --dts-only: only them;
//        docs/typescript.md)
//        PF_PANIC_UNWIND=1 node tools/build-worker.mjs <crate-dir>...   panic = "unwind" build
//        into <crate>/build-unwind/ (docs/panics.md)
// After `. tools/setup.sh`, which exports WASM_BINDGEN and WASM_OPT (found by the CLI), and
// PF_WASM_* when the wasm32 std comes from Debian's rustc-web instead of rustup.
import { execFileSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The environment of a wasm32 build: unchanged, or when tools/setup.sh fell back to Debian's
 * rustc-web, that rustc building std for wasm32 from source (cargo's `build-std`, set through
 * its environment so that it also reaches builds that wrangler starts), into a target folder of
 * its own so it never mixes with rustup's artifacts. `targetDir(suffix)` names that folder.
 */
export function wasmBuildEnv(env, targetDir) {
  if (!env.PF_WASM_RUSTC) return env;
  // PF_PANIC_UNWIND=1: panic = "unwind" with Wasm exception handling, so that a panic fails only
  // its own call (docs/panics.md); std is built with panic_unwind, in a target folder of its own.
  const unwind = env.PF_PANIC_UNWIND === "1";
  return {
    ...env,
    RUSTC: env.PF_WASM_RUSTC,
    RUSTC_BOOTSTRAP: "1",
    CARGO_UNSTABLE_BUILD_STD: unwind ? "std,panic_unwind" : "std,panic_abort",
    LD_LIBRARY_PATH: [env.PF_WASM_LD_LIBRARY_PATH, env.LD_LIBRARY_PATH].filter(Boolean).join(":"),
    CARGO_TARGET_DIR: targetDir(unwind ? "rustc-web-unwind" : "rustc-web"),
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER: env.PF_WASM_LINKER,
    ...(unwind ? {
      CARGO_PROFILE_RELEASE_PANIC: "unwind",
      CARGO_PROFILE_DEV_PANIC: "unwind",
      RUSTFLAGS: "-Cpanic=unwind -Ctarget-feature=+exception-handling",
    } : {}),
  };
}

/** Compiles the CLI from this checkout (a debug build: it only runs other programs). */
export function buildCli() {
  const manifest = join(root, "Cargo.toml");
  execFileSync("cargo", ["build", "--quiet", "--bin", "proxy-fetch-build", "--manifest-path", manifest], { stdio: "inherit" });
  const metadata = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps",
    "--manifest-path", manifest], { encoding: "utf8" }));
  return join(metadata.target_directory, "debug", "proxy-fetch-build");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const crates = args.filter((a) => !a.startsWith("--"));
  if (crates.length === 0) {
    console.error("usage: node tools/build-worker.mjs <crate-dir>... [--debug] [--no-opt] [--dts | --dts-only]");
    process.exit(1);
  }
  // With PF_PANIC_UNWIND=1 the build goes to <crate>/build-unwind/, beside the default one.
  const unwind = process.env.PF_PANIC_UNWIND === "1";
  if (unwind && !process.env.PF_WASM_RUSTC) {
    console.error("build-worker: PF_PANIC_UNWIND=1 builds std from source: set up with PF_FORCE_RUSTC_WEB=1 . tools/setup.sh");
    process.exit(1);
  }
  const cli = buildCli();
  for (const crate of crates) {
    const crateDir = resolve(crate);
    const env = wasmBuildEnv(process.env, (folder) => join(JSON.parse(execFileSync("cargo", ["metadata",
      "--format-version", "1", "--no-deps", "--manifest-path", join(crateDir, "Cargo.toml")],
    { encoding: "utf8" })).target_directory, folder));
    const cliArgs = [crateDir, ...(args.includes("--debug") ? ["--dev"] : []),
      ...args.filter((a) => a === "--dts" || a === "--dts-only" || a === "--no-opt"),
      ...(unwind ? ["--out-dir", join(crateDir, "build-unwind")] : [])];
    try {
      execFileSync(cli, cliArgs, { stdio: "inherit", env });
    } catch {
      process.exit(1); // proxy-fetch-build printed why
    }
  }
}
