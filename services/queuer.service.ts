import type { Context, ServiceSchema } from "moleculer";
import type { BlobStore } from "../common/blobs/blob-store.js";
import { collectBlobGarbage } from "../common/blobs/blob-gc.js";
import { KeyRing } from "../common/accounts/key-ring.js";
import { errorMessage } from "../common/model/errors.js";
import { QUEUER_ACTION_NAMES, QUEUER_ACTIONS, QUEUER_SERVICE } from "../common/queue/protocol.js";
import { dispatch, queuerHandlers } from "../common/queue/queuer-actions.js";
import type { TaskQueue } from "../common/queue/task-queue.js";
import type { LocalQueuer } from "../common/queue/local-queuer.js";
import type { TaskStore } from "../common/store/task-store.js";
import { TaskEventPublisher } from "../common/events/task-event-publisher.js";
import { TASK_EVENTS_BROADCAST } from "../common/events/task-event.js";
import { failedAttemptLine } from "../common/queue/attempt-log.js";
import { WebhookDispatcher, type WebhookSettings } from "../common/webhooks/webhook-dispatcher.js";
import { ScheduleFirer } from "../common/schedules/schedule-firer.js";
import { startRetentionSweeps, type JobRetention, type RetentionWindows } from "../common/queue/retention.js";

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
  /** Deliveries to the callbackUrl of this site's ended tasks. */
  webhooks: WebhookSettings;
  /** How long finished tasks are kept (config `retention`), and the jobs with windows of their own. */
  retention: RetentionWindows & { sweepMs: number; batchSize: number; jobs: () => Promise<ReadonlyMap<string, JobRetention>> };
  /** Embedded mode: the workers of this process call the handlers directly once the queue serves (local-queuer.ts). */
  local?: LocalQueuer;
}

/** Pending webhook deliveries resumed at start; more wait for the next start (they stay pending in their records). */
const RESUMED_CALLBACKS_MAX = 10_000;

/** The queuer: Moleculer wiring around TaskQueue, which holds the logic. */
export function queuerService(deps: QueuerDeps): ServiceSchema {
  const { queue, store } = deps;
  const keys = new KeyRing(store);
  let sweepTimer: NodeJS.Timeout | undefined;
  let gcTimer: NodeJS.Timeout | undefined;
  let retention: { stop(): Promise<void> } | undefined;
  let gcRunning: Promise<void> | null = null;
  let handlers: ReturnType<typeof queuerHandlers> | undefined;
  let webhooks: WebhookDispatcher | undefined;
  let taskEvents: TaskEventPublisher | undefined;
  let schedules: ScheduleFirer | undefined;

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
      // Every change of a task, numbered and batched, to the site's controllers (GET /api/events).
      const publisher = new TaskEventPublisher((batch) => void this.broker.broadcast(TASK_EVENTS_BROADCAST, batch));
      taskEvents = publisher;
      queue.on("task:changed", (task) => publisher.changed(task));
      queue.on("task:queued", () => void this.broker.broadcast(QUEUER_EVENTS.queued, { site: deps.site }));
      queue.on("task:canceled", (c) => void this.broker.broadcast(QUEUER_EVENTS.canceled, c));
      queue.on("queue:empty", (e) => void this.broker.broadcast(QUEUER_EVENTS.empty, e));
      queue.on("task:done", (task) => {
        if (task.site !== deps.site && task.parentId === null) void this.broker.broadcast(QUEUER_EVENTS.proxyDone, task);
      });
      queue.on("attempt:ended", ({ task, attempt }) => {
        const line = failedAttemptLine(task, attempt);
        if (line !== null) this.logger.warn(line);
      });
      const dispatcher = startWebhooks(deps, this.logger);
      webhooks = dispatcher;
      // Only a task of this site: a task run here for another site is delivered by its home site.
      queue.on("task:done", (task) => {
        if (task.parentId === null && task.site === deps.site && task.callbackUrl !== null) dispatcher.deliver(task);
      });
      queue.on("usage:lost", (lost) =>
        this.logger.warn(`usage of ${lost.user} not recorded (${JSON.stringify(lost.delta)}): ${lost.error}`),
      );
      const keyCount = await keys.load();
      if (keyCount > 0) this.logger.info(`${keyCount} API key(s) loaded`);
      const report = await queue.reload();
      this.logger.info(
        `queue reloaded in ${report.ms} ms: ${report.queued} queued, ${report.working} running elsewhere, ${report.requeued} requeued`,
      );
      // Deliveries a stopped queuer left pending (or never began) go on; the queue does not wait for them.
      store.pendingCallbacks(RESUMED_CALLBACKS_MAX).then(
        (tasks) => {
          for (const task of tasks) if (task.site === deps.site) dispatcher.deliver(task);
          if (tasks.length > 0) this.logger.info(`${tasks.length} webhook delivery(ies) resumed`);
        },
        (err: unknown) => this.logger.warn(`pending webhook deliveries not resumed (they are at the next start): ${errorMessage(err)}`),
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
      const { sweepMs, batchSize, jobs, ...windows } = deps.retention;
      const purge = { queue, store, blobs: deps.blobs, log: this.logger };
      retention = startRetentionSweeps({ purge, windows, jobs, sweepMs, batchSize, log: this.logger });
      // Only the queuer holding the site's lock runs (this service exists there alone); the store guards each tick.
      const submit = handlers;
      schedules = new ScheduleFirer({
        store,
        blobs: deps.blobs,
        submit: (spec) => {
          if (submit === undefined) throw new Error("the queuer fired a schedule before it started");
          return dispatch(submit, "submit", spec);
        },
        log: this.logger,
      });
      schedules.start();
      // Serving: the workers of this process may now skip the broker.
      deps.local?.serve(handlers);
    },
    async stopped() {
      deps.local?.serve(undefined);
      await schedules?.stop();
      clearInterval(sweepTimer);
      clearInterval(gcTimer);
      await gcRunning;
      await retention?.stop();
      // A try cut off here stays pending in its record: the next queuer resumes it.
      await webhooks?.stop();
      taskEvents?.stop();
      queue.stop();
      queue.removeAllListeners();
    },
  };
}

/** The webhook dispatcher of the queuer: each try is recorded in the task's record. */
function startWebhooks(deps: QueuerDeps, log: { info(msg: string): void; warn(msg: string): void }): WebhookDispatcher {
  return new WebhookDispatcher({
    settings: deps.webhooks,
    record: async (id, delivery) => {
      await deps.store.recordCallback(id, delivery);
    },
    log,
  });
}
