import { measureAlternating, type AlternatingPair } from "./bullmq.js";
import { jobExists, log, percentile, sortedNumbers, withApp } from "./harness.js";
import { measureQueuedFirst } from "./queued-first.js";
import { round, type Row } from "./report.js";
import { WARM_JOB } from "./warm-figure.js";

/*
 * The warm comparison of figure 10 measured so that the machine's phases cancel out: one docq app
 * (2 slots) and one Redis up together, and pairs of rounds in turn, docq's queued-first round of
 * `jobs` tasks, then BullMQ's sandboxed run (its first `jobs` after its warm-up, then its next
 * `jobs`) seconds later. On this machine kind the same code's rate moves by a third within minutes
 * (docq's main thread spent 425 to 745 µs a task in consecutive rounds of one app on 2026-12-05);
 * figure 6 and BullMQ's run are minutes apart, so their ratio carries both sides' swings, where a
 * pair's ratio carries the swing of a few seconds. Both sides are JIT-warm: docq's app ran two
 * rounds first, BullMQ's worker (this process) ran its figures before.
 */

/** Slots of docq and concurrency of BullMQ in the pairs: the goal's figure. */
const PAIR_SLOTS = 2;

export interface AlternatingFigure {
  jobs: number;
  pairs: AlternatingPair[];
  /** The median of the pairs' ratios docq / BullMQ's first `jobs`, and docq / its next `jobs`. */
  medianVsFirst: number | null;
  medianVsSteady: number | null;
}

/** docq's rate over BullMQ's, per pair, leaving out pairs whose docq figure is missing. */
function ratios(pairs: readonly AlternatingPair[], side: "bullmqFirst" | "bullmqSteady"): number[] {
  return pairs.flatMap((p) => (p.docq === null || p[side] === 0 ? [] : [p.docq / p[side]]));
}

function median(values: readonly number[]): number | null {
  return values.length === 0 ? null : round(percentile(sortedNumbers(values), 50), 2);
}

/** The pairs, or why they were not measured (no redis-server, no warm job). */
export async function measureWarmAlternating(opts: { jobs: number; rounds: number }): Promise<AlternatingFigure | { skipped: string }> {
  if (!(await jobExists(WARM_JOB))) return { skipped: `scripts-job/${WARM_JOB} is missing` };
  const run = await withApp({ slots: PAIR_SLOTS }, async (app) => {
    const queuedFirst = async (): Promise<number | null> =>
      (await measureQueuedFirst(app.url, { job: WARM_JOB, count: opts.jobs, appPid: app.process.pid })).runPhaseTasksPerSec;
    // The warm process started and the app's JIT warmed, as figure 6's rounds are before its steady state.
    log(`docq vs BullMQ, alternating: docq's warm-up, 2 × ${opts.jobs} ${WARM_JOB} tasks queued first`);
    await queuedFirst();
    await queuedFirst();
    return measureAlternating({ concurrency: PAIR_SLOTS, jobs: opts.jobs, rounds: opts.rounds, docqRound: queuedFirst });
  });
  const measured = run.result;
  if ("skipped" in measured) return measured;
  const { pairs } = measured;
  return {
    jobs: opts.jobs,
    pairs,
    medianVsFirst: median(ratios(pairs, "bullmqFirst")),
    medianVsSteady: median(ratios(pairs, "bullmqSteady")),
  };
}

/** Figure 10's rows of the pairs: the median ratio against each BullMQ segment, every pair in the note. */
export function alternatingRows(figure: AlternatingFigure): Row[] {
  const each = (side: "bullmqFirst" | "bullmqSteady"): string =>
    figure.pairs
      .map((p) => `${p.docq ?? "?"} / ${p[side]}${p.docq === null || p[side] === 0 ? "" : ` = ${round(p.docq / p[side], 2)}`}`)
      .join("; ");
  const n = figure.jobs.toLocaleString("en-US");
  const what = `noop-warm, ${PAIR_SLOTS} slots vs sandboxed processors, concurrency ${PAIR_SLOTS}, in alternating pairs (one app, one Redis; docq's round of ${n} queued first, then BullMQ's run seconds later)`;
  return [
    {
      measure: `${what}: median of ${figure.pairs.length} pair${figure.pairs.length === 1 ? "" : "s"}, against BullMQ's first ${n} jobs`,
      value: figure.medianVsFirst,
      unit: "× BullMQ",
      note: `tasks/s, docq / BullMQ: ${each("bullmqFirst")}`,
    },
    {
      measure: `the same pairs against BullMQ's next ${n} jobs (its steady state)`,
      value: figure.medianVsSteady,
      unit: "× BullMQ",
      note: `tasks/s, docq / BullMQ: ${each("bullmqSteady")}`,
    },
  ];
}
