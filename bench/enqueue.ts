import { submit } from "../testFunctional/helpers.js";
import { CLIENT_CONCURRENCY, log, percentile, sortedNumbers, submitMany, waitTaskStatus, withApp, getStats } from "./harness.js";
import { round, type FigureResult } from "./report.js";

/**
 * Figure 1: tasks/s accepted through `POST /api/tasks` (each answered 201 only once the task and
 * its document are durable), small documents, client concurrency 32.
 *
 * Enqueue is measured alone: the app has one worker slot, held by a long `sleep` task submitted
 * first, so the no-op tasks stay queued and no job script is spawned while they arrive.
 */
export async function enqueueFigure(opts: { count: number }): Promise<FigureResult> {
  const { count } = opts;
  const run = await withApp({ slots: 1 }, async (app) => {
    const blocker = await submit(app.url, "blocker\n", { job: "sleep", params: { ms: 3_600_000 }, maxTries: 1 });
    await waitTaskStatus(app.url, blocker, ["work"], 30_000, 20);
    // A short warm-up (not counted) so the figure is not the JIT's first minute.
    await submitMany(app.url, Math.min(200, Math.ceil(count / 10)), CLIENT_CONCURRENCY, (i) => `warm-up document ${i}\n`, { job: "noop" });
    log(`enqueue: ${count} tasks through POST /api/tasks at concurrency ${CLIENT_CONCURRENCY}`);
    const t0 = performance.now();
    const { latenciesMs } = await submitMany(app.url, count, CLIENT_CONCURRENCY, (i) => `small document number ${i}\n`, { job: "noop" });
    const ms = performance.now() - t0;
    const stats = await getStats(app.url);
    return { ms, latencies: sortedNumbers(latenciesMs), queued: stats.byStatus.input ?? 0 };
  });
  const { ms, latencies, queued } = run.result;
  const perSec = (count / ms) * 1000;
  return {
    key: "enqueue",
    number: 1,
    title: "Enqueue",
    rows: [
      {
        measure: `POST /api/tasks, ${count.toLocaleString("en-US")} documents of ~30 B, concurrency ${CLIENT_CONCURRENCY}`,
        value: round(perSec),
        unit: "tasks/s",
        peakRssMb: run.peakRssMb,
        rssOf: "app",
      },
      {
        measure: "POST latency p50 / p99 under that load",
        value: round(percentile(latencies, 50), 1),
        unit: `ms / ${round(percentile(latencies, 99), 1)} ms`,
      },
      {
        measure: "bulk path over HTTP",
        value: null,
        unit: "",
        note: "none yet; the store's bulk path (createMany) is measured in figure 4",
      },
    ],
    data: {
      count,
      concurrency: CLIENT_CONCURRENCY,
      ms: round(ms),
      tasksPerSec: round(perSec, 1),
      postLatencyMs: {
        p50: round(percentile(latencies, 50), 2),
        p99: round(percentile(latencies, 99), 2),
        max: round(latencies[latencies.length - 1] ?? NaN, 2),
      },
      queuedAfter: queued,
      appPeakRssMb: run.peakRssMb,
      appRssMbAtEnd: run.rssMb,
      // Extension point: when a bulk HTTP route exists, measure it here and add `bulkTasksPerSec`.
      bulkHttp: null,
    },
  };
}
