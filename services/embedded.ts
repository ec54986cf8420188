import os from "node:os";
import { ServiceBroker } from "moleculer";
import type { DocqConfig } from "../common/config.js";
import { FsBlobStore } from "../common/fs-blob-store.js";
import { JobRegistry } from "../common/job-registry.js";
import { SqliteTaskStore } from "../common/sqlite-task-store.js";
import { TaskQueue } from "../common/task-queue.js";
import path from "node:path";
import { controllerService } from "./controller.service.js";
import { queuerService } from "./queuer.service.js";
import { workerService } from "./worker.service.js";

/** Starts every service of a site in this process (embedded mode). */
export async function startEmbedded(config: DocqConfig): Promise<ServiceBroker> {
  const store = SqliteTaskStore.open(path.join(config.dataDir, "tasks.sqlite"));
  const blobs = await FsBlobStore.open(path.join(config.dataDir, "blobs"));
  const registry = new JobRegistry({ dir: config.jobsDir, defaultTimeoutMs: config.jobs.defaultTimeoutMs });
  const queue = new TaskQueue({
    store,
    leaseMs: config.queue.leaseMs,
    backoffBaseMs: config.queue.backoffBaseMs,
    backoffMaxMs: config.queue.backoffMaxMs,
    requeueWorkOnReload: true,
    maxSplitDepth: config.queue.maxSplitDepth,
  });

  const broker = new ServiceBroker({
    nodeID: `${config.site}-${os.hostname()}-${process.pid}`,
    namespace: config.site,
    logger: { type: "Console", options: { level: config.logLevel, formatter: "short" } },
  });
  broker.createService(queuerService({ queue, store, site: config.site, sweepMs: config.queue.sweepMs, heartbeatMs: config.queue.heartbeatMs }));
  broker.createService(workerService({ site: config.site, slots: config.slots, batchSize: config.worker.batchSize, heartbeatMs: config.queue.heartbeatMs, blobs, registry }));
  broker.createService(
    controllerService({ site: config.site, port: config.port, maxBodyBytes: config.maxBodyBytes, defaultMaxTries: config.queue.maxTries, blobs, registry }),
  );
  broker.localBus.once("$broker.stopped", () => {
    void store.close();
    void blobs.close();
  });
  await broker.start();
  broker.logger.info(`docq listening on port ${config.port}, data in ${config.dataDir}, ${config.slots} worker slots, jobs from ${config.jobsDir}`);
  return broker;
}

