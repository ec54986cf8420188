import { submit, type StartOptions } from "../testFunctional/helpers.js";
import { BATCH_DOCUMENT_BYTES, BATCH_DOCUMENTS, measureBatchSubmit, postBatchByFetch, type BatchSubmitRun } from "./batch-submit.js";
import { CLIENT_CONCURRENCY, log, percentile, sortedNumbers, submitMany, waitTaskStatus, withApp, getStats } from "./harness.js";
import { cpuSince, processCpuMs } from "./proc-cpu.js";
import { round, type FigureResult } from "./report.js";

/**
 * Figure 1: tasks/s accepted through `POST /api/tasks` (each answered 201 only once the task and
 * its document are durable), small documents, client concurrency 32.
 *
 * Then the batch route (`POST /api/tasks/batch`), in the same app: requests of 1,000 documents of
 * 1 KB, one at a time.
 *
 * Enqueue is measured alone: the app has one worker slot, held by a long `sleep` task submitted
 * first, so the no-op tasks stay queued and no job script is spawned while they arrive.
 */
export async function enqueueFigure(opts: {
  count: number;
  /** Requests of the batch figure, BATCH_DOCUMENTS documents each (0: not measured). */
  batchRequests: number;
  /** Extra app options (a profiler: --cpu-prof). */
  app?: StartOptions;
}): Promise<FigureResult> {
  const { count } = opts;
  const run = await withApp({ ...opts.app, slots: 1 }, async (app) => {
    const blocker = await submit(app.url, "blocker\n", { job: "sleep", params: { ms: 3_600_000 }, maxTries: 1 });
    await waitTaskStatus(app.url, blocker, ["work"], 30_000, 20);
    // A short warm-up (not counted) so the figure is not the JIT's first minute.
    await submitMany(app.url, Math.min(200, Math.ceil(count / 10)), CLIENT_CONCURRENCY, (i) => `warm-up document ${i}\n`, { job: "noop" });
    log(`enqueue: ${count} tasks through POST /api/tasks at concurrency ${CLIENT_CONCURRENCY}`);
    const pid = app.process.pid;
    const cpu0 = await processCpuMs(pid);
    const t0 = performance.now();
    const { latenciesMs } = await submitMany(app.url, count, CLIENT_CONCURRENCY, (i) => `small document number ${i}\n`, { job: "noop" });
    const ms = performance.now() - t0;
    const singleCpuMs = await cpuSince(pid, cpu0);
    const stats = await getStats(app.url);
    // The same submits through fetch (undici), the client of the figures before 2026-12-04 and of
    // the tests: its own CPU per request is above the app's, on the same two cores.
    log(`enqueue: ${count} tasks through POST /api/tasks at concurrency ${CLIENT_CONCURRENCY}, fetch as the client`);
    const fetchCpu0 = await processCpuMs(pid);
    const f0 = performance.now();
    await submitMany(app.url, count, CLIENT_CONCURRENCY, (i) => `small document number ${i}\n`, { job: "noop" }, submit);
    const fetchMs = performance.now() - f0;
    const fetchCpuMs = await cpuSince(pid, fetchCpu0);
    let batch: BatchSubmitRun | null = null;
    let batchCpuMs: number | null = null;
    let batchFirst: BatchSubmitRun | null = null;
    let batchByFetch: BatchSubmitRun | null = null;
    if (opts.batchRequests > 0) {
      // The same app, its slot still held: the batch route's tasks stay queued too. One request of
      // the measured size first, not counted, as BullMQ's first addBulk call of 1,000 (bullmq.ts).
      const sizes = { requests: opts.batchRequests, perRequest: BATCH_DOCUMENTS, documentBytes: BATCH_DOCUMENT_BYTES, job: "noop" };
      await measureBatchSubmit(app.url, { ...sizes, requests: 1 });
      // The route's first requests run while the JIT compiles it and the store's files grow: a row
      // of their own. BullMQ's client has made about as many addBulk calls of 1,000 before its
      // figure (the sandboxed runs add their jobs so), so the figure is the requests after these.
      log(
        `enqueue: ${opts.batchRequests} × ${BATCH_DOCUMENTS} documents of ${BATCH_DOCUMENT_BYTES} B through POST /api/tasks/batch, the first`,
      );
      batchFirst = await measureBatchSubmit(app.url, sizes);
      log(`enqueue: ${opts.batchRequests} × ${BATCH_DOCUMENTS} documents of ${BATCH_DOCUMENT_BYTES} B through POST /api/tasks/batch`);
      const batchCpu0 = await processCpuMs(pid);
      batch = await measureBatchSubmit(app.url, sizes);
      batchCpuMs = await cpuSince(pid, batchCpu0);
      // The same through fetch, the batch figure's client before 2026-12-04.
      log(`enqueue: the same batch requests, fetch as the client`);
      batchByFetch = await measureBatchSubmit(app.url, sizes, postBatchByFetch);
    }
    return {
      ms,
      latencies: sortedNumbers(latenciesMs),
      queued: stats.byStatus.input ?? 0,
      batch,
      batchFirst,
      batchByFetch,
      singleCpuMs,
      batchCpuMs,
      fetchMs,
      fetchCpuMs,
    };
  });
  const { ms, latencies, queued, batch, batchFirst, batchByFetch, singleCpuMs, batchCpuMs, fetchMs, fetchCpuMs } = run.result;
  const perThousand = (cpuMs: number | null, tasks: number): number | null => (cpuMs === null ? null : round((cpuMs / tasks) * 1000));
  const singleCpuPer1000 = perThousand(singleCpuMs, count);
  const fetchCpuPer1000 = perThousand(fetchCpuMs, count);
  const fetchPerSec = (count / fetchMs) * 1000;
  const batchCpuPer1000 = batch === null ? null : perThousand(batchCpuMs, batch.requests * batch.perRequest);
  const perSec = (count / ms) * 1000;
  return {
    key: "enqueue",
    number: 1,
    title: "Enqueue",
    rows: [
      {
        measure: `POST /api/tasks, ${count.toLocaleString("en-US")} documents of ~30 B, concurrency ${CLIENT_CONCURRENCY} (node:http client)`,
        value: round(perSec),
        unit: "tasks/s",
        peakRssMb: run.peakRssMb,
        rssOf: "app",
        ...(singleCpuPer1000 === null
          ? {}
          : { note: `app CPU ${singleCpuPer1000} ms per 1,000 tasks (what a loaded machine's wall time hides)` }),
      },
      {
        measure: "POST latency p50 / p99 under that load",
        value: round(percentile(latencies, 50), 1),
        unit: `ms / ${round(percentile(latencies, 99), 1)} ms`,
      },
      {
        measure: `the same, fetch (undici) as the client`,
        value: round(fetchPerSec),
        unit: "tasks/s",
        note: `the client of the figures before 2026-12-04${fetchCpuPer1000 === null ? "" : `; app CPU ${fetchCpuPer1000} ms per 1,000 tasks`}`,
      },
      batch === null
        ? { measure: "POST /api/tasks/batch", value: null, unit: "", note: "not measured in this run" }
        : {
            measure: `POST /api/tasks/batch, ${batch.requests} requests of ${BATCH_DOCUMENTS.toLocaleString("en-US")} documents of ${BATCH_DOCUMENT_BYTES} B, one at a time (node:http client), after the route's first ${1 + (batchFirst?.requests ?? 0)}`,
            value: batch.tasksPerSec,
            unit: "tasks/s",
            note: `a request: p50 ${batch.requestMs.p50} ms, max ${batch.requestMs.max} ms${batchCpuPer1000 === null ? "" : `; app CPU ${batchCpuPer1000} ms per 1,000 tasks`}`,
          },
      ...[
        { run: batchFirst, measure: "the route's first requests (after one): JIT compiling, store files growing", note: "" },
        {
          run: batchByFetch,
          measure: "the same as the figure, fetch (undici) as the client",
          note: "the client before 2026-12-04, run after the figure; ",
        },
      ].flatMap(({ run: other, measure, note }) =>
        other === null
          ? []
          : [
              {
                measure,
                value: other.tasksPerSec,
                unit: "tasks/s",
                note: `${note}a request: p50 ${other.requestMs.p50} ms, max ${other.requestMs.max} ms`,
              },
            ],
      ),
    ],
    data: {
      count,
      concurrency: CLIENT_CONCURRENCY,
      ms: round(ms),
      tasksPerSec: round(perSec, 1),
      client: "node:http, kept-alive sockets (bench/submit-client.ts)",
      fetchClient: { tasksPerSec: round(fetchPerSec, 1), ms: round(fetchMs), appCpuMsPer1000: fetchCpuPer1000 },
      postLatencyMs: {
        p50: round(percentile(latencies, 50), 2),
        p99: round(percentile(latencies, 99), 2),
        max: round(latencies[latencies.length - 1] ?? NaN, 2),
      },
      queuedAfter: queued,
      appCpuMsPer1000: { single: singleCpuPer1000, batch: batchCpuPer1000 },
      appPeakRssMb: run.peakRssMb,
      appRssMbAtEnd: run.rssMb,
      batch,
      batchFirst,
      batchByFetch,
    },
  };
}
