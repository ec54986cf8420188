import { errorMessage } from "../model/errors.js";
import { TASK_STATUS as S, type Task } from "../model/task-model.js";
import { newTask, newTaskId, type NewTaskSpec } from "../queue/new-task.js";
import type { TaskStore } from "../store/task-store.js";
import { WorkflowDefinitionSchema, type WorkflowDefinition, type WorkflowStep } from "./workflow-definition.js";
import { planWorkflow } from "./workflow-run.js";

/** What the engine needs of the queue it runs in: the queue's own paths, so the index and the events stay right. */
export interface WorkflowStepsDeps {
  store: TaskStore;
  now: () => number;
  /** A step was created ready to run: index it and say so. */
  queued: (step: Task) => void;
  /** A task reached a final status: say so and count it (TaskQueue.ended). */
  ended: (task: Task) => Promise<void>;
  /** Cancels a task (a step created just as its workflow ended). */
  cancel: (id: string, reason: string) => Promise<void>;
}

/**
 * The workflow engine inside the queue. A workflow task waits (`wait`) with one child per step:
 * `children` holds the ids of all its steps, in the order written, made when it is submitted, so
 * a step's record is inserted under its own id exactly once, however many times (or processes, or
 * a reload after a crash) try to create it. A step's record is created when it becomes runnable
 * (its upstreams all output), or canceled when a step upstream of it failed; the workflow ends
 * with its final step's output, or in error once nothing runs any more and a step failed.
 */
export class WorkflowSteps {
  /** Per workflow, the end of its last advance: the next one waits for it (one process's steps never race each other). */
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly deps: WorkflowStepsDeps) {}

  /** The workflow task (status wait, its definition's snapshot, the ids of all its steps) and its root steps. */
  expand(spec: NewTaskSpec, definition: WorkflowDefinition, now: number): { workflow: Task; roots: Task[] } {
    const ids = definition.steps.map(() => newTaskId(spec.site));
    const workflow: Task = {
      ...newTask(spec, now),
      status: S.wait,
      workflow: definition,
      children: ids,
      childrenTotal: ids.length,
    };
    const roots = definition.steps.flatMap((step, i) =>
      (definition.upstreams[step.name] ?? []).length === 0
        ? [stepTask(workflow, step, ids[i] ?? newTaskId(spec.site), workflow.input, null, now)]
        : [],
    );
    return { workflow, roots };
  }

  /**
   * A child of `parentId` ended (output, or failed for good). False when the parent is not a
   * workflow (the split rules apply); else the workflow moves on and it answers true.
   */
  async stepEnded(parentId: string, how: "output" | "failed"): Promise<boolean> {
    const parent = await this.deps.store.get(parentId);
    if (parent === null || parent.workflow === null) return false;
    // Counted for GET's progress; the final step is the last to end (every step is upstream of it), and finishWorkflow counts it.
    if (how === "output" && parent.status === S.wait && parent.childrenCompleted + 1 < parent.childrenTotal) {
      await this.deps.store.childSucceeded(parentId, this.deps.now());
    }
    await this.advance(parentId);
    return true;
  }

  /** Creates the steps that may run now, cancels those that never can, and ends the workflow when it is over. */
  advance(workflowId: string): Promise<void> {
    const before = this.running.get(workflowId) ?? Promise.resolve();
    const result = before.then(() => this.advanceNow(workflowId));
    const done = result.catch(() => undefined);
    this.running.set(workflowId, done);
    void done.then(() => {
      if (this.running.get(workflowId) === done) this.running.delete(workflowId);
    });
    return result;
  }

  private async advanceNow(workflowId: string): Promise<void> {
    const { store } = this.deps;
    // Each round writes at least one step's record, so there are at most as many rounds as steps (plus the last look).
    for (;;) {
      const workflow = await store.get(workflowId);
      if (workflow === null || workflow.status !== S.wait || workflow.workflow === null) return;
      const parsed = WorkflowDefinitionSchema.safeParse(workflow.workflow);
      if (!parsed.success) {
        await this.fail(workflowId, `workflow ${workflowId}: its stored definition is unreadable: ${parsed.error.message}`);
        return;
      }
      const definition = parsed.data;
      const stepIds = new Map(definition.steps.map((step, i) => [step.name, workflow.children[i] ?? ""]));
      const byId = new Map((await store.children(workflowId)).map((child) => [child.id, child]));
      const records = new Map<string, Task>();
      for (const [name, id] of stepIds) {
        const record = byId.get(id);
        if (record !== undefined) records.set(name, record);
      }
      const plan = planWorkflow(definition, workflow.input, records);
      const now = this.deps.now();
      if (plan.output !== null) {
        const finished = await store.finishWorkflow(workflowId, plan.output, now);
        if (finished.ok) await this.deps.ended(finished.task);
        return;
      }
      if (plan.failure !== null) {
        await this.fail(workflowId, plan.failure);
        return;
      }
      if (plan.runnable.length === 0 && plan.blocked.length === 0) return;
      for (const { step, error } of plan.blocked) {
        const blocked: Task = {
          ...stepTask(workflow, step, stepIds.get(step.name) ?? "", null, null, now),
          status: S.canceled,
          error,
          endTime: now,
        };
        if (await this.insertOnce(blocked)) await this.deps.ended(blocked);
      }
      const created: Task[] = [];
      for (const { step, input, inputs } of plan.runnable) {
        const task = stepTask(workflow, step, stepIds.get(step.name) ?? "", input, inputs, now);
        if (await this.insertOnce(task)) created.push(task);
      }
      for (const task of created) this.deps.queued(task);
      // Canceled or deleted while these were being created: they must not run on their own.
      const after = await store.get(workflowId);
      if (after === null || after.status !== S.wait) {
        for (const task of created) await this.deps.cancel(task.id, `parent ${workflowId} ended`);
        return;
      }
    }
  }

  private async fail(workflowId: string, error: string): Promise<void> {
    const failed = await this.deps.store.failParent(workflowId, error, this.deps.now());
    if (failed.ok) await this.deps.ended(failed.task);
  }

  /** Inserts a step's record unless it exists already (made by another advance, or before a crash): true when this one made it. */
  private async insertOnce(task: Task): Promise<boolean> {
    try {
      await this.deps.store.create(task);
      return true;
    } catch (err) {
      if ((await this.deps.store.get(task.id)) !== null) return false;
      throw new Error(`workflow ${task.parentId ?? "?"}: step "${task.name}" could not be created: ${errorMessage(err)}`, { cause: err });
    }
  }
}

/** A step's task: an ordinary child of the workflow, named by its step, running its job with the step's settings. */
function stepTask(workflow: Task, step: WorkflowStep, id: string, input: string | null, inputs: string[] | null, now: number): Task {
  return newTask(
    {
      id,
      site: workflow.site,
      user: workflow.user,
      name: step.name,
      job: step.job,
      params: step.params ?? {},
      priority: step.priority ?? workflow.priority,
      maxTries: step.maxTries ?? workflow.maxTries,
      input,
      inputs,
      timeoutMs: step.timeoutMs ?? null,
      parentId: workflow.id,
      // A step is the root of its own split tree (depth 0): it runs as a submitted task would
      // (simple, or split when its job splits), not as a part of a split (child mode).
      depth: workflow.depth,
      // The stealing protocol hands a lent task one input: a step merging several stays home.
      offload: inputs === null ? workflow.offload : false,
      availableAt: workflow.availableAt,
    },
    now,
  );
}
