import { listAll } from "../testFunctional/helpers.js";
import { getStats, postBatch, runPhaseOf, waitForCounts } from "./harness.js";
import { multipartBody, type FilePart } from "./multipart-body.js";
import { cpuPerTask, readCpu, type CpuPerTask } from "./proc-cpu.js";
import { round } from "./report.js";

/*
 * The run phase with every task queued before it starts, the shape of BullMQ's sandboxed figure
 * (bench/bullmq.ts adds all jobs with addBulk, then starts its worker, its child processes warmed
 * by a run of their own). In an app that already ran the job (its warm processes started), `count`
 * tasks are submitted through POST /api/tasks/batch with one `runAt` a little ahead, so none can
 * start before all are stored; the run phase is read from the records as in figure 2: first
 * startTime to last endTime. Nothing is paused or changed in the app: the tasks are held only by
 * their own `runAt`, and become due together. Given the app's pid, the CPU of the run is read from
 * /proc once the submits are answered and once the last output is seen (proc-cpu.ts).
 */

/** How often the end of the run is looked for (GET /api/stats). */
const QUEUED_FIRST_POLL_MS = 250;

/** Documents per batch request. */
const PER_REQUEST = 1_000;

export interface QueuedFirstRun {
  count: number;
  /** How far ahead of the first request the tasks' runAt was, ms. */
  holdMs: number;
  /** When the last batch request was answered, ms after the first was sent. */
  submitDoneMs: number;
  /** false: the submits ran past runAt, so the run phase overlapped them (a slower figure than the shape asks). */
  queuedBeforeRun: boolean;
  runPhaseMs: number | null;
  runPhaseTasksPerSec: number | null;
  /** Where the run's CPU went, per task; null without the app's pid, off Linux, or when the run overlapped the submits. */
  cpu: CpuPerTask | null;
}

/** The hold: enough for this machine to store `count` small documents, with room to spare. */
function holdMsFor(count: number): number {
  return 1_000 + count;
}

export async function measureQueuedFirst(
  url: string,
  opts: { job: string; count: number; params?: Record<string, unknown>; appPid?: number },
): Promise<QueuedFirstRun> {
  const { count } = opts;
  const outputBefore = (await getStats(url)).byStatus.output ?? 0;
  const holdMs = holdMsFor(count);
  const t0 = performance.now();
  const runAt = Date.now() + holdMs;
  const ids = new Set<string>();
  for (let from = 0; from < count; from += PER_REQUEST) {
    const fields: Array<[string, string]> = [
      ["job", opts.job],
      ["runAt", String(runAt)],
    ];
    if (opts.params !== undefined) fields.push(["params", JSON.stringify(opts.params)]);
    const files: FilePart[] = [];
    for (let i = from; i < Math.min(count, from + PER_REQUEST); i++)
      files.push({ field: "file", filename: `doc-${i}.txt`, bytes: `small document number ${i}\n` });
    // Plain bytes, not a FormData of Blobs: their finalizing would take the bench's CPU during the run it measures.
    const form = multipartBody(fields, files);
    for (const id of await postBatch(url, { body: form.body, headers: { "content-type": form.contentType } })) ids.add(id);
  }
  const submitDoneMs = performance.now() - t0;
  const queuedBeforeRun = Date.now() < runAt;
  const cpuBefore = queuedBeforeRun ? await readCpu(opts.appPid) : null;
  await waitForCounts(
    url,
    `${count} ${opts.job} tasks queued first to be output`,
    (c) => (c.output ?? 0) >= outputBefore + count,
    Math.max(120_000, count * 200),
    // The figure is read from the records, not from when the end is seen: polling less often
    // spares the app's event loop (a GET /api/stats costs it 0.4-0.6 ms) during the run it measures.
    QUEUED_FIRST_POLL_MS,
  );
  const cpuAfter = cpuBefore === null ? null : await readCpu(opts.appPid);
  const runPhaseMs = runPhaseOf((await listAll(url, "status=output")).filter((t) => ids.has(t.id)));
  return {
    count,
    holdMs,
    submitDoneMs: round(submitDoneMs),
    queuedBeforeRun,
    runPhaseMs,
    runPhaseTasksPerSec: runPhaseMs === null || runPhaseMs === 0 ? null : round((count / runPhaseMs) * 1000, 1),
    cpu: cpuBefore === null || cpuAfter === null ? null : cpuPerTask(cpuBefore, cpuAfter, count, runPhaseMs),
  };
}
