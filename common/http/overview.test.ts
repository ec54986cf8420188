import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { QueuerStats } from "../queue/protocol.js";
import { buildOverview, OVERVIEW_WINDOW_MINUTES, OverviewSchema, overviewSince } from "./overview.js";

const NOW = 1_800_000_000_000 + 25_000; // 25 s into a minute

const stats: QueuerStats = {
  site: "aa",
  byStatus: { input: 3, work: 1, output: 7, error: 1, wait: 0, complete: 0, canceled: 2 },
  queue: { ready: 3, delayed: 0, highestPriority: 90 },
  queuedByPriority: { 50: 2, 90: 1, 10: 0 },
  workers: [
    { owner: "worker@n1", slots: 4, busy: 1 },
    { owner: "worker@n2", slots: 2, busy: 2 },
  ],
  slots: 6,
  stealing: { bb: { stolenIn: 2, stolenOut: 0 } },
};

describe("overview", () => {
  it("answers every minute of the last hour, the store's counts in their minute and zeros elsewhere", () => {
    const since = overviewSince(NOW);
    const lastMinute = since + (OVERVIEW_WINDOW_MINUTES - 1) * 60_000;
    assert.equal(lastMinute, 1_800_000_000_000);
    const overview = buildOverview(stats, [{ minute: lastMinute, output: 4, error: 1, canceled: 0 }], null, NOW);
    assert.equal(overview.finishedPerMinute.length, OVERVIEW_WINDOW_MINUTES);
    assert.deepEqual(overview.finishedPerMinute[0], { minute: since, output: 0, error: 0, canceled: 0 });
    assert.deepEqual(overview.finishedPerMinute.at(-1), { minute: lastMinute, output: 4, error: 1, canceled: 0 });
    assert.equal(OverviewSchema.safeParse(overview).success, true);
  });

  it("sums busy slots, lists queued priorities highest first and joins stealing counts with the stealer's backlogs", () => {
    const backlog = { queued: 12, highestPriority: 80, idleSlots: 0, at: NOW - 1000 };
    const overview = buildOverview(stats, [], { cc: backlog, aa: { ...backlog, queued: 99 } }, NOW);
    assert.deepEqual(overview.slots, { busy: 3, total: 6 });
    assert.deepEqual(overview.queuedByPriority, [
      { priority: 90, count: 1 },
      { priority: 50, count: 2 },
    ]);
    assert.deepEqual(overview.sites, [
      { site: "bb", stolenIn: 2, stolenOut: 0, backlog: null },
      { site: "cc", stolenIn: 0, stolenOut: 0, backlog },
    ]);
  });
});
