import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { ServiceBroker, type BrokerOptions, type MetricsReporterOptions } from "moleculer";
import type { BlobStore } from "../common/blobs/blob-store.js";
import type { DocqConfig } from "../common/config/config.js";
import { errorMessage } from "../common/model/errors.js";
import { JobRegistry } from "../common/jobs/job-registry.js";
import { workflowLookup } from "../common/workflows/workflow-lookup.js";
import { openQueuerLock } from "../common/queue/lock/open-queuer-lock.js";
import { openBlobStore, openTaskStore } from "../common/store/open-stores.js";
import { TaskQueue } from "../common/queue/task-queue.js";
import { LocalQueuer } from "../common/queue/local-queuer.js";
import { controllerService } from "./controller.service.js";
import { ApiPrometheusReporter } from "./metrics-reporter.js";
import { Registry } from "prom-client";
import { registerControllerMetrics } from "../common/metrics/definitions.js";
import { feedQueuerMetrics } from "../common/metrics/queuer-feed.js";
import { metricsService } from "./metrics.service.js";
import { queuerService } from "./queuer.service.js";
import { runQueuerActivation, type QueuerActivation, type ServeQueue } from "./queuer-activation.js";
import { announceQueuer, queuerTakeoverWatcher } from "./queuer-takeover.js";
import { stealerService } from "./stealer.service.js";
import { workerService } from "./worker.service.js";

/** The log levels that print moleculer-web's line per request (it logs them at info). */
const REQUEST_LOG_LEVELS: ReadonlySet<DocqConfig["logLevel"]> = new Set(["info", "debug", "trace"]);

export const SERVICE_NAMES = ["controller", "queuer", "worker", "stealer"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface Site {
  broker: ServiceBroker;
  /**
   * Stops the site: the worker first (no more pulls; running tasks get shutdownGraceMs to finish,
   * then are killed and released) while the queuer and the REST API still serve, then the rest.
   */
  stop(): Promise<void>;
  /** A second signal during stop: skip the rest of the workers' grace (kill and release now). */
  hurry(): void;
}

function brokerOptions(config: DocqConfig, services: readonly ServiceName[], metrics: ApiPrometheusReporter): BrokerOptions {
  return {
    // Moleculer's own metrics (requests, events, process, OS), served by the controller at /metrics.
    metrics: { enabled: true, reporter: [metrics as unknown as MetricsReporterOptions] },
    // Unique per process, and telling: which site, which machine, which services, which pid.
    nodeID: `${config.site}-${os.hostname()}-${services.length >= defaultServices(config).length ? "all" : services.join("+")}-${process.pid}`,
    // One namespace per site: sites sharing a NATS server never see each other's services.
    namespace: config.site,
    transporter:
      config.nats.url === null
        ? null
        : { type: "NATS", options: { servers: [config.nats.url], maxReconnectAttempts: -1, reconnectTimeWait: 500 } },
    // `logFormat: json` writes one JSON object per line (time, level, node, module, msg) for a log collector.
    logger: { type: "Console", options: { level: config.logLevel, formatter: config.logFormat === "json" ? "json" : "short" } },
    // Nodes that stop heartbeating are dropped within 4-8 s (a queuer taking over announces itself
    // and the others drop the dead one at once: queuer-takeover.ts).
    heartbeatInterval: 1,
    heartbeatTimeout: 4,
    // A call to a process that died unannounced would otherwise wait forever; callers retry.
    requestTimeout: 15_000,
    // main.ts handles SIGTERM/SIGINT by stopping the whole site, then exits. Moleculer's own
    // handlers (one per broker: this one and the stealer's global one) each stopped their broker
    // and called process.exit as soon as it was done, before the other services had finished.
    skipProcessEventRegistration: true,
  };
}

/**
 * Starts the chosen services of a site in this process: all of them with no transporter in
 * embedded mode, any subset over the site's NATS in cluster mode. A queuer waits for the site's
 * queuer lock before it serves, so a second one stands by instead of splitting the queue.
 */
/** The services `npm start` runs by default: all of them, the stealer only when there is a global NATS to steal over. */
export function defaultServices(config: DocqConfig): ServiceName[] {
  return SERVICE_NAMES.filter((name) => name !== "stealer" || config.stealing.globalNatsUrl !== null);
}

export async function startSite(config: DocqConfig, services: readonly ServiceName[] = defaultServices(config)): Promise<Site> {
  const embedded = config.nats.url === null;
  const all = defaultServices(config);
  if (embedded && !all.every((name) => services.includes(name))) {
    throw new Error(`starting only ${services.join(", ")} needs a NATS server to reach the other services: set DOCQ_NATS_URL`);
  }
  if (services.includes("stealer") && config.stealing.globalNatsUrl === null) {
    throw new Error("the stealer needs the global NATS between sites: set DOCQ_GLOBAL_NATS_URL (or stealing.globalNatsUrl)");
  }
  const metrics = new ApiPrometheusReporter({});
  const broker = new ServiceBroker(brokerOptions(config, services, metrics));
  // docq's own metrics of this process (its own registry, not prom-client's global one: a test may
  // run several sites in one process); the controllers' /metrics sums those of the site's processes.
  const docqMetrics = new Registry();
  broker.createService(metricsService(docqMetrics));
  const closers: (() => Promise<void>)[] = [];
  let blobs: BlobStore | undefined;
  const openBlobs = async (): Promise<BlobStore> => {
    if (blobs === undefined) {
      const opened = await openBlobStore(config);
      closers.push(() => opened.close());
      blobs = opened;
    }
    return blobs;
  };
  // A listen that fails ends start-up at once (see the controller): nothing would ever answer on the port.
  let listenFailed: ((err: Error) => void) | undefined;
  const listening = new Promise<never>((_, reject) => {
    listenFailed = (err) => reject(new Error(listenFailure(config.host, config.port, err)));
  });
  listening.catch(() => undefined);
  // Aborted by a second stop signal: the workers skip what is left of their grace.
  const hurry = new AbortController();
  const registry = new JobRegistry({ dir: config.jobsDir, defaultTimeoutMs: config.jobs.defaultTimeoutMs, passEnv: config.jobs.passEnv });
  // Embedded: the worker calls the queuer of this process directly, not through the broker.
  const localQueuer = embedded ? new LocalQueuer() : undefined;

  if (services.includes("worker")) {
    broker.createService(
      workerService({
        site: config.site,
        slots: config.slots,
        batchSize: config.worker.batchSize,
        useSpawner: config.worker.spawner,
        heartbeatMs: config.queue.heartbeatMs,
        leaseMs: config.queue.leaseMs,
        blobs: await openBlobs(),
        registry,
        metrics: docqMetrics,
        shutdownGraceMs: config.shutdownGraceMs,
        hurry: hurry.signal,
        ...(localQueuer === undefined ? {} : { localQueuer }),
      }),
    );
  }
  if (services.includes("controller")) {
    broker.createService(
      controllerService({
        site: config.site,
        port: config.port,
        maxBodyBytes: config.maxBodyBytes,
        defaultMaxTries: config.queue.maxTries,
        blobs: await openBlobs(),
        registry,
        metrics,
        docqMetrics: registerControllerMetrics(docqMetrics),
        corsOrigins: config.http.corsOrigins,
        host: config.host,
        auth: config.auth,
        metricsPublic: config.metrics.public,
        logRequests: REQUEST_LOG_LEVELS.has(config.logLevel),
        ...(localQueuer === undefined ? {} : { localQueuer }),
        onListenError: (err) => listenFailed?.(err),
      }),
    );
  }
  if (services.includes("stealer")) broker.createService(stealerService({ config, blobs: await openBlobs(), metrics: docqMetrics }));
  if (!embedded) broker.createService(queuerTakeoverWatcher());
  // A store other machines reach says the site may span machines; documents on a local disk do not follow.
  if (!embedded && config.store.type !== "sqlite" && config.blobs.type === "fs")
    broker.logger.warn(
      `documents are kept on this machine's disk (blobs.type fs, ${config.dataDir}): every process of the site must see ` +
        "the same DATA_DIR, or documents written by one are missing for another; on several machines use blobs.type s3",
    );
  try {
    await Promise.race([broker.start(), listening]);
  } catch (err) {
    // Whatever started is stopped (a worker's spawner, the stores), within a bound: the caller exits next.
    await Promise.race([broker.stop().catch(() => undefined), sleep(5_000)]);
    for (const close of closers.reverse()) await close().catch(() => undefined);
    throw err;
  }

  let queuer: QueuerActivation | undefined;
  if (services.includes("queuer")) {
    // The lock lives where the task store is (queuer-lock.ts), so a standby may be on another machine.
    let activations = 0;
    const serve: ServeQueue = async () => {
      // Embedded workers die with this process, so at its start their tasks are queued again; when
      // this queuer serves again after losing its lock, they are still running here.
      const firstActivation = activations++ === 0;
      const store = await openTaskStore(config);
      try {
        const queue = new TaskQueue({
          store,
          leaseMs: config.queue.leaseMs,
          backoffBaseMs: config.queue.backoffBaseMs,
          backoffMaxMs: config.queue.backoffMaxMs,
          // Embedded workers die with this process; cluster workers outlive a queuer restart.
          site: config.site,
          requeueWorkOnReload: embedded && firstActivation,
          maxSplitDepth: config.queue.maxSplitDepth,
          // A workflow job is expanded into its steps here, in the queue, whoever submits it (the API, a schedule).
          workflowOf: workflowLookup(registry),
        });
        // Only the active queuer gets here (a standby waits for the lock): it alone reports the queue's figures.
        const stopFeed = feedQueuerMetrics(docqMetrics, {
          queue,
          countByStatus: () => store.countByStatus(),
          onCollectError: (err) => broker.logger.warn(`/metrics: the task counts per status could not be read: ${errorMessage(err)}`),
        });
        const service = broker.createService(
          queuerService({
            queue,
            store,
            site: config.site,
            sweepMs: config.queue.sweepMs,
            heartbeatMs: config.queue.heartbeatMs,
            blobs: await openBlobs(),
            gc: { intervalMs: config.queue.gcIntervalMs, graceMs: config.queue.gcGraceMs },
            webhooks: config.webhooks,
            retention: { ...config.retention, jobs: () => registry.retentionByJob() },
            ...(localQueuer === undefined ? {} : { local: localQueuer }),
          }),
        );
        // Polled every 100 ms rather than Moleculer's 1 s: start-up (and the signal handlers after it) waits for this.
        await broker.waitForServices(["queuer"], 0, 100);
        return async () => {
          stopFeed();
          if (broker.getLocalService("queuer") === service) await broker.destroyService(service);
          await store.close();
        };
      } catch (err) {
        await store.close().catch(() => undefined);
        throw err;
      }
    };
    queuer = runQueuerActivation({
      site: config.site,
      lock: await openQueuerLock(config, broker.nodeID),
      leaseMs: config.queue.leaseMs,
      log: broker.logger,
      serve,
      onServing: embedded ? undefined : (serving) => announceQueuer(broker, serving),
    });
    // In embedded mode nothing works without the queue: start-up waits for it.
    if (embedded) await queuer.ready;
    else {
      queuer.ready.catch((err: unknown) => {
        // A queuer without its store is useless: exit, so the process manager restarts it (with backoff).
        broker.logger.fatal(`the queuer cannot start: ${errorMessage(err)}`);
        process.exit(2);
      });
    }
  }
  broker.logger.info(
    `docq site "${config.site}" (${embedded ? "embedded" : `NATS ${config.nats.url}`}): ${services.join(", ")}` +
      (services.includes("controller") ? `, REST on port ${config.port}` : "") +
      (services.includes("worker") ? `, ${config.slots} worker slots` : "") +
      `, data in ${config.dataDir}`,
  );

  return {
    broker,
    hurry: () => hurry.abort(),
    async stop() {
      // The worker drains while the queuer takes its reports and the REST API still answers (embedded mode).
      const worker = broker.getLocalService("worker");
      if (worker !== undefined) await broker.destroyService(worker);
      // The queue stops (and its lock is given up) before the broker: a standby takes over from here.
      await queuer?.stop();
      await broker.stop();
      for (const close of closers.reverse()) {
        await close().catch((err: unknown) => broker.logger.warn(`closing a store at stop failed: ${errorMessage(err)}`));
      }
    },
  };
}

/** Why the REST API cannot listen, naming the address: the port in use, a port that needs privileges, or the system's own words. */
function listenFailure(host: string, port: number, err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (code === "EADDRINUSE") return `cannot listen on ${address}: the port is in use (set PORT or port to another)`;
  if (code === "EACCES") return `cannot listen on ${address}: permission denied (ports below 1024 need privileges)`;
  if (code === "EADDRNOTAVAIL") return `cannot listen on ${address}: no interface of this machine has that address (host)`;
  return `cannot listen on ${address}: ${errorMessage(err)}`;
}
