// Build-time check of the classes a worker's main module will export, against the names list
// #[entrypoint] also reads at compile time (names.json). The macro sees one crate; this sees
// the whole build (classes from dependency crates included). Used by tools/build-worker.mjs.
import { readFileSync } from "node:fs";

export const names = JSON.parse(readFileSync(new URL("./names.json", import.meta.url), "utf8"));

/**
 * Problems with the classes found in a build (`declaredClasses` of build-worker): names JS or
 * the main module already use, and a name claimed twice. Returns one message per problem.
 */
export function exportProblems({ entrypoints, durableObjects }) {
  const problems = [];
  const seen = new Map();
  const claims = [
    ...entrypoints.map((name) => [name, `#[entrypoint(name = "${name}")]`]),
    ...durableObjects.map((name) => [name, `#[entrypoint(durable_object)] impl ${name}`]),
  ];
  for (const [name, what] of claims) {
    if (seen.has(name)) problems.push(`two classes are exported as \`${name}\`: ${seen.get(name)} and ${what}; rename one`);
    seen.set(name, what);
    if (names.exports.includes(name) || names.exportInfixes.some((infix) => name.includes(infix))) {
      problems.push(`${what}: \`${name}\` cannot be exported from the main module (see proxy-fetch/js/names.json); rename it`);
    }
  }
  return problems;
}
