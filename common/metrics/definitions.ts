import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/**
 * docq's own metrics, by the role that knows each figure: the active queuer (the store and the
 * queue), every worker process (its slots), the stealer (tasks taken in and lent out) and every
 * controller (the bytes it accepted). Each process registers those of the roles it runs into its
 * own prom-client Registry; the controller's /metrics sums the site's processes (site-metrics.ts).
 */
export const METRIC = {
  tasks: "docq_tasks",
  queueReady: "docq_queue_ready",
  queueDelayed: "docq_queue_delayed",
  queueHighestPriority: "docq_queue_highest_priority",
  taskRuns: "docq_task_runs_total",
  taskRunSeconds: "docq_task_run_seconds",
  queueWaitSeconds: "docq_queue_wait_seconds",
  slots: "docq_slots",
  stolen: "docq_stolen_total",
  leasesExpired: "docq_leases_expired_total",
  submittedBytes: "docq_submitted_bytes_total",
  nodesMissing: "docq_metrics_nodes_missing",
} as const;

/**
 * Seconds, for document jobs: a no-op (10 ms) to an OCR of a long scan (an hour). Figures past
 * the last bucket land in +Inf only.
 */
export const DURATION_BUCKETS_S: readonly number[] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/** What `docq_queue_highest_priority` shows while nothing is queued: below every priority (0..100). */
export const NO_QUEUED_PRIORITY = -1;

/**
 * Registers `metric`'s name afresh: a role started again in the same process (a test, a standby
 * taking over) replaces its figures rather than failing on a duplicate name.
 */
function fresh(registry: Registry, name: string): Registry[] {
  registry.removeSingleMetric(name);
  return [registry];
}

/** The figures the active queuer feeds from its queue's events (queuer-feed.ts reads them at collect time too). */
export interface QueuerMetrics {
  taskRuns: Counter<"job" | "outcome">;
  taskRunSeconds: Histogram<"job">;
  queueWaitSeconds: Histogram<"job">;
  leasesExpired: Counter;
}

/** What the queuer's gauges read when scraped. */
export interface QueuerGaugeSources {
  /** Every status with its count (the store's countByStatus). */
  countByStatus(): Promise<Record<string, number>>;
  queueCounts(): { ready: number; delayed: number; highestPriority: number | null };
  /** Status counts could not be read: the gauge then has no sample rather than a stale one. */
  onCollectError(err: unknown): void;
}

export function registerQueuerMetrics(registry: Registry, sources: QueuerGaugeSources, statuses: readonly string[]): QueuerMetrics {
  new Gauge({
    name: METRIC.tasks,
    help: "Tasks in the site's store, per status (every status, 0 included)",
    labelNames: ["status"],
    registers: fresh(registry, METRIC.tasks),
    async collect() {
      try {
        const counts = await sources.countByStatus();
        for (const status of statuses) this.set({ status }, counts[status] ?? 0);
      } catch (err) {
        this.reset();
        sources.onCollectError(err);
      }
    },
  });
  new Gauge({
    name: METRIC.queueReady,
    help: "Queued tasks a worker may take now",
    registers: fresh(registry, METRIC.queueReady),
    collect() {
      this.set(sources.queueCounts().ready);
    },
  });
  new Gauge({
    name: METRIC.queueDelayed,
    help: "Queued tasks waiting for their retry backoff to elapse",
    registers: fresh(registry, METRIC.queueDelayed),
    collect() {
      this.set(sources.queueCounts().delayed);
    },
  });
  new Gauge({
    name: METRIC.queueHighestPriority,
    help: `The highest priority among queued tasks, ${NO_QUEUED_PRIORITY} when none is queued`,
    registers: fresh(registry, METRIC.queueHighestPriority),
    // Only the active queuer reports it; should two ever answer, the higher is the truer one.
    aggregator: "max",
    collect() {
      this.set(sources.queueCounts().highestPriority ?? NO_QUEUED_PRIORITY);
    },
  });
  return {
    taskRuns: new Counter({
      name: METRIC.taskRuns,
      help: "Ended attempts, per job and outcome (output, split, retry, error, canceled, lease_lost, released)",
      labelNames: ["job", "outcome"],
      registers: fresh(registry, METRIC.taskRuns),
    }),
    taskRunSeconds: new Histogram({
      name: METRIC.taskRunSeconds,
      help: "How long an attempt ran, from its start to its report (attempts whose lease was lost are left out)",
      labelNames: ["job"],
      buckets: [...DURATION_BUCKETS_S],
      registers: fresh(registry, METRIC.taskRunSeconds),
    }),
    queueWaitSeconds: new Histogram({
      name: METRIC.queueWaitSeconds,
      help: "How long a task waited in the queue, from when it became available (submit, backoff elapsed, merge due) to its start",
      labelNames: ["job"],
      buckets: [...DURATION_BUCKETS_S],
      registers: fresh(registry, METRIC.queueWaitSeconds),
    }),
    leasesExpired: new Counter({
      name: METRIC.leasesExpired,
      help: "Attempts ended because their holder stopped renewing the lease",
      registers: fresh(registry, METRIC.leasesExpired),
    }),
  };
}

/** A worker process's slots, read when scraped. */
export function registerWorkerMetrics(registry: Registry, read: () => { slots: number; busy: number }): void {
  new Gauge({
    name: METRIC.slots,
    help: "Worker slots of the site, busy (a script runs) or idle",
    labelNames: ["state"],
    registers: fresh(registry, METRIC.slots),
    collect() {
      const { slots, busy } = read();
      this.set({ state: "busy" }, busy);
      this.set({ state: "idle" }, Math.max(0, slots - busy));
    },
  });
}

export type StealDirection = "in" | "out";

/** Counts what the stealer moves: `in` tasks taken from `site`, `out` tasks lent to `site`. */
export interface StealMetrics {
  stolen(direction: StealDirection, site: string, count: number): void;
}

export function registerStealerMetrics(registry: Registry): StealMetrics {
  const stolen = new Counter({
    name: METRIC.stolen,
    help: "Tasks stolen between sites: in = taken from the other site to run here, out = lent to it",
    labelNames: ["direction", "site"],
    registers: fresh(registry, METRIC.stolen),
  });
  return {
    stolen(direction, site, count) {
      if (count > 0) stolen.inc({ direction, site }, count);
    },
  };
}

/** What the controller counts of what it accepts. */
export interface ControllerMetrics {
  /** A document was accepted (its task is durable): its size. */
  submitted(bytes: number): void;
}

export function registerControllerMetrics(registry: Registry): ControllerMetrics {
  const submittedBytes = new Counter({
    name: METRIC.submittedBytes,
    help: "Bytes of the documents of accepted tasks",
    registers: fresh(registry, METRIC.submittedBytes),
  });
  return {
    submitted(bytes) {
      submittedBytes.inc(bytes);
    },
  };
}
