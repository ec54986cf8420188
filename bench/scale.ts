import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import { newTask, newTaskId } from "../common/queue/new-task.js";
import { SqliteTaskStore } from "../common/store/sqlite/sqlite-task-store.js";
import { TaskQueue } from "../common/queue/task-queue.js";
import type { Task } from "../common/model/task-model.js";
import { tempDir } from "../testFunctional/helpers.js";
import { getStats, log, percentile, procStatusMb, sleep, sortedNumbers, withApp } from "./harness.js";
import { round, type FigureResult } from "./report.js";

/*
 * Figure 4: a million queued tasks. In-process against the embedded store and queue (no HTTP):
 *   fill — createMany in chunks into a fresh SQLite file (the store's bulk path);
 *   load — a new SqliteTaskStore + TaskQueue reloading them: reload time, heap/RSS growth of the
 *          queuer (after GC), time to pull the next task.
 * Each phase runs in its own node child of the bench (this file, run as a script, with
 * --expose-gc), so the queuer's memory is not mixed with the bench's nor with the fill's arrays,
 * and its peak RSS is its own. Then the real app is started on that data dir: time until its
 * queue serves the N tasks, and its RSS, next to the same app started empty.
 */

const CHUNK = 50_000;
const PULLS = 101;
/**
 * The tasks are of a job `park` that sleeps an hour, with no input document (so the worker fetches
 * none): an app started on them runs one in its only slot and the rest stay queued. The job lives
 * in a temp jobs dir made for the app start (DOCQ_JOBS_DIR).
 */
const PARKED_JOB = "park";
const PARK_SCRIPT = "#!/bin/sh\n# Holds a worker slot for an hour (bench/scale.ts).\nexec sleep 3600\n";

type Phase = { phase: "fill"; file: string; count: number } | { phase: "load"; file: string; count: number };

export interface FillResult {
  count: number;
  createManyMs: number;
  generateMs: number;
  insertPerSec: number;
  fileMb: number;
  peakRssMb: number | null;
}

export interface LoadResult {
  reloadMs: number;
  /** CPU time of the reload (user + system): what a loaded machine's wall time hides. */
  reloadCpuMs: number;
  reloadReportMs: number;
  queued: number;
  gcExposed: boolean;
  heapBeforeMb: number;
  heapAfterMb: number;
  rssBeforeMb: number;
  rssAfterMb: number;
  bytesPerTaskHeap: number;
  bytesPerTaskRss: number;
  pullMs: { p50: number; p99: number; max: number; pulls: number };
  peakRssMb: number | null;
}

function gcFunction(): (() => void) | null {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === "function") return existing;
  try {
    v8.setFlagsFromString("--expose-gc");
    return vm.runInNewContext("gc") as () => void;
  } catch {
    return null;
  }
}

const mb = (bytes: number): number => round(bytes / 2 ** 20, 1);

async function fill(file: string, count: number): Promise<FillResult> {
  const store = SqliteTaskStore.open(file);
  let createManyMs = 0;
  let generateMs = 0;
  let seed = 12345;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let done = 0; done < count; done += CHUNK) {
    const n = Math.min(CHUNK, count - done);
    const g = performance.now();
    const now = Date.now();
    const tasks: Task[] = new Array<Task>(n);
    for (let i = 0; i < n; i++) {
      const id = newTaskId("bench");
      tasks[i] = newTask(
        {
          id,
          site: "bench",
          user: "bench",
          name: `doc ${done + i}`,
          job: PARKED_JOB,
          params: {},
          priority: Math.floor(random() * 101),
          maxTries: 3,
          input: null,
        },
        now,
      );
    }
    const t = performance.now();
    generateMs += t - g;
    await store.createMany(tasks);
    createManyMs += performance.now() - t;
  }
  await store.close();
  const files = await Promise.all(
    ["", "-wal", "-shm"].map((s) =>
      fs.stat(file + s).then(
        (st) => st.size,
        () => 0,
      ),
    ),
  );
  return {
    count,
    createManyMs: round(createManyMs),
    generateMs: round(generateMs),
    insertPerSec: round((count / createManyMs) * 1000),
    fileMb: mb(files.reduce((a, b) => a + b, 0)),
    peakRssMb: await procStatusMb("self", "VmHWM"),
  };
}

async function load(file: string, count: number): Promise<LoadResult> {
  const gc = gcFunction();
  const settle = (): void => {
    gc?.();
    gc?.();
  };
  settle();
  const before = process.memoryUsage();
  const store = SqliteTaskStore.open(file);
  const queue = new TaskQueue({
    store,
    site: "bench",
    leaseMs: 30_000,
    backoffBaseMs: 1000,
    backoffMaxMs: 300_000,
    requeueWorkOnReload: true,
    maxSplitDepth: 2,
  });
  const t = performance.now();
  const cpu = process.cpuUsage();
  const report = await queue.reload();
  const reloadMs = performance.now() - t;
  const reloadCpu = process.cpuUsage(cpu);
  settle();
  const after = process.memoryUsage();
  if (report.queued !== count) throw new Error(`reload found ${report.queued} queued tasks, expected ${count}`);
  const pulls: number[] = [];
  for (let i = 0; i < PULLS; i++) {
    const p = performance.now();
    const got = await queue.pull("bench-worker", 1);
    pulls.push(performance.now() - p);
    if (got.length !== 1) throw new Error(`pull ${i} got ${got.length} tasks`);
  }
  queue.stop();
  await store.close();
  const sorted = sortedNumbers(pulls);
  return {
    reloadMs: round(reloadMs),
    reloadCpuMs: round((reloadCpu.user + reloadCpu.system) / 1000),
    reloadReportMs: report.ms,
    queued: report.queued,
    gcExposed: gc !== null,
    heapBeforeMb: mb(before.heapUsed),
    heapAfterMb: mb(after.heapUsed),
    rssBeforeMb: mb(before.rss),
    rssAfterMb: mb(after.rss),
    bytesPerTaskHeap: round((after.heapUsed - before.heapUsed) / count),
    bytesPerTaskRss: round((after.rss - before.rss) / count),
    pullMs: {
      p50: round(percentile(sorted, 50), 3),
      p99: round(percentile(sorted, 99), 3),
      max: round(sorted[sorted.length - 1] ?? NaN, 3),
      pulls: PULLS,
    },
    peakRssMb: await procStatusMb("self", "VmHWM"),
  };
}

const THIS_FILE = fileURLToPath(import.meta.url);

async function runPhase<T>(phase: Phase): Promise<T> {
  const child = spawn(process.execPath, ["--expose-gc", "--import", "tsx", THIS_FILE, JSON.stringify(phase)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  const last = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || last === "") throw new Error(`scale ${phase.phase} exited with ${code}: ${stderr.slice(-2000)}`);
  return JSON.parse(last) as T;
}

interface AppStart {
  /** Spawn to the queue serving every task (stats show them queued), ms. */
  readyMs: number;
  /** What the queuer logged: "queue reloaded in N ms". */
  reloadLoggedMs: number | null;
  rssMb: number | null;
  peakRssMb: number | null;
}

/** Starts the real app on `dataDir` and times it until /api/stats counts `count` tasks in its queue. */
async function timeAppStart(dataDir: string | undefined, jobsDir: string, count: number): Promise<AppStart> {
  const t0 = performance.now();
  let readyMs = 0;
  let output = "";
  const env = { DOCQ_LOG_LEVEL: "info", DOCQ_JOBS_DIR: jobsDir };
  const run = await withApp({ slots: 1, env, ...(dataDir === undefined ? {} : { dataDir }) }, async (app) => {
    for (;;) {
      const stats = await getStats(app.url).catch(() => null);
      // One task is running (the only slot), the rest are ready.
      if (stats !== null && stats.queue.ready + stats.queue.delayed + (stats.byStatus.work ?? 0) >= count) break;
      if (performance.now() - t0 > 600_000) throw new Error("the app did not serve its queue within 10 minutes");
      await sleep(20);
    }
    readyMs = performance.now() - t0;
    output = app.output();
  });
  const match = /queue reloaded in (\d+) ms/.exec(output);
  return { readyMs: round(readyMs), reloadLoggedMs: match === null ? null : Number(match[1]), rssMb: run.rssMb, peakRssMb: run.peakRssMb };
}

export async function scaleFigure(opts: { count: number }): Promise<FigureResult> {
  const { count } = opts;
  const dataDir = await tempDir("bench-scale");
  const file = path.join(dataDir, "tasks.sqlite");
  const jobsDir = await tempDir("bench-jobs");
  try {
    await fs.writeFile(path.join(jobsDir, `${PARKED_JOB}.sh`), PARK_SCRIPT);
    log(`scale: filling ${count.toLocaleString("en-US")} tasks through createMany (chunks of ${CHUNK.toLocaleString("en-US")})`);
    const filled = await runPhase<FillResult>({ phase: "fill", file, count });
    log(`scale: reloading them into a new TaskQueue, ${PULLS} pulls`);
    const loaded = await runPhase<LoadResult>({ phase: "load", file, count: count });
    // The load phase left PULLS tasks in work: the app requeues them at start, so it still serves `count`.
    log("scale: starting the app empty, then on the filled data dir");
    const empty = await timeAppStart(undefined, jobsDir, 0);
    const full = await timeAppStart(dataDir, jobsDir, count);
    const heapGrowth = round(loaded.heapAfterMb - loaded.heapBeforeMb);
    const rssGrowth = round(loaded.rssAfterMb - loaded.rssBeforeMb);
    const n = count.toLocaleString("en-US");
    return {
      key: "scale",
      number: 4,
      title: `Scale: ${n} queued`,
      rows: [
        {
          measure: `store bulk path: createMany, chunks of ${CHUNK.toLocaleString("en-US")} (in-process)`,
          value: filled.insertPerSec,
          unit: "tasks/s",
          peakRssMb: filled.peakRssMb,
          rssOf: "filler",
          note: `SQLite file ${filled.fileMb} MB`,
        },
        {
          measure: "queuer memory: heap growth after reload (after GC)",
          value: heapGrowth,
          unit: "MB",
          peakRssMb: loaded.peakRssMb,
          rssOf: "queuer",
          note: `${loaded.bytesPerTaskHeap} B/task heap, ${loaded.bytesPerTaskRss} B/task RSS (RSS +${rssGrowth} MB)${loaded.gcExposed ? "" : "; GC not exposed"}`,
        },
        {
          measure: "reload into a new TaskQueue (in-process)",
          value: loaded.reloadMs,
          unit: "ms",
          note: `${loaded.reloadCpuMs} ms of CPU`,
        },
        {
          measure: `pull the next task (queue.pull 1) p50 / p99 of ${PULLS}`,
          value: loaded.pullMs.p50,
          unit: `ms / ${loaded.pullMs.p99} ms`,
        },
        {
          measure: `app start until its queue serves ${n} tasks`,
          value: full.readyMs,
          unit: "ms",
          peakRssMb: full.peakRssMb,
          rssOf: "app",
          note: `empty app: ${empty.readyMs} ms, ${empty.rssMb ?? "?"} MB RSS; with ${n}: ${full.rssMb ?? "?"} MB RSS; reload logged ${full.reloadLoggedMs ?? "?"} ms`,
        },
      ],
      data: { count, chunk: CHUNK, fill: filled, load: loaded, appEmpty: empty, appFull: full },
    };
  } finally {
    await fs.rm(dataDir, { recursive: true, force: true });
    await fs.rm(jobsDir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === THIS_FILE) {
  const phase = JSON.parse(process.argv[2] ?? "{}") as Phase;
  (phase.phase === "fill" ? fill(phase.file, phase.count) : load(phase.file, phase.count)).then(
    (result) => process.stdout.write(JSON.stringify(result) + "\n"),
    (err: unknown) => {
      process.stderr.write(`scale ${phase.phase}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
