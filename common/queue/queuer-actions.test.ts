import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import Database from "better-sqlite3";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { KeyRing } from "../accounts/key-ring.js";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { dropTaskDocuments } from "../blobs/task-documents.js";
import { ERROR_CODE } from "../model/errors.js";
import { rejection } from "../testing/rejection.js";
import type { LeaseClaim } from "../model/claims.js";
import type { Task } from "../model/task-model.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import { blobKeys, newTaskId } from "./new-task.js";
import { directQueuerClient, type QueuerClient } from "./queue-client.js";
import { LocalQueuer } from "./local-queuer.js";
import { queuerHandlers } from "./queuer-actions.js";
import { TaskQueue } from "./task-queue.js";

let dir: string;
let store: SqliteTaskStore;
let queue: TaskQueue;
let blobs: FsBlobStore;
let warnings: string[];
let queuer: QueuerClient;
const quiet = { warn: (): void => undefined };
const ids = (tasks: readonly { id: string }[]): string[] => tasks.map((task) => task.id);

/** What the tests submit for task `id`: a no-op of user u at priority 50, its input stored under its key. */
function submission(id: string, overrides: Partial<Parameters<QueuerClient["submit"]>[0]> = {}): Parameters<QueuerClient["submit"]>[0] {
  return {
    id,
    site: "test",
    user: "u",
    name: "t",
    job: "noop",
    params: {},
    priority: 50,
    maxTries: 1,
    input: blobKeys.input(id),
    ...overrides,
  };
}

/** A task with its input stored, submitted through the protocol. */
async function submitted(priority = 50): Promise<string> {
  const id = newTaskId("test");
  await blobs.put(blobKeys.input(id), Readable.from(["a document"]));
  await queuer.submit(submission(id, { priority }));
  return id;
}

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-queuer-actions-test-"));
  store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  queue = new TaskQueue({
    store,
    site: "test",
    leaseMs: 10_000,
    backoffBaseMs: 0,
    backoffMaxMs: 0,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
  });
  blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  warnings = [];
  const log = { warn: (msg: string): void => void warnings.push(msg) };
  queuer = directQueuerClient({ queue, store, keys: new KeyRing(store), site: "test", heartbeatMs: 1000, blobs, log });
});
afterEach(async () => {
  queue.stop();
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("the queuer's actions", () => {
  it("counts a worker's slots from its first pull, before its first heartbeat: a lend then does not take the site for slotless", async () => {
    // The worker started and found nothing; its first heartbeat is a heartbeat away.
    assert.deepEqual(await queuer.pull("w1", 2), []);
    const id = newTaskId("test");
    await queuer.submit(submission(id, { input: null, inputBytes: 1_000_000 }));
    // 1 MB over 100 bytes/ms (20 s) does not pay: the owner's idle slots start it at once.
    const weighing = { link: { rttMs: 20, bytesPerMs: 100 }, heldByUser: {} };
    assert.deepEqual(await queuer.lend("b", 5, 0, weighing), []);
    assert.equal((await queuer.pull("w1", 2)).length, 1);
  });

  it("delete cancels a live task in one step and drops its documents", async () => {
    const id = await submitted();
    const report = await queuer.delete(id);
    assert.equal(report.status, "canceled");
    assert.deepEqual(report.drop, [blobKeys.folder(id)]);
    assert.equal(await blobs.stat(blobKeys.input(id)), null, "the queuer dropped the input");
    assert.equal((await queuer.get(id)).status, "canceled");
  });

  it("delete removes a final task's record and documents; an unknown id is TASK_NOT_FOUND", async () => {
    const id = await submitted();
    await queuer.cancel(id);
    const report = await queuer.delete(id);
    assert.equal(report.status, "deleted");
    assert.equal((await rejection(queuer.get(id))).code, ERROR_CODE.TaskNotFound);
    assert.equal((await rejection(queuer.delete(id))).code, ERROR_CODE.TaskNotFound);
    assert.deepEqual(warnings, []);
  });

  it("cancel drops the canceled task's documents", async () => {
    const id = await submitted();
    const report = await queuer.cancel(id);
    assert.deepEqual(report.canceledIds, [id]);
    assert.equal(await blobs.stat(blobKeys.input(id)), null);
  });

  it("keeps the documents of siblings a failed child's cascade canceled, and a retry of the parent runs them again", async () => {
    const id = await submitted();
    const [parent] = await queuer.pull("w1", 1);
    const parts = [0, 1].map((i) => blobKeys.splitPart(id, parent!.tries, i));
    for (const part of parts) await blobs.put(part, Readable.from(["a part"]));
    const processedBy = { site: "test", node: "n1" };
    const claimOf = (task: Task): LeaseClaim => ({ id: task.id, owner: "w1", tries: task.tries });
    assert.equal(
      await queuer.split(
        claimOf(parent!),
        parts.map((input) => ({ input })),
        processedBy,
      ),
      true,
    );
    const [failing, sibling] = await queuer.pull("w1", 2);
    // What the sibling's attempt had stored when the cascade canceled it.
    const siblingOutput = blobKeys.output(sibling!.id, sibling!.tries);
    await blobs.put(siblingOutput, Readable.from(["half done"]));
    assert.equal(await queuer.fail(claimOf(failing!), "bad page", { retryable: false }), true);
    assert.equal((await queuer.get(sibling!.id)).status, "canceled");
    assert.equal((await queuer.get(id)).status, "error");
    assert.notEqual(await blobs.stat(siblingOutput), null, "a cascade keeps the canceled sibling's folder");
    assert.notEqual(await blobs.stat(parts[1]!), null, "the parts stay with the parent that made them");

    assert.equal((await rejection(queuer.retry(sibling!.id))).code, ERROR_CODE.TaskNotInState, "a part is retried through its parent");
    assert.deepEqual(await queuer.retry(id), { id, status: "wait" });
    const rerun = await queuer.pull("w1", 5);
    assert.deepEqual(rerun.map((t) => t.id).sort(), [failing!.id, sibling!.id].sort(), "both failed parts run again");
    assert.deepEqual(
      rerun.map((t) => t.tries),
      [1, 1],
      "with a fresh try count",
    );
    assert.equal((await rejection(queuer.retry(id))).code, ERROR_CODE.TaskNotInState, "a waiting task is not retried");
    assert.deepEqual(warnings, []);
  });

  it("refuses a retry of a task whose documents a user's cancel removed", async () => {
    const id = await submitted();
    await queuer.cancel(id);
    const refused = await rejection(queuer.retry(id));
    assert.equal(refused.code, ERROR_CODE.TaskNotInState);
    assert.match(refused.message, /documents were removed/);
    assert.equal((await rejection(queuer.retry(newTaskId("test")))).code, ERROR_CODE.TaskNotFound);
  });

  it("purge removes finished top-level tasks that ended before the time, with their documents, and leaves the others", async () => {
    const old = await submitted();
    const live = await submitted();
    const other = await submitted();
    const [pulledOld] = await queuer.pull("w1", 1);
    assert.equal(pulledOld?.id, old);
    assert.equal(await queuer.fail({ id: old, owner: "w1", tries: 1 }, "broken", { retryable: false }), true);
    await queuer.cancel(other);
    const endedBefore = Date.now() + 1;
    assert.deepEqual(await queuer.purge({ status: "error", endedBefore: 0 }), { deleted: 0, more: false }, "nothing ended that early");
    assert.deepEqual(await queuer.purge({ status: "error", endedBefore, user: "someone else" }), { deleted: 0, more: false });
    assert.deepEqual(await queuer.purge({ status: "error", endedBefore }), { deleted: 1, more: false });
    assert.equal((await rejection(queuer.get(old))).code, ERROR_CODE.TaskNotFound);
    assert.equal(await blobs.stat(blobKeys.input(old)), null, "its documents went with it");
    assert.equal((await queuer.get(live)).status, "input", "a live task is never purged");
    assert.equal((await queuer.get(other)).status, "canceled", "another status stays");
  });

  it("answers a pull from elsewhere once its claim is in the file; a pull of this process (LocalQueuer) may come first", async () => {
    const raw = new Database(path.join(dir, "tasks.sqlite"), { readonly: true });
    const statusInFile = (id: string): string | undefined =>
      raw.prepare<[string], { status: string }>("SELECT status FROM tasks WHERE id = ?").get(id)?.status;
    try {
      const [forElsewhere, forHere] = [await submitted(60), await submitted(50)];
      // Through the broker (another process, maybe): a crash here must not lose a claim whose run goes on there.
      assert.deepEqual(ids(await queuer.pull("worker@other", 1)), [forElsewhere]);
      assert.equal(statusInFile(forElsewhere), "work");
      // The direct path of this very process: a crash losing the claim ends its run too.
      const local = new LocalQueuer();
      local.serve(queuerHandlers({ queue, store, keys: new KeyRing(store), site: "test", heartbeatMs: 1000, blobs, log: quiet }));
      const call = local.call(async () => assert.fail("no broker call while a queuer serves here"), ["pull"]);
      assert.deepEqual(ids(await call("pull", { owner: "worker@here", max: 1 })), [forHere]);
      assert.equal(statusInFile(forHere), "input", "answered before its group's commit");
      assert.equal((await store.get(forHere))?.status, "work");
    } finally {
      raw.close();
    }
  });

  it("checks each message as the service does, and counts the queue by priority in the stats", async () => {
    await submitted(70);
    await submitted(70);
    assert.equal((await rejection(queuer.pull("", 1))).code, ERROR_CODE.BadRequest);
    const stats = await queuer.stats();
    assert.equal(stats.queuedByPriority[70], 2);
    assert.deepEqual(await queuer.backlog(), { queued: 2, highestPriority: 70, idleSlots: 0, readyHome: 2, slots: 0, busyHome: 0 });
  });
});

describe("dropTaskDocuments", () => {
  it("logs a prefix it could not drop, and drops the others", async () => {
    const failing = {
      deletePrefix: async (prefix: string): Promise<void> => {
        if (prefix === "bad/") throw new Error("disk gone");
      },
    } as unknown as FsBlobStore;
    const logged: string[] = [];
    assert.equal(await dropTaskDocuments(failing, ["good/", "bad/"], { warn: (m) => void logged.push(m) }), 1);
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /bad\/.*disk gone/);
  });
});
