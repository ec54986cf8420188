import type { BlobStore } from "./blob-store.js";
import { isFinal, type Task } from "../model/task-model.js";
import type { TaskStore } from "../store/task-store.js";
import { SCHEDULE_BLOB_ROOT } from "../schedules/schedule-model.js";
import { partOutputOf } from "../queue/new-task.js";

/*
 * Documents nothing refers to any more, found by comparing the blob store with the task store:
 * - the input of an upload whose task was never created (the process died between the two);
 * - outputs and split parts of attempts that ended without their result being accepted (a worker
 *   killed after storing, a cancel racing with a completion, a split abandoned by a crash); a
 *   split part's outputs, kept in its parent's folder, are judged by the part's record;
 * - whatever an adapter keeps aside (the fs store's partial uploads, empty folders).
 * A schedule's document (under `schedules/`) stays while its schedule exists.
 * Keys of a task's current attempt, or younger than the grace period (an upload about to become a
 * task, a worker about to report), are left alone: the collector never races the queue.
 */

export interface BlobGcOptions {
  blobs: BlobStore;
  store: TaskStore;
  /** A blob or temp file untouched for less than this is never collected. */
  graceMs: number;
  now?: () => number;
}

export interface BlobGcReport {
  /** Task folders looked at. */
  folders: number;
  /** Blobs removed. */
  removed: number;
  /** Adapter leftovers removed (partial uploads, empty folders). */
  leftovers: number;
}

/** `<attempt>` of `output-<attempt>` and `split-<attempt>/...`, or null for other names. */
function attemptOf(rest: string): number | null {
  const match = /^(?:output-|split-)(\d+)(?:\/|$)/.exec(rest);
  return match === null ? null : Number(match[1]);
}

/** Whether an output of `task`'s attempt `attempt` is still needed (`key`: the output's key). */
function attemptNeeded(task: Task, key: string, attempt: number): boolean {
  if (key === task.output) return true;
  if (isFinal(task.status)) return false;
  // The current attempt (or one claimed since the task was read) may still be storing or reporting.
  return attempt >= task.tries;
}

/** What the GC knows of a task's children: their inputs (the split's parts) and the children by id. */
interface Parts {
  inputs: ReadonlySet<string>;
  byId: ReadonlyMap<string, Task>;
}

/** Whether `key` (under `task`'s folder) is still needed. */
function needed(task: Task, key: string, parts: Parts): boolean {
  if (key === task.input || parts.inputs.has(key)) return true;
  const name = key.slice(task.id.length + 1);
  const partOutput = partOutputOf(name);
  if (partOutput !== null) {
    // A part's output, kept in its parent's folder: needed as long as the part would need it in its own.
    const part = parts.byId.get(partOutput.partId);
    return part !== undefined && attemptNeeded(part, key, partOutput.tries);
  }
  const attempt = attemptOf(name);
  // Not a name the worker writes: not ours to judge.
  if (attempt === null) return true;
  return attemptNeeded(task, key, attempt);
}

/** One pass over every blob; answers what it removed. */
export async function collectBlobGarbage(opts: BlobGcOptions): Promise<BlobGcReport> {
  const now = (opts.now ?? Date.now)();
  const report: BlobGcReport = { folders: 0, removed: 0, leftovers: 0 };
  let folder: { id: string; keys: { key: string; modifiedAt: number }[] } | null = null;

  const judge = async (id: string, keys: readonly { key: string; modifiedAt: number }[]): Promise<void> => {
    report.folders++;
    const old = keys.filter((k) => now - k.modifiedAt >= opts.graceMs);
    if (old.length === 0) return;
    if (id === SCHEDULE_BLOB_ROOT) {
      await judgeScheduleDocuments(old);
      return;
    }
    const task = await opts.store.get(id);
    let garbage: string[];
    if (task === null) {
      garbage = old.map((k) => k.key);
    } else {
      // A part's output may outlive a split its parent retried since: its children are read for it too.
      const hasPartOutputs = old.some((k) => partOutputOf(k.key.slice(id.length + 1)) !== null);
      const children = task.childrenTotal > 0 || hasPartOutputs ? await opts.store.children(id) : [];
      const parts: Parts = {
        inputs: new Set(children.flatMap((c) => (c.input === null ? [] : [c.input]))),
        byId: new Map(children.map((c) => [c.id, c])),
      };
      garbage = old.filter((k) => !needed(task, k.key, parts)).map((k) => k.key);
    }
    for (const key of garbage) await opts.blobs.delete(key);
    report.removed += garbage.length;
  };

  /** A schedule's document (`schedules/<id>/...`) is needed while the schedule exists. */
  const judgeScheduleDocuments = async (keys: readonly { key: string }[]): Promise<void> => {
    const exists = new Map<string, boolean>();
    for (const { key } of keys) {
      const scheduleId = key.split("/")[1] ?? "";
      if (!exists.has(scheduleId)) exists.set(scheduleId, (await opts.store.getSchedule(scheduleId)) !== null);
      if (exists.get(scheduleId) === true) continue;
      await opts.blobs.delete(key);
      report.removed++;
    }
  };

  // Keys come grouped by folder (a listing is in key order), so one task is read once.
  for await (const entry of opts.blobs.list()) {
    const slash = entry.key.indexOf("/");
    if (slash <= 0) continue;
    const id = entry.key.slice(0, slash);
    if (folder !== null && folder.id !== id) {
      await judge(folder.id, folder.keys);
      folder = null;
    }
    folder ??= { id, keys: [] };
    folder.keys.push(entry);
  }
  if (folder !== null) await judge(folder.id, folder.keys);
  if (opts.blobs.sweepLeftovers !== undefined) report.leftovers = await opts.blobs.sweepLeftovers(now - opts.graceMs);
  return report;
}
