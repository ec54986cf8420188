import { docqError, ERROR_CODE } from "./errors.js";
import { TASK_STATUS as S, type TaskStatus } from "./task-model.js";

/** The design's diagram, one named edge per arrow: what may follow each status, and why. */
export const TRANSITIONS: Readonly<Record<TaskStatus, Readonly<Partial<Record<TaskStatus, string>>>>> = {
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

/** Throws ILLEGAL_TRANSITION naming both statuses and what is allowed instead. */
export function assertTransition(taskId: string, from: TaskStatus, to: TaskStatus): void {
  if (canTransition(from, to)) return;
  const allowed = Object.keys(TRANSITIONS[from]);
  throw docqError(
    ERROR_CODE.IllegalTransition,
    `task ${taskId} cannot go from ${from} to ${to}: ` +
      (allowed.length === 0 ? `${from} is final` : `from ${from} it may only go to ${allowed.join(", ")}`),
    { details: { from, to } },
  );
}

/** The statuses a transition to `to` may start from: the guard of a compare-and-set. */
export function sourcesOf(to: TaskStatus): TaskStatus[] {
  return (Object.keys(TRANSITIONS) as TaskStatus[]).filter((from) => canTransition(from, to));
}

export const CANCELABLE: readonly TaskStatus[] = sourcesOf(S.canceled);
