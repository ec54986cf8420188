import type { BlobStore } from "../blobs/blob-store.js";
import { dropTaskDocuments, type TaskDocumentsLog } from "../blobs/task-documents.js";
import { errorMessage } from "../model/errors.js";
import type { FinishedQuery, TaskStore } from "../store/task-store.js";
import { blobKeys } from "./new-task.js";
import type { TaskQueue } from "./task-queue.js";

/*
 * Retention and the bulk clean: finished top-level tasks are removed with their whole tree (records
 * and documents), in bounded batches. One code path for the queuer's sweep and DELETE /api/tasks.
 */

/** The final statuses a task can be removed from, and the window each keeps its tasks for. */
export const FINISHED_STATUSES = ["output", "error", "canceled"] as const;
export type FinishedStatus = (typeof FINISHED_STATUSES)[number];

/** How long finished tasks are kept, per final status, in ms; null keeps them for ever. */
export interface RetentionWindows {
  outputMs: number | null;
  errorMs: number | null;
  canceledMs: number | null;
}

/** A job's own windows (job.yaml `retention`): a status it does not name keeps the site's window. */
export type JobRetention = Partial<RetentionWindows>;

const WINDOW_OF: Record<FinishedStatus, keyof RetentionWindows> = { output: "outputMs", error: "errorMs", canceled: "canceledMs" };

export interface PurgeDeps {
  queue: TaskQueue;
  store: TaskStore;
  blobs: BlobStore;
  log: TaskDocumentsLog;
}

/** How much one purge may do: `batches` of `batchSize` top-level tasks, so a call stays short. */
export interface PurgeLimits {
  batchSize: number;
  batches: number;
}

export interface PurgeReport {
  /** Top-level tasks removed (each with its tree). */
  deleted: number;
  /** True when the limits stopped it with more left to remove: call again. */
  more: boolean;
}

/**
 * Removes the finished top-level tasks `query` matches, oldest end first, each with its tree and
 * documents. A task that is no longer final when its turn comes (retried meanwhile) is left alone.
 */
export async function purgeFinished(deps: PurgeDeps, query: FinishedQuery, limits: PurgeLimits): Promise<PurgeReport> {
  let deleted = 0;
  for (let batch = 0; batch < limits.batches; batch++) {
    const found = await deps.store.finished(query, limits.batchSize);
    let removedHere = 0;
    for (const task of found) {
      const removed = await deps.queue.removeFinished(task.id);
      if (removed.length === 0) continue;
      removedHere++;
      await dropTaskDocuments(
        deps.blobs,
        removed.map((id) => blobKeys.folder(id)),
        deps.log,
      );
    }
    deleted += removedHere;
    // A short batch was the last; one that removed nothing would only find the same tasks again.
    if (found.length < limits.batchSize || removedHere === 0) return { deleted, more: false };
  }
  return { deleted, more: true };
}

/**
 * One retention pass at `now`: per final status, the tasks of jobs without a window of their own
 * under the site's window, then each job with its own window under that one. Answers how many
 * top-level tasks it removed and whether the limits left some for the next pass.
 */
export async function sweepRetention(
  deps: PurgeDeps,
  windows: RetentionWindows,
  jobs: ReadonlyMap<string, JobRetention>,
  now: number,
  limits: PurgeLimits,
): Promise<PurgeReport> {
  const report: PurgeReport = { deleted: 0, more: false };
  const add = (part: PurgeReport): void => {
    report.deleted += part.deleted;
    report.more ||= part.more;
  };
  for (const status of FINISHED_STATUSES) {
    const key = WINDOW_OF[status];
    const ownWindow = [...jobs].filter(([, retention]) => retention[key] !== undefined);
    const site = windows[key];
    if (site !== null) {
      add(await purgeFinished(deps, { status, endedBefore: now - site, exceptJobs: ownWindow.map(([job]) => job) }, limits));
    }
    for (const [job, retention] of ownWindow) {
      const window = retention[key];
      if (window === null || window === undefined) continue;
      add(await purgeFinished(deps, { status, endedBefore: now - window, job }, limits));
    }
  }
  return report;
}

export interface RetentionSweeperOptions {
  purge: PurgeDeps;
  windows: RetentionWindows;
  /** The jobs with windows of their own (job.yaml `retention`), read at every pass so an edit takes effect. */
  jobs: () => Promise<ReadonlyMap<string, JobRetention>>;
  sweepMs: number;
  batchSize: number;
  log: { info(msg: string): void; warn(msg: string): void };
  now?: () => number;
}

/** Batches of one pass: a pass stays short; what is left waits for the next one. */
const BATCHES_PER_PASS = 5;

/** The shortest pause between two passes, however short a window is. */
const MIN_SWEEP_MS = 1000;

/**
 * The pause before the next pass: `sweepMs`, or shorter when a window (the site's or a job's) is
 * shorter than that, so a task never outlives a 1 s window by a whole minute; at least MIN_SWEEP_MS.
 */
export function nextSweepDelay(sweepMs: number, windows: RetentionWindows, jobs: ReadonlyMap<string, JobRetention>): number {
  const all = [windows, ...jobs.values()].flatMap((w) => [w.outputMs, w.errorMs, w.canceledMs]);
  const shortest = Math.min(sweepMs, ...all.filter((ms): ms is number => typeof ms === "number"));
  return Math.max(MIN_SWEEP_MS, Math.min(sweepMs, shortest));
}

/**
 * Runs a retention pass every `sweepMs`, or as often as the shortest window asks (nextSweepDelay),
 * one at a time (the active queuer's; a standby never starts one). A pass that cannot read the
 * jobs' own windows is skipped: under the site's windows it could remove tasks a job keeps longer.
 * Answers how to stop (waiting for a pass under way).
 */
export function startRetentionSweeps(opts: RetentionSweeperOptions): { stop(): Promise<void> } {
  const now = opts.now ?? Date.now;
  let running: Promise<void> | null = null;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let delay = nextSweepDelay(opts.sweepMs, opts.windows, new Map());
  const pass = async (): Promise<void> => {
    let jobs: ReadonlyMap<string, JobRetention>;
    try {
      jobs = await opts.jobs();
    } catch (err) {
      opts.log.warn(`retention pass skipped: the jobs' own retention could not be read: ${errorMessage(err)}`);
      return;
    }
    delay = nextSweepDelay(opts.sweepMs, opts.windows, jobs);
    const report = await sweepRetention(opts.purge, opts.windows, jobs, now(), { batchSize: opts.batchSize, batches: BATCHES_PER_PASS });
    if (report.deleted > 0) {
      opts.log.info(`retention removed ${report.deleted} finished task(s) with their documents${report.more ? " (more next pass)" : ""}`);
    }
  };
  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass()
        // The next pass tries again; finished tasks only stay a little longer.
        .catch((err: unknown) => opts.log.warn(`retention pass failed: ${errorMessage(err)}`))
        .finally(() => {
          running = null;
          schedule();
        });
    }, delay);
  };
  schedule();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
