import path from "node:path";
import type { LeaseClaim, WorkerLoad } from "../model/claims.js";
import type { Task } from "../model/task-model.js";
import type { WorkerQueue } from "../queue/queue-client.js";
import { TaskQueue, type TaskQueueOptions } from "../queue/task-queue.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";

/** A real queue over a SQLite file in `dir`, with short backoffs: what worker tests and benches run against. */
export function sqliteQueue(
  dir: string,
  opts: Partial<Omit<TaskQueueOptions, "store">> = {},
): { store: SqliteTaskStore; queue: TaskQueue } {
  const store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  const queue = new TaskQueue({
    store,
    site: "test",
    leaseMs: 30_000,
    backoffBaseMs: 10,
    backoffMaxMs: 100,
    requeueWorkOnReload: false,
    maxSplitDepth: 3,
    ...opts,
  });
  return { store, queue };
}

/** What a worker asked of the queue, for assertions. */
export interface WorkerQueueCalls {
  succeed: { claim: LeaseClaim; accepted: boolean }[];
  fail: { claim: LeaseClaim; error: string; retryable: boolean }[];
  pulls: Promise<Task[]>[];
  heartbeats: { ids: string[]; load: WorkerLoad }[];
  /** Progress reports, when the test asks for them. */
  progress?: { claim: LeaseClaim; progress: number; message: string | null }[];
}

/**
 * The worker's WorkerQueue as direct calls to a real queue, each noted in `calls` when given. The
 * worker is in the queue's process, as in embedded mode (LocalQueuer): its pulls may be answered
 * before their claims are committed.
 */
export function directWorkerQueue(queue: TaskQueue, calls?: WorkerQueueCalls): WorkerQueue {
  return {
    pull: (owner, max) => {
      const pulled = queue.pull(owner, max, { sameProcess: true });
      calls?.pulls.push(pulled);
      return pulled;
    },
    heartbeat: (owner, ids, load) => {
      calls?.heartbeats.push({ ids, load });
      return queue.heartbeat(owner, ids);
    },
    succeed: async (claim, result) => {
      const accepted = await queue.succeed(claim, result);
      calls?.succeed.push({ claim, accepted });
      return accepted;
    },
    fail: async (claim, error, opts) => {
      calls?.fail.push({ claim, error, retryable: opts.retryable });
      return queue.fail(claim, error, opts);
    },
    split: (claim, children, processedBy) => queue.split(claim, children, processedBy),
    release: (claim, reason) => queue.release(claim, reason),
    progress: async (claim, progress, message) => {
      calls?.progress?.push({ claim, progress, message });
      return queue.progress(claim, progress, message);
    },
  };
}
