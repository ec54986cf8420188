import { z } from "zod";
import { TASK_ID_PATTERN, TASK_STATUSES } from "../model/task-model.js";
import type { QueuerStats } from "../queue/protocol.js";
import { MINUTE_MS, type MinuteCounts } from "../store/task-store.js";
import type { ApiRoute } from "./api-schema/api-route.js";

/*
 * GET /api/overview: what the dashboard's first page shows, in one answer (admin, as /api/stats):
 * the queuer's stats, the last hour's throughput per minute, and the other sites as the stealer
 * sees them. The zod schema is the answer's contract and its OpenAPI description (OVERVIEW_ROUTE).
 */

/** The throughput chart's window: the last hour, one bucket per minute. */
export const OVERVIEW_WINDOW_MINUTES = 60;

/** Another site's backlog as its stealer last published it (StealerSiteView), or null when none was heard. */
export const SiteBacklogSchema = z.object({
  queued: z.int().min(0),
  highestPriority: z.int().nullable(),
  idleSlots: z.int().min(0),
  /** When the site published it (ms since the epoch). */
  at: z.int(),
});
export type SiteBacklog = z.infer<typeof SiteBacklogSchema>;

export const OverviewSchema = z
  .object({
    site: z.string(),
    /** When this answer was made (ms since the epoch). */
    at: z.int(),
    byStatus: z.record(z.enum(TASK_STATUSES), z.int()),
    queue: z.object({ ready: z.int(), delayed: z.int(), highestPriority: z.int().nullable() }),
    queuedByPriority: z
      .array(z.object({ priority: z.int(), count: z.int() }))
      .meta({ description: "queued tasks per priority, highest priority first (only priorities with tasks)" }),
    workers: z.array(z.object({ owner: z.string(), slots: z.int(), busy: z.int() })),
    slots: z.object({ busy: z.int(), total: z.int() }),
    finishedPerMinute: z
      .array(z.object({ minute: z.int(), output: z.int(), error: z.int(), canceled: z.int() }))
      .meta({ description: "top-level tasks ended per minute over the last hour, oldest first, every minute present (zeros included)" }),
    sites: z
      .array(
        z.object({
          site: z.string(),
          stolenIn: z.int().meta({ description: "its tasks run here" }),
          stolenOut: z.int().meta({ description: "this site's tasks run there" }),
          backlog: SiteBacklogSchema.nullable().meta({ description: "its backlog as last published on the global NATS; null: not heard" }),
        }),
      )
      .meta({ description: "the other sites: stealing counts and their backlogs (empty without stealing)" }),
  })
  .meta({ id: "Overview", description: "the dashboard's overview: counts, queue, workers, throughput, sites" });
export type Overview = z.infer<typeof OverviewSchema>;

export const OVERVIEW_ROUTE: ApiRoute = {
  method: "get",
  path: "/api/overview",
  operationId: "overview",
  tags: ["site"],
  summary: "The dashboard's overview: counts, queued per priority, workers, finished per minute over the last hour, other sites (admin)",
  access: "admin",
  responses: { 200: { description: "the site's overview", json: OverviewSchema } },
};

/** GET /api/tasks/:id/input: the dashboard's download of a task's document as submitted. */
export const TASK_INPUT_ROUTE: ApiRoute = {
  method: "get",
  path: "/api/tasks/{id}/input",
  operationId: "inputTask",
  tags: ["tasks"],
  summary: "The task's document as submitted",
  access: "key",
  pathParams: z.object({ id: z.string().regex(TASK_ID_PATTERN) }),
  responses: {
    200: { description: "the document", media: { "application/octet-stream": { type: "string", format: "binary" } } },
    404: { description: "no such task (or another user's)" },
    409: { description: "its document is gone (canceled, deleted, or removed by retention)" },
  },
};

/** The routes this module adds for the dashboard, for the OpenAPI document. */
export const DASHBOARD_API_ROUTES: readonly ApiRoute[] = [OVERVIEW_ROUTE, TASK_INPUT_ROUTE];

/** The first minute of the window ending with the minute of `now`. */
export function overviewSince(now: number): number {
  return Math.floor(now / MINUTE_MS) * MINUTE_MS - (OVERVIEW_WINDOW_MINUTES - 1) * MINUTE_MS;
}

/** Every minute of the window, in order, zeros where the store had none. */
export function fillMinutes(counts: readonly MinuteCounts[], now: number): MinuteCounts[] {
  const byMinute = new Map(counts.map((c) => [c.minute, c]));
  const since = overviewSince(now);
  return Array.from({ length: OVERVIEW_WINDOW_MINUTES }, (_, i) => {
    const minute = since + i * MINUTE_MS;
    return byMinute.get(minute) ?? { minute, output: 0, error: 0, canceled: 0 };
  });
}

/** The overview from the queuer's stats, its per-minute counts since overviewSince(now) and the stealer's view (null: no stealer). */
export function buildOverview(
  stats: QueuerStats,
  perMinute: readonly MinuteCounts[],
  backlogs: Readonly<Record<string, SiteBacklog>> | null,
  now: number,
): Overview {
  const siteNames = new Set([...Object.keys(stats.stealing), ...Object.keys(backlogs ?? {})]);
  siteNames.delete(stats.site);
  return {
    site: stats.site,
    at: now,
    byStatus: stats.byStatus,
    queue: stats.queue,
    queuedByPriority: Object.entries(stats.queuedByPriority)
      .map(([priority, count]) => ({ priority: Number(priority), count }))
      .filter((row) => row.count > 0)
      .sort((a, b) => b.priority - a.priority),
    workers: stats.workers,
    slots: { busy: stats.workers.reduce((sum, w) => sum + w.busy, 0), total: stats.slots },
    finishedPerMinute: fillMinutes(perMinute, now),
    sites: [...siteNames].sort().map((site) => ({
      site,
      stolenIn: stats.stealing[site]?.stolenIn ?? 0,
      stolenOut: stats.stealing[site]?.stolenOut ?? 0,
      backlog: backlogs?.[site] ?? null,
    })),
  };
}
