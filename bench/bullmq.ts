import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Queue, Worker, type Job } from "bullmq";
import { Redis } from "ioredis";
import { freePort, tempDir, waitUntil } from "../testFunctional/helpers.js";
import { log, percentile, sortedNumbers } from "./harness.js";
import { busyShare, childrenSpentMs, readCpu, type CpuReading } from "./proc-cpu.js";
import { round } from "./report.js";

/*
 * BullMQ's side of `npm run bench -- --vs-bullmq`: Debian's redis-server on a free port with
 * persistence off and a temp dir of its own (stopped and removed after), then BullMQ's figures in
 * this process: sandboxed processors doing nothing (bullmq-noop-processor.cjs, a child process per
 * slot, reused) at 2 and 8, addBulk, add with 100 in flight, add → completed one at a time.
 */

const PROCESSOR = path.join(path.dirname(fileURLToPath(import.meta.url)), "bullmq-noop-processor.cjs");

export interface BullmqCounts {
  /** Jobs per sandboxed-processor run. */
  sandboxed: number;
  /** addBulk calls of 1,000 jobs. */
  bulkCalls: number;
  /** Jobs added with `add`, 100 in flight. */
  adds: number;
  /** add → completed, one at a time. */
  latency: number;
}

export interface SandboxedRun {
  concurrency: number;
  jobs: number;
  /** First processedOn to last finishedOn, from the jobs (BullMQ's own clock, ms): the first `jobs` after a short warm-up. */
  runPhaseMs: number;
  jobsPerSec: number;
  /** The next `jobs` of the same run, after the first ones: the steady state (JIT warmed up on both sides of the pipe). */
  steady: { runPhaseMs: number; jobsPerSec: number };
  /** Where the CPU of the first `jobs` went, per job (/proc; null off Linux). */
  cpu: BullmqCpuPerJob | null;
}

/** BullMQ's CPU per job, µs: its worker (the bench's main thread), Redis, the sandboxed processors. */
export interface BullmqCpuPerJob {
  workerMainUs: number;
  redisUs: number;
  processorsUs: number;
  /** The worker's main thread busy, % of the run phase. */
  workerMainBusyPct: number | null;
  /** The machine's CPUs busy, % of the run phase. */
  machineBusyPct: number | null;
}

export interface BullmqFigures {
  redis: string;
  bullmq: string;
  sandboxed: SandboxedRun[];
  addBulk: { calls: number; perCall: number; dataBytes: number; jobsPerSec: number };
  add: { jobs: number; inFlight: number; jobsPerSec: number };
  /** add() called → the worker's completed event, sandboxed processor, concurrency 1. */
  latencyMs: { count: number; p50: number; p99: number };
}

/** Where Debian puts redis-server; null when it is not installed. */
export async function findRedisServer(): Promise<string | null> {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).concat(["/usr/bin", "/usr/local/bin"])) {
    const candidate = path.join(dir, "redis-server");
    if (
      await fs.access(candidate, fs.constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return candidate;
  }
  return null;
}

interface RedisServer {
  port: number;
  pid: number | undefined;
  version: string;
  stop(): Promise<void>;
}

/** A private redis-server: free port, no RDB snapshots, no AOF, its own dir; `stop` ends it and removes the dir. */
async function startRedis(binary: string): Promise<RedisServer> {
  const dir = await tempDir("bench-redis");
  const port = await freePort();
  const child: ChildProcess = spawn(
    binary,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--maxmemory-policy", "noeviction"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    // A check that throws is retried: an exit is answered as a value and thrown after.
    const started = await waitUntil(
      `redis-server to accept connections on ${port}`,
      () => (child.exitCode !== null ? "exited" : /Ready to accept connections/.test(output) && "ready"),
      20_000,
      20,
    );
    if (started === "exited") throw new Error(`redis-server exited at start: ${output.trim()}`);
    const version = /version=([\d.]+)/.exec(output)?.[1] ?? "?";
    return { port, pid: child.pid, version, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A fresh queue name per figure: nothing of one figure's jobs is seen by the next. */
let queueSerial = 0;
const queueName = (what: string): string => `docq-bench-${what}-${process.pid}-${queueSerial++}`;

/**
 * Short warm-up, then 2 × `jobs` no-op jobs added first (addBulk), then a sandboxed worker at
 * `concurrency` runs them all; each segment's run phase from its jobs (told apart by their index).
 * The first `jobs` are the figure as it always was; the next `jobs` the steady state: BullMQ's rate
 * here climbs over the first thousands of jobs (1,656/s at 2 after 200 jobs, 3,717/s after 4,000,
 * measured 2026-12-04), as docq's does.
 */
async function sandboxedRun(redis: RedisServer, concurrency: number, jobs: number): Promise<SandboxedRun> {
  const { port } = redis;
  const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };
  const name = queueName(`sandboxed-${concurrency}`);
  const queue = new Queue(name, { connection });
  // The child processes start with the first jobs, as docq's warm processes do: a warm-up run of its own, not counted.
  const warmup = concurrency * 4;
  const total = warmup + 2 * jobs;
  for (let from = 0; from < total; from += 1000) {
    const n = Math.min(1000, total - from);
    await queue.addBulk(Array.from({ length: n }, (_, i) => ({ name: "noop", data: { i: from + i }, opts: { removeOnComplete: false } })));
  }
  const segments = [
    { processedFirst: Infinity, finishedLast: 0 },
    { processedFirst: Infinity, finishedLast: 0 },
  ];
  let done = 0;
  let failed: Error | null = null;
  /** The CPU counters as the first segment starts and as it ends (by jobs completed). */
  const readings: Promise<{ done: number; cpu: CpuReading | null }>[] = [];
  const worker = new Worker(name, PROCESSOR, { connection, concurrency, useWorkerThreads: false });
  worker.on("completed", (job: Job) => {
    done++;
    if (done === warmup || done === warmup + jobs) {
      const at = done;
      readings.push(readCpu(process.pid).then((cpu) => ({ done: at, cpu })));
    }
    const index = (job.data as { i: number }).i;
    if (index < warmup) return;
    const segment = segments[index < warmup + jobs ? 0 : 1]!;
    segment.processedFirst = Math.min(segment.processedFirst, job.processedOn ?? Infinity);
    segment.finishedLast = Math.max(segment.finishedLast, job.finishedOn ?? 0);
  });
  worker.on("failed", (_job, err) => (failed = err));
  try {
    const outcome = await waitUntil(
      `${total} BullMQ sandboxed jobs (concurrency ${concurrency})`,
      () => (failed !== null ? "failed" : done >= total && "done"),
      Math.max(120_000, jobs * 100),
      10,
    );
    if (outcome === "failed") throw new Error(`a BullMQ no-op job failed: ${String(failed)}`);
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
  const [first, steady] = segments.map((s) => {
    const runPhaseMs = s.finishedLast - s.processedFirst;
    return { runPhaseMs, jobsPerSec: round((jobs / runPhaseMs) * 1000, 1) };
  }) as [{ runPhaseMs: number; jobsPerSec: number }, { runPhaseMs: number; jobsPerSec: number }];
  const [start, end] = await Promise.all(readings);
  const cpu =
    start === undefined || end === undefined || start.cpu === null || end.cpu === null
      ? null
      : bullmqCpuPerJob(start.cpu, end.cpu, end.done - start.done, first.runPhaseMs, redis.pid);
  return { concurrency, jobs, ...first, steady, cpu };
}

/** BullMQ's CPU per job between two readings of this process (the worker) and its children (Redis, the processors). */
function bullmqCpuPerJob(
  before: CpuReading,
  after: CpuReading,
  jobs: number,
  runPhaseMs: number,
  redisPid: number | undefined,
): BullmqCpuPerJob {
  const perJob = (ms: number): number => round((ms * 1000) / jobs);
  let redis = 0;
  let processors = 0;
  for (const [pid, spent] of childrenSpentMs(before, after)) {
    if (pid === redisPid) redis += spent;
    else processors += spent;
  }
  const main = after.appMain - before.appMain;
  return {
    workerMainUs: perJob(main),
    redisUs: perJob(redis),
    processorsUs: perJob(processors),
    workerMainBusyPct: busyShare(main, runPhaseMs, 1),
    machineBusyPct: busyShare(after.machineBusy - before.machineBusy, runPhaseMs, os.cpus().length),
  };
}

/** `calls` addBulk calls of 1,000 jobs, each with `dataBytes` of data (the bytes docq stores as a document). */
async function addBulkRun(port: number, calls: number, dataBytes: number): Promise<BullmqFigures["addBulk"]> {
  const queue = new Queue(queueName("addBulk"), { connection: { host: "127.0.0.1", port } });
  const filler = "x".repeat(dataBytes);
  const batches = Array.from({ length: calls + 1 }, (_, c) =>
    Array.from({ length: 1000 }, (_, i) => ({ name: "doc", data: { document: `${c}-${i} ${filler}`.slice(0, dataBytes) } })),
  );
  try {
    // The first call warms the connection and the scripts, as docq's warm-up requests do.
    await queue.addBulk(batches[0]!);
    const t0 = performance.now();
    for (const batch of batches.slice(1)) await queue.addBulk(batch);
    const ms = performance.now() - t0;
    return { calls, perCall: 1000, dataBytes, jobsPerSec: round(((calls * 1000) / ms) * 1000, 1) };
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

/** `jobs` single add() calls, `inFlight` at a time, each with a small document as data. */
async function addRun(port: number, jobs: number, inFlight: number): Promise<BullmqFigures["add"]> {
  const queue = new Queue(queueName("add"), { connection: { host: "127.0.0.1", port } });
  try {
    await Promise.all(Array.from({ length: inFlight }, (_, i) => queue.add("doc", { document: `warm-up document ${i}\n` })));
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        for (let i = next++; i < jobs; i = next++) await queue.add("doc", { document: `small document number ${i}\n` });
      }),
    );
    const ms = performance.now() - t0;
    return { jobs, inFlight, jobsPerSec: round((jobs / ms) * 1000, 1) };
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

/** add() → the worker's completed event, one job at a time, on an idle sandboxed worker of concurrency 1. */
async function latencyRun(port: number, count: number): Promise<BullmqFigures["latencyMs"]> {
  const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };
  const name = queueName("latency");
  const queue = new Queue(name, { connection });
  const worker = new Worker(name, PROCESSOR, { connection, concurrency: 1, useWorkerThreads: false });
  const waiting = new Map<string, () => void>();
  worker.on("completed", (job: Job) => waiting.get(job.id ?? "")?.());
  const warmup = Math.min(10, Math.ceil(count / 10));
  const times: number[] = [];
  try {
    for (let i = 0; i < warmup + count; i++) {
      const t = performance.now();
      const id = `latency-${i}`;
      const completed = new Promise<void>((resolve) => waiting.set(id, resolve));
      await queue.add("doc", { document: `latency document ${i}\n` }, { jobId: id });
      await completed;
      waiting.delete(id);
      if (i >= warmup) times.push(performance.now() - t);
    }
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
  const sorted = sortedNumbers(times);
  return { count, p50: round(percentile(sorted, 50), 2), p99: round(percentile(sorted, 99), 2) };
}

/** Why BullMQ's figures are skipped on a machine without redis-server. */
const NO_REDIS = "no redis-server on this machine (Debian: apt-get install redis-server): BullMQ's figures skipped";

/**
 * Runs `fn` with a private redis-server (answering a ping) and BullMQ's version, or answers why not
 * when redis-server is not installed. The server is stopped and its dir removed, whatever failed.
 */
async function withRedis<T>(fn: (redis: RedisServer, bullmqVersion: string) => Promise<T>): Promise<{ value: T } | { skipped: string }> {
  const binary = await findRedisServer();
  if (binary === null) return { skipped: NO_REDIS };
  const redis = await startRedis(binary);
  try {
    // Fail early and clearly when the server does not answer.
    const probe = new Redis({ host: "127.0.0.1", port: redis.port, lazyConnect: true });
    await probe.connect();
    await probe.ping();
    probe.disconnect();
    const bullmqVersion = (
      JSON.parse(
        await fs.readFile(path.join(path.dirname(fileURLToPath(import.meta.url)), "../node_modules/bullmq/package.json"), "utf8"),
      ) as { version: string }
    ).version;
    log(`BullMQ ${bullmqVersion} on redis-server ${redis.version} (port ${redis.port}, persistence off)`);
    return { value: await fn(redis, bullmqVersion) };
  } finally {
    await redis.stop();
  }
}

/**
 * BullMQ's figures, or null (and why) when redis-server is not installed. Everything it started is
 * stopped and removed before it answers, whatever failed.
 */
export async function measureBullmq(counts: BullmqCounts): Promise<{ figures: BullmqFigures } | { skipped: string }> {
  const measured = await withRedis(async (redis, bullmqVersion): Promise<BullmqFigures> => {
    const sandboxed: SandboxedRun[] = [];
    for (const concurrency of [2, 8]) {
      log(`BullMQ: ${counts.sandboxed} jobs through sandboxed no-op processors, concurrency ${concurrency}`);
      sandboxed.push(await sandboxedRun(redis, concurrency, counts.sandboxed));
    }
    log(`BullMQ: addBulk, ${counts.bulkCalls} calls of 1,000 jobs`);
    const addBulk = await addBulkRun(redis.port, counts.bulkCalls, 1024);
    log(`BullMQ: add, ${counts.adds} jobs, 100 in flight`);
    const add = await addRun(redis.port, counts.adds, 100);
    log(`BullMQ: add → completed, ${counts.latency} jobs one at a time`);
    const latencyMs = await latencyRun(redis.port, counts.latency);
    return { redis: redis.version, bullmq: bullmqVersion, sandboxed, addBulk, add, latencyMs };
  });
  return "skipped" in measured ? measured : { figures: measured.value };
}

/** BullMQ's rounds on one Redis, for a caller that runs them in turn with its own (warm-alternating.ts). */
export interface BullmqRounds {
  /** A sandboxed run at `concurrency` of 2 × `jobs` jobs after its warm-up (its first `jobs`, then its next). */
  sandboxed(concurrency: number, jobs: number): Promise<SandboxedRun>;
  /** `calls` addBulk calls of 1,000 jobs of `dataBytes` B, after one call not counted. */
  addBulk(calls: number, dataBytes: number): Promise<BullmqFigures["addBulk"]>;
}

/** Runs `fn` with BullMQ's rounds on a private Redis, or answers why not (no redis-server); Redis is stopped after, whatever failed. */
export async function withBullmq<T>(fn: (rounds: BullmqRounds) => Promise<T>): Promise<{ value: T } | { skipped: string }> {
  return withRedis((redis) =>
    fn({
      sandboxed: (concurrency, jobs) => sandboxedRun(redis, concurrency, jobs),
      addBulk: (calls, dataBytes) => addBulkRun(redis.port, calls, dataBytes),
    }),
  );
}
