import { submit } from "../testFunctional/helpers.js";
import { log, percentile, sortedNumbers, waitTaskStatus, withApp } from "./harness.js";
import { round, type FigureResult } from "./report.js";

/**
 * Figure 3: latency with an idle worker, one task at a time. The figures come from the task
 * records (the app's clock, ms resolution): submit → start is submitTime → startTime (the queue
 * and the worker's pull), submit → output is submitTime → endTime (plus the script run, storing the
 * output and the completion). submitTime is taken once the document is stored, so the upload is
 * not in them; the client's POST round trip is given beside them.
 */
export async function latencyFigure(opts: { count: number }): Promise<FigureResult> {
  const { count } = opts;
  const warmup = Math.min(10, Math.ceil(count / 10));
  log(`latency: ${count} noop tasks one at a time (after ${warmup} warm-up tasks), 1 idle slot`);
  const run = await withApp({ slots: 1 }, async (app) => {
    const toStart: number[] = [];
    const toOutput: number[] = [];
    const post: number[] = [];
    for (let i = 0; i < warmup + count; i++) {
      const t = performance.now();
      const id = await submit(app.url, `latency document ${i}\n`, { job: "noop" });
      const postMs = performance.now() - t;
      const task = await waitTaskStatus(app.url, id, ["output"], 30_000, 2);
      if (i < warmup) continue;
      if (task.startTime === null || task.endTime === null) throw new Error(`task ${id} is output without startTime/endTime`);
      toStart.push(task.startTime - task.submitTime);
      toOutput.push(task.endTime - task.submitTime);
      post.push(postMs);
    }
    return { toStart: sortedNumbers(toStart), toOutput: sortedNumbers(toOutput), post: sortedNumbers(post) };
  });
  const { toStart, toOutput, post } = run.result;
  const p = (xs: number[], q: number): number => round(percentile(xs, q), 1);
  return {
    key: "latency",
    number: 3,
    title: "Latency, idle worker",
    rows: [
      {
        measure: `submit → start p50 / p99 (${count} tasks, one at a time)`,
        value: p(toStart, 50),
        unit: `ms / ${p(toStart, 99)} ms`,
        peakRssMb: run.peakRssMb,
        rssOf: "app",
      },
      { measure: "submit → output p50 / p99", value: p(toOutput, 50), unit: `ms / ${p(toOutput, 99)} ms` },
      {
        measure: "client POST round trip p50 / p99",
        value: p(post, 50),
        unit: `ms / ${p(post, 99)} ms`,
        note: "document stored durably before submitTime",
      },
    ],
    data: {
      count,
      warmup,
      submitToStartMs: { p50: p(toStart, 50), p99: p(toStart, 99), max: toStart[toStart.length - 1] ?? null },
      submitToOutputMs: { p50: p(toOutput, 50), p99: p(toOutput, 99), max: toOutput[toOutput.length - 1] ?? null },
      postRoundTripMs: { p50: p(post, 50), p99: p(post, 99) },
      appPeakRssMb: run.peakRssMb,
    },
  };
}
