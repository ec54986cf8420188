import type { StartOptions } from "../testFunctional/helpers.js";
import { JobRegistry } from "../common/jobs/job-registry.js";
import { errorMessage } from "../common/model/errors.js";
import { JOBS_DIR, jobExists, log } from "./harness.js";
import {
  measureDirectReferences,
  measureQueueThroughput,
  THROUGHPUT_SLOTS,
  type DirectReferences,
  type QueueThroughput,
} from "./throughput.js";
import { describeCpuPerTask } from "./proc-cpu.js";
import type { QueuedFirstRun } from "./queued-first.js";
import { round, type FigureResult, type Row } from "./report.js";

/** The job figure 6 runs: a no-op kept warm (one long-lived process per slot serving many tasks). */
export const WARM_JOB = "noop-warm";
/** noop-warm without `inline: true`: the same no-op handing its documents over as files, measured beside it. */
export const WARM_FILES_JOB = "noop-warm-files";
/** Figure 6's slot counts: figure 2's 2, and 8 (BullMQ's sandboxed processors are compared at both). */
export const WARM_SLOTS: readonly number[] = [THROUGHPUT_SLOTS, 8];

/**
 * `count` noop-warm tasks through a fresh app with `slots` slots, end to end exactly as figure 2
 * (submit over HTTP at concurrency 32 → last output). For other figures too (--vs-bullmq).
 */
export function measureWarmThroughput(opts: {
  count: number;
  slots: number;
  app?: StartOptions;
  queuedFirst?: boolean;
}): Promise<QueueThroughput> {
  return measureQueueThroughput({ job: WARM_JOB, ...opts });
}

/**
 * Figure 6: no-op tasks/s through a warm job in the real app, end to end exactly as figure 2
 * (submit over HTTP at concurrency 32 → last output), with 2 slots and with 8, and its ratio to the direct spawn
 * rates of figure 2 (the limit warm jobs are meant to get past). Measured only when a job named
 * `noop-warm` exists in scripts-job/; otherwise the figure says so and gives no number.
 * (bench/warm.ts is a separate, in-process study of the warm pool: WorkerPool + TaskQueue, no HTTP.)
 */
export async function warmThroughputFigure(opts: {
  count: number;
  direct: DirectReferences | null;
  /** Extra app options (a profiler: --cpu-prof), asked anew for each app: a store's fresh database each. */
  app?: () => Promise<StartOptions>;
  /** Slot counts measured, the first one against figure 2's direct references; WARM_SLOTS by default. */
  slots?: readonly number[];
}): Promise<FigureResult> {
  const base = { key: "warm", number: 6, title: "Warm job", rows: [], data: {} };
  if (!(await jobExists(WARM_JOB))) {
    return { ...base, skipped: `no job named ${WARM_JOB} in scripts-job/ (warm job processes not built yet)` };
  }
  let declaredWarm: boolean;
  try {
    declaredWarm = (await new JobRegistry({ dir: JOBS_DIR, defaultTimeoutMs: 60_000 }).resolve(WARM_JOB)).warm;
  } catch (err) {
    return { ...base, skipped: `job ${WARM_JOB} does not load: ${errorMessage(err)}` };
  }
  const slotCounts = opts.slots ?? WARM_SLOTS;
  const runs: QueueThroughput[] = [];
  for (const slots of slotCounts) {
    log(`warm: ${opts.count} ${WARM_JOB} tasks, ${slots} slots, end to end`);
    runs.push(
      await measureWarmThroughput({
        count: opts.count,
        slots,
        queuedFirst: true,
        ...(opts.app === undefined ? {} : { app: await opts.app() }),
      }),
    );
  }
  const r = runs[0]!;
  // The file hand-off every warm job had before inline documents, at figure 2's slots, in an app of its own.
  let files: QueueThroughput | null = null;
  if (await jobExists(WARM_FILES_JOB)) {
    log(`warm: ${opts.count} ${WARM_FILES_JOB} tasks, ${r.slots} slots, queued first (the file hand-off)`);
    files = await measureQueueThroughput({
      job: WARM_FILES_JOB,
      count: opts.count,
      slots: r.slots,
      queuedFirst: true,
      ...(opts.app === undefined ? {} : { app: await opts.app() }),
    });
  }
  const direct = opts.direct ?? (await measureDirectReferences(Math.min(opts.count, 2_000)));
  const ratioExeca = round(r.tasksPerSec / direct.execa.perSec, 2);
  const ratioSpawn = round(r.tasksPerSec / direct.spawn.perSec, 2);
  const rowsOf = (run: QueueThroughput): Row[] => [
    {
      measure: `docq: ${opts.count.toLocaleString("en-US")} ${WARM_JOB} tasks, ${run.slots} slots, submit → last output`,
      value: run.tasksPerSec,
      unit: "tasks/s",
      peakRssMb: run.appPeakRssMb,
      rssOf: "app",
      note: `${declaredWarm ? "" : `job.yaml of ${WARM_JOB} does not say warm: true; `}submits done after ${round(run.submitDoneMs / 1000, 1)} s of ${round(run.endToEndMs / 1000, 1)} s`,
    },
    {
      measure: `docq run phase alone, ${run.slots} slots (first start → last end, from the records)`,
      value: run.runPhaseTasksPerSec,
      unit: "tasks/s",
      note: run.meanTaskMs === null ? "" : `mean start → end per task ${run.meanTaskMs} ms`,
    },
    ...(run.queuedFirst === undefined
      ? []
      : [
          {
            measure: `docq run phase, ${run.slots} slots, ${run.queuedFirst.count.toLocaleString("en-US")} tasks queued first (BullMQ's shape; same app, warm processes started)`,
            value: run.queuedFirst.runPhaseTasksPerSec,
            unit: "tasks/s",
            note:
              `batch-submitted with runAt ${run.queuedFirst.holdMs} ms ahead, stored after ${round(run.queuedFirst.submitDoneMs / 1000, 2)} s` +
              (run.queuedFirst.queuedBeforeRun ? "" : " (after runAt: the run overlapped the submits)") +
              cpuNote(run.queuedFirst, "; "),
          },
        ]),
    ...(run.queuedFirstAgain === undefined
      ? []
      : [
          {
            measure: `the same again right after (steady state: the JIT warmed up by the runs before)`,
            value: run.queuedFirstAgain.runPhaseTasksPerSec,
            unit: "tasks/s",
            note: run.queuedFirstAgain.queuedBeforeRun
              ? cpuNote(run.queuedFirstAgain, "")
              : `after runAt: the run overlapped the submits${cpuNote(run.queuedFirstAgain, "; ")}`,
          },
        ]),
  ];
  const filesRows: Row[] =
    files?.queuedFirst === undefined
      ? []
      : [
          {
            measure: `the same no-op with its documents as files (${WARM_FILES_JOB}: no inline: true), ${files.slots} slots, ${files.queuedFirst.count.toLocaleString("en-US")} tasks queued first, in an app of its own`,
            value: files.queuedFirst.runPhaseTasksPerSec,
            unit: "tasks/s",
            note: `a work dir per task, the document written there, the output file read back${cpuNote(files.queuedFirst, "; ")}`,
          },
          ...(files.queuedFirstAgain === undefined
            ? []
            : [
                {
                  measure: `the same again right after (its steady state)`,
                  value: files.queuedFirstAgain.runPhaseTasksPerSec,
                  unit: "tasks/s",
                  note: cpuNote(files.queuedFirstAgain, ""),
                },
              ]),
        ];
  return {
    ...base,
    rows: [
      ...runs.flatMap(rowsOf),
      ...filesRows,
      {
        measure: `ratio warm docq (${r.slots} slots) / direct execa spawn loop (figure 2)`,
        value: ratioExeca,
        unit: "",
        note: `/ bare spawn: ${ratioSpawn}`,
      },
    ],
    data: {
      job: WARM_JOB,
      declaredWarm,
      docq: r,
      bySlots: Object.fromEntries(runs.map((run) => [String(run.slots), run])),
      withFiles: files,
      ratioVsDirectExeca: ratioExeca,
      ratioVsDirectSpawn: ratioSpawn,
    },
  };
}

/** The queued-first run's CPU per task for a row's note, after `separator` ("" when it was not read). */
function cpuNote(run: QueuedFirstRun, separator: string): string {
  return run.cpu === null ? "" : `${separator}CPU per task: ${describeCpuPerTask(run.cpu, "the warm job's processes")}`;
}
