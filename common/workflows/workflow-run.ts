import { TASK_STATUS as S, isFinal, type Task } from "../model/task-model.js";
import type { WorkflowDefinition, WorkflowStep } from "./workflow-definition.js";

/*
 * The rules of a running workflow, as pure functions of its definition and its steps' records: which
 * steps may be created now, which are canceled because an upstream failed, and how the workflow
 * ends. The queue (TaskQueue.advanceWorkflow) applies the plan with guarded store steps; being a
 * function of the records alone, the same plan is right after a crash (reload) as on the hot path.
 */

/** The error of a step canceled because a step upstream of it failed for good. */
export const UPSTREAM_FAILED = "upstream failed: ";

/** A step record the engine made canceled because an upstream failed (it never ran): a retry re-creates it when its upstreams are output again. */
export function isBlockedStep(step: Pick<Task, "status" | "error">): boolean {
  return step.status === S.canceled && step.error !== null && step.error.startsWith(UPSTREAM_FAILED);
}

/** A step that ran (or was live) and ended without output: the cause of a workflow's failure. */
function failedOnItsOwn(step: Pick<Task, "status" | "error">): boolean {
  return (step.status === S.error || step.status === S.canceled) && !isBlockedStep(step);
}

/** A step to create now: its upstreams are all output. */
export interface RunnableStep {
  step: WorkflowStep;
  /** The workflow's document (a root step) or its one upstream's output key; null when it has several. */
  input: string | null;
  /** Several upstreams: their output keys in the order the flow writes them (merge mode); else null. */
  inputs: string[] | null;
}

export interface WorkflowPlan {
  runnable: RunnableStep[];
  /** Steps with no record yet that can never run: created canceled with `upstream failed: <step>`. */
  blocked: { step: WorkflowStep; error: string }[];
  /** The final step's output key once it is output: the workflow's output. */
  output: string | null;
  /** Once nothing runs any more and a step failed: the workflow's error, naming the failed step(s). */
  failure: string | null;
}

/**
 * What to do next for a workflow whose document is `input`, given its steps' records by step name
 * (a step with no record has not been created yet).
 */
export function planWorkflow(def: WorkflowDefinition, input: string | null, records: ReadonlyMap<string, Task>): WorkflowPlan {
  const upstreamsOf = (name: string): string[] => def.upstreams[name] ?? [];
  // The failed step that dooms each step (itself, or the first failed one upstream), memoized; the definition has no cycle.
  const doomedBy = new Map<string, string | null>();
  const doom = (name: string): string | null => {
    const known = doomedBy.get(name);
    if (known !== undefined) return known;
    const record = records.get(name);
    let cause: string | null = null;
    if (record !== undefined && failedOnItsOwn(record)) cause = name;
    else {
      for (const upstream of upstreamsOf(name)) {
        cause = doom(upstream);
        if (cause !== null) break;
      }
    }
    doomedBy.set(name, cause);
    return cause;
  };

  const plan: WorkflowPlan = { runnable: [], blocked: [], output: null, failure: null };
  let live = 0;
  for (const step of def.steps) {
    const record = records.get(step.name);
    if (record !== undefined) {
      if (!isFinal(record.status)) live++;
      continue;
    }
    const cause = doom(step.name);
    if (cause !== null) {
      plan.blocked.push({ step, error: `${UPSTREAM_FAILED}${cause}` });
      continue;
    }
    const upstreams = upstreamsOf(step.name).map((name) => records.get(name));
    if (!upstreams.every((u) => u !== undefined && u.status === S.output && u.output !== null)) continue;
    const outputs = upstreams.map((u) => u?.output ?? "");
    if (outputs.length === 0) plan.runnable.push({ step, input, inputs: null });
    else if (outputs.length === 1) plan.runnable.push({ step, input: outputs[0] ?? null, inputs: null });
    else plan.runnable.push({ step, input: null, inputs: outputs });
  }

  const final = records.get(def.final);
  if (final !== undefined && final.status === S.output && final.output !== null) {
    plan.output = final.output;
    return plan;
  }
  if (live > 0 || plan.runnable.length > 0 || plan.blocked.length > 0) return plan;
  const failed = def.steps.flatMap((step) => {
    const record = records.get(step.name);
    return record !== undefined && failedOnItsOwn(record) ? [`step "${step.name}" failed: ${record.error ?? record.status}`] : [];
  });
  // Nothing runs and nothing can: with no failed step this cannot happen, but a workflow must never wait forever.
  plan.failure = failed.length > 0 ? failed.join("; ") : `workflow cannot go on: step "${def.final}" can never run`;
  return plan;
}
