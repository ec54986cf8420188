import type { KeyRing } from "../accounts/key-ring.js";
import type { BlobStore } from "../blobs/blob-store.js";
import { dropTaskDocuments, type TaskDocumentsLog } from "../blobs/task-documents.js";
import type { WorkerLoad } from "../model/claims.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import type { StolenCounts, TaskStore } from "../store/task-store.js";
import { parseMessage, type QueuerAction, type QueuerAnswer, type QueuerMessage } from "./protocol.js";
import type { TaskQueue } from "./task-queue.js";
import { purgeFinished } from "./retention.js";
import type { Task } from "../model/task-model.js";
import { scheduleHandlers } from "../schedules/schedule-actions.js";

/** What the queuer's actions act on. */
export interface QueuerActionDeps {
  queue: TaskQueue;
  store: TaskStore;
  keys: KeyRing;
  site: string;
  /** A worker silent for three heartbeats no longer counts in the backlog's idle slots or the stats. */
  heartbeatMs: number;
  /** The site's documents: cancel and delete drop what their answers name. */
  blobs: BlobStore;
  log: TaskDocumentsLog;
  now?: () => number;
}

/** One bulk clean stays within the controller's call timeout; `more` in its answer says to call again. */
const PURGE_LIMITS = { batchSize: 200, batches: 5 };

/**
 * Where a call comes from, as only this process can tell (never a field of the message): a call
 * through the broker is from elsewhere, even from a service of the same broker.
 */
export interface CallOrigin {
  /** A caller in this very process (LocalQueuer): its pulls may be answered before the claim is durable. */
  sameProcess: boolean;
}

/** One handler per action, taking the parsed message. */
export type QueuerHandlers = { [A in QueuerAction]: (message: QueuerMessage<A>, origin?: CallOrigin) => Promise<QueuerAnswer<A>> };

/** Per other site: tasks stolen in (run here for it) and out (this site's, run there). */
function stealingBySite(counts: StolenCounts): Record<string, { stolenIn: number; stolenOut: number }> {
  const sites = new Set([...Object.keys(counts.in), ...Object.keys(counts.out)]);
  return Object.fromEntries([...sites].sort().map((site) => [site, { stolenIn: counts.in[site] ?? 0, stolenOut: counts.out[site] ?? 0 }]));
}

/**
 * The queuer's actions over a TaskQueue: the Moleculer service registers them, the direct client
 * (tests) calls them, both through `dispatch`, so a message is checked the same way either way.
 */
export function queuerHandlers(deps: QueuerActionDeps): QueuerHandlers {
  const { queue, store, keys, blobs, log } = deps;
  const now = deps.now ?? Date.now;
  /** The load each worker reported with its last heartbeat. */
  const workers = new Map<string, WorkerLoad & { seenAt: number; busyHome: number }>();
  const homePrefix = `${deps.site}-`;
  const liveWorkers = (): [string, WorkerLoad & { busyHome: number }][] => {
    const at = now();
    return [...workers.entries()].filter(([, w]) => at - w.seenAt < 3 * deps.heartbeatMs);
  };

  return {
    submit: async ({ quota, inputBytes, ...spec }) => {
      // A steal weighs moving the document: its size enters the queue with the task.
      return queue.submit(spec, {
        ...(quota === undefined ? {} : { quota }),
        ...(inputBytes === undefined ? {} : { inputBytes }),
      });
    },
    submitMany: async ({ tasks, quota }) => {
      const inputBytes = tasks.reduce((sum, task) => sum + (task.inputBytes ?? 0), 0);
      const specs = tasks.map(({ inputBytes: _bytes, ...spec }) => spec);
      const sizes = tasks.map((task) => task.inputBytes);
      const created = await queue.submitMany(specs, { ...(quota === undefined ? {} : { quota }), inputBytes, sizes });
      return { ids: created.map((task) => task.id) };
    },
    pull: async ({ owner, max }, origin) => {
      const pulled = await queue.pull(owner, max, origin);
      // A worker not yet heard from by heartbeat (its first comes a heartbeat after it started, or
      // after this queuer took over) has at least `max` slots: without this a lend in that window
      // would see no slot at this site and take any move for paying.
      const heard = workers.get(owner);
      if (heard === undefined || now() - heard.seenAt >= 3 * deps.heartbeatMs) {
        const busyHome = pulled.reduce((n, task) => (task.id.startsWith(homePrefix) ? n + 1 : n), 0);
        workers.set(owner, { slots: max, busy: pulled.length, seenAt: now(), busyHome });
      }
      return pulled;
    },
    heartbeat: ({ owner, ids, slots, busy }) => {
      // Its leases on this site's own tasks: slots a thief cannot count on soon (stolen ones free as they end).
      const busyHome = ids.reduce((n, id) => (id.startsWith(homePrefix) ? n + 1 : n), 0);
      workers.set(owner, { slots, busy, seenAt: now(), busyHome });
      return queue.heartbeat(owner, ids);
    },
    succeed: ({ output, processedBy, ...claim }) => queue.succeed(claim, { output, processedBy }),
    fail: ({ error, retryable, processedBy, ...claim }) =>
      queue.fail(claim, error, { retryable, ...(processedBy === undefined ? {} : { processedBy }) }),
    split: ({ children, processedBy, ...claim }) => queue.split(claim, children, processedBy),
    progress: ({ progress, message, ...claim }) => queue.progress(claim, progress, message),
    lend: ({ thief, max, minPriority, weighing }) => {
      if (weighing === undefined) return queue.lend(thief, max, minPriority);
      const live = liveWorkers();
      const ownerSlots = live.reduce((sum, [, w]) => sum + w.slots, 0);
      const ownerBusy = live.reduce((sum, [, w]) => sum + Math.min(w.slots, w.busy), 0);
      return queue.lend(thief, max, minPriority, { ...weighing, ownerSlots, ownerBusy });
    },
    renew: ({ owner, ids }) => queue.heartbeat(owner, ids),
    backlog: async () => {
      const counts = queue.queueCounts();
      const idleSlots = liveWorkers().reduce((sum, [, w]) => sum + Math.max(0, w.slots - w.busy), 0);
      const slots = liveWorkers().reduce((sum, [, w]) => sum + w.slots, 0);
      const busyHome = liveWorkers().reduce((sum, [, w]) => sum + Math.min(w.slots, w.busyHome), 0);
      return { queued: counts.ready, highestPriority: counts.highestPriority, idleSlots, readyHome: queue.readyHome(), slots, busyHome };
    },
    cancel: async ({ id }) => {
      const report = await queue.cancel(id);
      await dropTaskDocuments(blobs, report.drop, log);
      return report;
    },
    delete: async ({ id }) => {
      const report = await queue.delete(id);
      await dropTaskDocuments(blobs, report.drop, log);
      return report;
    },
    release: ({ reason, ...claim }) => queue.release(claim, reason),
    retry: async ({ id }) => {
      const task = await queue.retry(id, (willRun) => requireInputs(blobs, id, willRun));
      return { id: task.id, status: task.status };
    },
    purge: ({ status, endedBefore, user }) =>
      purgeFinished({ queue, store, blobs, log }, { status, endedBefore, ...(user === undefined ? {} : { user }) }, PURGE_LIMITS),
    get: async ({ id }) => {
      const task = await store.get(id);
      if (task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
      return task;
    },
    list: ({ cursor, limit, ...filter }) => store.list(filter, { limit: limit ?? 100, cursor: cursor ?? null }),
    stats: async () => {
      const live = liveWorkers();
      return {
        site: deps.site,
        byStatus: await store.countByStatus(),
        queue: queue.queueCounts(),
        queuedByPriority: queue.countsByPriority(),
        workers: live.map(([owner, w]) => ({ owner, slots: w.slots, busy: w.busy })),
        slots: live.reduce((sum, [, w]) => sum + w.slots, 0),
        stealing: stealingBySite(await store.countStolen(deps.site)),
      };
    },
    finishedPerMinute: ({ since }) => store.finishedPerMinute(since),
    createKey: ({ user, limits }) => keys.create(user, limits),
    listKeys: () => keys.list(),
    revokeKey: ({ id }) => keys.revoke(id),
    /** Asked by the controller on every request: a map lookup. */
    authenticate: async ({ hash }) => keys.authenticate(hash),
    usage: ({ user, from, to }) => store.usage({ ...(user === undefined ? {} : { user }), from, to }),
    /** Bytes a user downloaded: the controller streams results, the queuer keeps the books. */
    addUsage: async ({ user, bytesOut }) => {
      await queue.recordUsage(user, now(), { bytesOut });
      return true;
    },
    ...scheduleHandlers({ store, blobs, log, now }),
  };
}

/** Checks `raw` as the message of `action` and runs its handler; a bad message rejects, as over the broker. */
export async function dispatch<A extends QueuerAction>(
  handlers: QueuerHandlers,
  action: A,
  raw: unknown,
  origin?: CallOrigin,
): Promise<QueuerAnswer<A>> {
  const handler = handlers[action] as (message: QueuerMessage<A>, origin?: CallOrigin) => Promise<QueuerAnswer<A>>;
  return handler(parseMessage(action, raw), origin);
}

/**
 * Refuses a retry (TASK_NOT_IN_STATE) when a task it would run has lost its input document: a
 * user's cancel or DELETE removed it, and a run without it could only fail.
 */
async function requireInputs(blobs: BlobStore, id: string, willRun: readonly Task[]): Promise<void> {
  for (const task of willRun) {
    // A workflow step merging several upstreams reads their outputs (`inputs`), not an input of its own.
    const documents = [...(task.input === null ? [] : [task.input]), ...(task.inputs ?? [])];
    const present = await Promise.all(documents.map(async (key) => (await blobs.stat(key)) !== null));
    if (present.every(Boolean)) continue;
    const which = task.id === id ? `task ${id}` : `task ${id}'s part ${task.id}`;
    throw docqError(ERROR_CODE.TaskNotInState, `${which} cannot be retried: its documents were removed (it was canceled or deleted)`, {
      details: { status: task.status, documents: "removed" },
    });
  }
}
