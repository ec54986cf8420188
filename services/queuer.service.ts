import type { Context, ServiceSchema } from "moleculer";
import type { BlobStore } from "../common/blobs/blob-store.js";
import { collectBlobGarbage } from "../common/blobs/blob-gc.js";
import { KeyRing } from "../common/accounts/key-ring.js";
import { errorMessage } from "../common/model/errors.js";
import { parseMessage } from "../common/queue/queue-messages.js";
import type { TaskQueue } from "../common/queue/task-queue.js";
import type { StolenCounts, TaskStore } from "../common/store/task-store.js";
import { docqError, ERROR_CODE } from "../common/model/errors.js";
import type { Task } from "../common/model/task-model.js";
import type { WorkerLoad } from "../common/worker/worker-pool.js";

export const QUEUER_EVENTS = {
  queued: "docq.task.queued",
  canceled: "docq.task.canceled",
  /** A pull found nothing ready: the stealer's cue. Payload: { idleSlots }. */
  empty: "docq.queue.empty",
  /** A task run here for another site ended. Payload: the Task. */
  proxyDone: "docq.proxy.done",
} as const;

export interface QueuerDeps {
  queue: TaskQueue;
  store: TaskStore;
  site: string;
  sweepMs: number;
  heartbeatMs: number;
  /** The site's documents: the queuer removes those no task refers to. */
  blobs: BlobStore;
  gc: { intervalMs: number; graceMs: number };
}

/** Per other site: tasks stolen in (run here for it) and out (this site's, run there). */
function stealingBySite(counts: StolenCounts): Record<string, { stolenIn: number; stolenOut: number }> {
  const sites = new Set([...Object.keys(counts.in), ...Object.keys(counts.out)]);
  return Object.fromEntries([...sites].sort().map((site) => [site, { stolenIn: counts.in[site] ?? 0, stolenOut: counts.out[site] ?? 0 }]));
}

/** The queuer: Moleculer wiring around TaskQueue, which holds the logic. */
export function queuerService(deps: QueuerDeps): ServiceSchema {
  const { queue, store } = deps;
  const keys = new KeyRing(store);
  const workers = new Map<string, WorkerLoad & { seenAt: number }>();
  let sweepTimer: NodeJS.Timeout | undefined;
  let gcTimer: NodeJS.Timeout | undefined;
  let gcRunning: Promise<void> | null = null;

  return {
    name: "queuer",
    actions: {
      submit: (ctx: Context) => {
        const { quota, inputBytes, ...spec } = parseMessage("submit", ctx.params);
        return queue.submit(spec, { ...(quota === undefined ? {} : { quota }), ...(inputBytes === undefined ? {} : { inputBytes }) });
      },
      createKey: (ctx: Context) => {
        const { user, limits } = parseMessage("createKey", ctx.params);
        return keys.create(user, limits);
      },
      listKeys: () => keys.list(),
      revokeKey: (ctx: Context) => keys.revoke(parseMessage("byId", ctx.params).id),
      /** The key whose secret hashes to `hash`, or null: asked by the controller on every request. */
      authenticate: (ctx: Context) => keys.authenticate(parseMessage("authenticate", ctx.params).hash),
      usage: (ctx: Context) => {
        const { user, from, to } = parseMessage("usage", ctx.params);
        return store.usage({ ...(user === undefined ? {} : { user }), from, to });
      },
      /** Bytes a user downloaded: the controller streams results, the queuer keeps the books. */
      addUsage: async (ctx: Context) => {
        const { user, bytesOut } = parseMessage("addUsage", ctx.params);
        await queue.recordUsage(user, Date.now(), { bytesOut });
        return true;
      },
      pull: (ctx: Context) => {
        const { owner, max } = parseMessage("pull", ctx.params);
        return queue.pull(owner, max);
      },
      heartbeat: (ctx: Context) => {
        const { owner, ids, slots, busy } = parseMessage("heartbeat", ctx.params);
        workers.set(owner, { slots, busy, seenAt: Date.now() });
        return queue.heartbeat(owner, ids);
      },
      complete: (ctx: Context) => {
        const { output, processedBy, ...claim } = parseMessage("complete", ctx.params);
        return queue.complete(claim, { output, processedBy });
      },
      fail: (ctx: Context) => {
        const { error, retryable, processedBy, ...claim } = parseMessage("fail", ctx.params);
        return queue.fail(claim, error, { retryable, ...(processedBy === undefined ? {} : { processedBy }) });
      },
      split: (ctx: Context) => {
        const { children, processedBy, ...claim } = parseMessage("split", ctx.params);
        return queue.split(claim, children, processedBy);
      },
      mergeInputs: (ctx: Context) => queue.mergeInputs(parseMessage("byId", ctx.params).id),
      cancel: (ctx: Context) => queue.cancel(parseMessage("byId", ctx.params).id),
      lend: (ctx: Context) => {
        const { thief, max, minPriority } = parseMessage("lend", ctx.params);
        return queue.lend(thief, max, minPriority);
      },
      /** Lease renewal for a remote holder (a thief site), which has no slots to report. */
      renew: (ctx: Context) => {
        const { owner, ids } = parseMessage("renew", ctx.params);
        return queue.heartbeat(owner, ids);
      },
      /** What this site would lend now, and how many of its slots are idle. */
      backlog: () => {
        const counts = queue.queueCounts();
        const now = Date.now();
        const idleSlots = [...workers.values()].filter((w) => now - w.seenAt < 3 * deps.heartbeatMs).reduce((sum, w) => sum + Math.max(0, w.slots - w.busy), 0);
        return { queued: counts.ready, highestPriority: counts.highestPriority, idleSlots };
      },
      remove: (ctx: Context) => queue.remove(parseMessage("byId", ctx.params).id),
      get: async (ctx: Context): Promise<Task> => {
        const { id } = parseMessage("byId", ctx.params);
        const task = await store.get(id);
        if (task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
        return task;
      },
      list: (ctx: Context) => {
        const { cursor, limit, ...filter } = parseMessage("list", ctx.params);
        return store.list(filter, { limit: limit ?? 100, cursor: cursor ?? null });
      },
      stats: async () => {
        const now = Date.now();
        const live = [...workers.entries()].filter(([, w]) => now - w.seenAt < 3 * deps.heartbeatMs);
        return {
          site: deps.site,
          byStatus: await store.countByStatus(),
          queue: queue.queueCounts(),
          queuedByPriority: queue.index.countsByPriority(),
          workers: live.map(([owner, w]) => ({ owner, slots: w.slots, busy: w.busy })),
          slots: live.reduce((sum, [, w]) => sum + w.slots, 0),
          stealing: stealingBySite(await store.countStolen(deps.site)),
        };
      },
    },
    async started() {
      queue.on("task:queued", () => void this.broker.broadcast(QUEUER_EVENTS.queued, { site: deps.site }));
      queue.on("task:canceled", (c) => void this.broker.broadcast(QUEUER_EVENTS.canceled, c));
      queue.on("queue:empty", (e) => void this.broker.broadcast(QUEUER_EVENTS.empty, e));
      queue.on("task:done", (task) => {
        if (task.site !== deps.site && task.parentId === null) void this.broker.broadcast(QUEUER_EVENTS.proxyDone, task);
      });
      queue.on("usage:lost", (lost) => this.logger.warn(`usage of ${lost.user} not recorded (${JSON.stringify(lost.delta)}): ${lost.error}`));
      const keyCount = await keys.load();
      if (keyCount > 0) this.logger.info(`${keyCount} API key(s) loaded`);
      const report = await queue.reload();
      this.logger.info(`queue reloaded in ${report.ms} ms: ${report.queued} queued, ${report.working} running elsewhere, ${report.requeued} requeued`);
      sweepTimer = setInterval(() => {
        queue.sweepExpiredLeases().catch((err: unknown) => this.logger.warn("lease sweep failed:", err));
      }, deps.sweepMs);
      const collectGarbage = (): void => {
        if (gcRunning !== null) return;
        gcRunning = collectBlobGarbage({ blobs: deps.blobs, store, graceMs: deps.gc.graceMs })
          .then((gc) => {
            if (gc.removed + gc.leftovers > 0) this.logger.info(`removed ${gc.removed} document(s) no task refers to and ${gc.leftovers} leftover(s), ${gc.folders} task folder(s) checked`);
          })
          // The next pass tries again; documents only wait longer to be removed.
          .catch((err: unknown) => this.logger.warn(`removing unreferenced documents failed: ${errorMessage(err)}`))
          .finally(() => {
            gcRunning = null;
          });
      };
      // At start: a crash may just have left some behind.
      collectGarbage();
      gcTimer = setInterval(collectGarbage, deps.gc.intervalMs);
    },
    async stopped() {
      clearInterval(sweepTimer);
      clearInterval(gcTimer);
      await gcRunning;
      queue.stop();
      queue.removeAllListeners();
    },
  };
}
