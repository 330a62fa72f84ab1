#!/usr/bin/env node
// The crates a user depends on, as the registry would get them.
//
//   node tools/package.mjs   cargo package with verification (each crate built from its own
//                            .crate, against the other crates' .crate files), cargo publish
//                            --dry-run, and cargo doc of each crate as docs.rs builds it
//                            ([package.metadata.docs.rs] targets) with warnings denied
//
// tests/template imports publishedCrates() and packageCrates() to build the template against
// the packaged crates. The published crates are the workspace members without
// `publish = false`, named as their Cargo.toml names them: renaming a package changes nothing
// here.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const manifest = join(root, "Cargo.toml");

function cargo(args, options = {}) {
  return execFileSync("cargo", args, { cwd: root, encoding: "utf8", ...options });
}

/**
 * The workspace members that are published: [{ name, version, lib, dir, docsTargets }], where
 * `lib` is the library name code `use`s (null for a binary-only crate) and `docsTargets` the
 * targets docs.rs builds it for (empty: the host).
 */
export function publishedCrates() {
  const metadata = JSON.parse(cargo(["metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest]));
  return metadata.packages
    .filter((p) => !(Array.isArray(p.publish) && p.publish.length === 0))
    .map((p) => ({
      name: p.name,
      version: p.version,
      lib: p.targets.find((t) => t.kind.some((k) => k === "lib" || k === "proc-macro"))?.name ?? null,
      dir: dirname(p.manifest_path),
      docsTargets: p.metadata?.docs?.rs?.targets ?? [],
    }));
}

function targetDirectory() {
  return JSON.parse(cargo(["metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest])).target_directory;
}

/**
 * `cargo package` of every published crate (with `verify`, each is built from its .crate);
 * returns [{ ...crate, file }] with the path of each .crate. The working tree is packaged as it
 * is (`--allow-dirty`): that is what the tests test.
 */
export function packageCrates({ verify = true, stdio = "pipe" } = {}) {
  const crates = publishedCrates();
  cargo(["package", "--quiet", "--allow-dirty", ...(verify ? [] : ["--no-verify"]),
    ...crates.flatMap((c) => ["-p", c.name])], { stdio });
  const dir = join(targetDirectory(), "package");
  return crates.map((c) => ({ ...c, file: join(dir, `${c.name}-${c.version}.crate`) }));
}

/** Does rustc have the standard library of `target` (rustup's target, not Debian's rustc-web)? */
function hasStd(target) {
  try {
    const libdir = execFileSync("rustc", ["--print", "target-libdir", "--target", target], { encoding: "utf8" }).trim();
    return existsSync(libdir) && readdirSync(libdir).some((f) => f.startsWith("libstd-") && f.endsWith(".rlib"));
  } catch {
    return false;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const step = (what, run) => {
    const t0 = Date.now();
    try {
      run();
    } catch (error) {
      console.error(`package: ${what} failed${error.stderr ? `:\n${error.stderr}` : ""}`);
      process.exit(1);
    }
    console.log(`package: ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  };
  const crates = publishedCrates();
  const names = crates.map((c) => c.name);
  const flags = names.flatMap((name) => ["-p", name]);
  console.log(`package: published crates: ${crates.map((c) => `${c.name} ${c.version}`).join(", ")}`);
  step("cargo package (verified)", () => packageCrates({ verify: true, stdio: "inherit" }));
  // `cargo package` has just built these very .crate files; the dry run adds the publish checks.
  step("cargo publish --dry-run", () => cargo(["publish", "--dry-run", "--quiet", "--no-verify", "--allow-dirty", ...flags], { stdio: "inherit" }));
  // As docs.rs builds each crate: for its [package.metadata.docs.rs] targets, else the host.
  const byTarget = new Map();
  for (const c of crates) {
    for (const target of c.docsTargets.length ? c.docsTargets : [null]) {
      // Without rustup's std for the target (tools/setup.sh's rustc-web fallback), the host's.
      const usable = target === null || hasStd(target) ? target : null;
      if (usable !== target) console.log(`package: no ${target} std here: documenting ${c.name} for the host`);
      byTarget.set(usable, [...(byTarget.get(usable) ?? []), c.name]);
    }
  }
  for (const [target, packages] of byTarget) {
    step(`cargo doc --no-deps ${packages.join(" ")} (${target ?? "host"}, warnings denied)`, () => cargo(["doc", "--quiet", "--no-deps",
      ...packages.flatMap((name) => ["-p", name]), ...(target ? ["--target", target] : [])],
    { stdio: "inherit", env: { ...process.env, RUSTDOCFLAGS: "-D warnings" } }));
  }
}
