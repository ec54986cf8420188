import type { Context, ServiceSchema } from "moleculer";
import type { BlobStore } from "../common/blob-store.js";
import type { JobRegistry } from "../common/job-registry.js";
import type { Task } from "../common/task-model.js";
import { WorkerPool, type QueueClient } from "../common/worker-pool.js";
import { QUEUER_EVENTS } from "./queuer.service.js";

export interface WorkerDeps {
  site: string;
  slots: number;
  batchSize: number;
  heartbeatMs: number;
  blobs: BlobStore;
  registry: JobRegistry;
}

/** The worker: Moleculer wiring around WorkerPool; every queue operation is a call to the queuer. */
export function workerService(deps: WorkerDeps): ServiceSchema {
  let pool: WorkerPool | undefined;
  return {
    name: "worker",
    events: {
      [QUEUER_EVENTS.queued]: () => pool?.wake(),
      [QUEUER_EVENTS.canceled]: (ctx: Context<{ id: string; leaseOwner: string }>) => {
        if (pool !== undefined && ctx.params.leaseOwner === ownerName(ctx.broker.nodeID)) pool.cancel(ctx.params.id);
      },
    },
    async started() {
      const broker = this.broker;
      const client: QueueClient = {
        pull: (owner, max) => broker.call<Task[], object>("queuer.pull", { owner, max }),
        heartbeat: (owner, ids, load) => broker.call<string[], object>("queuer.heartbeat", { owner, ids, ...load }),
        complete: (claim, result) => broker.call<boolean, object>("queuer.complete", { ...claim, ...result }),
        fail: (claim, error, opts) => broker.call<boolean, object>("queuer.fail", { ...claim, error, ...opts }),
        split: (claim, children, processedBy) => broker.call<boolean, object>("queuer.split", { ...claim, children, processedBy }),
        mergeInputs: (id) => broker.call<string[], object>("queuer.mergeInputs", { id }),
      };
      pool = new WorkerPool({
        owner: ownerName(broker.nodeID),
        processedBy: { site: deps.site, node: broker.nodeID },
        slots: deps.slots,
        batchSize: deps.batchSize,
        heartbeatMs: deps.heartbeatMs,
        pollMs: 2000,
        client,
        blobs: deps.blobs,
        registry: deps.registry,
        log: { info: (m) => this.logger.info(m), warn: (m) => this.logger.warn(m) },
      });
      // Wait for the queuer so the first pulls do not fail while it reloads.
      await broker.waitForServices(["queuer"]);
      pool.start();
    },
    async stopped() {
      await pool?.stop();
    },
  };
}

/** One lease owner per worker process: the node id is unique per process in a site. */
function ownerName(nodeID: string): string {
  return `worker@${nodeID}`;
}
