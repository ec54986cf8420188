import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { monotonicFactory } from "ulid";
import { ZERO_USAGE, type ApiKeyRecord, type UsageRow } from "../accounts/account-records.js";
import { ERROR_CODE, isDocqError, type ErrorCode } from "../model/errors.js";
import { newTask } from "../queue/new-task.js";
import {
  MAX_ATTEMPTS_KEPT,
  TASK_STATUS,
  TASK_STATUSES,
  TaskSchema,
  isFinal,
  toQueueEntry,
  type Task,
  type TaskStatus,
} from "../model/task-model.js";
import { STORE_STEP_NAMES, STORE_STEPS, type StoreStep } from "../model/state-machine.js";
import { ATTEMPT_ERROR_TAIL, type ReloadEntry, type TaskFilter, type TaskPage, type TaskStore } from "./task-store.js";
import { scheduleStoreContract } from "../schedules/schedule-store.contract.js";

/*
 * The behaviour every TaskStore adapter must show, written only against the TaskStore
 * interface so each adapter (SQLite now, MongoDB later) runs it unchanged:
 *
 *   taskStoreContract("sqlite", async () => ({ store, cleanup }));
 *
 * Every test opens a fresh, empty store and calls `cleanup` (which closes the store and
 * removes what it wrote) even when the test fails.
 */

const nextUlid = monotonicFactory();

/** The place of an attempt whose runner is unknown. */
export const NOWHERE = { site: null, node: null } as const;

/** A valid task (TaskSchema accepts it) with a fresh `test-<ulid>` id; `overrides` win. */
export function makeTask(overrides: Partial<Task> = {}): Task {
  const now = Date.now();
  return {
    id: `test-${nextUlid()}`,
    site: "test",
    user: "alice",
    name: "document.pdf",
    job: "echo",
    params: {},
    priority: 50,
    status: TASK_STATUS.input,
    input: null,
    output: null,
    tries: 0,
    maxTries: 3,
    submitTime: now,
    availableAt: now,
    startTime: null,
    endTime: null,
    duration: null,
    lease: null,
    processedBy: null,
    error: null,
    parentId: null,
    depth: 0,
    children: [],
    childrenTotal: 0,
    childrenCompleted: 0,
    offload: true,
    attempts: [],
    progress: null,
    progressMessage: null,
    callbackUrl: null,
    callback: null,
    workflow: null,
    inputs: null,
    timeoutMs: null,
    ...overrides,
  };
}

/** A task as a worker holds it: in work, leased by `owner`, on its first try. */
function makeLeasedTask(owner: string, overrides: Partial<Task> = {}): Task {
  const now = Date.now();
  return makeTask({ status: TASK_STATUS.work, tries: 1, startTime: now, lease: { owner, expiresAt: now + 30_000 }, ...overrides });
}

async function assertRejectsWithCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isDocqError(err, code), `expected DocqError ${code}, got ${String(err)}`);
    return true;
  });
}

/** An API key record with a fresh id and a hash of its own; `overrides` win. */
function makeKey(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  const id = `key-${nextUlid()}`;
  return {
    id,
    user: "alice",
    hash: createHash("sha256").update(`secret of ${id}`).digest("hex"),
    limits: { offload: true },
    createdAt: 1_700_000_000_000,
    revokedAt: null,
    ...overrides,
  };
}

/** A usage row: zero where `counts` says nothing. */
function usageRow(user: string, day: string, counts: Partial<UsageRow> = {}): UsageRow {
  return { user, day, ...ZERO_USAGE, ...counts };
}

/** What loadNonFinal gives of a task. */
export const reloadFields = (task: Task): ReloadEntry => ({
  id: task.id,
  priority: task.priority,
  submitTime: task.submitTime,
  availableAt: task.availableAt,
  status: task.status,
  lease: task.lease,
  offload: task.offload,
  tries: task.tries,
  maxTries: task.maxTries,
});

async function collect(batches: AsyncIterable<ReloadEntry[]>): Promise<ReloadEntry[][]> {
  const all: ReloadEntry[][] = [];
  for await (const batch of batches) all.push(batch);
  return all;
}

export function taskStoreContract(adapterName: string, open: () => Promise<{ store: TaskStore; cleanup(): Promise<void> }>): void {
  /** Runs `body` against a fresh store, cleaning up whatever happens. */
  const withStore = (body: (store: TaskStore) => Promise<void>) => async (): Promise<void> => {
    const { store, cleanup } = await open();
    try {
      await body(store);
    } finally {
      await cleanup();
    }
  };

  describe(`TaskStore contract: ${adapterName}`, () => {
    scheduleStoreContract(withStore);

    describe("webhook deliveries (recordCallback, pendingCallbacks)", () => {
      const delivery = (state: "pending" | "delivered" | "failed", tries: number) => ({
        state,
        tries,
        lastStatus: state === "delivered" ? 200 : 500,
        lastError: state === "delivered" ? null : "answered 500",
        lastTryAt: 1_000 + tries,
        deliveredAt: state === "delivered" ? 1_000 + tries : null,
      });

      it(
        "records a delivery on a final task only, and answers null for a live or missing one",
        withStore(async (store) => {
          const done = makeTask({ status: TASK_STATUS.output, endTime: 10, callbackUrl: "http://127.0.0.1:9/hook" });
          const live = makeTask({ callbackUrl: "http://127.0.0.1:9/hook" });
          await store.createMany([done, live]);
          const after = await store.recordCallback(done.id, delivery("pending", 1));
          assert.deepEqual(after?.callback, delivery("pending", 1));
          assert.deepEqual((await store.get(done.id))?.callback, delivery("pending", 1));
          assert.equal(await store.recordCallback(live.id, delivery("pending", 1)), null);
          assert.equal((await store.get(live.id))?.callback, null);
          assert.equal(await store.recordCallback("test-01ARZ3NDEKTSV4RRFFQ69G5FAV", delivery("pending", 1)), null);
        }),
      );

      it(
        "lists final top-level tasks whose delivery is pending or not begun, oldest end first, within the limit",
        withStore(async (store) => {
          const url = "http://127.0.0.1:9/hook";
          const notBegun = makeTask({ status: TASK_STATUS.error, endTime: 30, callbackUrl: url });
          const pending = makeTask({ status: TASK_STATUS.output, endTime: 20, callbackUrl: url, callback: delivery("pending", 2) });
          const delivered = makeTask({ status: TASK_STATUS.output, endTime: 5, callbackUrl: url, callback: delivery("delivered", 1) });
          const failed = makeTask({ status: TASK_STATUS.canceled, endTime: 5, callbackUrl: url, callback: delivery("failed", 10) });
          // Delivered at 1001, then retried and ended again at 2000: its new end is not delivered yet.
          const endedAgain = makeTask({ status: TASK_STATUS.output, endTime: 2_000, callbackUrl: url, callback: delivery("delivered", 1) });
          const noUrl = makeTask({ status: TASK_STATUS.output, endTime: 5 });
          const live = makeTask({ status: TASK_STATUS.input, callbackUrl: url });
          const child = makeTask({ status: TASK_STATUS.output, endTime: 1, callbackUrl: url, parentId: live.id, depth: 1 });
          await store.createMany([notBegun, pending, delivered, failed, endedAgain, noUrl, live, child]);
          assert.deepEqual(
            (await store.pendingCallbacks(10)).map((t) => t.id),
            [pending.id, notBegun.id, endedAgain.id],
          );
          assert.deepEqual(
            (await store.pendingCallbacks(1)).map((t) => t.id),
            [pending.id],
          );
        }),
      );
    });

    describe("create and get", () => {
      it(
        "round-trips every field of a task with everything set",
        withStore(async (store) => {
          const task = makeTask({
            site: "site_a",
            user: "bob",
            name: "report é 📄.docx",
            job: "convert-pdf",
            params: { dpi: 300, pages: [1, 2, 3], nested: { ok: true, none: null }, text: 'quote " and \\ and ünïcode' },
            priority: 100,
            status: TASK_STATUS.work,
            input: "in/blob",
            output: "out/blob",
            tries: 2,
            maxTries: 5,
            submitTime: 1_700_000_000_000,
            availableAt: 1_700_000_000_500,
            startTime: 1_700_000_001_000,
            endTime: 1_700_000_002_000,
            duration: 1_000,
            lease: { owner: "worker-1", expiresAt: 1_700_000_031_000 },
            processedBy: { site: "site_a", node: "node-7" },
            error: "previous try: timeout",
            parentId: `parent-${nextUlid()}`,
            depth: 2,
            children: [`c-${nextUlid()}`, `b-${nextUlid()}`],
            childrenTotal: 2,
            childrenCompleted: 1,
            offload: false,
          });
          assert.equal(TaskSchema.safeParse(task).success, true, "fixture must be a valid task");
          await store.create(task);
          const stored = await store.get(task.id);
          assert.deepEqual(stored, task);
          assert.equal(TaskSchema.safeParse(stored).success, true);
        }),
      );

      it(
        "round-trips nulls and empty values as null and empty, not as missing",
        withStore(async (store) => {
          const task = makeTask({ priority: 0 });
          await store.create(task);
          const stored = await store.get(task.id);
          assert.deepEqual(stored, task);
          assert.ok(stored !== null);
          for (const field of [
            "input",
            "output",
            "startTime",
            "endTime",
            "duration",
            "lease",
            "processedBy",
            "error",
            "parentId",
          ] as const) {
            assert.ok(field in stored && stored[field] === null, `${field} is null`);
          }
          assert.deepEqual(stored.params, {});
          assert.deepEqual(stored.children, []);
        }),
      );

      it(
        "returns null for an unknown id",
        withStore(async (store) => {
          assert.equal(await store.get(makeTask().id), null);
        }),
      );

      it(
        "refuses a duplicate id with TASK_EXISTS and keeps the original",
        withStore(async (store) => {
          const task = makeTask({ name: "first" });
          await store.create(task);
          await assertRejectsWithCode(store.create({ ...task, name: "second" }), ERROR_CODE.TaskExists);
          assert.deepEqual(await store.get(task.id), task);
        }),
      );
    });

    describe("createMany", () => {
      it(
        "inserts every task",
        withStore(async (store) => {
          const tasks = Array.from({ length: 123 }, (_, i) => makeTask({ priority: i % 101, params: { i } }));
          await store.createMany(tasks);
          for (const task of tasks) assert.deepEqual(await store.get(task.id), task);
          await store.createMany([]);
          assert.equal((await store.countByStatus()).input, 123);
        }),
      );

      it(
        "writes nothing when one id already exists",
        withStore(async (store) => {
          const existing = makeTask();
          await store.create(existing);
          const batch = [...Array.from({ length: 120 }, () => makeTask()), { ...existing, name: "again" }, makeTask()];
          await assertRejectsWithCode(store.createMany(batch), ERROR_CODE.TaskExists);
          for (const task of batch.filter((t) => t.id !== existing.id)) assert.equal(await store.get(task.id), null);
          assert.deepEqual(await store.get(existing.id), existing);
          assert.equal((await store.countByStatus()).input, 1);
        }),
      );

      it(
        "writes nothing when the batch repeats an id",
        withStore(async (store) => {
          const repeated = makeTask();
          const batch = [repeated, ...Array.from({ length: 60 }, () => makeTask()), repeated];
          await assertRejectsWithCode(store.createMany(batch), ERROR_CODE.TaskExists);
          for (const task of batch) assert.equal(await store.get(task.id), null);
        }),
      );
    });

    it(
      "keeps a workflow's definition, a step's inputs and timeout; finishWorkflow ends it with its final step's output",
      withStore(async (store) => {
        const workflow = {
          steps: [
            { name: "a", job: "echo", params: { "x.y": 1, $z: [2] } },
            { name: "b", job: "echo", priority: 80, maxTries: 2, timeoutMs: 5_000 },
          ],
          upstreams: { a: [], b: ["a"] },
          final: "b",
        };
        const parent = makeTask({ status: TASK_STATUS.wait, workflow, childrenTotal: 2, childrenCompleted: 1 });
        const step = makeTask({ parentId: parent.id, depth: 1, inputs: ["x/output-1", "y/output-2"], timeoutMs: 5_000 });
        await store.createMany([parent, step]);
        assert.deepEqual(await store.get(parent.id), parent);
        assert.deepEqual(await store.get(step.id), step);
        const finished = await store.finishWorkflow(parent.id, "b/output-1", 9_000);
        assert.equal(finished.ok, true);
        assert.deepEqual(
          finished.ok && [finished.task.status, finished.task.output, finished.task.endTime, finished.task.childrenCompleted],
          [TASK_STATUS.output, "b/output-1", 9_000, 2],
        );
        const again = await store.finishWorkflow(parent.id, "other", 9_500);
        assert.deepEqual([again.ok, again.ok || again.why, (await store.get(parent.id))?.output], [false, "not-in-state", "b/output-1"]);
      }),
    );

    describe("steps: each succeeds from exactly its source statuses (STORE_STEPS) and misses from every other", () => {
      const claim = { owner: "worker-1", tries: 1 };
      /** A task in `status` as the queue leaves it there: leased in work, waiting on 2 children in wait. */
      const inStatus = (status: TaskStatus): Task => {
        if (status === TASK_STATUS.work) return makeLeasedTask(claim.owner, { startTime: 1_000 });
        return makeTask({ status, childrenTotal: status === TASK_STATUS.wait || status === TASK_STATUS.complete ? 2 : 0 });
      };
      const processedBy = { site: "test", node: "n1" };
      /** Runs `step` on `task`'s id; answers ok, why and the row the step answered. */
      const run: Record<StoreStep, (store: TaskStore, id: string) => Promise<{ ok: boolean; why?: string; task: Task | null }>> = {
        claim: async (store, id) => {
          const [task] = await store.claim([id], { owner: "w2", expiresAt: 9_000 }, 5_000);
          return task === undefined ? { ok: false, why: "not-in-state", task: await store.get(id) } : { ok: true, task };
        },
        succeed: (store, id) => store.succeed({ id, ...claim }, { output: "o", processedBy }, 5_000),
        requeue: (store, id) => store.requeue({ id, ...claim }, { error: "e", processedBy: null, ranAt: NOWHERE }, 7_000, 7_000),
        giveUp: (store, id) => store.giveUp({ id, ...claim }, { error: "e", processedBy, ranAt: processedBy }, 5_000),
        split: (store, id) => {
          const childId = `test-${nextUlid()}`;
          return store.split(
            { id, ...claim },
            processedBy,
            [childId],
            (parent) => [makeTask({ id: childId, parentId: parent.id, depth: parent.depth + 1 })],
            5_000,
          );
        },
        childSucceeded: (store, id) => store.childSucceeded(id, 5_000),
        recountChildren: (store, id) => store.recountChildren(id, 1, 5_000),
        failParent: (store, id) => store.failParent(id, "child failed", 5_000),
        finishWorkflow: (store, id) => store.finishWorkflow(id, "step/output-1", 5_000),
        cancel: (store, id) => store.cancel(id, "canceled", 5_000),
        release: (store, id) => store.release({ id, ...claim }, { reason: "stopping", ranAt: NOWHERE }, 5_000),
        progress: (store, id) => store.progress({ id, ...claim }, 0.5, "page 2 of 4"),
        retry: async (store, id) => {
          const result = await store.retry([{ id, status: TASK_STATUS.input, childrenCompleted: 0 }], 5_000);
          return result.ok ? { ok: true, task: result.tasks[0] ?? null } : result;
        },
      };

      for (const step of STORE_STEP_NAMES) {
        it(
          `${step}: from ${STORE_STEPS[step].from.join(", ")} only`,
          withStore(async (store) => {
            for (const status of TASK_STATUSES) {
              const task = inStatus(status);
              await store.create(task);
              const result = await run[step](store, task.id);
              const from: readonly TaskStatus[] = STORE_STEPS[step].from;
              if (from.includes(status)) {
                assert.equal(result.ok, true, `${step} from ${status}`);
                const to: readonly TaskStatus[] = STORE_STEPS[step].to;
                const stays = "stays" in STORE_STEPS[step];
                assert.ok(
                  result.task !== null && (to.includes(result.task.status) || (stays && result.task.status === status)),
                  `${step} from ${status} made ${result.task?.status}`,
                );
                assert.deepEqual(await store.get(task.id), result.task, "the answer is the row after");
              } else {
                assert.equal(result.ok, false, `${step} from ${status}`);
                assert.equal(result.why, "not-in-state", `${step} from ${status}`);
                assert.deepEqual(result.task, task, "the miss answers the row as it is, untouched");
              }
            }
            if (step !== "claim") {
              const missing = await run[step](store, makeTask().id);
              assert.deepEqual([missing.ok, missing.why, missing.task], [false, "missing", null]);
            }
          }),
        );
      }

      it(
        "a step that holds a lease misses with lease-lost under another owner or attempt, writing nothing",
        withStore(async (store) => {
          const task = makeLeasedTask("worker-1", { startTime: 1_000 });
          await store.create(task);
          for (const other of [
            { owner: "worker-2", tries: 1 },
            { owner: "worker-1", tries: 2 },
          ]) {
            const held = { id: task.id, ...other };
            const results = [
              await store.succeed(held, { output: "o", processedBy: { site: "s", node: "n" } }, 5_000),
              await store.requeue(held, { error: "e", processedBy: null, ranAt: NOWHERE }, 5_000, 5_000),
              await store.giveUp(held, { error: "e", processedBy: null, ranAt: NOWHERE }, 5_000),
              await store.split(held, { site: "s", node: "n" }, [], () => [], 5_000),
              await store.release(held, { reason: "stopping", ranAt: NOWHERE }, 5_000),
              await store.progress(held, 0.5, null),
            ];
            for (const result of results) assert.deepEqual(result, { ok: false, why: "lease-lost", task });
          }
        }),
      );

      it(
        "progress: the running attempt's latest progress and message, kept as given; the next claim clears them",
        withStore(async (store) => {
          const task = makeLeasedTask("worker-1", { startTime: 1_000 });
          await store.create(task);
          const held = { id: task.id, owner: "worker-1", tries: 1 };
          const first = await store.progress(held, 0.25, "page 1 of 4");
          assert.ok(first.ok);
          assert.deepEqual(first.task, { ...task, progress: 0.25, progressMessage: "page 1 of 4" });
          // A message is data, whatever it looks like (MongoDB: never a field path).
          const second = await store.progress(held, 1, "$status");
          assert.ok(second.ok);
          assert.deepEqual([second.task.progress, second.task.progressMessage, second.task.status], [1, "$status", TASK_STATUS.work]);
          // A task queued again keeps the last attempt's progress until its next claim.
          const queued = makeTask({ status: TASK_STATUS.input, tries: 1, progress: 0.5, progressMessage: "half" });
          await store.create(queued);
          const [again] = await store.claim([queued.id], { owner: "worker-2", expiresAt: 9_000 }, 3_000);
          assert.deepEqual([again?.progress, again?.progressMessage], [null, null]);
        }),
      );

      it(
        "computes the derived fields: tries + 1 on claim, endTime and duration from startTime",
        withStore(async (store) => {
          const queued = makeTask({ tries: 1, status: TASK_STATUS.input });
          const leased = makeTask();
          await store.createMany([queued, leased]);
          assert.deepEqual(await store.claim([queued.id, makeTask().id, queued.id], { owner: "w", expiresAt: 9_000 }, 1_000), [
            { ...queued, status: TASK_STATUS.work, tries: 2, lease: { owner: "w", expiresAt: 9_000 }, startTime: 1_000 },
          ]);
          assert.deepEqual(await store.claim([queued.id], { owner: "w2", expiresAt: 9_000 }, 1_000), [], "already leased");
          const done = await store.succeed(
            { id: queued.id, owner: "w", tries: 2 },
            { output: "out", processedBy: { site: "s", node: "n" } },
            1_500,
          );
          assert.ok(done.ok);
          assert.deepEqual(
            [done.task.status, done.task.output, done.task.endTime, done.task.duration, done.task.lease],
            [TASK_STATUS.output, "out", 1_500, 500, null],
          );
        }),
      );

      it(
        "requeues a plain task to input and a merge to complete, and misses when no try is left",
        withStore(async (store) => {
          const plain = makeLeasedTask("w", { tries: 1, maxTries: 3 });
          const merge = makeLeasedTask("w", { tries: 1, maxTries: 3, childrenTotal: 2, childrenCompleted: 2 });
          const spent = makeLeasedTask("w", { tries: 3, maxTries: 3 });
          await store.createMany([plain, merge, spent]);
          const requeued = await store.requeue(
            { id: plain.id, owner: "w", tries: 1 },
            { error: "e", processedBy: null, ranAt: NOWHERE },
            7_000,
            6_000,
          );
          const attempt = { n: 1, site: null, node: null, start: plain.startTime, end: 6_000, outcome: "retry", error: "e" } as const;
          assert.deepEqual(requeued, {
            ok: true,
            task: { ...plain, status: TASK_STATUS.input, lease: null, error: "e", availableAt: 7_000, attempts: [attempt] },
          });
          assert.equal(
            (await store.requeue({ id: merge.id, owner: "w", tries: 1 }, { error: "e", processedBy: null, ranAt: NOWHERE }, 7_000, 7_000))
              .task?.status,
            TASK_STATUS.complete,
          );
          assert.deepEqual(
            await store.requeue({ id: spent.id, owner: "w", tries: 3 }, { error: "e", processedBy: null, ranAt: NOWHERE }, 7_000, 7_000),
            {
              ok: false,
              why: "not-in-state",
              task: spent,
            },
          );
        }),
      );

      it(
        "split creates the children with the parent's step, and writes nothing when a child id exists or the builder throws",
        withStore(async (store) => {
          const parent = makeLeasedTask("worker-1");
          await store.create(parent);
          const children = ["zz", "aa", "mm"].map((site) => makeTask({ id: `${site}-${nextUlid()}`, parentId: parent.id, depth: 1, site }));
          const ids = children.map((c) => c.id);
          const held = { id: parent.id, owner: "worker-1", tries: 1 };
          const [, second] = children;
          assert.ok(second !== undefined);
          await store.create(second);
          await assertRejectsWithCode(
            store.split(held, { site: "s", node: "n" }, ids, () => children, 5_000),
            ERROR_CODE.TaskExists,
          );
          assert.deepEqual(await store.get(parent.id), parent);
          await store.delete(second.id);
          await assert.rejects(
            store.split(
              held,
              { site: "s", node: "n" },
              ids,
              () => {
                throw new Error("too deep");
              },
              5_000,
            ),
            /too deep/,
          );
          assert.deepEqual(await store.get(parent.id), parent);
          const split = await store.split(held, { site: "s", node: "n" }, ids, () => children, 5_000);
          const after = {
            ...parent,
            status: TASK_STATUS.wait,
            lease: null,
            processedBy: { site: "s", node: "n" },
            children: ids,
            childrenTotal: 3,
            childrenCompleted: 0,
            attempts: [{ n: 1, site: "s", node: "n", start: parent.startTime, end: 5_000, outcome: "split" as const, error: null }],
          };
          assert.deepEqual(split, { ok: true, task: after });
          assert.deepEqual(await store.children(parent.id), children);
        }),
      );

      it(
        "childSucceeded counts up; the count that reaches the total queues the merge; none is lost when many arrive at once",
        withStore(async (store) => {
          const parent = makeTask({ status: TASK_STATUS.wait, childrenTotal: 50 });
          await store.create(parent);
          await Promise.all(Array.from({ length: 49 }, () => store.childSucceeded(parent.id, 5_000)));
          assert.deepEqual(await store.get(parent.id), { ...parent, childrenCompleted: 49 });
          const last = await store.childSucceeded(parent.id, 6_000);
          assert.deepEqual(last, {
            ok: true,
            task: { ...parent, childrenCompleted: 50, status: TASK_STATUS.complete, availableAt: 6_000 },
          });
        }),
      );

      it(
        "cancel answers the lease it ended",
        withStore(async (store) => {
          const leased = makeLeasedTask("worker-1", { startTime: 1_000 });
          const queued = makeTask();
          await store.createMany([leased, queued]);
          const canceled = await store.cancel(leased.id, "stop", 1_500, "here");
          assert.equal(canceled.previousLeaseOwner, "worker-1");
          assert.deepEqual(canceled.task, {
            ...leased,
            status: TASK_STATUS.canceled,
            lease: null,
            error: "stop",
            endTime: 1_500,
            duration: 500,
            attempts: [{ n: 1, site: "here", node: "worker-1", start: 1_000, end: 1_500, outcome: "canceled", error: "stop" }],
          });
          assert.deepEqual(await store.get(leased.id), canceled.task);
          const notRunning = await store.cancel(queued.id, "stop", 1_500);
          assert.equal(notRunning.previousLeaseOwner, null);
          assert.deepEqual(notRunning.task?.attempts, [], "a task not in work had no attempt to end");
        }),
      );

      it(
        "records each ended attempt where it ran, keeps the last 20 and the tail of a long error",
        withStore(async (store) => {
          const byWorker = makeLeasedTask("worker@node-7", { startTime: 1_000 });
          await store.create(byWorker);
          const canceled = await store.cancel(byWorker.id, "stop", 1_500, "here");
          assert.deepEqual(
            [canceled.task?.attempts[0]?.site, canceled.task?.attempts[0]?.node],
            ["here", "node-7"],
            "a worker's node, as it reports it",
          );

          const lent = makeLeasedTask("site:thief", { startTime: 1_000, maxTries: 30 });
          await store.create(lent);
          const longError = `${"x".repeat(5_000)}the cause`;
          const lost = await store.giveUp(
            { id: lent.id, owner: "site:thief", tries: 1 },
            { error: longError, processedBy: null, ranAt: { site: "thief", node: null }, leaseLost: true },
            2_000,
          );
          assert.ok(lost.ok);
          const [attempt] = lost.task.attempts;
          assert.deepEqual(
            { ...attempt, error: undefined },
            { n: 1, site: "thief", node: null, start: 1_000, end: 2_000, outcome: "lease_lost", error: undefined },
          );
          assert.equal(attempt?.error?.length, ATTEMPT_ERROR_TAIL);
          assert.ok(attempt?.error?.endsWith("the cause"));

          const busy = makeLeasedTask("w", { maxTries: 30 });
          await store.create(busy);
          for (let n = 1; n <= 25; n++) {
            const requeued = await store.requeue(
              { id: busy.id, owner: "w", tries: n },
              { error: `try ${n}`, processedBy: null, ranAt: NOWHERE },
              0,
              n,
            );
            assert.ok(requeued.ok, `requeue ${n}`);
            await store.claim([busy.id], { owner: "w", expiresAt: 9_000 }, n);
          }
          const kept = (await store.get(busy.id))?.attempts ?? [];
          assert.equal(kept.length, MAX_ATTEMPTS_KEPT);
          assert.deepEqual(
            kept.map((a) => a.n),
            Array.from({ length: MAX_ATTEMPTS_KEPT }, (_, i) => i + 6),
            "the oldest went first",
          );
        }),
      );

      it(
        "release hands the attempt back without counting it: tries − 1, queued now, recorded as released",
        withStore(async (store) => {
          const plain = makeLeasedTask("w", { tries: 2, startTime: 1_000 });
          const merge = makeLeasedTask("w", { tries: 1, startTime: 1_000, childrenTotal: 2, childrenCompleted: 2 });
          await store.createMany([plain, merge]);
          const released = await store.release(
            { id: plain.id, owner: "w", tries: 2 },
            { reason: "stopping", ranAt: { site: "s", node: "w" } },
            3_000,
          );
          assert.deepEqual(released, {
            ok: true,
            task: {
              ...plain,
              status: TASK_STATUS.input,
              tries: 1,
              lease: null,
              availableAt: 3_000,
              attempts: [{ n: 2, site: "s", node: "w", start: 1_000, end: 3_000, outcome: "released", error: "stopping" }],
            },
          });
          const mergeReleased = await store.release({ id: merge.id, owner: "w", tries: 1 }, { reason: "stopping", ranAt: NOWHERE }, 3_000);
          assert.equal(mergeReleased.task?.status, TASK_STATUS.complete);
          assert.equal(mergeReleased.task?.tries, 0);
        }),
      );

      it(
        "retry puts a failed tree back in one step, keeping attempts; a row that is not failed undoes the whole retry",
        withStore(async (store) => {
          const attempts = [{ n: 1, site: "s", node: "n", start: 1, end: 2, outcome: "error" as const, error: "bad" }];
          const parent = makeTask({
            status: TASK_STATUS.error,
            tries: 1,
            childrenTotal: 2,
            childrenCompleted: 1,
            endTime: 5,
            duration: 2,
            error: "child failed",
          });
          const failed = makeTask({
            parentId: parent.id,
            depth: 1,
            status: TASK_STATUS.error,
            tries: 3,
            error: "bad",
            endTime: 4,
            attempts,
          });
          const sibling = makeTask({ parentId: parent.id, depth: 1, status: TASK_STATUS.canceled, endTime: 4 });
          const running = makeLeasedTask("w");
          await store.createMany([parent, failed, sibling, running]);
          const rows = [
            { id: failed.id, status: TASK_STATUS.input, childrenCompleted: 0 },
            { id: sibling.id, status: TASK_STATUS.input, childrenCompleted: 0 },
            { id: parent.id, status: TASK_STATUS.wait, childrenCompleted: 0 },
          ] as const;
          const refused = await store.retry([...rows, { id: running.id, status: TASK_STATUS.input, childrenCompleted: 0 }], 9_000);
          assert.deepEqual(refused, { ok: false, id: running.id, why: "not-in-state", task: running });
          assert.deepEqual(await store.get(failed.id), failed, "nothing of a refused retry is written");
          const retried = await store.retry(rows, 9_000);
          assert.ok(retried.ok);
          const fresh = { tries: 0, error: null, endTime: null, duration: null, availableAt: 9_000 };
          assert.deepEqual(retried.tasks, [
            { ...failed, ...fresh, status: TASK_STATUS.input },
            { ...sibling, ...fresh, status: TASK_STATUS.input },
            { ...parent, ...fresh, status: TASK_STATUS.wait, childrenCompleted: 0 },
          ]);
          assert.deepEqual((await store.get(failed.id))?.attempts, attempts, "its attempts are kept");
          const again = await store.retry([rows[0]], 9_000);
          assert.deepEqual([again.ok, again.ok ? null : again.why], [false, "not-in-state"]);
          const gone = await store.retry([{ id: makeTask().id, status: TASK_STATUS.input, childrenCompleted: 0 }], 9_000);
          assert.deepEqual([gone.ok, gone.ok ? null : gone.why], [false, "missing"]);
        }),
      );
    });

    describe("renew", () => {
      it(
        "extends only the leases the owner holds on tasks in work",
        withStore(async (store) => {
          const mine = makeLeasedTask("worker-1");
          const alsoMine = makeLeasedTask("worker-1");
          const theirs = makeLeasedTask("worker-2");
          const queued = makeTask();
          const finishedWithLease = makeTask({ status: TASK_STATUS.output, lease: { owner: "worker-1", expiresAt: 1 } });
          await store.createMany([mine, alsoMine, theirs, queued, finishedWithLease]);
          const ids = [mine.id, theirs.id, queued.id, finishedWithLease.id, alsoMine.id, makeTask().id, mine.id];
          const renewed = await store.renew("worker-1", ids, 77_000);
          assert.deepEqual([...renewed].sort(), [mine.id, alsoMine.id].sort());
          assert.deepEqual((await store.get(mine.id))?.lease, { owner: "worker-1", expiresAt: 77_000 });
          assert.deepEqual((await store.get(alsoMine.id))?.lease, { owner: "worker-1", expiresAt: 77_000 });
          assert.deepEqual(await store.get(theirs.id), theirs);
          assert.deepEqual(await store.get(finishedWithLease.id), finishedWithLease);
          assert.deepEqual(await store.renew("worker-1", [], 1), []);
        }),
      );

      it(
        "handles thousands of ids at once",
        withStore(async (store) => {
          const held = Array.from({ length: 1_500 }, () => makeLeasedTask("worker-1"));
          await store.createMany(held);
          const unknown = Array.from({ length: 1_700 }, () => makeTask().id);
          const renewed = await store.renew("worker-1", [...unknown, ...held.map((t) => t.id)], 88_000);
          assert.deepEqual(new Set(renewed), new Set(held.map((t) => t.id)));
          assert.equal(renewed.length, held.length);
          const last = held[held.length - 1];
          assert.ok(last !== undefined);
          assert.equal((await store.get(last.id))?.lease?.expiresAt, 88_000);
        }),
      );
    });

    describe("expired", () => {
      it(
        "returns tasks in work whose lease expired before now, oldest expiry first, up to limit",
        withStore(async (store) => {
          const at = (expiresAt: number, overrides: Partial<Task> = {}) =>
            makeLeasedTask("worker-1", { lease: { owner: "worker-1", expiresAt }, ...overrides });
          const t300 = at(300);
          const t100 = at(100);
          const t200 = at(200);
          const atNow = at(400);
          const later = at(500);
          const waitingWithOldLease = at(50, { status: TASK_STATUS.wait });
          await store.createMany([t300, t100, t200, atNow, later, waitingWithOldLease, makeTask()]);
          assert.deepEqual(
            (await store.expired(400, 10)).map((t) => t.id),
            [t100.id, t200.id, t300.id],
          );
          assert.deepEqual(
            (await store.expired(400, 2)).map((t) => t.id),
            [t100.id, t200.id],
          );
          assert.deepEqual(await store.expired(400, 1), [t100]);
          assert.deepEqual(await store.expired(100, 10), []);
        }),
      );
    });

    describe("list", () => {
      it(
        "filters by status, user, job and parent, newest first",
        withStore(async (store) => {
          const parent = makeTask({ status: TASK_STATUS.wait });
          const a = makeTask({ user: "ann", job: "ocr" });
          const b = makeTask({ user: "ben", job: "ocr", status: TASK_STATUS.output });
          const c = makeTask({ user: "ann", job: "zip", status: TASK_STATUS.output, parentId: parent.id, depth: 1 });
          const d = makeTask({ user: "ann", job: "ocr", status: TASK_STATUS.output, parentId: parent.id, depth: 1 });
          for (const task of [parent, a, b, c, d]) await store.create(task);
          const ids = async (filter: Parameters<TaskStore["list"]>[0]) => (await store.list(filter, { limit: 100 })).items.map((t) => t.id);
          assert.deepEqual(await ids({}), [d.id, c.id, b.id, a.id, parent.id]);
          assert.deepEqual(await ids({ status: TASK_STATUS.output }), [d.id, c.id, b.id]);
          assert.deepEqual(await ids({ user: "ann" }), [d.id, c.id, a.id]);
          assert.deepEqual(await ids({ job: "ocr" }), [d.id, b.id, a.id]);
          assert.deepEqual(await ids({ parentId: parent.id }), [d.id, c.id]);
          assert.deepEqual(await ids({ user: "ann", job: "ocr", status: TASK_STATUS.output }), [d.id]);
          assert.deepEqual(await ids({ user: "nobody" }), []);
          const page = await store.list({ user: "ann", job: "zip" }, { limit: 10 });
          assert.deepEqual(page, { items: [c], nextCursor: null });
        }),
      );

      it(
        "pages through 25 tasks 10 at a time, each exactly once, newest first",
        withStore(async (store) => {
          const tasks: Task[] = [];
          for (let i = 0; i < 25; i++) {
            const task = makeTask({ name: `t${i}` });
            tasks.push(task);
            await store.create(task);
          }
          const seen: string[] = [];
          const pageSizes: number[] = [];
          let cursor: string | null = null;
          do {
            const page = await store.list({}, { limit: 10, cursor });
            pageSizes.push(page.items.length);
            seen.push(...page.items.map((t) => t.id));
            cursor = page.nextCursor;
          } while (cursor !== null && pageSizes.length < 10);
          assert.deepEqual(pageSizes, [10, 10, 5]);
          assert.deepEqual(seen, tasks.map((t) => t.id).reverse());
        }),
      );

      it(
        "filters by name (exact, not a prefix) alone and with the others, paging each filter with its cursor",
        withStore(async (store) => {
          const tasks = Array.from({ length: 13 }, (_, i) =>
            makeTask({
              name: i % 2 === 0 ? "report.pdf" : "report.pdf.bak",
              user: i % 3 === 0 ? "ann" : "bob",
              status: i % 4 === 0 ? TASK_STATUS.error : TASK_STATUS.input,
            }),
          );
          for (const task of tasks) await store.create(task);
          const all = async (filter: TaskFilter): Promise<string[]> => {
            const seen: string[] = [];
            let cursor: string | null = null;
            for (let pages = 0; pages < 20; pages++) {
              const page: TaskPage = await store.list(filter, { limit: 2, cursor });
              seen.push(...page.items.map((t) => t.id));
              cursor = page.nextCursor;
              if (cursor === null) break;
            }
            return seen;
          };
          const expected = (keep: (task: Task) => boolean): string[] =>
            tasks
              .filter(keep)
              .map((t) => t.id)
              .reverse();
          assert.deepEqual(
            await all({ name: "report.pdf" }),
            expected((t) => t.name === "report.pdf"),
          );
          assert.deepEqual(await all({ name: "report" }), [], "a prefix matches nothing");
          assert.deepEqual(
            await all({ name: "report.pdf", user: "ann" }),
            expected((t) => t.name === "report.pdf" && t.user === "ann"),
          );
          assert.deepEqual(
            await all({ name: "report.pdf.bak", status: TASK_STATUS.input, user: "bob" }),
            expected((t) => t.name === "report.pdf.bak" && t.status === TASK_STATUS.input && t.user === "bob"),
          );
          assert.deepEqual(
            await all({ status: TASK_STATUS.error, user: "ann" }),
            expected((t) => t.status === TASK_STATUS.error && t.user === "ann"),
          );
        }),
      );

      it(
        "says null on a last page that is exactly full",
        withStore(async (store) => {
          await store.createMany(Array.from({ length: 20 }, () => makeTask({ status: TASK_STATUS.error })));
          const first = await store.list({ status: TASK_STATUS.error }, { limit: 10 });
          assert.ok(first.nextCursor !== null);
          const second = await store.list({ status: TASK_STATUS.error }, { limit: 10, cursor: first.nextCursor });
          assert.equal(second.items.length, 10);
          assert.equal(second.nextCursor, null);
          assert.deepEqual(await store.list({}, { limit: 5 }).then((p) => p.items.length), 5);
        }),
      );

      it(
        "keeps a cursor valid while tasks are added and deleted",
        withStore(async (store) => {
          const tasks = Array.from({ length: 6 }, (_, i) => makeTask({ name: `t${i}` }));
          for (const task of tasks) await store.create(task);
          const first = await store.list({}, { limit: 3 });
          await store.create(makeTask());
          const newestSeen = tasks[5];
          assert.ok(newestSeen !== undefined);
          await store.delete(newestSeen.id);
          const second = await store.list({}, { limit: 3, cursor: first.nextCursor });
          assert.deepEqual(
            second.items.map((t) => t.id),
            tasks
              .slice(0, 3)
              .map((t) => t.id)
              .reverse(),
          );
        }),
      );

      it(
        "refuses a malformed cursor with BAD_REQUEST",
        withStore(async (store) => {
          await store.create(makeTask());
          await assertRejectsWithCode(store.list({}, { limit: 10, cursor: "not a cursor!" }), ERROR_CODE.BadRequest);
        }),
      );
    });

    describe("loadNonFinal", () => {
      it(
        "returns exactly the non-final tasks, in batches, with the reload fields",
        withStore(async (store) => {
          const tasks: Task[] = [];
          for (const status of TASK_STATUSES) {
            for (let i = 0; i < 3; i++) {
              const leased = status === TASK_STATUS.work;
              tasks.push(
                makeTask({
                  status,
                  priority: tasks.length,
                  submitTime: 1_000 + tasks.length,
                  availableAt: 2_000 + tasks.length,
                  lease: leased ? { owner: `worker-${i}`, expiresAt: 5_000 + i } : null,
                  tries: leased ? 1 : 0,
                  offload: i !== 1,
                }),
              );
            }
          }
          await store.createMany(tasks);
          const expected = new Map(tasks.filter((t) => !isFinal(t.status)).map((t): [string, ReloadEntry] => [t.id, reloadFields(t)]));
          assert.equal(expected.size, 12);

          const batches = await collect(store.loadNonFinal(5));
          assert.ok(batches.length >= 3, `expected several batches, got ${batches.length}`);
          for (const batch of batches) assert.ok(batch.length >= 1 && batch.length <= 5, `batch of ${batch.length}`);
          const entries = batches.flat();
          assert.equal(entries.length, expected.size, "each non-final task exactly once");
          for (const entry of entries) assert.deepEqual(entry, expected.get(entry.id));
        }),
      );

      it(
        "yields nothing for a store with only final tasks, and uses a default batch size",
        withStore(async (store) => {
          assert.deepEqual(await collect(store.loadNonFinal()), []);
          await store.createMany([makeTask({ status: TASK_STATUS.output }), makeTask({ status: TASK_STATUS.canceled })]);
          assert.deepEqual(await collect(store.loadNonFinal()), []);
          const queued = makeTask();
          await store.create(queued);
          assert.deepEqual(
            (await collect(store.loadNonFinal())).flat().map((e) => e.id),
            [queued.id],
          );
        }),
      );
    });

    describe("children", () => {
      it(
        "returns a parent's children in creation order, not id order",
        withStore(async (store) => {
          const parent = makeTask({ status: TASK_STATUS.wait });
          const other = makeTask({ status: TASK_STATUS.wait });
          await store.createMany([parent, other]);
          const child = (site: string, of: Task) => makeTask({ id: `${site}-${nextUlid()}`, site, parentId: of.id, depth: 1 });
          const first = child("zz", parent);
          const second = child("aa", parent);
          const unrelated = child("bb", other);
          const third = child("mm", parent);
          await store.create(first);
          await store.createMany([second, unrelated, third]);
          assert.deepEqual(
            (await store.children(parent.id)).map((t) => t.id),
            [first.id, second.id, third.id],
          );
          assert.deepEqual(await store.children(other.id), [unrelated]);
          assert.deepEqual(await store.children(first.id), []);
        }),
      );
    });

    describe("delete", () => {
      it(
        "removes a task and says whether it existed",
        withStore(async (store) => {
          const task = makeTask();
          const kept = makeTask();
          await store.createMany([task, kept]);
          assert.equal(await store.delete(task.id), true);
          assert.equal(await store.get(task.id), null);
          assert.equal(await store.delete(task.id), false);
          assert.deepEqual(await store.get(kept.id), kept);
          await store.create(task);
          assert.deepEqual(await store.get(task.id), task, "a deleted id can be created again");
        }),
      );
    });

    describe("finished and deleteFinishedTree (retention)", () => {
      it(
        "finds the top-level tasks of one final status that ended before a time, oldest end first, by user and job",
        withStore(async (store) => {
          const ended = (status: TaskStatus, endTime: number, more: Partial<Task> = {}): Task =>
            makeTask({ status, endTime, startTime: endTime - 10, ...more });
          const late = ended(TASK_STATUS.error, 3_000);
          const early = ended(TASK_STATUS.error, 1_000);
          const bobs = ended(TASK_STATUS.error, 2_000, { user: "bob", job: "ocr" });
          const tooNew = ended(TASK_STATUS.error, 9_000);
          const output = ended(TASK_STATUS.output, 1_000);
          const child = ended(TASK_STATUS.error, 1_000, { parentId: late.id, depth: 1 });
          const live = makeTask({ status: TASK_STATUS.work, endTime: 1_000 });
          await store.createMany([late, early, bobs, tooNew, output, child, live]);
          const ids = (tasks: Task[]): string[] => tasks.map((t) => t.id);
          assert.deepEqual(ids(await store.finished({ status: "error", endedBefore: 5_000 }, 10)), [early.id, bobs.id, late.id]);
          assert.deepEqual(ids(await store.finished({ status: "error", endedBefore: 5_000 }, 2)), [early.id, bobs.id]);
          assert.deepEqual(ids(await store.finished({ status: "error", endedBefore: 5_000, user: "bob" }, 10)), [bobs.id]);
          assert.deepEqual(ids(await store.finished({ status: "error", endedBefore: 5_000, job: "ocr" }, 10)), [bobs.id]);
          assert.deepEqual(ids(await store.finished({ status: "error", endedBefore: 5_000, exceptJobs: ["ocr"] }, 10)), [
            early.id,
            late.id,
          ]);
          assert.deepEqual(ids(await store.finished({ status: "output", endedBefore: 5_000 }, 10)), [output.id]);
          assert.deepEqual(ids(await store.finished({ status: "canceled", endedBefore: 5_000 }, 10)), []);
        }),
      );

      it(
        "removes a final task with its whole tree in one step, and nothing of a task that is not final",
        withStore(async (store) => {
          const root = makeTask({ status: TASK_STATUS.error, childrenTotal: 2 });
          const kids = [0, 1].map(() => makeTask({ status: TASK_STATUS.canceled, parentId: root.id, depth: 1 }));
          const grandchild = makeTask({ status: TASK_STATUS.output, parentId: kids[0]!.id, depth: 2 });
          const other = makeTask({ status: TASK_STATUS.error });
          const live = makeTask({ status: TASK_STATUS.wait, childrenTotal: 1 });
          const liveChild = makeTask({ status: TASK_STATUS.output, parentId: live.id, depth: 1 });
          await store.createMany([root, ...kids, grandchild, other, live, liveChild]);
          assert.deepEqual(new Set(await store.deleteFinishedTree(root.id)), new Set([root.id, ...kids.map((k) => k.id), grandchild.id]));
          for (const gone of [root, ...kids, grandchild]) assert.equal(await store.get(gone.id), null);
          assert.deepEqual(await store.get(other.id), other);
          assert.deepEqual(await store.deleteFinishedTree(live.id), [], "a task that is not final stays");
          assert.deepEqual(await store.get(liveChild.id), liveChild, "with its children");
          assert.deepEqual(await store.deleteFinishedTree(root.id), [], "a missing task removes nothing");
        }),
      );
    });

    describe("countByStatus", () => {
      it(
        "counts every status, zero where there is none",
        withStore(async (store) => {
          const zero = Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>;
          assert.deepEqual(await store.countByStatus(), zero);
          await store.createMany([
            makeTask(),
            makeTask(),
            makeLeasedTask("w"),
            makeTask({ status: TASK_STATUS.output }),
            makeTask({ status: TASK_STATUS.canceled }),
          ]);
          assert.deepEqual(await store.countByStatus(), { ...zero, input: 2, work: 1, output: 1, canceled: 1 });
        }),
      );
    });

    describe("finishedPerMinute", () => {
      it(
        "counts top-level tasks ended since the given time per minute of their end, by final status",
        withStore(async (store) => {
          const base = 1_800_000_000_000; // a whole minute
          assert.deepEqual(await store.finishedPerMinute(base), []);
          const ended = (status: TaskStatus, endTime: number, extra: Partial<Task> = {}) => makeTask({ status, endTime, ...extra });
          await store.createMany([
            ended(TASK_STATUS.output, base - 1), // before since: left out
            ended(TASK_STATUS.output, base),
            ended(TASK_STATUS.output, base + 59_999),
            ended(TASK_STATUS.error, base + 30_000),
            ended(TASK_STATUS.canceled, base + 120_000),
            ended(TASK_STATUS.output, base + 120_001),
            ended(TASK_STATUS.output, base + 10, { parentId: "test-parent" }), // a child: left out
            makeTask({ status: TASK_STATUS.input }),
          ]);
          assert.deepEqual(await store.finishedPerMinute(base), [
            { minute: base, output: 2, error: 1, canceled: 0 },
            { minute: base + 120_000, output: 1, error: 0, canceled: 1 },
          ]);
          assert.deepEqual(await store.finishedPerMinute(base + 60_000), [{ minute: base + 120_000, output: 1, error: 0, canceled: 1 }]);
        }),
      );
    });

    describe("countStolen", () => {
      it(
        "counts top-level tasks run for other sites, and this site's tasks run elsewhere",
        withStore(async (store) => {
          assert.deepEqual(await store.countStolen("aa"), { in: {}, out: {} });
          const here = { site: "aa", node: "n" };
          await store.createMany([
            makeTask({ site: "aa", status: TASK_STATUS.output, processedBy: here }),
            makeTask({ site: "aa", status: TASK_STATUS.output, processedBy: { site: "bb", node: "m" } }),
            makeTask({ site: "aa", status: TASK_STATUS.output, processedBy: { site: "bb", node: "m2" } }),
            makeTask({ site: "aa", status: TASK_STATUS.output, processedBy: { site: "cc", node: "m" } }),
            makeTask({ site: "aa", status: TASK_STATUS.output, processedBy: { site: "cc", node: "m" }, parentId: "aa-child-of-something" }),
            makeTask({ site: "bb", status: TASK_STATUS.output, processedBy: here }),
            makeTask({ site: "cc", status: TASK_STATUS.work }),
            makeTask({ site: "cc", status: TASK_STATUS.output, processedBy: here, parentId: "cc-parent" }),
          ]);
          assert.deepEqual(await store.countStolen("aa"), { in: { bb: 1, cc: 1 }, out: { bb: 2, cc: 1 } });
        }),
      );
    });

    describe("offload", () => {
      it(
        "defaults to true and keeps false through create, createMany, update and split",
        withStore(async (store) => {
          const made = newTask(
            { id: makeTask().id, site: "test", user: "alice", name: "n", job: "echo", params: {}, priority: 5, maxTries: 1, input: null },
            1_000,
          );
          assert.equal(made.offload, true, "newTask without offload makes a lendable task");
          const home = makeTask({ offload: false });
          const lendable = makeTask();
          const homeInBatch = makeTask({ offload: false });
          await store.create(made);
          await store.create(home);
          await store.createMany([lendable, homeInBatch]);
          assert.equal((await store.get(made.id))?.offload, true);
          assert.deepEqual(await store.get(home.id), home);
          assert.equal((await store.get(home.id))?.offload, false);
          assert.equal((await store.get(lendable.id))?.offload, true);
          assert.equal((await store.get(homeInBatch.id))?.offload, false);

          // A step leaves offload as it is.
          const [claimed] = await store.claim([home.id], { owner: "w", expiresAt: 9 }, 1);
          assert.equal(claimed?.offload, false);

          const child = makeTask({ parentId: home.id, depth: 1, offload: false });
          const split = await store.split(
            { id: home.id, owner: "w", tries: home.tries + 1 },
            { site: "s", node: "n" },
            [child.id],
            () => [child],
            5_000,
          );
          assert.equal(split.task?.offload, false);
          assert.deepEqual(await store.children(home.id), [child]);
        }),
      );

      it(
        "reloads offload with each non-final task, so a queued task kept home is not lendable",
        withStore(async (store) => {
          const home = makeTask({ offload: false });
          const lendable = makeTask();
          const homeWorking = makeLeasedTask("w", { offload: false });
          await store.createMany([home, lendable, homeWorking, makeTask({ status: TASK_STATUS.output, offload: false })]);
          const entries = new Map((await collect(store.loadNonFinal())).flat().map((e): [string, ReloadEntry] => [e.id, e]));
          assert.deepEqual([...entries.keys()].sort(), [home.id, lendable.id, homeWorking.id].sort());
          assert.equal(entries.get(home.id)?.offload, false);
          assert.equal(entries.get(lendable.id)?.offload, true);
          assert.equal(entries.get(homeWorking.id)?.offload, false);
          const lendableOf = (id: string) => {
            const entry = entries.get(id);
            assert.ok(entry !== undefined);
            return toQueueEntry(entry).lendable;
          };
          assert.equal(lendableOf(home.id), false);
          assert.equal(lendableOf(lendable.id), true);
        }),
      );
    });

    describe("api keys", () => {
      it(
        "creates keys and lists them all, oldest first, with their limits",
        withStore(async (store) => {
          assert.deepEqual(await store.listKeys(), []);
          const first = makeKey({ createdAt: 1_000, limits: { offload: true, maxQueued: 10 } });
          const third = makeKey({
            user: "bob",
            createdAt: 3_000,
            limits: { offload: false, maxPriority: 50, maxQueued: 0, maxPerDay: 100, maxBytesPerDay: 5_000_000_000 },
          });
          const second = makeKey({ createdAt: 2_000, revokedAt: 2_500 });
          for (const key of [first, third, second]) await store.createKey(key);
          assert.deepEqual(await store.listKeys(), [first, second, third]);
        }),
      );

      it(
        "stores no undefined limit: an absent limit reads back absent",
        withStore(async (store) => {
          const key = makeKey({ limits: { offload: false, maxQueued: undefined, maxPerDay: 3 } });
          await store.createKey(key);
          const [listed] = await store.listKeys();
          assert.deepEqual(listed?.limits, { offload: false, maxPerDay: 3 });
          assert.equal(listed !== undefined && "maxQueued" in listed.limits, false);
        }),
      );

      it(
        "revokes a key once: a second revoke keeps the first time; an unknown id answers null",
        withStore(async (store) => {
          const key = makeKey();
          const other = makeKey({ createdAt: key.createdAt + 1 });
          await store.createKey(key);
          await store.createKey(other);
          assert.deepEqual(await store.revokeKey(key.id, 5_000), { ...key, revokedAt: 5_000 });
          assert.deepEqual(await store.revokeKey(key.id, 6_000), { ...key, revokedAt: 5_000 });
          assert.equal(await store.revokeKey("key-unknown", 7_000), null);
          assert.deepEqual(await store.listKeys(), [{ ...key, revokedAt: 5_000 }, other]);
        }),
      );

      it(
        "refuses a key whose id or hash exists with BAD_REQUEST naming the id, not the hash, and keeps the first",
        withStore(async (store) => {
          const key = makeKey();
          await store.createKey(key);
          for (const duplicate of [makeKey({ hash: key.hash, user: "mallory" }), makeKey({ id: key.id, user: "mallory" })]) {
            await assert.rejects(store.createKey(duplicate), (err: unknown) => {
              assert.ok(isDocqError(err, ERROR_CODE.BadRequest), `expected DocqError BAD_REQUEST, got ${String(err)}`);
              assert.ok(err.message.includes(duplicate.id), `the message names the key: ${err.message}`);
              assert.ok(!err.message.includes(key.hash), "the message never holds a hash");
              return true;
            });
          }
          assert.deepEqual(await store.listKeys(), [key]);
        }),
      );
    });

    describe("usage", () => {
      it(
        "adds asked in one turn are summed as if asked one after the other",
        withStore(async (store) => {
          await Promise.all([
            store.addUsage("alice", "2024-03-01", { submitted: 1, bytesIn: 5 }),
            store.addUsage("bob", "2024-03-01", { output: 1 }),
            store.addUsage("alice", "2024-03-01", { submitted: 2, runMs: 150 }),
            store.addUsage("alice", "2024-03-02", { error: 1 }),
            store.addUsage("alice", "2024-03-01", { output: 1, bytesOut: 7 }),
            store.addUsage("carol", "2024-03-01", {}),
          ]);
          assert.deepEqual(await store.usage({ from: "2024-03-01", to: "2024-03-02" }), [
            usageRow("alice", "2024-03-01", { submitted: 3, output: 1, runMs: 150, bytesIn: 5, bytesOut: 7 }),
            usageRow("bob", "2024-03-01", { output: 1 }),
            usageRow("carol", "2024-03-01"),
            usageRow("alice", "2024-03-02", { error: 1 }),
          ]);
        }),
      );

      it(
        "adds to one row per user and day, made at zero on the first add",
        withStore(async (store) => {
          await store.addUsage("alice", "2024-03-01", { submitted: 1 });
          await store.addUsage("alice", "2024-03-01", { submitted: 2, runMs: 150, bytesIn: 10, bytesOut: 7 });
          await store.addUsage("alice", "2024-03-01", { output: 1, error: 2, canceled: 3, ranElsewhere: 1, runMs: 50 });
          await store.addUsage("bob", "2024-03-01", { output: 1 });
          await store.addUsage("alice", "2024-03-02", { error: 1 });
          await store.addUsage("carol", "2024-03-01", {});
          assert.deepEqual(await store.usage({ user: "alice", from: "2024-03-01", to: "2024-03-01" }), [
            usageRow("alice", "2024-03-01", {
              submitted: 3,
              output: 1,
              error: 2,
              canceled: 3,
              runMs: 200,
              bytesIn: 10,
              bytesOut: 7,
              ranElsewhere: 1,
            }),
          ]);
          assert.deepEqual(await store.usage({ user: "bob", from: "2024-03-01", to: "2024-03-31" }), [
            usageRow("bob", "2024-03-01", { output: 1 }),
          ]);
          assert.deepEqual(await store.usage({ user: "alice", from: "2024-03-02", to: "2024-03-02" }), [
            usageRow("alice", "2024-03-02", { error: 1 }),
          ]);
          assert.deepEqual(await store.usage({ user: "carol", from: "2024-03-01", to: "2024-03-01" }), [usageRow("carol", "2024-03-01")]);
          assert.deepEqual(await store.usage({ user: "nobody", from: "2024-01-01", to: "2024-12-31" }), []);
        }),
      );

      it(
        "answers the days from..to inclusive, of one user by day, of every user by day then user",
        withStore(async (store) => {
          const days = ["2024-02-29", "2024-03-01", "2024-03-09", "2024-03-10", "2024-03-11"];
          // Added out of order, so the order of the answer is the store's.
          for (const user of ["zed", "amy", "bob"]) {
            for (const [i, day] of [...days.entries()].reverse())
              await store.addUsage(user, day, { submitted: i + 1, bytesIn: user.length });
          }
          const rows = await store.usage({ from: "2024-03-01", to: "2024-03-10" });
          assert.deepEqual(
            rows.map((r) => `${r.day} ${r.user}`),
            [
              "2024-03-01 amy",
              "2024-03-01 bob",
              "2024-03-01 zed",
              "2024-03-09 amy",
              "2024-03-09 bob",
              "2024-03-09 zed",
              "2024-03-10 amy",
              "2024-03-10 bob",
              "2024-03-10 zed",
            ],
          );
          assert.deepEqual(rows[0], usageRow("amy", "2024-03-01", { submitted: 2, bytesIn: 3 }));
          assert.deepEqual(
            (await store.usage({ user: "bob", from: "2024-02-29", to: "2024-03-09" })).map((r) => r.day),
            ["2024-02-29", "2024-03-01", "2024-03-09"],
          );
          assert.deepEqual(
            (await store.usage({ from: "2024-03-11", to: "2024-03-11" })).map((r) => r.user),
            ["amy", "bob", "zed"],
          );
          assert.deepEqual(await store.usage({ from: "2024-03-02", to: "2024-03-08" }), []);
          assert.deepEqual(await store.usage({ from: "2024-03-10", to: "2024-03-01" }), [], "from after to is empty");
        }),
      );

      it(
        "loses no add when many arrive at once for a row that does not exist yet",
        withStore(async (store) => {
          await Promise.all(Array.from({ length: 30 }, (_, i) => store.addUsage("alice", "2024-05-05", { submitted: 1, runMs: i })));
          assert.deepEqual(await store.usage({ user: "alice", from: "2024-05-05", to: "2024-05-05" }), [
            usageRow("alice", "2024-05-05", { submitted: 30, runMs: 435 }),
          ]);
        }),
      );

      it(
        "refuses a day not written YYYY-MM-DD, or a count that is not an integer, with BAD_REQUEST, writing nothing",
        withStore(async (store) => {
          await assertRejectsWithCode(store.addUsage("alice", "2024-3-1", { submitted: 1 }), ERROR_CODE.BadRequest);
          await assertRejectsWithCode(store.addUsage("alice", "2024-03-01T00:00:00Z", { submitted: 1 }), ERROR_CODE.BadRequest);
          await assertRejectsWithCode(store.addUsage("alice", "2024-03-01", { submitted: 1, runMs: 1.5 }), ERROR_CODE.BadRequest);
          await assertRejectsWithCode(store.addUsage("alice", "2024-03-01", { bytesIn: Number.NaN }), ERROR_CODE.BadRequest);
          await assertRejectsWithCode(store.usage({ from: "yesterday", to: "2024-03-01" }), ERROR_CODE.BadRequest);
          await assertRejectsWithCode(store.usage({ user: "alice", from: "2024-03-01", to: "2024-13-01" }), ERROR_CODE.BadRequest);
          assert.deepEqual(await store.usage({ from: "0000-01-01", to: "9999-12-31" }), []);
        }),
      );
    });

    describe("countActive", () => {
      it(
        "counts a user's top-level tasks that are not final, through inserts, transitions, splits and deletes",
        withStore(async (store) => {
          const active = async () => ({ alice: await store.countActive("alice"), bob: await store.countActive("bob") });
          assert.deepEqual(await active(), { alice: 0, bob: 0 });

          const queued = makeTask();
          const working = makeLeasedTask("w");
          const waiting = makeTask({ status: TASK_STATUS.wait });
          const merging = makeTask({ status: TASK_STATUS.complete });
          const done = makeTask({ status: TASK_STATUS.output });
          const child = makeTask({ parentId: waiting.id, depth: 1 });
          const bobs = makeTask({ user: "bob" });
          await store.create(queued);
          await store.createMany([working, waiting, merging, done, child, bobs]);
          assert.deepEqual(await active(), { alice: 4, bob: 1 });

          // Between two active statuses: no change; to a final status: one fewer.
          await store.claim([queued.id], { owner: "w", expiresAt: 9 }, 1);
          assert.deepEqual(await active(), { alice: 4, bob: 1 });
          await store.succeed(
            { id: working.id, owner: "w", tries: working.tries },
            { output: "o", processedBy: { site: "s", node: "n" } },
            2,
          );
          await store.cancel(merging.id, "stop", 2);
          assert.deepEqual(await active(), { alice: 2, bob: 1 });
          // Children never count, in whatever status.
          await store.claim([child.id], { owner: "w", expiresAt: 9 }, 1);
          await store.requeue({ id: child.id, owner: "w", tries: 1 }, { error: "e", processedBy: null, ranAt: NOWHERE }, 3, 3);
          const kids = [makeTask({ parentId: queued.id, depth: 1 }), makeTask({ parentId: queued.id, depth: 1, user: "bob" })];
          const split = await store.split(
            { id: queued.id, owner: "w", tries: 1 },
            { site: "s", node: "n" },
            kids.map((k) => k.id),
            () => kids,
            5_000,
          );
          assert.ok(split.ok);
          assert.deepEqual(await active(), { alice: 2, bob: 1 });
          // Deletes: an active task counts down, a final one or a child changes nothing.
          await store.delete(done.id);
          await store.delete(child.id);
          assert.deepEqual(await active(), { alice: 2, bob: 1 });
          await store.delete(waiting.id);
          assert.deepEqual(await active(), { alice: 1, bob: 1 });
          await store.cancel(queued.id, "stop", 4);
          await store.cancel(bobs.id, "stop", 4);
          assert.deepEqual(await active(), { alice: 0, bob: 0 });
          assert.equal(await store.countActive("nobody"), 0);
        }),
      );
    });
  });
}
