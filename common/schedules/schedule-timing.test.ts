import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DocqError, ERROR_CODE } from "../model/errors.js";
import { makeSchedule } from "./schedule-store.contract.js";
import { parseCron, parseEvery, planFire, tickAfter, upcomingRuns } from "./schedule-timing.js";
import { parseScheduleTiming, newSchedule } from "./schedule-request.js";
import { tickTaskId } from "./tick-task-id.js";
import { TASK_ID_PATTERN } from "../model/task-model.js";
import { decodeTime } from "ulid";

function refused(fn: () => unknown, field: string): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DocqError, String(err));
    assert.equal(err.code, ERROR_CODE.BadRequest);
    assert.equal(err.field, field);
    return err.message;
  }
  assert.fail("expected a refusal");
}

const T0 = Date.parse("2026-05-01T09:00:00Z");

describe("every", () => {
  it("reads 90s, 5m, 1h, 1d", () => {
    assert.equal(parseEvery("90s"), 90_000);
    assert.equal(parseEvery("5m"), 300_000);
    assert.equal(parseEvery("1h"), 3_600_000);
    assert.equal(parseEvery("1d"), 86_400_000);
  });
  it("refuses what is not an interval, or under a second, naming every", () => {
    for (const bad of ["", "5", "m", "1.5h", "5 minutes", "0s", "1w"]) refused(() => parseEvery(bad), "every");
  });
});

describe("cron", () => {
  it("takes five fields, in a time zone", () => {
    const next = parseCron("30 9 * * *", "Europe/Paris").nextRun(new Date(T0));
    // 09:30 in Paris (summer time, UTC+2) is 07:30 UTC: the next one after 09:00 UTC is the next day's.
    assert.equal(next?.toISOString(), "2026-05-02T07:30:00.000Z");
  });
  it("refuses a bad expression naming cron and the field at fault", () => {
    assert.match(
      refused(() => parseCron("61 * * * *", null), "cron"),
      /field 1, the minute/,
    );
    assert.match(
      refused(() => parseCron("* * * * 8", null), "cron"),
      /field 5, the day of week/,
    );
    assert.match(
      refused(() => parseCron("* x * * *", null), "cron"),
      /field 2, the hour/,
    );
    assert.match(
      refused(() => parseCron("* * *", null), "cron"),
      /3 field\(s\): write five/,
    );
    assert.match(
      refused(() => parseCron("0 * * * * *", null), "cron"),
      /6 field/,
    );
    refused(() => parseCron("* * * * *", "Mars/Olympus"), "timezone");
  });
});

describe("ticks", () => {
  it("every: from createdAt + every, or from startAt; none past endAt", () => {
    const rule = makeSchedule({ everyMs: 2000, createdAt: T0 });
    assert.equal(tickAfter(rule, T0), T0 + 2000);
    assert.equal(tickAfter(rule, T0 + 2000), T0 + 4000);
    assert.equal(tickAfter(rule, T0 + 4500), T0 + 6000);
    const started = makeSchedule({ everyMs: 2000, createdAt: T0, startAt: T0 + 10_000, endAt: T0 + 14_000 });
    assert.equal(tickAfter(started, T0), T0 + 10_000);
    assert.deepEqual(upcomingRuns(started, T0 + 10_000, 5), [T0 + 10_000, T0 + 12_000, T0 + 14_000]);
    assert.deepEqual(upcomingRuns(started, T0 + 10_000, 5, 2), [T0 + 10_000, T0 + 12_000]);
  });
  it("cron: the next matching minute after the moment, from startAt", () => {
    const rule = makeSchedule({ everyMs: null, cron: "*/15 * * * *", createdAt: T0 });
    assert.equal(tickAfter(rule, T0), T0 + 15 * 60_000);
    assert.equal(tickAfter(rule, T0 + 15 * 60_000), T0 + 30 * 60_000);
    const later = makeSchedule({ everyMs: null, cron: "*/15 * * * *", createdAt: T0, startAt: T0 + 3_600_000 });
    assert.equal(tickAfter(later, T0), T0 + 3_600_000);
  });
});

describe("planFire: catch-up", () => {
  const every2s = (overrides = {}) => makeSchedule({ everyMs: 2000, createdAt: T0, nextRunAt: T0 + 2000, ...overrides });

  it("on time, or a little late: runs the tick and moves to the next one", () => {
    assert.deepEqual(planFire(every2s(), T0 + 2000), { runTick: T0 + 2000, nextRunAt: T0 + 4000, missed: 0 });
    // Every second, 1.5 s late: the next tick is due too, but a busy queuer catches up tick by tick.
    const every1s = makeSchedule({ everyMs: 1000, createdAt: T0, nextRunAt: T0 + 1000 });
    assert.deepEqual(planFire(every1s, T0 + 2500), { runTick: T0 + 1000, nextRunAt: T0 + 2000, missed: 0 });
  });
  it("none after downtime: no task, the next tick after now", () => {
    assert.deepEqual(planFire(every2s(), T0 + 11_000), { runTick: null, nextRunAt: T0 + 12_000, missed: 5 });
  });
  it("one after downtime: one task now (named by the first missed tick), then the next tick after now", () => {
    assert.deepEqual(planFire(every2s({ catchUp: "one" }), T0 + 11_000), { runTick: T0 + 2000, nextRunAt: T0 + 12_000, missed: 4 });
  });
  it("ends at maxRuns and at endAt", () => {
    assert.equal(planFire(every2s({ maxRuns: 3, runCount: 2 }), T0 + 2000).nextRunAt, null);
    assert.equal(planFire(every2s({ endAt: T0 + 3000 }), T0 + 2000).nextRunAt, null);
  });
});

describe("a tick's task id", () => {
  it("is a task id whose time is the tick, the same for the same tick and another for another", () => {
    const id = tickTaskId("local", "sched-01ARZ3NDEKTSV4RRFFQ69G5FAV", T0);
    assert.match(id, TASK_ID_PATTERN);
    assert.equal(decodeTime(id.slice("local-".length)), T0);
    assert.equal(tickTaskId("local", "sched-01ARZ3NDEKTSV4RRFFQ69G5FAV", T0), id);
    assert.notEqual(tickTaskId("local", "sched-01ARZ3NDEKTSV4RRFFQ69G5FAV", T0 + 1), id);
    assert.notEqual(tickTaskId("local", "sched-01ARZ3NDEKTSV4RRFFQ69G5FAW", T0), id);
  });
});

describe("a schedule's request", () => {
  it("needs every or cron, not both; timezone only with cron; endAt after startAt", () => {
    refused(() => parseScheduleTiming({}), "every");
    refused(() => parseScheduleTiming({ every: "5m", cron: "* * * * *" }), "cron");
    refused(() => parseScheduleTiming({ every: "5m", timezone: "Europe/Paris" }), "timezone");
    refused(() => parseScheduleTiming({ every: "5m", startAt: "2026-05-02T00:00:00Z", endAt: "2026-05-01T00:00:00Z" }), "endAt");
    refused(() => parseScheduleTiming({ every: "5m", catchUp: "all" }), "catchUp");
    refused(() => parseScheduleTiming({ every: "5m", maxRuns: "0" }), "maxRuns");
    refused(() => parseScheduleTiming({ every: "5m", runAt: "2026-05-02T00:00:00Z" }), "runAt");
    refused(() => parseScheduleTiming({ cron: "61 * * * *" }), "cron");
  });
  it("makes a schedule whose first run is its first tick after now; refuses one that would never run", () => {
    const timing = parseScheduleTiming({ every: "2s", maxRuns: "3", catchUp: "one" });
    assert.deepEqual(timing, { everyMs: 2000, cron: null, timezone: null, startAt: null, endAt: null, maxRuns: 3, catchUp: "one" });
    const basis = makeSchedule();
    const schedule = newSchedule(basis, timing, T0);
    assert.equal(schedule.nextRunAt, T0 + 2000);
    assert.equal(schedule.createdAt, T0);
    refused(() => newSchedule(basis, parseScheduleTiming({ every: "1h", endAt: String(T0 + 1000) }), T0), "endAt");
  });
});
