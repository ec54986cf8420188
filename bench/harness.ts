import { promises as fs } from "node:fs";
import path from "node:path";
import { REPO, startEmbeddedApp, tempDir, type EmbeddedApp, type StartOptions, type SubmitOptions } from "../testFunctional/helpers.js";
import type { Task } from "../common/model/task-model.js";
import { postTask } from "./submit-client.js";

/*
 * What the app figures share: the real app as a child process with a fresh data dir, its peak
 * RSS, submitting at a fixed client concurrency, and completion seen through GET /api/stats
 * (one request per poll whatever the number of tasks, so the client stays light).
 */

export const JOBS_DIR = path.join(REPO, "scripts-job");
/** Client concurrency of every HTTP submission in the bench, as the issue asks. */
export const CLIENT_CONCURRENCY = 32;
/** How often completion is polled; the resolution of every end-to-end time. */
export const POLL_MS = 50;

export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/** A field of /proc/<pid>/status in MB (VmHWM: peak RSS; VmRSS: current), or null where /proc is missing. */
export async function procStatusMb(pid: number | "self", field: "VmHWM" | "VmRSS"): Promise<number | null> {
  const text = await fs.readFile(`/proc/${pid}/status`, "utf8").catch(() => null);
  const match = text === null ? null : new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return match === null ? null : Math.round(Number(match[1]) / 1024);
}

export interface AppRun<T> {
  result: T;
  /** The app's VmHWM at the end of the figure, MB. */
  peakRssMb: number | null;
  /** The app's VmRSS at the end of the figure, MB. */
  rssMb: number | null;
}

/**
 * Starts the real app (services/main.ts) with a fresh data dir, runs `fn`, reads the app's peak
 * RSS, stops it and removes its data. A failure carries the tail of the app's output.
 */
export async function withApp<T>(opts: StartOptions, fn: (app: EmbeddedApp) => Promise<T>): Promise<AppRun<T>> {
  // A data dir of our own (unless given), so it is removed even when the app fails to start.
  const ownDataDir = opts.dataDir === undefined ? await tempDir("bench-data") : null;
  try {
    const app = await startEmbeddedApp({ ...opts, dataDir: opts.dataDir ?? ownDataDir! });
    let result: T;
    let peakRssMb: number | null = null;
    let rssMb: number | null = null;
    try {
      result = await fn(app);
      const pid = app.process.pid;
      if (pid !== undefined) {
        peakRssMb = await procStatusMb(pid, "VmHWM");
        rssMb = await procStatusMb(pid, "VmRSS");
      }
    } catch (err) {
      const tail = app.output().split("\n").slice(-30).join("\n");
      throw new Error(
        `${err instanceof Error ? err.message : String(err)}${tail.trim() === "" ? "" : `\n--- app output (tail) ---\n${tail}`}`,
        { cause: err },
      );
    } finally {
      await app.stop();
    }
    return { result, peakRssMb, rssMb };
  } finally {
    if (ownDataDir !== null) await fs.rm(ownDataDir, { recursive: true, force: true });
  }
}

export type StatusCounts = Record<string, number>;

export interface Stats {
  byStatus: StatusCounts;
  queue: { ready: number; delayed: number };
}

export async function getStats(url: string): Promise<Stats> {
  const res = await fetch(`${url}/api/stats`);
  if (!res.ok) throw new Error(`GET /api/stats answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as Stats;
}

/**
 * Polls /api/stats every `everyMs` until `done(byStatus)`; answers the time (performance.now()) it
 * was first seen. A task in `error` stops the wait at once with that task's error: a bench over
 * failing tasks would measure the wrong thing.
 */
export async function waitForCounts(
  url: string,
  what: string,
  done: (c: StatusCounts) => boolean,
  timeoutMs: number,
  everyMs = POLL_MS,
): Promise<{ at: number; counts: StatusCounts }> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const { byStatus } = await getStats(url);
    const at = performance.now();
    if ((byStatus.error ?? 0) > 0) {
      const res = await fetch(`${url}/api/tasks?status=error&limit=1`);
      const page = (await res.json()) as { items?: Task[] };
      throw new Error(`${byStatus.error} task(s) ended in error while waiting for ${what}; one: ${page.items?.[0]?.error ?? "?"}`);
    }
    if (done(byStatus)) return { at, counts: byStatus };
    if (at > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; counts ${JSON.stringify(byStatus)}`);
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A single submit: the bench's own client (postTask) or the tests' one through fetch (submit). */
export type SubmitClient = (url: string, body: string, opts: SubmitOptions) => Promise<string>;

/**
 * Submits `count` documents at `concurrency` requests in flight; answers the ids in order and
 * each request's latency (ms). `body(i)` makes the i-th document.
 */
export async function submitMany(
  url: string,
  count: number,
  concurrency: number,
  body: (i: number) => string,
  opts: SubmitOptions,
  client: SubmitClient = postTask,
): Promise<{ ids: string[]; latenciesMs: number[] }> {
  const ids = new Array<string>(count);
  const latenciesMs = new Array<number>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      for (let i = next++; i < count; i = next++) {
        const t = performance.now();
        ids[i] = await client(url, body(i), opts);
        latenciesMs[i] = performance.now() - t;
      }
    }),
  );
  return { ids, latenciesMs };
}

/** Nearest-rank percentile of already sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function sortedNumbers(values: Iterable<number>): number[] {
  return [...values].sort((a, b) => a - b);
}

/** Waits until the task is in one of `statuses`, polling the task itself (for one task at a time). */
export async function waitTaskStatus(url: string, id: string, statuses: readonly string[], timeoutMs = 30_000, everyMs = 5): Promise<Task> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const res = await fetch(`${url}/api/tasks/${id}`);
    if (!res.ok) throw new Error(`GET /api/tasks/${id} answered ${res.status}: ${await res.text()}`);
    const task = (await res.json()) as Task;
    if (statuses.includes(task.status)) return task;
    if (task.status === "error" || task.status === "canceled") throw new Error(`task ${id} ended ${task.status}: ${task.error ?? "?"}`);
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for task ${id} to be ${statuses.join(" or ")} (it is ${task.status})`);
    await sleep(everyMs);
  }
}

/** Whether a job of that name exists in scripts-job/ (a file with or without extension, or a folder). */
export async function jobExists(name: string): Promise<boolean> {
  const entries = await fs.readdir(JOBS_DIR).catch(() => [] as string[]);
  return entries.some((e) => e === name || e.replace(/\.(sh|py|js|mjs)$/, "") === name);
}

/** From the task records: first startTime to last endTime (the run phase alone), ms; null without both. */
export function runPhaseOf(tasks: Iterable<Pick<Task, "startTime" | "endTime">>): number | null {
  let firstStart = Infinity;
  let lastEnd = -Infinity;
  for (const t of tasks) {
    if (t.startTime !== null) firstStart = Math.min(firstStart, t.startTime);
    if (t.endTime !== null) lastEnd = Math.max(lastEnd, t.endTime);
  }
  return Number.isFinite(firstStart) && Number.isFinite(lastEnd) ? lastEnd - firstStart : null;
}

/** POST /api/tasks/batch with `init`'s body; answers the created ids, throwing on any answer but a 201. */
export async function postBatch(url: string, init: { body: BodyInit; headers?: Record<string, string> }): Promise<string[]> {
  const res = await fetch(`${url}/api/tasks/batch`, { method: "POST", ...init });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /api/tasks/batch answered ${res.status}: ${text.slice(0, 500)}`);
  return (JSON.parse(text) as { ids: string[] }).ids;
}
