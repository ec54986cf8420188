import { submit } from "../testFunctional/helpers.js";
import { type EmbeddedApp } from "../testFunctional/helpers.js";
import { log, percentile, sortedNumbers, waitTaskStatus, withApp } from "./harness.js";
import { round, type FigureResult } from "./report.js";

/** The jobs figure 3 times one task at a time: a one-shot script, and the same no-op kept warm. */
const LATENCY_JOBS = ["noop", "noop-warm"] as const;

interface Latencies {
  toStart: number[];
  toOutput: number[];
  post: number[];
}

/** `count` tasks of `job`, one at a time (after `warmup` untimed ones), each waited for before the next is sent. */
async function oneAtATime(app: EmbeddedApp, job: string, count: number, warmup: number): Promise<Latencies> {
  const toStart: number[] = [];
  const toOutput: number[] = [];
  const post: number[] = [];
  for (let i = 0; i < warmup + count; i++) {
    const t = performance.now();
    const id = await submit(app.url, `latency document ${i}\n`, { job });
    const postMs = performance.now() - t;
    const task = await waitTaskStatus(app.url, id, ["output"], 30_000, 2);
    if (i < warmup) continue;
    if (task.startTime === null || task.endTime === null) throw new Error(`task ${id} is output without startTime/endTime`);
    toStart.push(task.startTime - task.submitTime);
    toOutput.push(task.endTime - task.submitTime);
    post.push(postMs);
  }
  return { toStart: sortedNumbers(toStart), toOutput: sortedNumbers(toOutput), post: sortedNumbers(post) };
}

/**
 * Figure 3: latency with an idle worker, one task at a time, for a one-shot job (`noop`) and a warm
 * one (`noop-warm`, its process started by the warm-up tasks). The figures come from the task
 * records (the app's clock, ms resolution): submit → start is submitTime → startTime (the queue
 * and the worker's pull), submit → output is submitTime → endTime (plus the script run, storing the
 * output and the completion). submitTime is taken once the document is stored, so the upload is
 * not in them; the client's POST round trip is given beside them.
 */
export async function latencyFigure(opts: { count: number }): Promise<FigureResult> {
  const { count } = opts;
  const warmup = Math.min(10, Math.ceil(count / 10));
  log(`latency: ${count} tasks of ${LATENCY_JOBS.join(", then ")} one at a time (after ${warmup} warm-up tasks each), 1 idle slot`);
  const run = await withApp({ slots: 1 }, async (app) => {
    const byJob: Record<string, Latencies> = {};
    for (const job of LATENCY_JOBS) byJob[job] = await oneAtATime(app, job, count, warmup);
    return byJob;
  });
  const p = (xs: number[], q: number): number => round(percentile(xs, q), 1);
  const summary = (l: Latencies) => ({
    submitToStartMs: { p50: p(l.toStart, 50), p99: p(l.toStart, 99), max: l.toStart[l.toStart.length - 1] ?? null },
    submitToOutputMs: { p50: p(l.toOutput, 50), p99: p(l.toOutput, 99), max: l.toOutput[l.toOutput.length - 1] ?? null },
    postRoundTripMs: { p50: p(l.post, 50), p99: p(l.post, 99) },
  });
  const oneShot = run.result.noop!;
  const warm = run.result["noop-warm"]!;
  return {
    key: "latency",
    number: 3,
    title: "Latency, idle worker",
    rows: [
      {
        measure: `noop: submit → start p50 / p99 (${count} tasks, one at a time)`,
        value: p(oneShot.toStart, 50),
        unit: `ms / ${p(oneShot.toStart, 99)} ms`,
        peakRssMb: run.peakRssMb,
        rssOf: "app",
      },
      { measure: "noop: submit → output p50 / p99", value: p(oneShot.toOutput, 50), unit: `ms / ${p(oneShot.toOutput, 99)} ms` },
      {
        measure: "client POST round trip p50 / p99",
        value: p(oneShot.post, 50),
        unit: `ms / ${p(oneShot.post, 99)} ms`,
        note: "document stored before submitTime",
      },
      {
        measure: `noop-warm: submit → start p50 / p99 (${count} tasks, one at a time)`,
        value: p(warm.toStart, 50),
        unit: `ms / ${p(warm.toStart, 99)} ms`,
      },
      {
        measure: "**noop-warm: submit → output p50 / p99** (goal ≤ 3 ms / ≤ 10 ms)",
        value: p(warm.toOutput, 50),
        unit: `ms / ${p(warm.toOutput, 99)} ms`,
      },
    ],
    data: {
      count,
      warmup,
      ...summary(oneShot),
      warm: summary(warm),
      appPeakRssMb: run.peakRssMb,
    },
  };
}
