import { CLIENT_CONCURRENCY, log, submitMany, waitForCounts, withApp } from "./harness.js";
import { THROUGHPUT_SLOTS } from "./throughput.js";
import { round, type FigureResult } from "./report.js";
import type { StartOptions } from "../testFunctional/helpers.js";

export const LINES_PER_DOCUMENT = 50;
/** The warm split/merge: one document of this many lines through WARM_SPLIT_JOB. */
export const WARM_LINES = 1_000;
const WARM_SPLIT_JOB = "pages-warm";

/**
 * Figure 5: documents of 50 non-empty lines through `pages` (split into one child per line,
 * each child upper-cases its line, the merge joins them): 1 + 50 + 1 script runs per document.
 * End to end from the first submit until every parent and child is `output`. Then one document of
 * WARM_LINES lines through `pages-warm` (the same split, children and merge by a warm job): the
 * children/s of one large split, the per-task cost of the queue around a warm process.
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
    // The same split/merge by a warm job: one long document, one child per line.
    const long = Array.from({ length: warmLines }, (_, l) => `long document line ${l + 1}: some words to upper-case`).join("\n") + "\n";
    const w0 = performance.now();
    const [, warmDone] = await Promise.all([
      submitMany(app.url, 1, 1, () => long, { job: WARM_SPLIT_JOB }),
      waitForCounts(
        app.url,
        `a ${warmLines}-line document split and merged by ${WARM_SPLIT_JOB}`,
        (c) => (c.output ?? 0) >= documents + children + 1 + warmLines,
        Math.max(60_000, warmLines * 100),
      ),
    ]);
    return { ms: oneShotMs, warmMs: warmDone.at - w0 };
  });
  const { ms, warmMs } = run.result;
  const warmChildrenPerSec = round((warmLines / warmMs) * 1000, 1);
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
        note: `${round(warmMs / 1000, 2)} s from submit to the merged output`,
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
      warm: { job: WARM_SPLIT_JOB, lines: warmLines, ms: round(warmMs), childrenPerSec: warmChildrenPerSec },
      appPeakRssMb: run.peakRssMb,
    },
  };
}
