// Starts a built worker in real workerd (Miniflare's API) from its own wrangler.toml, so the
// configuration a user copies is the one under test.
import { Miniflare, Log, LogLevel } from "miniflare";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseToml } from "smol-toml";

export const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Miniflare options equivalent to a wrangler.toml (the subset proxy-fetch workers use). */
export function optionsFromWrangler(crateDir, overrides = {}) {
  const config = parseToml(readFileSync(join(crateDir, "wrangler.toml"), "utf8"));
  const scriptPath = join(crateDir, config.main);
  if (!existsSync(scriptPath)) {
    throw new Error(`${scriptPath} is missing: build the worker first (node tools/build-worker.mjs ${crateDir})`);
  }
  const sqlite = new Set((config.migrations ?? []).flatMap((m) => m.new_sqlite_classes ?? []));
  const durableObjects = Object.fromEntries((config.durable_objects?.bindings ?? []).map((b) => [
    b.name, { className: b.class_name, useSQLite: sqlite.has(b.class_name), ...(b.script_name ? { scriptName: b.script_name } : {}) },
  ]));
  const serviceBindings = Object.fromEntries((config.services ?? []).map((s) => [
    s.binding, { name: s.service, ...(s.entrypoint ? { entrypoint: s.entrypoint } : {}) },
  ]));
  return {
    name: config.name,
    modules: true,
    modulesRoot: crateDir,
    scriptPath,
    modulesRules: [
      { type: "ESModule", include: ["**/*.js"] },
      { type: "CompiledWasm", include: ["**/*.wasm"] },
    ],
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags ?? [],
    durableObjects,
    serviceBindings,
    bindings: config.vars ?? {},
    cf: false,
    ...overrides,
  };
}

/**
 * Starts the worker in `crateDir` (plus `peers`, extra Miniflare worker options, e.g. a JS
 * worker beside it); returns { mf, env, fetch(path), fetchPeer(name, path), logs, dispose }.
 * `logs` collects what the workers printed (console.log/error), for asserting on reported errors.
 */
export async function startWorker(crateDir, { peers = [], serviceBindings = {}, shared = {}, ...overrides } = {}) {
  const logs = [];
  class Capture extends Log {
    log(message) {
      logs.push(message);
      if (process.env.PF_VERBOSE) super.log(message);
    }
  }
  const main = optionsFromWrangler(resolve(root, crateDir), overrides);
  main.serviceBindings = { ...main.serviceBindings, ...serviceBindings };
  const options = {
    ...shared,
    workers: [main, ...peers],
    // Never let Miniflare fetch the `cf` object from Cloudflare: tests stay on loopback.
    cf: false,
    log: new Capture(LogLevel.INFO),
    handleRuntimeStdio(stdout, stderr) {
      const keep = (stream) => stream.on("data", (chunk) => logs.push(String(chunk)));
      keep(stdout);
      keep(stderr);
    },
  };
  const mf = new Miniflare(options);
  const url = await mf.ready;
  const env = await mf.getBindings();
  return {
    mf,
    env,
    /** Restarts workerd: every isolate and Durable Object instance is recycled (what
     *  persists is what `shared.durableObjectsPersist` keeps). */
    restart: () => mf.setOptions(options),
    logs,
    url,
    fetch: (path, init) => mf.dispatchFetch(new URL(path, url), init),
    fetchPeer: async (name, path, init) => (await mf.getWorker(name)).fetch(new URL(path, url), init),
    dispose: () => mf.dispose(),
  };
}

/** Miniflare options of a JS worker module (a path relative to tests/workerd, or absolute). */
export function jsWorker(name, file, options = {}) {
  const scriptPath = resolve(dirname(fileURLToPath(import.meta.url)), file);
  return { name, modules: true, modulesRoot: dirname(scriptPath), scriptPath, compatibilityDate: "2026-07-30", ...options };
}
