#!/usr/bin/env node
// scripts/soak ends here: the fault-injection soak (tests/workerd/soak.mjs) at full size.
// Usage: node tools/soak.mjs [N=10000] [restarts=4]
import { soak } from "../tests/workerd/soak.mjs";

const n = Number(process.argv[2] ?? 10_000);
const restarts = Number(process.argv[3] ?? 4);
// A wait that passed its deadline (a result that never came, queues that never drained) throws.
const report = await soak({ n, restarts, log: (m) => console.log(`soak: ${m}`) }).catch((error) => {
  console.log(`soak: FAILED: ${error.message}`);
  process.exit(1);
});
const { examples, ...summary } = report;
console.log(JSON.stringify(summary, null, 2));
if (!report.ok) console.log(JSON.stringify(examples, null, 2));
console.log(report.ok
  ? `soak: ${report.delivered} of ${report.started} delivered exactly once, nothing left behind`
  : "soak: FAILED");
process.exit(report.ok ? 0 : 1);
