import { CLIENT_CONCURRENCY, log, submitMany, waitForCounts, withApp } from "./harness.js";
import { THROUGHPUT_SLOTS } from "./throughput.js";
import { round, type FigureResult } from "./report.js";

export const LINES_PER_DOCUMENT = 50;

/**
 * Figure 5: documents of 50 non-empty lines through `pages` (split into one child per line,
 * each child upper-cases its line, the merge joins them): 1 + 50 + 1 script runs per document.
 * End to end from the first submit until every parent and child is `output`.
 */
export async function splitMergeFigure(opts: { documents: number }): Promise<FigureResult> {
  const { documents } = opts;
  const children = documents * LINES_PER_DOCUMENT;
  const runs = documents * (LINES_PER_DOCUMENT + 2);
  const doc = (d: number): string =>
    Array.from({ length: LINES_PER_DOCUMENT }, (_, l) => `document ${d} line ${l + 1}: some words to upper-case`).join("\n") + "\n";
  log(`split/merge: ${documents} documents × ${LINES_PER_DOCUMENT} lines through pages (${runs} script runs), ${THROUGHPUT_SLOTS} slots`);
  const run = await withApp({ slots: THROUGHPUT_SLOTS }, async (app) => {
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
    return { ms: done.at - t0 };
  });
  const { ms } = run.result;
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
    ],
    data: {
      documents,
      linesPerDocument: LINES_PER_DOCUMENT,
      slots: THROUGHPUT_SLOTS,
      ms: round(ms),
      documentsPerSec: perSec(documents),
      childTasksPerSec: perSec(children),
      scriptRunsPerSec: perSec(runs),
      appPeakRssMb: run.peakRssMb,
    },
  };
}
