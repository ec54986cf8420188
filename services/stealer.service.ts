import type { Readable } from "node:stream";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import type { Registry } from "prom-client";
import { registerStealerMetrics } from "../common/metrics/definitions.js";
import type { BlobStore } from "../common/blobs/blob-store.js";
import type { DocqConfig } from "../common/config/config.js";
import { errorMessage } from "../common/model/errors.js";
import type { Task } from "../common/model/task-model.js";
import { brokerQueuerClient } from "../common/queue/queue-client.js";
import { Stealer, type LocalQueue, type OtherSites } from "../common/stealing/stealer.js";
import { QUEUER_EVENTS } from "./queuer.service.js";

const BACKLOG_EVENT = "docq.backlog";
/** A burst of changes to a site's backlog is published once, this long after its first change. */
const BACKLOG_DEBOUNCE_MS = 50;
/** Each site's stealer is the service `steal-<site>` on the global broker. */
const remote = (site: string, action: string): string => `steal-${site}.${action}`;

function backlogNotPublished(err: unknown): string {
  return `publishing the backlog failed (the next interval tries again): ${errorMessage(err)}`;
}

export interface StealerDeps {
  config: DocqConfig;
  blobs: BlobStore;
  /** This process's docq metrics: the stealer counts the tasks it takes in and lends out there. */
  metrics: Registry;
}

function globalTransporter(config: DocqConfig): NonNullable<ConstructorParameters<typeof ServiceBroker>[0]>["transporter"] {
  const { globalNatsUrl, tls } = config.stealing;
  return {
    type: "NATS",
    options: {
      servers: [globalNatsUrl ?? ""],
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      ...(tls === null ? {} : { tls: { caFile: tls.ca, certFile: tls.cert, keyFile: tls.key } }),
    },
  };
}

/**
 * The stealer: a bridge between the site's broker and a second broker on the global NATS, where
 * it is the service `steal-<site>`. The logic is in common/stealing/stealer.ts.
 */
export function stealerService(deps: StealerDeps): ServiceSchema {
  const { config } = deps;
  let stealer: Stealer | undefined;
  let global: ServiceBroker | undefined;
  const timers: NodeJS.Timeout[] = [];
  let publishSoon: NodeJS.Timeout | undefined;
  let warnLog: ((msg: string) => void) | undefined;
  /** This site's backlog changed (work queued, tasks lent): tell the other sites soon, once for a burst of changes. */
  const backlogChanged = (): void => {
    if (publishSoon !== undefined || stealer === undefined) return;
    const s = stealer;
    publishSoon = setTimeout(() => {
      publishSoon = undefined;
      void s.publishBacklog().catch((err: unknown) => warnLog?.(backlogNotPublished(err)));
    }, BACKLOG_DEBOUNCE_MS);
  };

  return {
    name: "stealer",
    actions: {
      /** The other sites' backlogs as this stealer last heard them (GET /api/overview). */
      sites: () => stealer?.siteBacklogs() ?? {},
    },
    events: {
      [QUEUER_EVENTS.empty]: (ctx: Context<{ idleSlots: number }>) => stealer?.onQueueEmpty(ctx.params.idleSlots),
      [QUEUER_EVENTS.proxyDone]: (ctx: Context<Task>) => void stealer?.onProxyDone(ctx.params),
      [QUEUER_EVENTS.canceled]: (ctx: Context<{ id: string; leaseOwner: string }>) =>
        void stealer?.onLocalCanceled(ctx.params.id, ctx.params.leaseOwner),
      // New work here: tell the other sites soon (debounced), not only at the next interval.
      [QUEUER_EVENTS.queued]: () => backlogChanged(),
    },
    async started() {
      const site = this.broker;
      const log = this.logger;
      warnLog = (m) => log.warn(m);
      const local: LocalQueue = brokerQueuerClient((actionName, params) => site.call(actionName, params));
      const broker = new ServiceBroker({
        namespace: "docq-global",
        nodeID: `${config.site}-stealer-${process.pid}`,
        transporter: globalTransporter(config),
        logger: { type: "Console", options: { level: config.logLevel, formatter: "short", moduleColors: false } },
        requestTimeout: 15_000,
        heartbeatInterval: 2,
        heartbeatTimeout: 8,
        // main.ts stops the site on SIGTERM; this broker stopping and exiting on its own would end
        // the process before the worker had stopped its scripts and removed their dirs.
        skipProcessEventRegistration: true,
      });
      global = broker;
      const others: OtherSites = {
        offer: (victim, request) => broker.call(remote(victim, "offer"), request),
        input: (victim, request) => broker.call<Readable, object>(remote(victim, "input"), request),
        probe: (victim, request) => broker.call<Readable, object>(remote(victim, "probe"), request),
        heartbeat: (ownerSite, request) => broker.call(remote(ownerSite, "heartbeat"), request),
        complete: (ownerSite, output, meta) => broker.call(remote(ownerSite, "complete"), output, { meta }),
        fail: (ownerSite, request) => broker.call(remote(ownerSite, "fail"), request),
        cancel: (thief, request) => broker.call(remote(thief, "cancel"), request),
        publishBacklog: (backlog) => void broker.broadcast(BACKLOG_EVENT, backlog),
      };
      const s = new Stealer({
        policy: { ...config.stealing, site: config.site, backlogTtlMs: 3 * config.stealing.backlogIntervalMs },
        local,
        others,
        blobs: deps.blobs,
        heartbeatMs: config.queue.heartbeatMs,
        reportRetryMs: 10 * config.queue.leaseMs,
        log: { info: (m) => log.info(m), warn: (m) => log.warn(m) },
        metrics: registerStealerMetrics(deps.metrics),
        linkPrior: { rttMs: 20, bytesPerMs: config.stealing.linkPriorBytesPerMs },
        probeBytes: config.stealing.probeBytes,
        transferStallMs: config.stealing.transferStallMs,
        crossPlateHoldMs: config.stealing.crossPlateHoldMs,
        onBacklogChanged: backlogChanged,
      });
      stealer = s;
      broker.createService({
        name: `steal-${config.site}`,
        actions: {
          offer: (ctx: Context) => s.handleOffer(ctx.params),
          input: (ctx: Context) => s.handleInput(ctx.params),
          probe: (ctx: Context) => s.handleProbe(ctx.params),
          heartbeat: (ctx: Context) => s.handleHeartbeat(ctx.params),
          complete: (ctx: Context) => s.handleComplete(ctx.params as unknown as Readable, ctx.meta),
          fail: (ctx: Context) => s.handleFail(ctx.params),
          cancel: (ctx: Context) => s.onCancel(ctx.params),
        },
        events: {
          [BACKLOG_EVENT]: (ctx: Context) => s.onBacklog(ctx.params),
        },
      });
      // Not awaited: the site works without the global link, and joins the others when it is up.
      broker.start().catch((err: unknown) => log.error("the global broker failed to start:", err));
      timers.push(setInterval(() => void s.heartbeat(), config.queue.heartbeatMs));
      const publishBacklog = (): void => void s.publishBacklog().catch((err: unknown) => log.warn(backlogNotPublished(err)));
      timers.push(setInterval(publishBacklog, config.stealing.backlogIntervalMs));
      log.info(
        `stealer of site "${config.site}" on the global NATS ${config.stealing.globalNatsUrl}${config.stealing.tls === null ? "" : " (TLS)"}`,
      );
    },
    async stopped() {
      for (const t of timers) clearInterval(t);
      clearTimeout(publishSoon);
      await global?.stop();
    },
  };
}
