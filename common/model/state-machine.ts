import { TASK_STATUS as S, type TaskStatus } from "./task-model.js";

/** The design's diagram, one named edge per arrow: what may follow each status, and why. */
const TRANSITIONS: Readonly<Record<TaskStatus, Readonly<Partial<Record<TaskStatus, string>>>>> = {
  input: { work: "pull", canceled: "cancel" },
  work: {
    output: "success",
    input: "retry after failure or lease expiry",
    error: "failure with no tries left",
    wait: "script returned children",
    complete: "merge failed or its lease expired: retry the merge, not the split",
    canceled: "cancel",
  },
  wait: { complete: "all children output", error: "a child in error", canceled: "cancel" },
  complete: { work: "pull for merge", canceled: "cancel" },
  output: {},
  error: {},
  canceled: {},
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
  cancel: { from: CANCELABLE, to: [S.canceled] },
  /** The running attempt's progress: written under its claim, the status stays work. */
  progress: { from: [S.work], to: [], stays: true },
} as const satisfies Record<string, StoreStepEdges>;

export type StoreStep = keyof typeof STORE_STEPS;
export const STORE_STEP_NAMES = Object.keys(STORE_STEPS) as StoreStep[];
