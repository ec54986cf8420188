import type { Context, ServiceSchema } from "moleculer";
import type { BlobStore } from "../common/blobs/blob-store.js";
import { collectBlobGarbage } from "../common/blobs/blob-gc.js";
import { KeyRing } from "../common/accounts/key-ring.js";
import { errorMessage } from "../common/model/errors.js";
import { QUEUER_ACTION_NAMES, QUEUER_ACTIONS, QUEUER_SERVICE } from "../common/queue/protocol.js";
import { dispatch, dropDocumentsOnCascade, queuerHandlers } from "../common/queue/queuer-actions.js";
import type { TaskQueue } from "../common/queue/task-queue.js";
import type { TaskStore } from "../common/store/task-store.js";

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

/** The queuer: Moleculer wiring around TaskQueue, which holds the logic. */
export function queuerService(deps: QueuerDeps): ServiceSchema {
  const { queue, store } = deps;
  const keys = new KeyRing(store);
  let sweepTimer: NodeJS.Timeout | undefined;
  let gcTimer: NodeJS.Timeout | undefined;
  let gcRunning: Promise<void> | null = null;
  let handlers: ReturnType<typeof queuerHandlers> | undefined;

  return {
    name: QUEUER_SERVICE,
    // Every action of the protocol, each message checked before its handler acts on it.
    actions: Object.fromEntries(
      QUEUER_ACTION_NAMES.map((action) => [
        QUEUER_ACTIONS[action],
        (ctx: Context) => {
          if (handlers === undefined) throw new Error(`the queuer got ${action} before it started`);
          return dispatch(handlers, action, ctx.params);
        },
      ]),
    ),
    created() {
      const { site, heartbeatMs, blobs } = deps;
      handlers = queuerHandlers({ queue, store, keys, site, heartbeatMs, blobs, log: this.logger });
    },
    async started() {
      queue.on("task:queued", () => void this.broker.broadcast(QUEUER_EVENTS.queued, { site: deps.site }));
      queue.on("task:canceled", (c) => void this.broker.broadcast(QUEUER_EVENTS.canceled, c));
      queue.on("queue:empty", (e) => void this.broker.broadcast(QUEUER_EVENTS.empty, e));
      queue.on("task:done", (task) => {
        if (task.site !== deps.site && task.parentId === null) void this.broker.broadcast(QUEUER_EVENTS.proxyDone, task);
      });
      dropDocumentsOnCascade(queue, deps.blobs, this.logger);
      queue.on("usage:lost", (lost) =>
        this.logger.warn(`usage of ${lost.user} not recorded (${JSON.stringify(lost.delta)}): ${lost.error}`),
      );
      const keyCount = await keys.load();
      if (keyCount > 0) this.logger.info(`${keyCount} API key(s) loaded`);
      const report = await queue.reload();
      this.logger.info(
        `queue reloaded in ${report.ms} ms: ${report.queued} queued, ${report.working} running elsewhere, ${report.requeued} requeued`,
      );
      sweepTimer = setInterval(() => {
        queue.sweepExpiredLeases().catch((err: unknown) => this.logger.warn("lease sweep failed:", err));
      }, deps.sweepMs);
      const collectGarbage = (): void => {
        if (gcRunning !== null) return;
        gcRunning = collectBlobGarbage({ blobs: deps.blobs, store, graceMs: deps.gc.graceMs })
          .then((gc) => {
            if (gc.removed + gc.leftovers > 0)
              this.logger.info(
                `removed ${gc.removed} document(s) no task refers to and ${gc.leftovers} leftover(s), ${gc.folders} task folder(s) checked`,
              );
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
