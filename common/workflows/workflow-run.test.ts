import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { PulledTask } from "../model/claims.js";
import type { Task } from "../model/task-model.js";
import { newTaskId, type NewTaskSpec } from "../queue/new-task.js";
import { TaskQueue } from "../queue/task-queue.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import type { WorkflowDefinition } from "./workflow-definition.js";
import { planWorkflow } from "./workflow-run.js";

/** a -> [b, c] -> d */
const DIAMOND: WorkflowDefinition = {
  steps: [
    { name: "a", job: "pdftotext" },
    { name: "b", job: "wordcount", maxTries: 1 },
    { name: "c", job: "pages", priority: 80, timeoutMs: 5_000 },
    { name: "d", job: "concat", params: { sep: "\n" } },
  ],
  upstreams: { a: [], b: ["a"], c: ["a"], d: ["b", "c"] },
  final: "d",
};

/** One step whose job splits. */
const ONE_SPLIT: WorkflowDefinition = { steps: [{ name: "p", job: "pages", timeoutMs: 4_000 }], upstreams: { p: [] }, final: "p" };

let dir: string;
let store: SqliteTaskStore;
let clock: number;
const processedBy = { site: "test", node: "n1" };

function makeQueue(): TaskQueue {
  return new TaskQueue({
    store,
    site: "test",
    leaseMs: 1000,
    backoffBaseMs: 100,
    backoffMaxMs: 1000,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
    now: () => clock,
    workflowOf: (job) => Promise.resolve(job === "diamond" ? DIAMOND : job === "onesplit" ? ONE_SPLIT : null),
  });
}

function submitted(overrides: Partial<NewTaskSpec> = {}): NewTaskSpec {
  const id = newTaskId("test");
  return {
    id,
    site: "test",
    user: "u",
    name: "doc.pdf",
    job: "diamond",
    params: {},
    priority: 50,
    maxTries: 3,
    input: `${id}/input`,
    ...overrides,
  };
}

/** Pulls everything ready, by step name. */
async function pullSteps(queue: TaskQueue): Promise<Map<string, PulledTask>> {
  return new Map((await queue.pull("w1", 10)).map((task) => [task.name, task]));
}

const outputOf = (task: Task): string => `${task.id}/output-${task.tries}`;

async function succeed(queue: TaskQueue, task: Task): Promise<void> {
  assert.equal(await queue.succeed({ id: task.id, owner: "w1", tries: task.tries }, { output: outputOf(task), processedBy }), true);
}

async function stepsOf(workflowId: string): Promise<Map<string, Task>> {
  return new Map((await store.children(workflowId)).map((step) => [step.name, step]));
}

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-workflow-test-"));
  store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  clock = 1_000_000;
});
afterEach(async () => {
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("workflow engine (TaskQueue with a real SQLite store)", () => {
  it("runs a diamond in dependency order: b and c together after a, d merging them in the order written; the workflow takes d's output", async () => {
    const queue = makeQueue();
    const changed: string[] = [];
    queue.on("task:changed", (task) => changed.push(`${task.name}:${task.status}`));
    const workflow = await queue.submit(submitted());
    assert.deepEqual([workflow.status, workflow.childrenTotal, workflow.workflow], ["wait", 4, DIAMOND]);

    const first = await pullSteps(queue);
    assert.deepEqual([...first.keys()], ["a"]);
    const a = first.get("a")!;
    assert.deepEqual([a.input, a.parentId, a.depth, a.job], [workflow.input, workflow.id, 0, "pdftotext"]);
    await succeed(queue, a);

    const second = await pullSteps(queue);
    assert.deepEqual([...second.keys()].sort(), ["b", "c"]);
    const [b, c] = [second.get("b")!, second.get("c")!];
    assert.deepEqual([b.input, c.input, c.priority, c.timeoutMs, b.maxTries], [outputOf(a), outputOf(a), 80, 5_000, 1]);
    await succeed(queue, c);
    assert.equal((await queue.pull("w1", 10)).length, 0, "d waits for b too");
    await succeed(queue, b);

    const d = (await pullSteps(queue)).get("d")!;
    assert.deepEqual([d.input, d.mergeInputs, d.params, d.offload], [null, [outputOf(b), outputOf(c)], { sep: "\n" }, false]);
    await succeed(queue, d);
    const done = await store.get(workflow.id);
    assert.deepEqual([done?.status, done?.output, done?.childrenCompleted], ["output", outputOf(d), 4]);
    assert.equal(changed.at(-1), "doc.pdf:output");
    for (const step of ["a", "b", "c", "d"]) assert.ok(changed.includes(`${step}:output`), step);
  });

  it("a step failing for good cancels what depends on it, lets the other branch finish, then fails the workflow naming it; a retry reruns only it", async () => {
    const queue = makeQueue();
    const workflow = await queue.submit(submitted());
    await succeed(queue, (await pullSteps(queue)).get("a")!);
    const running = await pullSteps(queue);
    const b = running.get("b")!;
    await queue.fail({ id: b.id, owner: "w1", tries: b.tries }, "boom", { retryable: true, processedBy });

    let steps = await stepsOf(workflow.id);
    assert.deepEqual([steps.get("b")?.status, steps.get("d")?.status, steps.get("d")?.error], ["error", "canceled", "upstream failed: b"]);
    assert.equal((await store.get(workflow.id))?.status, "wait", "c still runs");
    await succeed(queue, running.get("c")!);
    const failed = await store.get(workflow.id);
    assert.deepEqual([failed?.status, failed?.error], ["error", 'step "b" failed: boom']);

    clock += 1000;
    const retried = await queue.retry(workflow.id);
    assert.equal(retried.status, "wait");
    steps = await stepsOf(workflow.id);
    assert.deepEqual([steps.get("b")?.status, steps.has("d"), steps.get("c")?.status], ["input", false, "output"]);
    const again = await pullSteps(queue);
    assert.deepEqual([...again.keys()], ["b"], "c is kept, not run again");
    await succeed(queue, again.get("b")!);
    const d = (await pullSteps(queue)).get("d")!;
    await succeed(queue, d);
    assert.deepEqual([(await store.get(workflow.id))?.status, (await store.get(workflow.id))?.output], ["output", outputOf(d)]);
  });

  it("canceling the workflow reaches its running steps, and no step is created after", async () => {
    const queue = makeQueue();
    const stopped: string[] = [];
    queue.on("task:canceled", ({ id }) => stopped.push(id));
    const workflow = await queue.submit(submitted());
    const a = (await pullSteps(queue)).get("a")!;
    const report = await queue.cancel(workflow.id);
    assert.deepEqual(report.canceledIds, [workflow.id, a.id]);
    assert.deepEqual(stopped, [a.id]);
    assert.equal(await queue.succeed({ id: a.id, owner: "w1", tries: a.tries }, { output: outputOf(a), processedBy }), false);
    assert.deepEqual([...(await stepsOf(workflow.id)).keys()], ["a"]);
    assert.equal((await queue.pull("w1", 10)).length, 0);
  });

  it("a step is an ordinary task: it splits, its parts run, its merge ends it, and then the workflow", async () => {
    const queue = makeQueue();
    const workflow = await queue.submit(submitted({ job: "onesplit" }));
    const p = (await pullSteps(queue)).get("p")!;
    assert.equal(p.depth, 0, "a step is the root of its own split tree");
    assert.equal(await queue.split({ id: p.id, owner: "w1", tries: p.tries }, [{ input: "x" }, { input: "y" }], processedBy), true);
    const parts = await queue.pull("w1", 10);
    assert.deepEqual(
      parts.map((part) => [part.parentId, part.depth, part.timeoutMs]),
      [
        [p.id, 1, 4_000],
        [p.id, 1, 4_000],
      ],
    );
    for (const part of parts) await succeed(queue, part);
    const merge = (await queue.pull("w1", 10))[0]!;
    assert.deepEqual([merge.id, merge.mergeInputs], [p.id, parts.map(outputOf)]);
    await succeed(queue, merge);
    assert.deepEqual([(await store.get(workflow.id))?.status, (await store.get(workflow.id))?.output], ["output", outputOf(merge)]);
  });

  it("after a restart, a step that ended before its downstream was created moves the workflow on (reload)", async () => {
    const queue = makeQueue();
    const workflow = await queue.submit(submitted());
    const a = (await pullSteps(queue)).get("a")!;
    // The crash: the step's success is stored, the queue never got to create b and c.
    assert.equal((await store.succeed({ id: a.id, owner: "w1", tries: a.tries }, { output: outputOf(a), processedBy }, clock)).ok, true);
    queue.stop();

    const restarted = makeQueue();
    await restarted.reload();
    assert.deepEqual([...(await pullSteps(restarted)).keys()].sort(), ["b", "c"]);
    await restarted.reload();
    assert.equal((await store.children(workflow.id)).length, 3, "a second reload creates no step twice");
  });

  it("plans from the records alone: a step doomed by a failed upstream is blocked, never run", () => {
    const records = new Map<string, Task>([["a", { status: "error", error: "x", output: null } as Task]]);
    const plan = planWorkflow(DIAMOND, "in", records);
    assert.deepEqual(
      plan.blocked.map((b) => [b.step.name, b.error]),
      [
        ["b", "upstream failed: a"],
        ["c", "upstream failed: a"],
        ["d", "upstream failed: a"],
      ],
    );
    assert.deepEqual([plan.runnable, plan.failure], [[], null]);
  });
});
