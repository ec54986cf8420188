import type { AttemptOutcome, AttemptRecord, Task } from "../model/task-model.js";

/** Outcomes of an attempt that failed: the queue retries it (retry, lease_lost) or gave up (error). */
const FAILED_OUTCOMES: ReadonlySet<AttemptOutcome> = new Set(["retry", "error", "lease_lost"]);

/** An error's first line is what a log line shows: the rest (a stack, the script's stderr) is in the task's record. */
const MAX_FIRST_LINE = 300;

/**
 * The warning the queuer logs for a failed attempt (outcome retry, error or lease_lost): task id,
 * job, attempt number and the first line of the error; null for any other outcome.
 */
export function failedAttemptLine(task: Pick<Task, "id" | "job" | "maxTries">, attempt: AttemptRecord): string | null {
  if (!FAILED_OUTCOMES.has(attempt.outcome)) return null;
  const firstLine = (attempt.error ?? "").trim().split("\n", 1)[0] ?? "";
  const shown = firstLine.length > MAX_FIRST_LINE ? `${firstLine.slice(0, MAX_FIRST_LINE)}…` : firstLine;
  const next = attempt.outcome === "error" ? "gave up" : "will retry";
  const where = attempt.node === null ? "" : ` on ${attempt.node}`;
  return (
    `task ${task.id} (job ${task.job}) attempt ${attempt.n}/${task.maxTries} failed${where}` +
    ` [${attempt.outcome}, ${next}]: ${shown === "" ? "(no error text)" : shown}`
  );
}
