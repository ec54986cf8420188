import { TASK_STATUS as S, type TaskStatus } from "./task-model.js";

/** The design's diagram, one named edge per arrow: what may follow each status, and why. */
const TRANSITIONS: Readonly<Record<TaskStatus, Readonly<Partial<Record<TaskStatus, string>>>>> = {
  input: { work: "pull", canceled: "cancel" },
  work: {
    output: "success",
    input: "retry after failure or lease expiry, or released by a graceful stop",
    error: "failure with no tries left",
    wait: "script returned children",
    complete: "merge failed, its lease expired or it was released: retry the merge, not the split",
    canceled: "cancel",
  },
  wait: {
    complete: "all children output",
    error: "a child in error",
    canceled: "cancel",
    output: "a workflow's final step is output: its output is the workflow's (no script runs for the workflow)",
  },
  complete: { work: "pull for merge", canceled: "cancel" },
  output: {},
  // A user's retry (POST /api/tasks/:id/retry): a plain task is queued again; a parent waits for its
  // failed children run again, or is queued for its merge when they are all output.
  error: { input: "retried", wait: "retried: its failed children run again", complete: "retried: its merge runs again" },
  canceled: { input: "retried", wait: "retried: its failed children run again", complete: "retried: its merge runs again" },
};

export function canTransition(from: TaskStatus, to: TaskStatus): boolean {
  return TRANSITIONS[from][to] !== undefined;
}

/** The statuses a transition to `to` may start from. */
export function sourcesOf(to: TaskStatus): TaskStatus[] {
  return (Object.keys(TRANSITIONS) as TaskStatus[]).filter((from) => canTransition(from, to));
}

export const CANCELABLE: readonly TaskStatus[] = sourcesOf(S.canceled);

/**
 * The steps of the task store, one per kind of write: from which statuses each may start and which
 * it may lead to. The stores build their guards (`status IN (...)`) from `from`, and a test checks
 * that together the steps make exactly the diagram's edges, so code and diagram cannot drift.
 * `stays`: the step may also leave the status as it is (a counter moves, the status not yet).
 */
export interface StoreStepEdges {
  readonly from: readonly TaskStatus[];
  readonly to: readonly TaskStatus[];
  readonly stays?: true;
}

export const STORE_STEPS = {
  claim: { from: [S.input, S.complete], to: [S.work] },
  succeed: { from: [S.work], to: [S.output] },
  /** A plain task back to input; a parent whose merge failed back to complete (its children stay done). */
  requeue: { from: [S.work], to: [S.input, S.complete] },
  giveUp: { from: [S.work], to: [S.error] },
  split: { from: [S.work], to: [S.wait] },
  childSucceeded: { from: [S.wait], to: [S.complete], stays: true },
  recountChildren: { from: [S.wait], to: [S.complete], stays: true },
  failParent: { from: [S.wait], to: [S.error] },
  /** A workflow whose final step is output takes that output and ends. */
  finishWorkflow: { from: [S.wait], to: [S.output] },
  cancel: { from: CANCELABLE, to: [S.canceled] },
  /** A graceful stop hands a running attempt back without counting it: plain back to input, a merge back to complete. */
  release: { from: [S.work], to: [S.input, S.complete] },
  /** A user's retry of a task that ended in error or canceled: a fresh try count, its attempts kept. */
  retry: { from: [S.error, S.canceled], to: [S.input, S.wait, S.complete] },
  /** The running attempt's progress: written under its claim, the status stays work. */
  progress: { from: [S.work], to: [], stays: true },
} as const satisfies Record<string, StoreStepEdges>;

export type StoreStep = keyof typeof STORE_STEPS;
export const STORE_STEP_NAMES = Object.keys(STORE_STEPS) as StoreStep[];
