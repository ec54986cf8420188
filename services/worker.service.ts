import type { Context, ServiceSchema } from "moleculer";
import type { Registry } from "prom-client";
import type { BlobStore } from "../common/blobs/blob-store.js";
import { errorMessage } from "../common/model/errors.js";
import type { JobRegistry } from "../common/jobs/job-registry.js";
import { startLeftoverSweeper } from "../common/jobs/job-runner.js";
import { retryTransient } from "../common/model/transient-retry.js";
import { brokerQueuerClient, queuerClient, WORKER_OWN_MESSAGES, type WorkerQueue } from "../common/queue/queue-client.js";
import type { LocalQueuer } from "../common/queue/local-queuer.js";
import { WorkerPool } from "../common/worker/worker-pool.js";
import { registerWorkerMetrics } from "../common/metrics/definitions.js";
import { QUEUER_SERVICE } from "../common/queue/protocol.js";
import { QUEUER_EVENTS } from "./queuer.service.js";

export interface WorkerDeps {
  site: string;
  slots: number;
  batchSize: number;
  useSpawner: boolean;
  heartbeatMs: number;
  leaseMs: number;
  blobs: BlobStore;
  registry: JobRegistry;
  /** This process's docq metrics: the worker reports its slots there. */
  metrics: Registry;
  /** At stop, how long running tasks may take to finish before they are killed and released. */
  shutdownGraceMs: number;
  /** Aborted on a second stop signal: the rest of the grace is skipped. */
  hurry?: AbortSignal;
  /** Embedded mode: the queuer of this process, called directly while it serves (no broker hop per call). */
  localQueuer?: LocalQueuer;
}

/** The worker: Moleculer wiring around WorkerPool; every queue operation is a call to the queuer. */
export function workerService(deps: WorkerDeps): ServiceSchema {
  let pool: WorkerPool | undefined;
  let stopSweeping = (): void => undefined;
  return {
    name: "worker",
    events: {
      [QUEUER_EVENTS.queued]: () => pool?.wake(),
      [QUEUER_EVENTS.canceled]: (ctx: Context<{ id: string; leaseOwner: string }>) => {
        if (pool !== undefined && ctx.params.leaseOwner === ownerName(ctx.broker.nodeID)) pool.cancel(ctx.params.id);
      },
      // A (re)started queuer: ask for work at once rather than at the next poll.
      "$services.changed": () => pool?.wake(),
    },
    async started() {
      const broker = this.broker;
      const log = this.logger;
      /**
       * A result must reach the queue even if the queuer is restarting or NATS is reconnecting:
       * keep trying (the lease stays renewed meanwhile, as the task still counts as running here).
       */
      const report = <T>(what: string, call: () => Promise<T>): Promise<T> =>
        retryTransient(call, {
          maxMs: 10 * deps.leaseMs,
          onRetry: (err, n) => {
            if (n === 1) log.warn(`${what}: queuer unreachable (${errorMessage(err)}), retrying`);
          },
        });
      const viaBroker = (actionName: string, params: object): Promise<unknown> => broker.call(actionName, params);
      const queuer =
        deps.localQueuer === undefined
          ? brokerQueuerClient(viaBroker)
          : queuerClient(deps.localQueuer.call(viaBroker, WORKER_OWN_MESSAGES));
      const client: WorkerQueue = {
        pull: (owner, max) => queuer.pull(owner, max),
        heartbeat: (owner, ids, load) => queuer.heartbeat(owner, ids, load),
        succeed: (claim, result) => report(`succeed ${claim.id}`, () => queuer.succeed(claim, result)),
        fail: (claim, error, opts) => report(`fail ${claim.id}`, () => queuer.fail(claim, error, opts)),
        split: (claim, children, processedBy) => report(`split ${claim.id}`, () => queuer.split(claim, children, processedBy)),
        // Briefly: it runs while the process stops, and a release that does not arrive only costs a try (the lease lapses).
        release: (claim, reason) => retryTransient(() => queuer.release(claim, reason), { maxMs: RELEASE_RETRY_MS }),
        // Not retried: the next report (or the end) supersedes a lost one.
        progress: (claim, progress, message) => queuer.progress(claim, progress, message),
      };
      const started = new WorkerPool({
        owner: ownerName(broker.nodeID),
        processedBy: { site: deps.site, node: broker.nodeID },
        slots: deps.slots,
        batchSize: deps.batchSize,
        useSpawner: deps.useSpawner,
        heartbeatMs: deps.heartbeatMs,
        pollMs: 2000,
        client,
        blobs: deps.blobs,
        registry: deps.registry,
        log: { info: (m) => log.info(m), warn: (m) => log.warn(m) },
      });
      pool = started;
      registerWorkerMetrics(deps.metrics, () => ({ slots: deps.slots, busy: started.busy }));
      // What docq processes that died left in the temp dir and running: removed now and every minute.
      stopSweeping = startLeftoverSweeper({ log: { info: (m) => log.info(m), warn: (m) => log.warn(m) } });
      // Not awaited: the queuer may start later (or stand by); the pool starts pulling once it is there.
      void broker.waitForServices([QUEUER_SERVICE]).then(() => started.start());
    },
    async stopped() {
      stopSweeping();
      // Graceful: running tasks get shutdownGraceMs to finish; those still running are released (site.ts stops the worker first).
      await pool?.drain(deps.shutdownGraceMs, deps.hurry);
    },
  };
}

/** How long a release at stop keeps trying to reach the queuer. */
const RELEASE_RETRY_MS = 5_000;

/** One lease owner per worker process: the node id is unique per process in a site. */
function ownerName(nodeID: string): string {
  return `worker@${nodeID}`;
}
