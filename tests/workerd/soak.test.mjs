// The soak at test-suite size: 1,000 requests over both flows with upstream faults, a dying
// executor and workerd killed twice during bursts of starts; every handler runs exactly once
// with its scenario's outcome and nothing is left behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { soak } from "./soak.mjs";

test("1,000 requests under faults and kills: each delivered exactly once with its outcome, storage empty", async () => {
  const report = await soak({ n: 1000, restarts: 2 });
  console.log(`soak: ${JSON.stringify({ ...report, examples: undefined })}`);
  assert.equal(report.lost, 0, "lost");
  assert.equal(report.duplicates, 0, "duplicates");
  assert.equal(report.start_errors, 0, JSON.stringify(report.examples.start_errors));
  assert.equal(report.wrong_outcome, 0, JSON.stringify(report.examples.wrong));
  assert.equal(report.orphans, 0);
  assert.deepEqual(report.leftovers, { queue_entries: 0, pending_records: 0 });
  for (const outcome of ["response", "Network", "Timeout", "Backstop"]) {
    assert.ok(report.by_outcome[outcome] > 0, `some ${outcome} outcomes: ${JSON.stringify(report.by_outcome)}`);
  }
});
