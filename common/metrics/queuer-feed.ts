import type { Registry } from "prom-client";
import { TASK_STATUS, TASK_STATUSES, type AttemptRecord, type Task, type TaskStatus } from "../model/task-model.js";
import type { TaskQueueEvents } from "../queue/task-queue.js";
import { registerQueuerMetrics, type QueuerMetrics } from "./definitions.js";

/** What the feed needs of the active queuer's TaskQueue: its events and its in-memory counts. */
export interface QueueSource {
  on<E extends "task:changed" | "attempt:ended">(event: E, listener: (...args: TaskQueueEvents[E]) => void): unknown;
  off<E extends "task:changed" | "attempt:ended">(event: E, listener: (...args: TaskQueueEvents[E]) => void): unknown;
  queueCounts(): { ready: number; delayed: number; highestPriority: number | null };
}

export interface QueuerFeedOptions {
  queue: QueueSource;
  /** The store's counts per status, read at each scrape. */
  countByStatus(): Promise<Record<TaskStatus, number>>;
  onCollectError(err: unknown): void;
  now?: () => number;
}

/** One ended attempt, counted once: the queue says it once, after the step that recorded it. */
export function countAttempt(metrics: QueuerMetrics, task: Pick<Task, "job">, attempt: AttemptRecord): void {
  metrics.taskRuns.inc({ job: task.job, outcome: attempt.outcome });
  if (attempt.outcome === "lease_lost") {
    metrics.leasesExpired.inc();
    // Its end is when the sweep noticed the lapsed lease, not when the script stopped: no run time.
    return;
  }
  if (attempt.start !== null) metrics.taskRunSeconds.observe({ job: task.job }, Math.max(0, attempt.end - attempt.start) / 1000);
}

/**
 * Turns the queue's `task:changed` records into queue waits: a record in `work` with a start not
 * seen before for that task is a claim (a progress report keeps the same start). Tasks in work are
 * remembered by their start until they leave it, so the map holds at most the running tasks.
 * A claim older than the feed (a task that was running when this queuer took over) is not a wait
 * this queuer saw begin: left out.
 */
export function queueWaitTracker(metrics: QueuerMetrics, since: number): (task: Task) => void {
  const startOf = new Map<string, number>();
  return (task) => {
    if (task.status !== TASK_STATUS.work) {
      startOf.delete(task.id);
      return;
    }
    const start = task.startTime;
    if (start === null || startOf.get(task.id) === start) return;
    startOf.set(task.id, start);
    if (start < since) return;
    metrics.queueWaitSeconds.observe({ job: task.job }, Math.max(0, start - task.availableAt) / 1000);
  };
}

/**
 * Registers the queuer's metrics in `registry` and feeds them from the active queuer's queue:
 * attempts and waits from its events, the gauges from the store and the queue when scraped.
 * Answers the function that unsubscribes.
 */
export function feedQueuerMetrics(registry: Registry, opts: QueuerFeedOptions): () => void {
  const { queue } = opts;
  const metrics = registerQueuerMetrics(
    registry,
    { countByStatus: opts.countByStatus, queueCounts: () => queue.queueCounts(), onCollectError: opts.onCollectError },
    TASK_STATUSES,
  );
  const onChanged = queueWaitTracker(metrics, (opts.now ?? Date.now)());
  const onAttempt = ({ task, attempt }: { task: Task; attempt: AttemptRecord }): void => countAttempt(metrics, task, attempt);
  queue.on("task:changed", onChanged);
  queue.on("attempt:ended", onAttempt);
  return () => {
    queue.off("task:changed", onChanged);
    queue.off("attempt:ended", onAttempt);
  };
}
