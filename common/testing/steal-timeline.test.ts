import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { slotIdleGaps, spread, stealCosts, type OwnerRun, type ProxyRun } from "./steal-timeline.js";

describe("slotIdleGaps", () => {
  it("pairs each freed slot with the next refill, per node, leaving out the first fills", () => {
    // Two slots: 0-200 and 5-205 fill them; 210 refills the slot freed at 200, 230 the one freed at 205.
    const runs = [
      { node: "b1", start: 0, end: 200 },
      { node: "b1", start: 5, end: 205 },
      { node: "b1", start: 210, end: 410 },
      { node: "b1", start: 230, end: 430 },
      { node: "c1", start: 100, end: 300 },
      { node: "c1", start: 300, end: 500 }, // its second slot's first fill, not a refill
    ];
    assert.deepEqual(
      slotIdleGaps(runs, 2, 1000).sort((a, b) => a - b),
      // b1: 210-200, 230-205, then 410 and 430 never refilled (idle until 1000); c1: 300 and 500 never refilled.
      [10, 25, 500, 570, 590, 700],
    );
  });

  it("counts only slots that freed while the victim had work, and never a negative gap", () => {
    const runs = [
      { node: "b1", start: 0, end: 205 },
      { node: "b1", start: 200, end: 400 },
    ];
    // The second started before the first's end was recorded (output stored after the slot freed): 0.
    assert.deepEqual(slotIdleGaps(runs, 1, 300), [0]);
    assert.deepEqual(slotIdleGaps(runs, 1, 100), []);
  });
});

describe("stealCosts", () => {
  const run = (id: string, ranAt: string, submitTime: number, start: number, end: number): OwnerRun => ({
    id,
    ranAt,
    priority: 0,
    submitTime,
    start,
    end,
  });

  it("weighs each steal's two trips against when the owner would have started it", () => {
    const ownerRuns = [
      run("t1", "a", 1, 10, 1010),
      run("t2", "b", 2, 20, 2500), // lent at 20; the owner ran t3 (behind it) from 1010
      run("t3", "a", 3, 1010, 2010),
      run("t4", "b", 4, 30, 3000), // nothing behind it ran at a: a's slot went idle at 2010
    ];
    const proxies = new Map<string, ProxyRun>([
      ["t2", { id: "t2", start: 120, end: 1120 }],
      ["t4", { id: "t4", start: 1500, end: 2500 }],
    ]);
    assert.deepEqual(stealCosts("a", 1, ownerRuns, proxies), [
      { id: "t2", thief: "b", transferMs: 100 + 1380, waitSavedMs: 990 },
      { id: "t4", thief: "b", transferMs: 1470 + 500, waitSavedMs: 1980 },
    ]);
  });

  it("leaves out a task whose proxy record is missing", () => {
    assert.deepEqual(stealCosts("a", 2, [run("t1", "b", 1, 0, 10)], new Map()), []);
  });
});

describe("spread", () => {
  it("gives nearest-rank p50, p95 and max, or null for nothing", () => {
    assert.equal(spread([]), null);
    assert.deepEqual(spread([5, 1, 3]), { count: 3, p50: 3, p95: 5, max: 5 });
  });
});
