import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { TaskQueue } from "../queue/task-queue.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import { ScheduleFirer } from "./schedule-firer.js";
import { scheduleBlobKeys, type Schedule } from "./schedule-model.js";
import { makeSchedule } from "./schedule-store.contract.js";
import { tickTaskId } from "./tick-task-id.js";

const T0 = Date.parse("2026-05-01T09:00:00Z");
const quiet = { info: () => undefined, warn: () => undefined };

let dir: string;
let store: SqliteTaskStore;
let blobs: FsBlobStore;
let queue: TaskQueue;
let clock: number;

function firer(): ScheduleFirer {
  return new ScheduleFirer({ store, blobs, submit: (spec) => queue.submit(spec), log: quiet, now: () => clock });
}

async function scheduled(overrides: Partial<Schedule> = {}): Promise<Schedule> {
  const schedule = makeSchedule({ everyMs: 2000, createdAt: T0, nextRunAt: T0 + 2000, ...overrides });
  await blobs.put(scheduleBlobKeys.input(schedule.id), Readable.from([Buffer.from("hello")]));
  await store.createSchedule({ ...schedule, input: scheduleBlobKeys.input(schedule.id) });
  return (await store.getSchedule(schedule.id))!;
}

async function taskCount(): Promise<number> {
  return (await store.list({}, { limit: 1000 })).items.length;
}

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-schedule-firer-"));
  store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  queue = new TaskQueue({
    store,
    site: "test",
    leaseMs: 60_000,
    backoffBaseMs: 1,
    backoffMaxMs: 1,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
  });
  clock = T0 + 2000;
});
afterEach(async () => {
  queue.stop();
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("ScheduleFirer", () => {
  it("makes the tick's task with its own copy of the document, and moves the schedule on", async () => {
    const schedule = await scheduled();
    assert.equal(await firer().fireDue(), 1);
    const id = tickTaskId("test", schedule.id, T0 + 2000);
    const task = await store.get(id);
    assert.equal(task?.job, schedule.job);
    assert.equal(task?.input, `${id}/input`);
    assert.equal(await blobs.stat(`${id}/input`).then((s) => s?.size), 5);
    const after = await store.getSchedule(schedule.id);
    assert.equal(after?.nextRunAt, T0 + 4000);
    assert.deepEqual(after?.lastTaskIds, [id]);
    assert.equal(await firer().fireDue(), 0, "nothing due until the next tick");
  });

  it("two firers on the same tick (a standby taking over) make one task and advance once", async () => {
    const schedule = await scheduled();
    const outcomes = await Promise.all([firer().fire(schedule), firer().fire(schedule)]);
    assert.equal(await taskCount(), 1);
    assert.equal(outcomes.filter((o) => o.taken).length, 1);
    assert.equal((await store.getSchedule(schedule.id))?.runCount, 1);
  });

  it("a tick whose task was made but not its advance (killed between) is advanced without a second task", async () => {
    const schedule = await scheduled();
    const id = tickTaskId("test", schedule.id, T0 + 2000);
    await queue.submit({ id, site: "test", user: "alice", name: "", job: "echo", params: {}, priority: 50, maxTries: 1, input: null });
    await firer().fireDue();
    assert.equal(await taskCount(), 1);
    assert.equal((await store.getSchedule(schedule.id))?.nextRunAt, T0 + 4000);
  });

  it("after downtime: catchUp none makes no task, one makes one; both go on from the next tick after now", async () => {
    const none = await scheduled();
    const one = await scheduled({ catchUp: "one" });
    clock = T0 + 11_000;
    await firer().fireDue();
    assert.equal((await store.getSchedule(none.id))?.lastTaskIds.length, 0);
    assert.equal((await store.getSchedule(one.id))?.lastTaskIds.length, 1);
    assert.equal(await taskCount(), 1);
    assert.equal((await store.getSchedule(none.id))?.nextRunAt, T0 + 12_000);
    assert.equal((await store.getSchedule(one.id))?.nextRunAt, T0 + 12_000);
  });

  it("ends at maxRuns: nextRunAt null, no longer due", async () => {
    const schedule = await scheduled({ maxRuns: 1 });
    await firer().fireDue();
    assert.equal((await store.getSchedule(schedule.id))?.nextRunAt, null);
    clock += 100_000;
    assert.equal(await firer().fireDue(), 0);
  });
});
