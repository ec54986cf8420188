import { CLIENT_CONCURRENCY, log, submitMany, waitForCounts, withApp } from "./harness.js";
import { THROUGHPUT_SLOTS } from "./throughput.js";
import { round, type FigureResult } from "./report.js";
import { getTask, submit, type StartOptions } from "../testFunctional/helpers.js";

export const LINES_PER_DOCUMENT = 50;
/** The warm split/merge: one document of this many lines through WARM_SPLIT_JOB. */
export const WARM_LINES = 1_000;
const WARM_SPLIT_JOB = "pages-warm";

/**
 * Figure 5: documents of 50 non-empty lines through `pages` (split into one child per line,
 * each child upper-cases its line, the merge joins them): 1 + 50 + 1 script runs per document.
 * End to end from the first submit until every parent and child is `output`. Then one document of
 * WARM_LINES lines through `pages-warm` (the same split, children and merge by a warm job): the
 * children/s of one large split, the per-task cost of the queue around a warm process. A first
 * document of the same size, not counted (as the batch figure's first request and BullMQ's first
 * addBulk call), starts its processes and takes the JIT's warm-up of the warm path (its rate is in
 * the row's note); the time runs from the client's submit to the merged output's record (the
 * parent's endTime: the same clock, no polling interval in it), and the parent's attempts give
 * the split and merge phases.
 */
export async function splitMergeFigure(opts: {
  documents: number;
  warmLines?: number;
  /** Extra app options (a profiler: --cpu-prof). */
  app?: Partial<StartOptions>;
}): Promise<FigureResult> {
  const { documents } = opts;
  const warmLines = opts.warmLines ?? WARM_LINES;
  const children = documents * LINES_PER_DOCUMENT;
  const runs = documents * (LINES_PER_DOCUMENT + 2);
  const doc = (d: number): string =>
    Array.from({ length: LINES_PER_DOCUMENT }, (_, l) => `document ${d} line ${l + 1}: some words to upper-case`).join("\n") + "\n";
  log(`split/merge: ${documents} documents × ${LINES_PER_DOCUMENT} lines through pages (${runs} script runs), ${THROUGHPUT_SLOTS} slots`);
  const run = await withApp({ ...opts.app, slots: THROUGHPUT_SLOTS }, async (app) => {
    const t0 = performance.now();
    const [, done] = await Promise.all([
      submitMany(app.url, documents, CLIENT_CONCURRENCY, doc, { job: "pages" }),
      // Every child and every parent ends in output.
      waitForCounts(
        app.url,
        `${documents} documents split and merged`,
        (c) => (c.output ?? 0) >= documents + children,
        Math.max(120_000, runs * 200),
      ),
    ]);
    const oneShotMs = done.at - t0;
    // The same split/merge by a warm job: one long document, one child per line, once its processes run.
    const doneCount = (extra: number) => (c: { output?: number }) => (c.output ?? 0) >= documents + children + extra;
    const lines = (count: number, what: string): string =>
      Array.from({ length: count }, (_, l) => `${what} line ${l + 1}: some words to upper-case`).join("\n") + "\n";
    const u0 = Date.now();
    const warmUpId = await submit(app.url, lines(warmLines, "warm-up document"), { job: WARM_SPLIT_JOB });
    await waitForCounts(app.url, `${WARM_SPLIT_JOB}'s warm-up document`, doneCount(1 + warmLines), Math.max(60_000, warmLines * 100));
    const warmUpEnd = (await getTask(app.url, warmUpId)).endTime;
    const warmUpMs = warmUpEnd === null ? null : warmUpEnd - u0;
    const w0 = Date.now();
    const p0 = performance.now();
    const parentId = await submit(app.url, lines(warmLines, "long document"), { job: WARM_SPLIT_JOB });
    const warmDone = await waitForCounts(
      app.url,
      `a ${warmLines}-line document split and merged by ${WARM_SPLIT_JOB}`,
      doneCount(2 * (1 + warmLines)),
      Math.max(60_000, warmLines * 100),
    );
    const polledMs = warmDone.at - p0;
    const parent = await getTask(app.url, parentId);
    // Its last two attempts: the split, then the merge.
    const times = parent.attempts.slice(-2).flatMap((attempt) => [attempt.start, attempt.end]);
    const known = times.filter((time): time is number => typeof time === "number");
    if (parent.endTime === null || known.length !== 4) {
      throw new Error(`the ${WARM_SPLIT_JOB} parent ${parentId} has no end time or lacks its split and merge attempts`);
    }
    const [splitStart, splitEnd, mergeStart, mergeEnd] = known as [number, number, number, number];
    const phases = { splitMs: splitEnd - splitStart, childrenMs: mergeStart - splitEnd, mergeMs: mergeEnd - mergeStart };
    return { ms: oneShotMs, warmMs: parent.endTime - w0, polledMs, phases, warmUpMs };
  });
  const { ms, warmMs, polledMs, phases, warmUpMs } = run.result;
  const warmChildrenPerSec = round((warmLines / warmMs) * 1000, 1);
  const warmUpChildrenPerSec = warmUpMs === null ? null : round((warmLines / warmUpMs) * 1000, 1);
  const perSec = (n: number): number => round((n / ms) * 1000, 1);
  return {
    key: "splitMerge",
    number: 5,
    title: "Split/merge",
    rows: [
      {
        measure: `${documents} documents × ${LINES_PER_DOCUMENT} lines through pages, ${THROUGHPUT_SLOTS} slots`,
        value: perSec(documents),
        unit: "documents/s",
        peakRssMb: run.peakRssMb,
        rssOf: "app",
        note: `${round(ms / 1000, 1)} s end to end`,
      },
      { measure: "child tasks", value: perSec(children), unit: "children/s" },
      {
        measure: "all script runs (split + children + merge)",
        value: perSec(runs),
        unit: "runs/s",
        note: "compare with figure 2's direct spawn rate",
      },
      {
        measure: `**one ${warmLines.toLocaleString("en-US")}-line document through ${WARM_SPLIT_JOB}**, ${THROUGHPUT_SLOTS} slots (goal ≥ 1,000 children/s)`,
        value: warmChildrenPerSec,
        unit: "children/s",
        note:
          `${round(warmMs / 1000, 2)} s from submit to the merged output's record (split ${phases.splitMs} ms, children ${phases.childrenMs} ms,` +
          ` merge ${phases.mergeMs} ms; seen by polling after ${round(polledMs / 1000, 2)} s); after a first document of the same size,` +
          ` not counted: ${warmUpChildrenPerSec ?? "?"} children/s, its processes started by it`,
      },
    ],
    data: {
      documents,
      linesPerDocument: LINES_PER_DOCUMENT,
      slots: THROUGHPUT_SLOTS,
      ms: round(ms),
      documentsPerSec: perSec(documents),
      childTasksPerSec: perSec(children),
      scriptRunsPerSec: perSec(runs),
      warm: {
        job: WARM_SPLIT_JOB,
        lines: warmLines,
        ms: round(warmMs),
        polledMs: round(polledMs),
        ...phases,
        childrenPerSec: warmChildrenPerSec,
        warmUp: { lines: warmLines, ms: warmUpMs, childrenPerSec: warmUpChildrenPerSec, counted: false },
      },
      appPeakRssMb: run.peakRssMb,
    },
  };
}
