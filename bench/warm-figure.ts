import { JobRegistry } from "../common/jobs/job-registry.js";
import { errorMessage } from "../common/model/errors.js";
import { JOBS_DIR, jobExists, log } from "./harness.js";
import { measureDirectReferences, measureQueueThroughput, THROUGHPUT_SLOTS, type DirectReferences } from "./throughput.js";
import { round, type FigureResult } from "./report.js";

/** The job figure 6 runs: a no-op kept warm (one long-lived process per slot serving many tasks). */
export const WARM_JOB = "noop-warm";

/**
 * Figure 6: no-op tasks/s through a warm job in the real app, end to end exactly as figure 2
 * (submit over HTTP at concurrency 32 → last output, 2 slots), and its ratio to the direct spawn
 * rates of figure 2 (the limit warm jobs are meant to get past). Measured only when a job named
 * `noop-warm` exists in scripts-job/; otherwise the figure says so and gives no number.
 * (bench/warm.ts is a separate, in-process study of the warm pool: WorkerPool + TaskQueue, no HTTP.)
 */
export async function warmThroughputFigure(opts: { count: number; direct: DirectReferences | null }): Promise<FigureResult> {
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
  log(`warm: ${opts.count} ${WARM_JOB} tasks, ${THROUGHPUT_SLOTS} slots, end to end`);
  const r = await measureQueueThroughput({ job: WARM_JOB, count: opts.count, slots: THROUGHPUT_SLOTS });
  const direct = opts.direct ?? (await measureDirectReferences(Math.min(opts.count, 2_000)));
  const ratioExeca = round(r.tasksPerSec / direct.execa.perSec, 2);
  const ratioSpawn = round(r.tasksPerSec / direct.spawn.perSec, 2);
  return {
    ...base,
    rows: [
      {
        measure: `docq: ${opts.count.toLocaleString("en-US")} ${WARM_JOB} tasks, ${THROUGHPUT_SLOTS} slots, submit → last output`,
        value: r.tasksPerSec,
        unit: "tasks/s",
        peakRssMb: r.appPeakRssMb,
        rssOf: "app",
        note: `${declaredWarm ? "" : `job.yaml of ${WARM_JOB} does not say warm: true; `}submits done after ${round(r.submitDoneMs / 1000, 1)} s of ${round(r.endToEndMs / 1000, 1)} s`,
      },
      {
        measure: "docq run phase alone (first start → last end, from the records)",
        value: r.runPhaseTasksPerSec,
        unit: "tasks/s",
        note: r.meanTaskMs === null ? "" : `mean start → end per task ${r.meanTaskMs} ms`,
      },
      { measure: "ratio warm docq / direct execa spawn loop (figure 2)", value: ratioExeca, unit: "", note: `/ bare spawn: ${ratioSpawn}` },
    ],
    data: { job: WARM_JOB, declaredWarm, docq: r, ratioVsDirectExeca: ratioExeca, ratioVsDirectSpawn: ratioSpawn },
  };
}
