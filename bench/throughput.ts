import path from "node:path";
import { listAll, type StartOptions } from "../testFunctional/helpers.js";
import { JobRegistry } from "../common/jobs/job-registry.js";
import { runDirectReference, type DirectResult } from "./direct-spawn.js";
import { CLIENT_CONCURRENCY, JOBS_DIR, log, runPhaseOf, submitMany, waitForCounts, withApp } from "./harness.js";
import { round, type FigureResult, type Row } from "./report.js";
import { measureQueuedFirst, type QueuedFirstRun } from "./queued-first.js";

/** Worker slots of the throughput figure, and the concurrency of the direct references. */
export const THROUGHPUT_SLOTS = 2;

export interface QueueThroughput {
  job: string;
  count: number;
  slots: number;
  /** First submit to the last task seen in `output` (through /api/stats), ms. */
  endToEndMs: number;
  tasksPerSec: number;
  /** When the last submit was answered, ms after the first. */
  submitDoneMs: number;
  /** From the task records: first startTime to last endTime (the run phase alone), ms. */
  runPhaseMs: number | null;
  runPhaseTasksPerSec: number | null;
  /** Mean of endTime - startTime over the tasks (script run + output stored + completion), ms. */
  meanTaskMs: number | null;
  appPeakRssMb: number | null;
  appRssMbAtEnd: number | null;
  /** The same app's second run, queued first (when asked): see measureQueuedFirst. */
  queuedFirst?: QueuedFirstRun;
  /** The same again right after it: the steady state (the JIT warmed up by the runs before). */
  queuedFirstAgain?: QueuedFirstRun;
}

/**
 * `count` tasks of `job` through a fresh app with `slots` worker slots, end to end: submitted over
 * HTTP at client concurrency 32 while the workers already run them, until the last is `output`.
 * Reusable by every throughput-shaped figure (warm jobs, cluster mode).
 */
export async function measureQueueThroughput(opts: {
  job: string;
  count: number;
  slots: number;
  params?: Record<string, unknown>;
  app?: StartOptions;
  /** After the end-to-end run, in the same app (its warm processes started): `count` more tasks queued first. */
  queuedFirst?: boolean;
}): Promise<QueueThroughput> {
  const { job, count, slots } = opts;
  const run = await withApp({ slots, ...opts.app }, async (app) => {
    const t0 = performance.now();
    let submitDone = 0;
    const submitting = submitMany(app.url, count, CLIENT_CONCURRENCY, (i) => `small document number ${i}\n`, {
      job,
      ...(opts.params === undefined ? {} : { params: opts.params }),
    }).then((r) => {
      submitDone = performance.now();
      return r;
    });
    const timeoutMs = Math.max(120_000, count * 200);
    const [, done] = await Promise.all([
      submitting,
      waitForCounts(app.url, `${count} ${job} tasks to be output`, (c) => (c.output ?? 0) >= count, timeoutMs),
    ]);
    const endToEndMs = done.at - t0;
    // After the clock stopped: the records, for the run phase alone.
    const tasks = await listAll(app.url, "status=output");
    let sum = 0;
    for (const t of tasks) if (t.startTime !== null && t.endTime !== null) sum += t.endTime - t.startTime;
    const runPhaseMs = runPhaseOf(tasks);
    const queued = {
      job,
      count,
      ...(opts.params === undefined ? {} : { params: opts.params }),
      ...(app.process.pid === undefined ? {} : { appPid: app.process.pid }),
    };
    const queuedFirst = opts.queuedFirst === true ? await measureQueuedFirst(app.url, queued) : undefined;
    const queuedFirstAgain = opts.queuedFirst === true ? await measureQueuedFirst(app.url, queued) : undefined;
    return {
      endToEndMs,
      submitDoneMs: submitDone - t0,
      runPhaseMs,
      meanTaskMs: tasks.length > 0 ? sum / tasks.length : null,
      queuedFirst,
      queuedFirstAgain,
    };
  });
  const r = run.result;
  return {
    job,
    count,
    slots,
    endToEndMs: round(r.endToEndMs),
    tasksPerSec: round((count / r.endToEndMs) * 1000, 1),
    submitDoneMs: round(r.submitDoneMs),
    runPhaseMs: r.runPhaseMs,
    runPhaseTasksPerSec: r.runPhaseMs === null || r.runPhaseMs === 0 ? null : round((count / r.runPhaseMs) * 1000, 1),
    meanTaskMs: r.meanTaskMs === null ? null : round(r.meanTaskMs, 2),
    appPeakRssMb: run.peakRssMb,
    appRssMbAtEnd: run.rssMb,
    ...(r.queuedFirst === undefined ? {} : { queuedFirst: r.queuedFirst }),
    ...(r.queuedFirstAgain === undefined ? {} : { queuedFirstAgain: r.queuedFirstAgain }),
  };
}

/** The command docq runs for a job, resolved as the worker resolves it. */
export async function jobCommand(job: string): Promise<{ command: string; args: string[] }> {
  const registry = new JobRegistry({ dir: JOBS_DIR, defaultTimeoutMs: 60_000 });
  const def = await registry.resolve(job);
  return { command: def.command, args: def.args };
}

export interface DirectReferences {
  execa: DirectResult;
  spawn: DirectResult;
}

/** The no-op script spawned directly (no queue) at the throughput figure's concurrency, both ways. */
export async function measureDirectReferences(count: number): Promise<DirectReferences> {
  const { command, args } = await jobCommand("noop");
  const warmup = Math.min(20, Math.ceil(count / 20));
  log(
    `direct references: ${path.relative(process.cwd(), command) || command} ${count}× at concurrency ${THROUGHPUT_SLOTS}, execa then child_process.spawn`,
  );
  const execa = await runDirectReference({ method: "execa", command, args, count, concurrency: THROUGHPUT_SLOTS, warmup });
  const spawn = await runDirectReference({ method: "spawn", command, args, count, concurrency: THROUGHPUT_SLOTS, warmup });
  return { execa, spawn };
}

export interface ThroughputFigure extends FigureResult {
  /** docq / direct execa: the headline. */
  ratio: number | null;
  direct: DirectReferences;
}

/**
 * Figure 2: no-op tasks end to end through docq with 2 slots, next to the same script spawned
 * directly (execa, and bare spawn) at concurrency 2. The ratio docq / execa is the headline.
 */
export async function throughputFigure(opts: { count: number; app?: StartOptions }): Promise<ThroughputFigure> {
  const { count } = opts;
  log(`throughput: ${count} noop tasks, ${THROUGHPUT_SLOTS} slots, end to end`);
  const docq = await measureQueueThroughput({
    job: "noop",
    count,
    slots: THROUGHPUT_SLOTS,
    ...(opts.app === undefined ? {} : { app: opts.app }),
  });
  const direct = await measureDirectReferences(count);
  const ratio = direct.execa.perSec > 0 ? round(docq.tasksPerSec / direct.execa.perSec, 2) : null;
  const ratioSpawn = direct.spawn.perSec > 0 ? round(docq.tasksPerSec / direct.spawn.perSec, 2) : null;
  const failures = direct.execa.failures + direct.spawn.failures;
  const rows: Row[] = [
    {
      measure: `docq: ${count.toLocaleString("en-US")} noop tasks, ${THROUGHPUT_SLOTS} slots, submit → last output`,
      value: docq.tasksPerSec,
      unit: "tasks/s",
      peakRssMb: docq.appPeakRssMb,
      rssOf: "app",
      note: `submits done after ${round(docq.submitDoneMs / 1000, 1)} s of ${round(docq.endToEndMs / 1000, 1)} s`,
    },
    {
      measure: "docq run phase alone (first start → last end, from the records)",
      value: docq.runPhaseTasksPerSec,
      unit: "tasks/s",
      note: docq.meanTaskMs === null ? "" : `mean start → end per task ${docq.meanTaskMs} ms`,
    },
    {
      measure: `direct execa loop, concurrency ${THROUGHPUT_SLOTS}, no queue`,
      value: direct.execa.perSec,
      unit: "runs/s",
      peakRssMb: direct.execa.peakRssMb,
      rssOf: "reference",
      note: failures > 0 ? `${failures} failed runs` : `reference process RSS ${direct.execa.rssMbAtStart ?? "?"} MB at start`,
    },
    {
      measure: `direct child_process.spawn loop, concurrency ${THROUGHPUT_SLOTS}`,
      value: direct.spawn.perSec,
      unit: "runs/s",
      peakRssMb: direct.spawn.peakRssMb,
      rssOf: "reference",
    },
    {
      measure: "**ratio docq / direct execa** (headline; goal ≥ 1.0)",
      value: ratio,
      unit: "",
      note: `docq / bare spawn: ${ratioSpawn ?? "—"}`,
    },
  ];
  return {
    key: "throughput",
    number: 2,
    title: "Throughput vs the spawn limit",
    rows,
    ratio,
    direct,
    data: { docq, direct, ratioVsDirectExeca: ratio, ratioVsDirectSpawn: ratioSpawn },
  };
}
