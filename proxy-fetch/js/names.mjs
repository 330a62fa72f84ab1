// The names list (names.json) for JS: #[entrypoint] reads it at compile time, proxy-fetch-build
// at build time (it sees every crate's classes, where the macro sees one), and
// tests/workerd/names.test.mjs checks runtime.js and the main module against it.
import { readFileSync } from "node:fs";

export const names = JSON.parse(readFileSync(new URL("./names.json", import.meta.url), "utf8"));
