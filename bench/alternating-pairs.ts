import { BATCH_DOCUMENT_BYTES, BATCH_DOCUMENTS, measureBatchSubmit } from "./batch-submit.js";
import { withBullmq } from "./bullmq.js";
import { jobExists, log, percentile, sortedNumbers, withApp } from "./harness.js";
import { measureQueuedFirst } from "./queued-first.js";
import { round, type Row } from "./report.js";
import { WARM_JOB } from "./warm-figure.js";

/*
 * Two of figure 10's comparisons measured so that the machine's phases cancel out: one docq app
 * and one Redis up together, and pairs of rounds in turn, docq's then BullMQ's seconds later.
 * On this machine kind the same code's rate moves by a third within minutes (docq's main thread
 * spent 425 to 720 µs a warm task in the rounds of two apps on 2026-12-05); the figures
 * the other rows compare are minutes apart, so their ratios carry both sides' swings, where a
 * pair's ratio carries the swing of a few seconds.
 *
 * - Warm, 2 slots: docq's queued-first round of `jobs` noop-warm tasks, then BullMQ's sandboxed
 *   run (its first `jobs` after its warm-up, then its next `jobs`). Both sides JIT-warm: docq's
 *   app ran two rounds first, BullMQ's worker (this process) ran its figures before.
 * - Batch: docq's POST /api/tasks/batch, `batchRequests` requests of 1,000 documents of 1 KB
 *   (after the route's first 11, as figure 1), then BullMQ's as many addBulk calls of 1,000 jobs
 *   of 1 KB (after one). docq's tasks are due in an hour, so none runs in the app meanwhile.
 */

/** Slots of docq and concurrency of BullMQ in the warm pairs: the goal's figure. */
const PAIR_SLOTS = 2;

/** The batch route's requests before its pairs: figure 1's warm-up (one, then ten). */
const BATCH_WARM_UP_REQUESTS = 11;

/** The batch pairs' tasks wait this long before they are due: they stay queued while the app lives. */
const BATCH_HOLD_MS = 3_600_000;

export interface WarmPair {
  /** docq's round (tasks/s); null when its figure could not be read. */
  docq: number | null;
  /** BullMQ's first `jobs` after its warm-up, and its next `jobs` (both jobs/s). */
  bullmqFirst: number;
  bullmqSteady: number;
}

export interface BatchPair {
  docq: number;
  bullmq: number;
}

export interface AlternatingFigure {
  pairs: number;
  warm: { jobs: number; pairs: WarmPair[]; medianVsFirst: number | null; medianVsSteady: number | null };
  batch: { requests: number; pairs: BatchPair[]; median: number | null };
}

function median(values: readonly number[]): number | null {
  return values.length === 0 ? null : round(percentile(sortedNumbers(values), 50), 2);
}

/** docq's rate over BullMQ's in one pair; null when docq's figure is missing (or BullMQ's is 0). */
function pairRatio(docq: number | null, bullmq: number): number | null {
  return docq === null || bullmq === 0 ? null : docq / bullmq;
}

/** The pairs' ratios, leaving out those that have none. */
function ratiosOf(pairs: readonly { docq: number | null; bullmq: number }[]): number[] {
  return pairs.flatMap((p) => pairRatio(p.docq, p.bullmq) ?? []);
}

/** The warm pairs against one of BullMQ's two segments. */
const warmAgainst = (pairs: readonly WarmPair[], side: "bullmqFirst" | "bullmqSteady") =>
  pairs.map((p) => ({ docq: p.docq, bullmq: p[side] }));

/** The pairs, or why they were not measured (no redis-server, no warm job). */
export async function measureAlternatingPairs(opts: {
  pairs: number;
  warmJobs: number;
  batchRequests: number;
}): Promise<AlternatingFigure | { skipped: string }> {
  if (!(await jobExists(WARM_JOB))) return { skipped: `scripts-job/${WARM_JOB} is missing` };
  const run = await withApp({ slots: PAIR_SLOTS }, async (app) => {
    const queuedFirst = async (): Promise<number | null> =>
      (await measureQueuedFirst(app.url, { job: WARM_JOB, count: opts.warmJobs, appPid: app.process.pid })).runPhaseTasksPerSec;
    const batch = async (requests: number): Promise<number> =>
      (
        await measureBatchSubmit(app.url, {
          requests,
          perRequest: BATCH_DOCUMENTS,
          documentBytes: BATCH_DOCUMENT_BYTES,
          job: "noop",
          runAt: Date.now() + BATCH_HOLD_MS,
        })
      ).tasksPerSec;
    // The warm process started and the app's JIT warmed, as figure 6's rounds are before its steady state.
    log(`docq vs BullMQ, alternating: docq's warm-up, 2 × ${opts.warmJobs} ${WARM_JOB} tasks queued first`);
    await queuedFirst();
    await queuedFirst();
    return withBullmq(async (bullmq) => {
      const warm: WarmPair[] = [];
      for (let pair = 1; pair <= opts.pairs; pair++) {
        log(`docq vs BullMQ, alternating warm pair ${pair} of ${opts.pairs}: docq's round, then BullMQ's`);
        const docq = await queuedFirst();
        const sandboxed = await bullmq.sandboxed(PAIR_SLOTS, opts.warmJobs);
        warm.push({ docq, bullmqFirst: sandboxed.jobsPerSec, bullmqSteady: sandboxed.steady.jobsPerSec });
      }
      log(`docq vs BullMQ, alternating: the batch route's first ${BATCH_WARM_UP_REQUESTS} requests, not counted`);
      await batch(BATCH_WARM_UP_REQUESTS);
      const batches: BatchPair[] = [];
      for (let pair = 1; pair <= opts.pairs; pair++) {
        log(`docq vs BullMQ, alternating batch pair ${pair} of ${opts.pairs}: docq's requests, then BullMQ's addBulk calls`);
        const docq = await batch(opts.batchRequests);
        const addBulk = await bullmq.addBulk(opts.batchRequests, BATCH_DOCUMENT_BYTES);
        batches.push({ docq, bullmq: addBulk.jobsPerSec });
      }
      return { warm, batches };
    });
  });
  const measured = run.result;
  if ("skipped" in measured) return measured;
  const { warm, batches } = measured.value;
  return {
    pairs: opts.pairs,
    warm: {
      jobs: opts.warmJobs,
      pairs: warm,
      medianVsFirst: median(ratiosOf(warmAgainst(warm, "bullmqFirst"))),
      medianVsSteady: median(ratiosOf(warmAgainst(warm, "bullmqSteady"))),
    },
    batch: { requests: opts.batchRequests, pairs: batches, median: median(ratiosOf(batches)) },
  };
}

/** "docq / BullMQ = ratio" for each pair. */
function eachPair(pairs: readonly { docq: number | null; bullmq: number }[]): string {
  return pairs
    .map((p) => {
      const ratio = pairRatio(p.docq, p.bullmq);
      return `${p.docq ?? "?"} / ${p.bullmq}${ratio === null ? "" : ` = ${round(ratio, 2)}`}`;
    })
    .join("; ");
}

const pairsText = (n: number): string => `${n} pair${n === 1 ? "" : "s"}`;

/** Figure 10's rows of the warm pairs: the median ratio against each BullMQ segment, every pair in the note. */
export function warmPairRows(figure: AlternatingFigure): Row[] {
  const { warm } = figure;
  const n = warm.jobs.toLocaleString("en-US");
  const what = `noop-warm, ${PAIR_SLOTS} slots vs sandboxed processors, concurrency ${PAIR_SLOTS}, in alternating pairs (one app, one Redis; docq's round of ${n} queued first, then BullMQ's run seconds later)`;
  return [
    {
      measure: `${what}: median of ${pairsText(warm.pairs.length)}, against BullMQ's first ${n} jobs`,
      value: warm.medianVsFirst,
      unit: "× BullMQ",
      note: `tasks/s, docq / BullMQ: ${eachPair(warmAgainst(warm.pairs, "bullmqFirst"))}`,
    },
    {
      measure: `the same pairs against BullMQ's next ${n} jobs (its steady state)`,
      value: warm.medianVsSteady,
      unit: "× BullMQ",
      note: `tasks/s, docq / BullMQ: ${eachPair(warmAgainst(warm.pairs, "bullmqSteady"))}`,
    },
  ];
}

/** Figure 10's row of the batch pairs. */
export function batchPairRow(figure: AlternatingFigure): Row {
  const { batch } = figure;
  return {
    measure: `POST /api/tasks/batch vs addBulk in alternating pairs (the same app and Redis; ${batch.requests} request${batch.requests === 1 ? "" : "s"} of 1,000 documents of 1 KB, then as many addBulk calls of 1,000 jobs of 1 KB): median of ${pairsText(batch.pairs.length)}`,
    value: batch.median,
    unit: "× BullMQ",
    note: `tasks/s, docq / BullMQ: ${eachPair(batch.pairs)}`,
  };
}
