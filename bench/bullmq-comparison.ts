import { measureBullmq, type BullmqCounts, type BullmqFigures } from "./bullmq.js";
import { errorMessage } from "../common/model/errors.js";
import { log } from "./harness.js";
import { busyText, describeCpuPerTask, type CpuPerTask } from "./proc-cpu.js";
import { round, type FigureResult, type Row } from "./report.js";
import { batchPairRow, measureAlternatingPairs, warmPairRows } from "./alternating-pairs.js";

/*
 * `npm run bench -- --vs-bullmq`: BullMQ's figures measured in the same run (bench/bullmq.ts), each
 * beside the docq figure it answers, with the ratio docq / BullMQ (> 1: docq ahead; for latencies
 * BullMQ / docq, so > 1 still means docq ahead):
 *   warm noop at 2 and 8 slots (figure 6, run phase of tasks queued first) vs sandboxed processors at
 *   concurrency 2 and 8 (jobs added first: the same shape), and both again at steady state (docq's
 *   second queued-first run, BullMQ's next as many jobs: each side's rate climbs over its first
 *   thousands of tasks as the JIT warms up),
 *   POST /api/tasks/batch (figure 1) vs addBulk, POST with 32 in flight (figure 1) vs add with 100,
 *   submit → output p50/p99 (figure 3) vs add → completed;
 *   then the warm comparison at 2 and the batch one again, in alternating pairs of rounds seconds
 *   apart in one app and one Redis (alternating-pairs.ts), where the rows above compare figures
 *   measured minutes apart.
 * A docq figure not run in this run (--only) leaves its ratio empty, saying so.
 */

export const BULLMQ_COUNTS: BullmqCounts = { sandboxed: 2_000, bulkCalls: 10, adds: 10_000, latency: 500 };
export const BULLMQ_QUICK_COUNTS: BullmqCounts = { sandboxed: 100, bulkCalls: 1, adds: 300, latency: 30 };
/** The warm and batch comparisons again in alternating pairs (alternating-pairs.ts). */
const ALTERNATING = { pairs: 5, warmJobs: 2_000, batchRequests: 10 };
const ALTERNATING_QUICK = { pairs: 1, warmJobs: 100, batchRequests: 1 };

/** A number at `path` in a figure's data, or null. */
function dataAt(results: readonly FigureResult[], key: string, path: readonly string[]): number | null {
  let node: unknown = results.find((r) => r.key === key && r.skipped === undefined)?.data;
  for (const part of path) node = typeof node === "object" && node !== null ? (node as Record<string, unknown>)[part] : undefined;
  return typeof node === "number" && Number.isFinite(node) ? node : null;
}

interface Pair {
  what: string;
  docq: number | null;
  /** Where the docq figure comes from, said when it was not run. */
  docqFrom: string;
  bullmq: number;
  unit: string;
  /** true: smaller is better (a latency), the ratio is BullMQ / docq. */
  lowerIsBetter?: boolean;
}

function ratioOf(pair: Pair): number | null {
  if (pair.docq === null || pair.docq === 0 || pair.bullmq === 0) return null;
  return round(pair.lowerIsBetter === true ? pair.bullmq / pair.docq : pair.docq / pair.bullmq, 2);
}

function pairsOf(results: readonly FigureResult[], b: BullmqFigures): Pair[] {
  const sandboxed = (c: number) => b.sandboxed.find((s) => s.concurrency === c);
  return [
    ...[2, 8].map((slots): Pair => ({
      what: `noop-warm, ${slots} slots (run phase, tasks queued first) vs sandboxed processors, concurrency ${slots} (jobs added first)`,
      docq: dataAt(results, "warm", ["bySlots", String(slots), "queuedFirst", "runPhaseTasksPerSec"]),
      docqFrom: `figure 6 at ${slots} slots, queued first`,
      bullmq: sandboxed(slots)?.jobsPerSec ?? 0,
      unit: "tasks/s",
    })),
    ...[2, 8].map((slots): Pair => ({
      what: `noop-warm, ${slots} slots, at steady state: docq's second queued-first run vs BullMQ's next ${sandboxed(slots)?.jobs ?? "?"} jobs`,
      docq: dataAt(results, "warm", ["bySlots", String(slots), "queuedFirstAgain", "runPhaseTasksPerSec"]),
      docqFrom: `figure 6 at ${slots} slots, queued first, again`,
      bullmq: sandboxed(slots)?.steady.jobsPerSec ?? 0,
      unit: "tasks/s",
    })),
    {
      what: `POST /api/tasks/batch (1,000 documents of 1 KB a request) vs addBulk (1,000 jobs of ${b.addBulk.dataBytes} B of data a call)`,
      docq: dataAt(results, "enqueue", ["batch", "tasksPerSec"]),
      docqFrom: "figure 1's batch",
      bullmq: b.addBulk.jobsPerSec,
      unit: "tasks/s",
    },
    {
      what: `POST /api/tasks, 32 in flight vs add, ${b.add.inFlight} in flight`,
      docq: dataAt(results, "enqueue", ["tasksPerSec"]),
      docqFrom: "figure 1",
      bullmq: b.add.jobsPerSec,
      unit: "tasks/s",
    },
    ...(["p50", "p99"] as const).map((q): Pair => ({
      what: `noop-warm submit → output ${q} vs add → completed ${q} (sandboxed, one at a time, idle worker)`,
      // Figure 3's warm job, as BullMQ's sandboxed processor is one; its one-shot noop when the figure has no warm line.
      docq: dataAt(results, "latency", ["warm", "submitToOutputMs", q]) ?? dataAt(results, "latency", ["submitToOutputMs", q]),
      docqFrom: "figure 3",
      bullmq: b.latencyMs[q],
      unit: "ms",
      lowerIsBetter: true,
    })),
  ];
}

/**
 * The comparison figure, from the docq figures of this run (`results`) and BullMQ's, measured now.
 * Without redis-server it is skipped, saying so.
 */
export async function bullmqComparisonFigure(results: readonly FigureResult[], quick: boolean): Promise<FigureResult> {
  const base = { key: "vsBullmq", number: 10, title: "docq vs BullMQ (same run)" };
  const measured = await measureBullmq(quick ? BULLMQ_QUICK_COUNTS : BULLMQ_COUNTS);
  if ("skipped" in measured) return { ...base, rows: [], data: { skipped: measured.skipped }, skipped: measured.skipped };
  const b = measured.figures;
  const pairs = pairsOf(results, b);
  const rows: Row[] = pairs.map((pair) => {
    const ratio = ratioOf(pair);
    return {
      measure: pair.what,
      value: ratio,
      unit: "× BullMQ",
      note:
        pair.docq === null
          ? `BullMQ ${pair.bullmq} ${pair.unit}; ${pair.docqFrom} not run`
          : `docq ${pair.docq} ${pair.unit}, BullMQ ${pair.bullmq} ${pair.unit}${pair.lowerIsBetter === true ? " (ratio BullMQ / docq: > 1 is docq ahead)" : ""}`,
    };
  });
  log("docq vs BullMQ: the warm and batch comparisons again, in alternating pairs");
  // A failure here costs these rows only, not BullMQ's figures measured above.
  const alternating = await measureAlternatingPairs(quick ? ALTERNATING_QUICK : ALTERNATING).catch((err: unknown) => ({
    skipped: `FAILED: ${errorMessage(err).split("\n")[0]}`,
  }));
  if ("skipped" in alternating) {
    rows.push({
      measure: "noop-warm and the batch route vs BullMQ in alternating pairs",
      value: null,
      unit: "",
      note: `not measured: ${alternating.skipped}`,
    });
  } else {
    // Each beside the rows it measures again, so that the machine's phases cancel out.
    const batchAt = pairs.findIndex((pair) => pair.what.startsWith("POST /api/tasks/batch"));
    rows.splice(batchAt + 1, 0, batchPairRow(alternating));
    rows.splice(4, 0, ...warmPairRows(alternating));
  }
  rows.push(...cpuRows(results, b));
  rows.push({
    measure: "BullMQ and Redis",
    value: null,
    unit: "",
    note: `BullMQ ${b.bullmq}, redis-server ${b.redis} started by the bench (--save "" --appendonly no: nothing on disk); docq stores every document`,
  });
  return {
    ...base,
    rows,
    data: {
      bullmq: b,
      comparisons: pairs.map((pair) => ({ ...pair, ratio: ratioOf(pair) })),
      alternating,
    },
  };
}

/**
 * Where a no-op task's CPU goes on each side, at each concurrency both measured (/proc, the first
 * queued-first run against BullMQ's first jobs): docq's app does its store's work on its own main
 * thread, where BullMQ's worker hands it to Redis, another process.
 */
function cpuRows(results: readonly FigureResult[], b: BullmqFigures): Row[] {
  const docqCpu = (slots: number): CpuPerTask | null => {
    const data = results.find((r) => r.key === "warm" && r.skipped === undefined)?.data as
      { bySlots?: Record<string, { queuedFirst?: { cpu?: CpuPerTask | null } }> } | undefined;
    return data?.bySlots?.[String(slots)]?.queuedFirst?.cpu ?? null;
  };
  return b.sandboxed.flatMap((run): Row[] => {
    const docq = docqCpu(run.concurrency);
    if (docq === null || run.cpu === null) return [];
    return [
      {
        measure: `CPU per no-op task, ${run.concurrency} slots (µs; the first queued-first run, BullMQ's first jobs)`,
        value: null,
        unit: "",
        note:
          `docq: ${describeCpuPerTask(docq, "the warm job's processes")}. ` +
          `BullMQ: its worker's main thread ${run.cpu.workerMainUs} µs${busyText(run.cpu.workerMainBusyPct)}, Redis ${run.cpu.redisUs}, ` +
          `the sandboxed processors ${run.cpu.processorsUs}; the machine's CPUs${busyText(run.cpu.machineBusyPct)}`,
      },
    ];
  });
}
