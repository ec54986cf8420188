import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import { blobKeys, newTaskId } from "./new-task.js";
import { nextSweepDelay, sweepRetention, type PurgeDeps } from "./retention.js";
import { TaskQueue } from "./task-queue.js";
import type { Task } from "../model/task-model.js";

let dir: string;
let store: SqliteTaskStore;
let blobs: FsBlobStore;
let queue: TaskQueue;
let clock: number;
let deps: PurgeDeps;
const processedBy = { site: "test", node: "n1" };
const claimOf = (task: Task) => ({ id: task.id, owner: "w1", tries: task.tries });
const DAY = 86_400_000;
const LIMITS = { batchSize: 2, batches: 10 };

/** A task of `job` with its input stored, submitted now. */
async function submitted(job: string): Promise<Task> {
  const id = newTaskId("test");
  await blobs.put(blobKeys.input(id), Readable.from(["a document"]));
  return queue.submit({ id, site: "test", user: "u", name: "t", job, params: {}, priority: 50, maxTries: 1, input: blobKeys.input(id) });
}

/** Runs the task to `output` (or to `error` when `fail`). */
async function finish(task: Task, fail = false): Promise<void> {
  const [leased] = await queue.pull("w1", 1);
  assert.equal(leased?.id, task.id);
  if (fail) assert.equal(await queue.fail(claimOf(leased!), "broken", { retryable: false }), true);
  else assert.equal(await queue.succeed(claimOf(leased!), { output: blobKeys.output(task.id, 1), processedBy }), true);
}

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-retention-test-"));
  store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  clock = 10 * DAY;
  queue = new TaskQueue({
    store,
    site: "test",
    leaseMs: 60_000,
    backoffBaseMs: 1,
    backoffMaxMs: 1,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
    now: () => clock,
  });
  deps = { queue, store, blobs, log: { warn: (msg) => assert.fail(msg) } };
});
afterEach(async () => {
  queue.stop();
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("sweepRetention", () => {
  it("removes finished trees past their status's window with their documents, a job's own window first", async () => {
    const old = await submitted("plain");
    await finish(old);
    const oldError = await submitted("plain");
    await finish(oldError, true);
    const kept = await submitted("keep");
    await finish(kept, true);
    clock += 2 * DAY;
    const fresh = await submitted("plain");
    await finish(fresh);
    const windows = { outputMs: DAY, errorMs: DAY, canceledMs: DAY };
    const report = await sweepRetention(deps, windows, new Map([["keep", { errorMs: null }]]), clock, LIMITS);
    assert.deepEqual(report, { deleted: 2, more: false });
    for (const gone of [old, oldError]) {
      assert.equal(await store.get(gone.id), null);
      assert.equal(await blobs.stat(blobKeys.input(gone.id)), null, "its documents went with it");
    }
    assert.equal((await store.get(kept.id))?.status, "error", "its job keeps errors for ever");
    assert.equal((await store.get(fresh.id))?.status, "output", "younger than its window");
    assert.notEqual(await blobs.stat(blobKeys.input(fresh.id)), null);
  });

  it("never touches a task that is not final: a running one, a queued one, a parent whose children are done but whose merge runs", async () => {
    const running = await submitted("plain");
    const parent = await submitted("pages");
    const [leased] = await queue.pull("w1", 1);
    assert.equal(leased?.id, running.id);
    const [leasedParent] = await queue.pull("w1", 1);
    assert.equal(await queue.split(claimOf(leasedParent!), [{ input: "p0" }, { input: "p1" }], processedBy), true);
    for (const child of await queue.pull("w1", 2)) await queue.succeed(claimOf(child), { output: `${child.id}/out`, processedBy });
    const [merge] = await queue.pull("w1", 1);
    assert.equal(merge?.id, parent.id);
    const queued = await submitted("plain");
    clock += 100 * DAY;
    const report = await sweepRetention(deps, { outputMs: 1, errorMs: 1, canceledMs: 1 }, new Map(), clock, LIMITS);
    assert.equal(report.deleted, 0);
    assert.equal((await store.get(parent.id))?.status, "work");
    assert.equal((await store.children(parent.id)).length, 2, "its finished children stay with it");
    assert.equal((await store.get(running.id))?.status, "work");
    assert.equal((await store.get(queued.id))?.status, "input");
  });
});

describe("nextSweepDelay", () => {
  const site = { outputMs: 7 * 86_400_000, errorMs: null, canceledMs: 86_400_000 };
  it("waits sweepMs when every window is longer", () => {
    assert.equal(nextSweepDelay(60_000, site, new Map()), 60_000);
  });
  it("sweeps as often as the shortest window of the site or of a job asks, never more than once a second", () => {
    assert.equal(nextSweepDelay(60_000, { ...site, errorMs: 5000 }, new Map()), 5000);
    assert.equal(nextSweepDelay(60_000, site, new Map([["ocr", { outputMs: 2000 }]])), 2000);
    assert.equal(nextSweepDelay(60_000, { ...site, outputMs: 1 }, new Map()), 1000);
  });
});
