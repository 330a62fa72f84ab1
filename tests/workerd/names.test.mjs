// The names list (proxy-fetch/js/names.json) that #[entrypoint] checks method and class names
// against covers every member proxy-fetch's JS runtime gives its wrapper classes and every
// binding of the main module the build writes (proxy-fetch-build checks exported classes
// against it too: its unit tests).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { names } from "../../proxy-fetch/js/names.mjs";

const runtime = readFileSync(new URL("../../proxy-fetch/js/runtime.js", import.meta.url), "utf8");

test("every member runtime.js defines on a wrapper class is a reserved method name", () => {
  const members = new Set([
    ...[...runtime.matchAll(/this\.([A-Za-z_$][\w$]*)\s*=/g)].map((m) => m[1]),
    ...[...runtime.matchAll(/^\s*get ([A-Za-z_$][\w$]*)\(/gm)].map((m) => m[1]),
    ...[...runtime.matchAll(/^const (?:DO_)?HANDLERS = \[([^\]]*)\]/gm)].flatMap((m) => JSON.parse(`[${m[1]}]`)),
    "constructor", "env", "ctx",
  ]);
  assert.ok(members.has("rust") && members.has("inner") && members.has("alarm"), [...members].join(","));
  const missing = [...members].filter((m) => !names.methods.includes(m));
  assert.deepEqual(missing, [], `members of runtime.js's classes missing from names.json: ${missing}`);
});

test("every binding of the generated main module is a reserved export name", () => {
  const build = readFileSync(new URL("../../proxy-fetch-build/src/output.rs", import.meta.url), "utf8");
  const imports = [...build.matchAll(/import \{ ([^}]*) \} from \\?".\/proxy-fetch-runtime.js/g)]
    .flatMap((m) => m[1].split(",").map((s) => s.trim()));
  assert.ok(imports.length > 0, "found the main module's imports in proxy-fetch-build");
  for (const name of [...imports, "wasm", "default"]) assert.ok(names.exports.includes(name), name);
});
