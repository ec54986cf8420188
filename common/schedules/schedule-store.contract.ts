import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { monotonicFactory } from "ulid";
import { newTask } from "../queue/new-task.js";
import type { Task } from "../model/task-model.js";
import type { ScheduleStore } from "./schedule-store.js";
import { LAST_TASKS_KEPT, type Schedule } from "./schedule-model.js";

/*
 * The schedules' part of the TaskStore contract (task-store.contract.ts runs it for every adapter),
 * written only against ScheduleStore and the task store's get.
 */

const nextUlid = monotonicFactory();

export function makeSchedule(overrides: Partial<Schedule> = {}): Schedule {
  const id = `sched-${nextUlid()}`;
  return {
    id,
    site: "test",
    user: "alice",
    name: "nightly",
    job: "echo",
    params: {},
    priority: 50,
    maxTries: 3,
    input: `schedules/${id}/input`,
    inputBytes: 5,
    offload: true,
    everyMs: 60_000,
    cron: null,
    timezone: null,
    startAt: null,
    endAt: null,
    maxRuns: null,
    catchUp: "none",
    paused: false,
    nextRunAt: 1_000,
    runCount: 0,
    lastTaskIds: [],
    createdAt: 0,
    ...overrides,
  };
}

function tickTask(at: number): Task {
  return newTask(
    {
      id: `test-${nextUlid()}`,
      site: "test",
      user: "alice",
      name: "nightly",
      job: "echo",
      params: {},
      priority: 50,
      maxTries: 3,
      input: null,
    },
    at,
  );
}

type WithStore = (body: (store: ScheduleStore & { get(id: string): Promise<Task | null> }) => Promise<void>) => () => Promise<void>;

export function scheduleStoreContract(withStore: WithStore): void {
  describe("schedules", () => {
    it(
      "creates, gets, lists (per user), pauses and resumes, deletes",
      withStore(async (store) => {
        const a = makeSchedule();
        const b = makeSchedule({ user: "bob", cron: "*/5 * * * *", everyMs: null, timezone: "Europe/Paris" });
        await store.createSchedule(a);
        await store.createSchedule(b);
        await assert.rejects(store.createSchedule(a));
        assert.deepEqual(await store.getSchedule(a.id), a);
        assert.equal(await store.getSchedule("sched-01ARZ3NDEKTSV4RRFFQ69G5FAV"), null);
        assert.deepEqual(
          (await store.listSchedules({})).map((s) => s.id),
          [a.id, b.id],
        );
        assert.deepEqual(await store.listSchedules({ user: "bob" }), [b]);
        assert.deepEqual(await store.setSchedulePaused(a.id, true), { ...a, paused: true });
        assert.deepEqual(await store.setSchedulePaused(a.id, false, 5_000), { ...a, paused: false, nextRunAt: 5_000 });
        assert.equal(await store.setSchedulePaused("sched-01ARZ3NDEKTSV4RRFFQ69G5FAV", true), null);
        assert.equal(await store.deleteSchedule(a.id), true);
        assert.equal(await store.deleteSchedule(a.id), false);
        assert.equal(await store.getSchedule(a.id), null);
      }),
    );

    it(
      "dueSchedules: unpaused, with a nextRunAt at or before now, earliest first, at most limit",
      withStore(async (store) => {
        const late = makeSchedule({ nextRunAt: 900 });
        const early = makeSchedule({ nextRunAt: 100 });
        const atNow = makeSchedule({ nextRunAt: 1_000 });
        await store.createSchedule(late);
        await store.createSchedule(early);
        await store.createSchedule(atNow);
        await store.createSchedule(makeSchedule({ nextRunAt: 1_001 }));
        await store.createSchedule(makeSchedule({ nextRunAt: 50, paused: true }));
        await store.createSchedule(makeSchedule({ nextRunAt: null }));
        assert.deepEqual(
          (await store.dueSchedules(1_000, 10)).map((s) => s.id),
          [early.id, late.id, atNow.id],
        );
        assert.deepEqual(
          (await store.dueSchedules(1_000, 2)).map((s) => s.id),
          [early.id, late.id],
        );
      }),
    );

    it(
      "fireSchedule: the compare-and-set on nextRunAt; two fires of the same tick make one task",
      withStore(async (store) => {
        const schedule = makeSchedule({ nextRunAt: 1_000 });
        await store.createSchedule(schedule);
        const first = tickTask(1_000);
        const second = tickTask(1_000);
        const fired = await store.fireSchedule(schedule.id, 1_000, { nextRunAt: 61_000, taskId: first.id }, [first]);
        assert.ok(fired.ok);
        assert.deepEqual(fired.schedule, { ...schedule, nextRunAt: 61_000, runCount: 1, lastTaskIds: [first.id] });
        const again = await store.fireSchedule(schedule.id, 1_000, { nextRunAt: 61_000, taskId: second.id }, [second]);
        assert.deepEqual(again, { ok: false, why: "moved", schedule: fired.schedule });
        assert.notEqual(await store.get(first.id), null);
        assert.equal(await store.get(second.id), null, "the missed fire inserted nothing");
        assert.deepEqual(await store.getSchedule(schedule.id), fired.schedule);
      }),
    );

    it(
      "fireSchedule: a skipped tick (no task) moves nextRunAt only; a paused or missing schedule misses",
      withStore(async (store) => {
        const schedule = makeSchedule({ nextRunAt: 1_000, runCount: 2, lastTaskIds: ["x", "y"] });
        await store.createSchedule(schedule);
        const skipped = await store.fireSchedule(schedule.id, 1_000, { nextRunAt: 2_000, taskId: null }, []);
        assert.ok(skipped.ok);
        assert.deepEqual(skipped.schedule, { ...schedule, nextRunAt: 2_000 });
        await store.setSchedulePaused(schedule.id, true);
        const task = tickTask(2_000);
        const paused = await store.fireSchedule(schedule.id, 2_000, { nextRunAt: 3_000, taskId: task.id }, [task]);
        assert.equal(paused.ok, false);
        assert.equal(!paused.ok && paused.why, "paused");
        assert.equal(await store.get(task.id), null);
        const missing = await store.fireSchedule("sched-01ARZ3NDEKTSV4RRFFQ69G5FAV", 2_000, { nextRunAt: null, taskId: null }, []);
        assert.deepEqual(missing, { ok: false, why: "missing", schedule: null });
      }),
    );

    it(
      `fireSchedule: ends the schedule (nextRunAt null) and keeps the last ${LAST_TASKS_KEPT} task ids, oldest first`,
      withStore(async (store) => {
        const ids = Array.from({ length: LAST_TASKS_KEPT }, (_, i) => `old-${i}`);
        const schedule = makeSchedule({ nextRunAt: 1_000, runCount: LAST_TASKS_KEPT, lastTaskIds: ids });
        await store.createSchedule(schedule);
        const task = tickTask(1_000);
        const fired = await store.fireSchedule(schedule.id, 1_000, { nextRunAt: null, taskId: task.id }, [task]);
        assert.ok(fired.ok);
        assert.equal(fired.schedule.nextRunAt, null);
        assert.equal(fired.schedule.runCount, LAST_TASKS_KEPT + 1);
        assert.deepEqual(fired.schedule.lastTaskIds, [...ids.slice(1), task.id]);
        assert.deepEqual(await store.dueSchedules(Number.MAX_SAFE_INTEGER, 10), []);
      }),
    );
  });
}
