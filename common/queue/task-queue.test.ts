import assert from "node:assert/strict";
import { once } from "node:events";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { isDocqError } from "../model/errors.js";
import { newTaskId, type NewTaskSpec } from "./new-task.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import { retryDelayMs, TaskQueue, type TaskQueueOptions } from "./task-queue.js";
import type { Task } from "../model/task-model.js";

let dir: string;
let store: SqliteTaskStore;
let clock: number;
const now = (): number => clock;
const processedBy = { site: "test", node: "n1" };

function makeQueue(overrides: Partial<Omit<TaskQueueOptions, "store">> = {}): TaskQueue {
  return new TaskQueue({ ...makeQueueOptions(), ...overrides });
}

function makeQueueOptions(): TaskQueueOptions {
  return {
    store,
    site: "test",
    leaseMs: 1000,
    backoffBaseMs: 100,
    backoffMaxMs: 1000,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
    now,
  };
}

/** The test's store, its `step` answering 30 ms after it is committed (a commit on a loaded machine). */
function slowerStore(step: "create" | "requeue"): SqliteTaskStore {
  return new Proxy(store, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name, target);
      if (typeof value !== "function") return value;
      const bound = (value as (...args: unknown[]) => unknown).bind(target);
      if (name !== step) return bound;
      return async (...args: unknown[]) => {
        const answer = await bound(...args);
        await new Promise((resolve) => setTimeout(resolve, 30));
        return answer;
      };
    },
  });
}

function spec(priority: number, overrides: Partial<NewTaskSpec> = {}): NewTaskSpec {
  return {
    id: newTaskId("test"),
    site: "test",
    user: "u",
    name: `p${priority}`,
    job: "noop",
    params: {},
    priority,
    maxTries: 3,
    input: null,
    ...overrides,
  };
}

const claimOf = (task: Task, owner = "w1") => ({ id: task.id, owner, tries: task.tries });

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-queue-test-"));
  store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  clock = 1_000_000;
});
afterEach(async () => {
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("TaskQueue", () => {
  it("leases by priority, FIFO within a priority, counting the try and recording the lease", async () => {
    const queue = makeQueue();
    const a = await queue.submit(spec(10));
    clock++;
    const b = await queue.submit(spec(90));
    clock++;
    const c = await queue.submit(spec(10));
    const pulled = await queue.pull("w1", 2);
    assert.deepEqual(
      pulled.map((t) => t.id),
      [b.id, a.id],
    );
    for (const t of pulled) {
      assert.equal(t.status, "work");
      assert.equal(t.tries, 1);
      assert.deepEqual(t.lease, { owner: "w1", expiresAt: clock + 1000 });
      assert.equal(t.startTime, clock);
    }
    assert.deepEqual(
      (await queue.pull("w2", 5)).map((t) => t.id),
      [c.id],
    );
    assert.deepEqual(await queue.pull("w2", 5), []);
  });

  it("completes under the right claim only", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50));
    const [task] = await queue.pull("w1", 1);
    assert.ok(task);
    assert.equal(await queue.succeed(claimOf(task, "w2"), { output: "k", processedBy }), false, "another owner");
    assert.equal(await queue.succeed({ ...claimOf(task), tries: 2 }, { output: "k", processedBy }), false, "another attempt");
    clock += 40;
    assert.equal(await queue.succeed(claimOf(task), { output: "k", processedBy }), true);
    const done = await store.get(task.id);
    assert.equal(done?.status, "output");
    assert.equal(done?.output, "k");
    assert.equal(done?.lease, null);
    assert.equal(done?.duration, 40);
    assert.deepEqual(done?.processedBy, processedBy);
    assert.equal(await queue.succeed(claimOf(task), { output: "k2", processedBy }), false, "no second completion");
    assert.equal((await store.get(task.id))?.output, "k");
  });

  it("retries a failure after an exponential backoff, then ends in error after maxTries", async () => {
    const queue = makeQueue();
    const submitted = await queue.submit(spec(50, { maxTries: 3 }));
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [task] = await queue.pull("w1", 1);
      assert.equal(task?.id, submitted.id, `attempt ${attempt} pulled`);
      assert.equal(task.tries, attempt);
      assert.equal(await queue.fail(claimOf(task), `boom ${attempt}`, { retryable: true }), true);
      const after = await store.get(task.id);
      if (attempt < 3) {
        assert.equal(after?.status, "input");
        assert.equal(after?.availableAt, clock + retryDelayMs(attempt, 100, 1000));
        assert.deepEqual(await queue.pull("w1", 1), [], "held back during the backoff");
        clock = after?.availableAt ?? clock;
      } else {
        assert.equal(after?.status, "error");
        assert.equal(after?.error, "boom 3");
      }
    }
    assert.deepEqual([retryDelayMs(1, 100, 1000), retryDelayMs(2, 100, 1000), retryDelayMs(5, 100, 1000)], [100, 200, 1000]);
  });

  it("ends a non-retryable failure at once", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50));
    const [task] = await queue.pull("w1", 1);
    assert.ok(task);
    assert.equal(await queue.fail(claimOf(task), "unknown job", { retryable: false }), true);
    assert.equal((await store.get(task.id))?.status, "error");
  });

  it("announces a retry when its backoff elapses", async () => {
    const queue = makeQueue({ now: Date.now, backoffBaseMs: 30 });
    await queue.submit(spec(50));
    const [task] = await queue.pull("w1", 1);
    assert.ok(task);
    const announced = once(queue, "task:queued");
    const failedAt = Date.now();
    await queue.fail(claimOf(task), "x", { retryable: true });
    await announced;
    assert.ok(Date.now() - failedAt >= 25, "not before the backoff");
    assert.equal((await queue.pull("w1", 1)).length, 1);
    queue.stop();
  });

  it("announces a retry whose backoff passed while its requeue was being committed (a loaded machine)", async () => {
    // The requeue's commit outlasts the 1 ms backoff: the task is due before the queue indexes it.
    const slow = slowerStore("requeue");
    const queue = new TaskQueue({ ...makeQueueOptions(), store: slow, now: Date.now, backoffBaseMs: 1, backoffMaxMs: 1 });
    await queue.submit(spec(50));
    const [task] = await queue.pull("w1", 1);
    assert.ok(task);
    let announced = 0;
    queue.on("task:queued", () => announced++);
    await queue.fail(claimOf(task), "x", { retryable: true });
    assert.equal(announced, 1, "announced when indexed, not left to the workers' poll");
    assert.equal((await queue.pull("w1", 1)).length, 1);
    queue.stop();
  });

  it("announces a delayed task whose moment passed while it was being stored", async () => {
    const slow = slowerStore("create");
    const queue = new TaskQueue({ ...makeQueueOptions(), store: slow, now: Date.now });
    let announced = 0;
    queue.on("task:queued", () => announced++);
    await queue.submit(spec(50, { availableAt: Date.now() + 5 }));
    assert.equal(announced, 1);
    assert.equal((await queue.pull("w1", 1)).length, 1);
    queue.stop();
  });

  it("keeps a delayed task (availableAt ahead) in input, counted as delayed, and announces it when it is due", async () => {
    const queue = makeQueue({ now: Date.now });
    const submittedAt = Date.now();
    const task = await queue.submit(spec(50, { availableAt: submittedAt + 200 }));
    // Listened for first: on a loaded machine the announcement can come while the pull below is under way.
    const announced = once(queue, "task:queued");
    assert.equal(task.status, "input");
    assert.equal(task.availableAt, submittedAt + 200);
    assert.equal(queue.queueCounts().delayed, 1);
    assert.equal((await queue.pull("w1", 1)).length, 0, "not before its availableAt");
    await announced;
    assert.ok(Date.now() >= submittedAt + 200, "not announced before it is due");
    assert.equal((await queue.pull("w1", 1)).length, 1);
    queue.stop();
  });

  it("requeues expired leases, counting the try, and refuses the stale holder afterwards", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50));
    const [task] = await queue.pull("w1", 1);
    assert.ok(task);
    clock += 500;
    assert.deepEqual(await queue.heartbeat("w1", [task.id]), []);
    clock += 900;
    assert.equal(await queue.sweepExpiredLeases(), 0, "renewed by the heartbeat");
    clock += 200;
    assert.equal(await queue.sweepExpiredLeases(), 1);
    const requeued = await store.get(task.id);
    assert.equal(requeued?.status, "input");
    assert.equal(requeued?.tries, 1);
    assert.match(requeued?.error ?? "", /lease expired: w1/);
    assert.deepEqual(await queue.heartbeat("w1", [task.id]), [task.id], "the old holder learns it lost the lease");
    clock = requeued?.availableAt ?? clock;
    const [again] = await queue.pull("w2", 1);
    assert.equal(again?.tries, 2);
    assert.equal(await queue.succeed(claimOf(task), { output: "stale", processedBy }), false);
    assert.equal(await queue.succeed(claimOf(again!, "w2"), { output: "fresh", processedBy }), true);
    assert.equal((await store.get(task.id))?.output, "fresh");
  });

  it("cancels a queued task (never pulled) and a running one (its holder is told)", async () => {
    const queue = makeQueue();
    const queued = await queue.submit(spec(50));
    const running = await queue.submit(spec(90));
    const [leased] = await queue.pull("w1", 1);
    assert.equal(leased?.id, running.id);
    const told: { id: string; leaseOwner: string }[] = [];
    queue.on("task:canceled", (c) => told.push(c));
    assert.equal((await queue.cancel(queued.id)).task.status, "canceled");
    assert.deepEqual((await queue.cancel(running.id)).canceledIds, [running.id]);
    assert.deepEqual(told, [{ id: running.id, leaseOwner: "w1" }]);
    assert.deepEqual(await queue.pull("w1", 5), []);
    assert.equal(await queue.succeed(claimOf(leased!), { output: "k", processedBy }), false);
    await assert.rejects(
      queue.cancel(queued.id),
      (err: unknown) => isDocqError(err, "TASK_NOT_IN_STATE") && /already canceled/.test(err.message),
    );
    await assert.rejects(queue.cancel("test-01JAAAAAAAAAAAAAAAAAAAAAAA"), (err: unknown) => isDocqError(err, "TASK_NOT_FOUND"));
  });

  it("rebuilds the same order on reload, keeping running tasks leased unless told they are orphans", async () => {
    const first = makeQueue();
    const low = await first.submit(spec(1));
    const high = await first.submit(spec(99));
    const mid = await first.submit(spec(50));
    const running = await first.submit(spec(100));
    await first.pull("w1", 1);

    const second = makeQueue();
    assert.deepEqual(await second.reload().then(({ queued, working, requeued }) => ({ queued, working, requeued })), {
      queued: 3,
      working: 1,
      requeued: 0,
    });
    assert.deepEqual(
      (await second.pull("w2", 5)).map((t) => t.id),
      [high.id, mid.id, low.id],
    );

    const third = makeQueue({ requeueWorkOnReload: true, backoffBaseMs: 0 });
    const report = await third.reload();
    assert.equal(report.requeued, 4, "everything the earlier queues leased");
    const orphan = await store.get(running.id);
    assert.equal(orphan?.status, "input");
    assert.equal(orphan?.tries, 1);
    assert.deepEqual(
      (await third.pull("w3", 5)).map((t) => t.id),
      [running.id, high.id, mid.id, low.id],
    );
    third.stop();
  });

  it("indexes once a task submitted between two batches of its reload (a remote store's batches let submits in)", async () => {
    const first = makeQueue();
    for (let i = 0; i < 5; i++) await first.submit(spec(i));
    const reloading = Object.create(store) as SqliteTaskStore;
    let late: Task | undefined;
    const queue = new TaskQueue({ ...makeQueueOptions(), store: reloading });
    reloading.loadNonFinal = async function* () {
      for await (const batch of store.loadNonFinal(2)) {
        yield batch;
        late ??= await queue.submit(spec(50));
      }
    };
    const report = await queue.reload();
    assert.equal(report.queued, 6, "the late task is read by a later batch");
    assert.deepEqual(queue.queueCounts(), { ready: 6, delayed: 0, highestPriority: 50 });
    const pulled = (await queue.pull("w1", 10)).map((t) => t.id);
    assert.equal(pulled[0], late?.id);
    assert.equal(new Set(pulled).size, 6);
    queue.stop();
  });
});

describe("TaskQueue: split and merge", () => {
  async function splitOne(queue: TaskQueue, parts: number, priority = 50): Promise<{ parent: Task; children: Task[] }> {
    const submitted = await queue.submit(spec(priority, { name: "doc" }));
    const [leased] = await queue.pull("w1", 1);
    assert.equal(leased?.id, submitted.id);
    const inputs = Array.from({ length: parts }, (_, i) => ({
      input: `${submitted.id}/split-1/part-${i}`,
      ...(i === 0 ? { params: { first: true } } : {}),
    }));
    assert.equal(await queue.split(claimOf(leased!), inputs, processedBy), true);
    const parent = (await store.get(submitted.id))!;
    return { parent, children: await store.children(submitted.id) };
  }

  it("queues the children, inheriting from the parent, and waits", async () => {
    const queue = makeQueue();
    const { parent, children } = await splitOne(queue, 3, 70);
    assert.equal(parent.status, "wait");
    assert.equal(parent.lease, null);
    assert.equal(parent.childrenTotal, 3);
    assert.deepEqual(
      parent.children,
      children.map((c) => c.id),
    );
    for (const [i, child] of children.entries()) {
      assert.equal(child.status, "input");
      assert.equal(child.parentId, parent.id);
      assert.equal(child.depth, 1);
      assert.equal(child.priority, 70);
      assert.equal(child.name, "doc");
      assert.equal(child.input, `${parent.id}/split-1/part-${i}`);
      assert.deepEqual(child.params, i === 0 ? { first: true } : {});
    }
    assert.deepEqual(
      (await queue.pull("w1", 5)).map((t) => t.id),
      children.map((c) => c.id),
      "children in order",
    );
  });

  it("queues the merge when the last child is output, with the children's outputs in order", async () => {
    const queue = makeQueue();
    const { parent, children } = await splitOne(queue, 3);
    const leased = await queue.pull("w1", 3);
    for (const child of [...leased].reverse()) {
      assert.equal(await queue.succeed(claimOf(child), { output: `${child.id}/out`, processedBy }), true);
    }
    const complete = await store.get(parent.id);
    assert.equal(complete?.status, "complete");
    assert.equal(complete?.childrenCompleted, 3);
    const [merge] = await queue.pull("w2", 1);
    assert.equal(merge?.id, parent.id);
    assert.deepEqual(
      merge?.mergeInputs,
      children.map((c) => `${c.id}/out`),
    );
    // A failed merge retries the merge, never the split.
    assert.equal(await queue.fail(claimOf(merge!, "w2"), "merge broke", { retryable: true }), true);
    assert.equal((await store.get(parent.id))?.status, "complete");
    clock += 10_000;
    const [again] = await queue.pull("w2", 1);
    assert.equal(again?.tries, merge!.tries + 1);
    assert.equal(await queue.succeed(claimOf(again!, "w2"), { output: "merged", processedBy }), true);
    assert.equal((await store.get(parent.id))?.status, "output");
  });

  it("fails the parent when a child fails for good and cancels the other children, telling their holders", async () => {
    const queue = makeQueue();
    const { parent, children } = await splitOne(queue, 3);
    const told: string[] = [];
    queue.on("task:canceled", (c) => told.push(c.id));
    const [first, second] = await queue.pull("w1", 2);
    assert.equal(await queue.fail(claimOf(first!), "bad page", { retryable: false }), true);
    const after = await store.get(parent.id);
    assert.equal(after?.status, "error");
    assert.match(after?.error ?? "", /child .* failed: bad page/);
    const statuses = (await store.children(parent.id)).map((c) => c.status);
    assert.deepEqual(statuses, ["error", "canceled", "canceled"]);
    assert.deepEqual(told, [second!.id]);
    assert.deepEqual(await queue.pull("w1", 5), [], "the queued sibling is out of the queue");
    assert.equal(children.length, 3);
  });

  it("cancels a waiting parent with all its descendants", async () => {
    const queue = makeQueue();
    const { parent, children } = await splitOne(queue, 2);
    const [child] = await queue.pull("w1", 1);
    assert.equal(await queue.split(claimOf(child!), [{ input: "g1" }, { input: "g2" }], processedBy), true);
    const report = await queue.cancel(parent.id);
    const grandchildren = await store.children(child!.id);
    assert.deepEqual(new Set(report.canceledIds), new Set([parent.id, ...children.map((c) => c.id), ...grandchildren.map((g) => g.id)]));
    assert.deepEqual(new Set(report.drop), new Set(report.canceledIds.map((id) => `${id}/`)), "every canceled task's folder to drop");
    assert.deepEqual(await queue.pull("w1", 10), []);
    assert.deepEqual(await queue.delete(parent.id).then((report) => report.ids.length), 5);
    assert.equal(await store.get(grandchildren[0]!.id), null);
  });

  it("refuses a split deeper than maxSplitDepth, failing the task for good", async () => {
    const queue = makeQueue({ maxSplitDepth: 1 });
    const { parent } = await splitOne(queue, 1);
    const [child] = await queue.pull("w1", 1);
    assert.equal(await queue.split(claimOf(child!), [{ input: "x" }], processedBy), true, "answered: the attempt is recorded as failed");
    const failed = await store.get(child!.id);
    assert.equal(failed?.status, "error");
    assert.match(failed?.error ?? "", /depth 2, deeper than queue.maxSplitDepth \(1\)/);
    assert.equal((await store.get(parent.id))?.status, "error");
  });

  it("refuses to delete a finished child while its parent lives; allows it once the parent is over", async () => {
    const queue = makeQueue();
    const { parent } = await splitOne(queue, 3);
    const [first] = await queue.pull("w1", 1);
    assert.equal(await queue.succeed(claimOf(first!), { output: `${first!.id}/out`, processedBy }), true);
    await assert.rejects(
      queue.delete(first!.id),
      (err: unknown) => isDocqError(err, "TASK_NOT_IN_STATE") && /part of task .* which is wait/.test((err as Error).message),
    );
    assert.equal((await store.get(first!.id))?.status, "output", "the part stays");
    for (const child of await queue.pull("w1", 2)) await queue.succeed(claimOf(child), { output: `${child.id}/out`, processedBy });
    const [merge] = await queue.pull("w2", 1);
    assert.equal(merge?.id, parent.id);
    await assert.rejects(queue.delete(first!.id), /which is work/);
    assert.equal(await queue.succeed(claimOf(merge!, "w2"), { output: "merged", processedBy }), true);
    assert.deepEqual((await queue.delete(first!.id)).ids, [first!.id], "the parent is over: its part may go");
  });

  it("never merges fewer parts than the split made: a missing part fails the parent for good", async () => {
    const queue = makeQueue();
    const { parent, children } = await splitOne(queue, 3);
    for (const child of await queue.pull("w1", 3)) await queue.succeed(claimOf(child), { output: `${child.id}/out`, processedBy });
    // A part's record lost behind the queue's back (a store edited by hand, a restore from backup).
    await store.delete(children[1]!.id);
    assert.deepEqual(await queue.pull("w2", 1), [], "the merge is not handed out");
    const after = await store.get(parent.id);
    assert.match(after?.error ?? "", /2 of its 3 parts exist \(missing: /);
    const merge = after;
    assert.equal(after?.status, "error", "not retried: the part can never come back");
    assert.equal(await queue.succeed(claimOf(merge!, "w2"), { output: "merged", processedBy }), false);
  });

  it("fails a waiting parent on reload when one of its parts is missing, instead of waiting forever", async () => {
    const queue = makeQueue();
    const { parent, children } = await splitOne(queue, 3);
    const [first] = await queue.pull("w1", 1);
    await queue.succeed(claimOf(first!), { output: `${first!.id}/out`, processedBy });
    await store.delete(children[2]!.id);
    queue.stop();
    const reloaded = makeQueue();
    await reloaded.reload();
    const after = await store.get(parent.id);
    assert.equal(after?.status, "error");
    assert.match(after?.error ?? "", /1 of its 3 parts are missing/);
    reloaded.stop();
  });

  it("recounts a waiting parent's children on reload", async () => {
    const queue = makeQueue();
    const { parent } = await splitOne(queue, 2);
    const leased = await queue.pull("w1", 2);
    // Children completed in the store without the parent hearing of it, as after a crash between the two writes.
    for (const child of leased) {
      await store.succeed(claimOf(child), { output: `${child.id}/o`, processedBy }, clock);
    }
    assert.equal((await store.get(parent.id))?.childrenCompleted, 0);
    const reloaded = makeQueue();
    const report = await reloaded.reload();
    assert.equal(report.waiting, 1);
    assert.equal((await store.get(parent.id))?.status, "complete");
    assert.deepEqual(
      (await reloaded.pull("w2", 5)).map((t) => t.id),
      [parent.id],
    );
    reloaded.stop();
  });
});

describe("TaskQueue: reports retried after a lost answer", () => {
  it("accepts a repeated complete or split of the same attempt, and no other", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50));
    const [task] = await queue.pull("w1", 1);
    const claim = claimOf(task!);
    assert.equal(await queue.succeed(claim, { output: "k-1", processedBy }), true);
    assert.equal(await queue.succeed(claim, { output: "k-1", processedBy }), true, "the same report again");
    assert.equal(await queue.succeed(claim, { output: "k-2", processedBy }), false, "another output");
    assert.equal(await queue.succeed(claim, { output: "k-1", processedBy: { site: "test", node: "n2" } }), false, "another node");

    const parent = await queue.submit(spec(50));
    const [leased] = await queue.pull("w1", 1);
    assert.equal(leased?.id, parent.id);
    assert.equal(await queue.split(claimOf(leased!), [{ input: "p0" }], processedBy), true);
    assert.equal(await queue.split(claimOf(leased!), [{ input: "p0" }], processedBy), true, "the same split again");
    assert.equal((await store.children(parent.id)).length, 1, "split once");
  });
});

describe("TaskQueue: quotas and usage", () => {
  const today = (): string => new Date(clock).toISOString().slice(0, 10);

  it("holds maxQueued under concurrent submits: exactly the cap accepted, the rest QUOTA_EXCEEDED", async () => {
    const queue = makeQueue();
    const results = await Promise.allSettled(
      Array.from({ length: 30 }, () => queue.submit(spec(50, { user: "carol" }), { quota: { maxQueued: 5 } })),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 5);
    for (const r of results)
      if (r.status === "rejected") assert.ok(isDocqError(r.reason, "QUOTA_EXCEEDED") && /maxQueued/.test((r.reason as Error).message));
    // Another user is not held back by carol's limit.
    await queue.submit(spec(50, { user: "dan" }), { quota: { maxQueued: 5 } });
    // A finished task frees a place.
    const [first] = await queue.pull("w1", 1);
    assert.equal(await queue.succeed(claimOf(first!), { output: "o", processedBy }), true);
    await queue.submit(spec(50, { user: first!.user }), { quota: { maxQueued: 5 } });
  });

  it("holds maxPerDay and maxBytesPerDay per UTC day, and records usage of submits and ends", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50, { user: "erin" }), { quota: { maxPerDay: 2, maxBytesPerDay: 100 }, inputBytes: 60 });
    await assert.rejects(queue.submit(spec(50, { user: "erin" }), { quota: { maxBytesPerDay: 100 }, inputBytes: 41 }), /maxBytesPerDay/);
    await queue.submit(spec(50, { user: "erin" }), { quota: { maxPerDay: 2 }, inputBytes: 40 });
    await assert.rejects(
      queue.submit(spec(50, { user: "erin" }), { quota: { maxPerDay: 2 } }),
      (err: unknown) => isDocqError(err, "QUOTA_EXCEEDED") && /maxPerDay/.test((err as Error).message),
    );
    const [a, b] = await queue.pull("w1", 2);
    clock += 250;
    await queue.succeed(claimOf(a!), { output: "o", processedBy: { site: "elsewhere", node: "n" } });
    await queue.fail(claimOf(b!), "broken", { retryable: false });
    const [row] = await store.usage({ user: "erin", from: today(), to: today() });
    assert.deepEqual(
      {
        submitted: row?.submitted,
        bytesIn: row?.bytesIn,
        output: row?.output,
        error: row?.error,
        ranElsewhere: row?.ranElsewhere,
        runMs: row?.runMs,
      },
      { submitted: 2, bytesIn: 100, output: 1, error: 1, ranElsewhere: 1, runMs: 500 },
    );
    // The next UTC day starts afresh.
    clock += 86_400_000;
    await queue.submit(spec(50, { user: "erin" }), { quota: { maxPerDay: 2 } });
  });

  it("children inherit offload: false, and such tasks are never lent", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50, { offload: false }));
    assert.deepEqual(await queue.lend("b", 5, 0), []);
    const [parent] = await queue.pull("w1", 1);
    assert.equal(await queue.split(claimOf(parent!), [{ input: "p0" }, { input: "p1" }], processedBy), true);
    for (const child of await store.children(parent!.id)) assert.equal(child.offload, false);
    assert.deepEqual(await queue.lend("b", 5, 0), []);
    await queue.submit(spec(50));
    assert.equal((await queue.lend("b", 5, 0)).length, 1);
  });
});

describe("TaskQueue: attempts, release and retry", () => {
  /** A submitted task split into `parts` children, all queued. */
  async function split(queue: TaskQueue, parts: number): Promise<{ parent: Task; children: Task[] }> {
    const submitted = await queue.submit(spec(50, { name: "doc" }));
    const [leased] = await queue.pull("w1", 1);
    const inputs = Array.from({ length: parts }, (_, i) => ({ input: `${submitted.id}/split-1/part-${i}` }));
    assert.equal(await queue.split(claimOf(leased!), inputs, processedBy), true);
    return { parent: (await store.get(submitted.id))!, children: await store.children(submitted.id) };
  }

  it("records every ended attempt and says attempt:ended once for each", async () => {
    const queue = makeQueue();
    const said: { id: string; outcome: string; n: number }[] = [];
    queue.on("attempt:ended", ({ task, attempt }) => said.push({ id: task.id, outcome: attempt.outcome, n: attempt.n }));
    const task = await queue.submit(spec(50));
    const [first] = await queue.pull("w1", 1);
    assert.equal(await queue.fail(claimOf(first!), "flaky", { retryable: true, processedBy }), true);
    clock += 10_000;
    const [second] = await queue.pull("w1", 1);
    clock += 2_000;
    assert.equal(await queue.sweepExpiredLeases(), 1);
    clock += 10_000;
    const [third] = await queue.pull("w2", 1);
    assert.equal(await queue.succeed(claimOf(third!, "w2"), { output: "out", processedBy }), true);
    assert.deepEqual(said, [
      { id: task.id, outcome: "retry", n: 1 },
      { id: task.id, outcome: "lease_lost", n: 2 },
      { id: task.id, outcome: "output", n: 3 },
    ]);
    const attempts = (await store.get(task.id))!.attempts;
    assert.deepEqual(
      attempts.map((a) => [a.n, a.site, a.node, a.outcome, a.error]),
      [
        [1, "test", "n1", "retry", "flaky"],
        [2, "test", "w1", "lease_lost", "lease expired: w1 stopped renewing it for 1000 ms"],
        [3, "test", "n1", "output", null],
      ],
    );
    assert.equal(attempts[1]!.start, second!.startTime);

    const canceled = await queue.submit(spec(50));
    const [running] = await queue.pull("w1", 1);
    await queue.cancel(canceled.id);
    assert.deepEqual(said.at(-1), { id: running!.id, outcome: "canceled", n: 1 });
    const queuedOnly = await queue.submit(spec(50));
    await queue.cancel(queuedOnly.id);
    assert.equal(said.length, 4, "a cancel of a task not running ends no attempt");
  });

  it("keeps the last 20 attempts", async () => {
    const queue = makeQueue({ backoffBaseMs: 1, backoffMaxMs: 1 });
    const task = await queue.submit(spec(50, { maxTries: 25 }));
    for (let i = 0; i < 25; i++) {
      clock += 10;
      const [leased] = await queue.pull("w1", 1);
      assert.equal(await queue.fail(claimOf(leased!), `try ${leased!.tries}`, { retryable: true }), true);
    }
    const after = (await store.get(task.id))!;
    assert.equal(after.status, "error");
    assert.deepEqual(
      after.attempts.map((a) => a.n),
      Array.from({ length: 20 }, (_, i) => i + 6),
    );
    assert.equal(after.attempts.at(-1)!.outcome, "error");
  });

  it("release queues the task again at once without counting the try; a stale claim is refused", async () => {
    const queue = makeQueue();
    const task = await queue.submit(spec(50));
    const [leased] = await queue.pull("w1", 1);
    const ended = once(queue, "attempt:ended");
    assert.equal(await queue.release(claimOf(leased!), "the worker is stopping"), true);
    const [{ attempt }] = (await ended) as [{ attempt: { outcome: string } }];
    assert.equal(attempt.outcome, "released");
    assert.equal(await queue.release(claimOf(leased!), "again"), false, "the claim no longer holds");
    const [again] = await queue.pull("w2", 1);
    assert.equal(again?.id, task.id);
    assert.equal(again?.tries, 1, "the released try did not count");
  });

  it("retries a plain task in error with a fresh try count, keeping its attempts; other statuses are refused", async () => {
    const queue = makeQueue();
    const task = await queue.submit(spec(50, { maxTries: 1 }));
    const [leased] = await queue.pull("w1", 1);
    assert.equal(await queue.fail(claimOf(leased!), "broken", { retryable: true }), true);
    assert.equal((await store.get(task.id))?.status, "error");
    clock += 5;
    const retried = await queue.retry(task.id);
    assert.deepEqual([retried.status, retried.tries, retried.error, retried.endTime, retried.availableAt], ["input", 0, null, null, clock]);
    assert.equal(retried.attempts.length, 1, "the failed attempt is kept");
    await assert.rejects(queue.retry(task.id), (err) => isDocqError(err, "TASK_NOT_IN_STATE"));
    await assert.rejects(queue.retry(newTaskId("test")), (err) => isDocqError(err, "TASK_NOT_FOUND"));
    const [again] = await queue.pull("w1", 1);
    assert.equal(again?.tries, 1);
    assert.equal(await queue.succeed(claimOf(again!), { output: "out", processedBy }), true);
    assert.equal((await store.get(task.id))?.attempts.length, 2);
  });

  it("retries a failed split parent: its failed and canceled parts run again, the output ones not, then the merge", async () => {
    const queue = makeQueue();
    const { parent, children } = await split(queue, 3);
    const leased = await queue.pull("w1", 3);
    const byId = new Map(leased.map((t) => [t.id, t]));
    const [done, failing, canceled] = children.map((c) => byId.get(c.id)!);
    assert.equal(await queue.succeed(claimOf(done!), { output: "o0", processedBy }), true);
    assert.equal(await queue.fail(claimOf(failing!), "bad page", { retryable: false }), true);
    assert.deepEqual(
      (await store.children(parent.id)).map((c) => c.status),
      ["output", "error", "canceled"],
    );
    assert.equal((await store.get(parent.id))?.status, "error");
    await assert.rejects(queue.retry(failing!.id), (err) => isDocqError(err, "TASK_NOT_IN_STATE") && /retry the parent/.test(String(err)));

    const willRun: string[] = [];
    const retried = await queue.retry(parent.id, async (tasks) => void willRun.push(...tasks.map((t) => t.id)));
    assert.deepEqual([retried.status, retried.childrenCompleted, retried.tries], ["wait", 1, 0]);
    assert.deepEqual(willRun.sort(), [failing!.id, canceled!.id].sort());
    const rerun = await queue.pull("w1", 5);
    assert.deepEqual(rerun.map((t) => t.id).sort(), [failing!.id, canceled!.id].sort(), "only the failed parts run again");
    for (const child of rerun) assert.equal(await queue.succeed(claimOf(child), { output: `${child.id}/out`, processedBy }), true);
    const [merge] = await queue.pull("w1", 1);
    assert.equal(merge?.id, parent.id);
    assert.equal(merge?.mergeInputs?.length, 3);
    assert.equal(await queue.succeed(claimOf(merge!), { output: "merged", processedBy }), true);
    assert.equal((await store.get(parent.id))?.status, "output");
  });

  it("retries a parent whose merge failed by queueing the merge again; a check may refuse before anything is written", async () => {
    const queue = makeQueue();
    const { parent } = await split(queue, 2);
    for (const child of await queue.pull("w1", 2)) await queue.succeed(claimOf(child), { output: `${child.id}/out`, processedBy });
    const [merge] = await queue.pull("w1", 1);
    assert.equal(await queue.fail(claimOf(merge!), "merge broke", { retryable: false }), true);
    assert.equal((await store.get(parent.id))?.status, "error");
    await assert.rejects(
      queue.retry(parent.id, async () => {
        throw new Error("documents gone");
      }),
      /documents gone/,
    );
    assert.equal((await store.get(parent.id))?.status, "error", "a refused retry writes nothing");
    const retried = await queue.retry(parent.id, async (tasks) => assert.deepEqual(tasks, [], "no part runs again"));
    assert.equal(retried.status, "complete");
    const [again] = await queue.pull("w1", 1);
    assert.equal(again?.id, parent.id);
    assert.equal(again?.mergeInputs?.length, 2);
  });
});

describe("TaskQueue: submitMany (the batch submit)", () => {
  it("stores every task in one write, queues them in order, and counts the batch in the user's usage", async () => {
    const queue = makeQueue();
    let queuedSignals = 0;
    queue.on("task:queued", () => queuedSignals++);
    const specs = Array.from({ length: 5 }, (_, i) => spec(i === 3 ? 90 : 50, { user: "fay", name: `f${i}` }));
    const created = await queue.submitMany(specs, { inputBytes: 500 });
    assert.deepEqual(
      created.map((t) => t.id),
      specs.map((s) => s.id),
    );
    assert.equal(queuedSignals, 1, "one wake-up for the batch");
    const pulled = await queue.pull("w1", 10);
    assert.deepEqual(
      pulled.map((t) => t.name),
      ["f3", "f0", "f1", "f2", "f4"],
    );
    const [row] = await store.usage({
      user: "fay",
      from: new Date(clock).toISOString().slice(0, 10),
      to: new Date(clock).toISOString().slice(0, 10),
    });
    assert.equal(row?.submitted, 5);
    assert.equal(row?.bytesIn, 500);
  });

  it("counts every task of the batch against the quota, and refuses the whole batch when it would pass a limit", async () => {
    const queue = makeQueue();
    await queue.submit(spec(50, { user: "gus" }), { quota: { maxQueued: 4 } });
    await assert.rejects(
      queue.submitMany(
        Array.from({ length: 4 }, () => spec(50, { user: "gus" })),
        { quota: { maxQueued: 4 } },
      ),
      (err: unknown) => isDocqError(err, "QUOTA_EXCEEDED") && /maxQueued: gus has 1 .* 4 more would pass/.test((err as Error).message),
    );
    assert.equal(await store.countActive("gus"), 1, "nothing of the refused batch was stored");
    await queue.submitMany(
      Array.from({ length: 3 }, () => spec(50, { user: "gus" })),
      { quota: { maxQueued: 4, maxPerDay: 10 } },
    );
    assert.equal(await store.countActive("gus"), 4);
    await assert.rejects(
      queue.submitMany([spec(50, { user: "gus" }), spec(50, { user: "hal" })], { quota: { maxPerDay: 10 } }),
      (err: unknown) => isDocqError(err, "BAD_REQUEST"),
    );
  });

  it("stores nothing when the store refuses the batch (a duplicate id)", async () => {
    const queue = makeQueue();
    const taken = await queue.submit(spec(50));
    await assert.rejects(queue.submitMany([spec(50), spec(50, { id: taken.id }), spec(50)]));
    assert.equal(await store.countActive("u"), 1);
    assert.deepEqual(
      (await queue.pull("w1", 10)).map((t) => t.id),
      [taken.id],
    );
  });
});

describe("TaskQueue: a lend weighs each document's size", () => {
  const TEN_MB = 10 * 1024 * 1024;
  /** A thief behind about 4.5 Mbit/s, the owner's 2 slots busy: only a long wait pays for moving 10 MB (37 s). */
  const slowLink = { link: { rttMs: 20, bytesPerMs: 565 }, heldByUser: {}, ownerSlots: 2, ownerBusy: 2 };

  it("knows a task's size from the moment it is queued: a lend made before its submit answers weighs it", async () => {
    const queue = makeQueue();
    let lentMeanwhile: Promise<Task[]> | undefined;
    // A thief asking while the submit still records usage: the entry must already carry its size.
    queue.once("task:queued", () => (lentMeanwhile = queue.lend("b", 5, 0, slowLink)));
    await queue.submit(spec(50), { inputBytes: TEN_MB });
    assert.deepEqual(await lentMeanwhile, [], "10 MB over 565 bytes/ms (37 s) does not pay for a wait of half a run");
    // A small document does pay for the same wait.
    await queue.submit(spec(50, { job: "small" }), { inputBytes: 1000 });
    assert.equal((await queue.lend("b", 5, 0, slowLink)).length, 1);
  });

  it("knows the size of each task of a batch", async () => {
    const queue = makeQueue();
    await queue.submitMany([spec(50), spec(50)], { inputBytes: 2 * TEN_MB, sizes: [TEN_MB, TEN_MB] });
    assert.deepEqual(await queue.lend("b", 5, 0, slowLink), []);
  });

  it("weighs a size it does not know (nothing of the kind seen) as large, never as free; an owner without slots lends it", async () => {
    const queue = makeQueue();
    await queue.submitMany([spec(50), spec(50)]);
    assert.deepEqual(await queue.lend("b", 5, 0, slowLink), [], "unknown size over a slow link: not lent");
    assert.equal(
      (await queue.lend("b", 5, 0, { ...slowLink, ownerSlots: 0, ownerBusy: 0 })).length,
      2,
      "no slot at the owner: any move pays",
    );
  });
});
