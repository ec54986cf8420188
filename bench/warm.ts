import { promises as fs, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import type { BlobStore } from "../common/blobs/blob-store.js";
import { FsBlobStore } from "../common/blobs/fs-blob-store.js";
import { JobRegistry } from "../common/jobs/job-registry.js";
import { blobKeys, newTaskId } from "../common/queue/new-task.js";
import { createWorkDir } from "../common/jobs/job-runner.js";
import { WarmPool } from "../common/jobs/warm-pool.js";
import { WorkerPool } from "../common/worker/worker-pool.js";
import { runDirectReference, type DirectResult } from "./direct-spawn.js";
import { round } from "./report.js";
import { directWorkerQueue, sqliteQueue } from "../common/testing/queue-harness.js";

/*
 * Warm job processes against the process-start limit: no-op tasks/s through the worker pool and
 * the queue (in this process: WorkerPool + TaskQueue over SQLite and the fs blob store, no HTTP,
 * no broker) with the warm `noop-warm` job at 2 slots, the one-shot `noop` through the same path,
 * and `scripts-job/noop` spawned directly with child_process.spawn at concurrency 2 (in a small
 * child process, bench/direct-spawn.ts) — the most a one-process-per-task queue can reach here.
 *
 * Each queue run: `count` tasks submitted first (not timed), then the pool started and timed
 * until the last task is `output`; a warm-up batch before it starts the warm processes.
 * `dataDir` holds SQLite and the blobs: on a disk every output is fsynced (twice: file and
 * folder), on tmpfs (/dev/shm) fsync is free, which shows what the worker itself costs.
 *
 * `npm run bench` measures the same warm no-op end to end through the real app (figure 6,
 * bench/warm-figure.ts); this study takes HTTP and the broker out to show what the worker pool
 * and the queue cost around a warm process.
 *
 * Run: node --import tsx bench/warm.ts [--count N] [--data-dir DIR]
 */

const JOBS_DIR = fileURLToPath(new URL("../scripts-job/", import.meta.url));
const SLOTS = 2;

export interface PoolRate {
  job: string;
  count: number;
  slots: number;
  ms: number;
  perSec: number;
  /** Distinct warm process ids that served the tasks (0 for a one-shot job). */
  warmPids: number;
  /** CPU time of this process (main thread and thread pool) per task, µs; the job processes are not in it. */
  cpuUsPerTask: number;
  /** CPU time of the main thread alone per task, µs (null where /proc is missing). */
  mainThreadCpuUsPerTask: number | null;
  /** Share of the time the event loop was busy (1 = this process is the bottleneck). */
  eventLoopUtilization: number;
}

/** CPU time (user + system) of this process's main thread, µs, from /proc (10 ms resolution). */
function mainThreadCpuUs(): number | null {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / 100;
  } catch {
    return null;
  }
}

/** `count` tasks of `job` through a fresh queue and worker pool with `slots` slots; answers tasks/s. */
export async function measurePool(opts: {
  job: string;
  count: number;
  slots: number;
  warmup: number;
  dataDir: string;
  /** Called around the timed part (a profiler, for instance). */
  around?: { before(): Promise<void>; after(): Promise<void> };
  /** "memory": outputs are kept in memory instead of the fs blob store, to show what storing them costs. */
  outputs?: "fs" | "memory";
}): Promise<PoolRate> {
  const dir = await fs.mkdtemp(path.join(opts.dataDir, "docq-bench-warm-"));
  const { store, queue } = sqliteQueue(dir, { site: "bench", leaseMs: 60_000, backoffBaseMs: 1000, backoffMaxMs: 10_000 });
  // As the app opens it by default (durability "process"), as the SQLite store above.
  const fsBlobs = await FsBlobStore.open(path.join(dir, "blobs"), "process");
  const blobs = opts.outputs === "memory" ? memoryOutputs(fsBlobs) : fsBlobs;
  const workRoot = path.join(dir, "work");
  await fs.mkdir(workRoot);
  const registry = new JobRegistry({ dir: JOBS_DIR, defaultTimeoutMs: 60_000 });
  /** The tasks of the batch being measured that are not final yet. */
  const waiting = new Set<string>();
  let failed = 0;
  let onDone: (() => void) | undefined;
  queue.on("task:done", (task) => {
    if (!waiting.delete(task.id)) return;
    if (task.status !== "output") failed++;
    if (waiting.size === 0) onDone?.();
  });
  const client = directWorkerQueue(queue);
  const pool = new WorkerPool({
    owner: "bench-worker",
    processedBy: { site: "bench", node: "n1" },
    slots: opts.slots,
    batchSize: 0,
    heartbeatMs: 5000,
    // Only the explicit wake() below and the pool's own wake after each task: nothing runs while a batch is submitted.
    pollMs: 3_600_000,
    client,
    blobs,
    registry,
    workRoot,
    log: { info: () => undefined, warn: (m) => process.stderr.write(`[bench warm] ${m}\n`) },
  });

  interface Timed {
    ms: number;
    cpuUs: number;
    mainUs: number | null;
    elu: number;
  }
  const batch = async (n: number, timed: boolean): Promise<Timed> => {
    // The batch before ends with wake-ups of its own (each task's end pulls again): once the pool
    // holds nothing and those pulls have come back empty, nothing runs until the wake() below.
    while (pool.held > 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (let i = 0; i < n; i++) {
      const id = newTaskId("bench");
      const input = blobKeys.input(id);
      // As the HTTP routes store a new task's document (putNew: a small one is a row of the fs store).
      await fsBlobs.putNew(input, Buffer.from(`small document number ${i}\n`));
      await queue.submit({ id, site: "bench", user: "bench", name: "", job: opts.job, params: {}, priority: 50, maxTries: 1, input });
      waiting.add(id);
    }
    failed = 0;
    const finished = new Promise<void>((resolve) => (onDone = resolve));
    if (timed) await opts.around?.before();
    const cpu0 = process.cpuUsage();
    const main0 = mainThreadCpuUs();
    const elu0 = performance.eventLoopUtilization();
    const t0 = performance.now();
    pool.wake();
    await finished;
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const main1 = mainThreadCpuUs();
    const elu = performance.eventLoopUtilization(elu0).utilization;
    if (timed) await opts.around?.after();
    if (failed > 0) throw new Error(`${failed} of ${n} ${opts.job} tasks failed`);
    return { ms, cpuUs: cpu.user + cpu.system, mainUs: main0 === null || main1 === null ? null : main1 - main0, elu };
  };

  try {
    pool.start();
    await batch(opts.warmup, false);
    const pids = new Set(pool.warmProcesses().map((p) => p.pid));
    const { ms, cpuUs, mainUs, elu } = await batch(opts.count, true);
    for (const p of pool.warmProcesses()) pids.add(p.pid);
    return {
      job: opts.job,
      count: opts.count,
      slots: opts.slots,
      ms: Math.round(ms),
      perSec: round((opts.count / ms) * 1000),
      warmPids: pids.size,
      cpuUsPerTask: round(cpuUs / opts.count),
      mainThreadCpuUsPerTask: mainUs === null ? null : round(mainUs / opts.count),
      eventLoopUtilization: round(elu, 2),
    };
  } finally {
    await pool.stop();
    queue.stop();
    await store.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The warm pool alone (no queue, no store): `count` requests of noop-warm at `concurrency`, each with its own fresh work dir. */
export async function measureWarmPoolAlone(opts: {
  count: number;
  concurrency: number;
  workRoot: string;
}): Promise<{ perSec: number; usPerRequest: number }> {
  const job = await new JobRegistry({ dir: JOBS_DIR, defaultTimeoutMs: 60_000 }).resolve("noop-warm");
  const pool = new WarmPool({
    workRoot: opts.workRoot,
    log: { info: () => undefined, warn: (m) => process.stderr.write(`[bench warm] ${m}\n`) },
  });
  const task = { id: "bench-0", name: "", user: "bench", priority: 50, parentId: null, depth: 0 };
  const once = async (): Promise<void> => {
    const work = await createWorkDir(opts.workRoot);
    try {
      await pool.run(
        job,
        { mode: "simple", input: path.join(JOBS_DIR, "noop"), outputDir: work.outputDir, params: {}, task },
        { workDir: work.path },
      );
    } finally {
      await work.remove();
    }
  };
  const loop = async (n: number): Promise<void> => {
    await Promise.all(
      Array.from({ length: opts.concurrency }, async () => {
        for (let i = 0; i < n / opts.concurrency; i++) await once();
      }),
    );
  };
  try {
    await loop(200);
    const t0 = performance.now();
    await loop(opts.count);
    const ms = performance.now() - t0;
    return { perSec: round((opts.count / ms) * 1000), usPerRequest: round((ms * 1000) / opts.count) };
  } finally {
    await pool.stop();
  }
}

export interface WarmBenchResult {
  dataDir: string;
  /** The warm pool alone, requests/s. */
  warmPoolAlone: { perSec: number; usPerRequest: number };
  warm: PoolRate;
  /** The same with outputs kept in memory: the worker, the queue and the warm process without the blob store's writes. */
  warmMemoryOutputs: PoolRate;
  oneShot: PoolRate;
  direct: DirectResult;
  loadAvg: number[];
}

export async function measureWarm(opts: { count: number; dataDir: string }): Promise<WarmBenchResult> {
  const loadAvg = os.loadavg().map((x) => round(x, 2));
  const warmPoolAlone = await measureWarmPoolAlone({ count: opts.count, concurrency: SLOTS, workRoot: opts.dataDir });
  const warm = await measurePool({ job: "noop-warm", count: opts.count, slots: SLOTS, warmup: 200, dataDir: opts.dataDir });
  const warmMemoryOutputs = await measurePool({
    job: "noop-warm",
    count: opts.count,
    slots: SLOTS,
    warmup: 200,
    dataDir: opts.dataDir,
    outputs: "memory",
  });
  const oneShotCount = Math.max(100, Math.round(opts.count / 10));
  const oneShot = await measurePool({ job: "noop", count: oneShotCount, slots: SLOTS, warmup: 20, dataDir: opts.dataDir });
  const direct = await runDirectReference({
    method: "spawn",
    command: path.join(JOBS_DIR, "noop"),
    args: [],
    count: oneShotCount,
    concurrency: SLOTS,
    warmup: 20,
  });
  return { dataDir: opts.dataDir, warmPoolAlone, warm, warmMemoryOutputs, oneShot, direct, loadAvg };
}

/** The fs blob store for inputs, a Map for everything put while measuring. */
function memoryOutputs(inner: FsBlobStore): BlobStore {
  const mem = new Map<string, Buffer>();
  return {
    async put(key, body) {
      const chunks: Buffer[] = [];
      for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
      const bytes = Buffer.concat(chunks);
      mem.set(key, bytes);
      return { size: bytes.length };
    },
    putNew: async (key, bytes) => {
      mem.set(key, Buffer.from(bytes));
      return { size: bytes.byteLength };
    },
    get: async (key) => {
      const bytes = mem.get(key);
      return bytes === undefined ? inner.get(key) : Readable.from([bytes]);
    },
    stat: async (key) => {
      const bytes = mem.get(key);
      return bytes === undefined ? inner.stat(key) : { size: bytes.length };
    },
    delete: async (key) => {
      mem.delete(key);
      await inner.delete(key);
    },
    deletePrefix: (prefix) => inner.deletePrefix(prefix),
    list: () => inner.list(),
    localPath: (key) => (mem.has(key) ? null : inner.localPath(key)),
    readSmall: (key) => mem.get(key) ?? inner.readSmall(key),
    close: () => inner.close(),
  };
}

const THIS_FILE = fileURLToPath(import.meta.url);

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === THIS_FILE) {
  const args = process.argv.slice(2);
  const arg = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i === -1 ? undefined : args[i + 1];
  };
  const count = Number(arg("--count") ?? 10_000);
  const dataDir = arg("--data-dir");
  const run = async (): Promise<void> => {
    const tmpfs = await fs.access("/dev/shm").then(
      () => ["/dev/shm"],
      () => [],
    );
    for (const where of dataDir === undefined ? [os.tmpdir(), ...tmpfs] : [dataDir]) {
      const r = await measureWarm({ count, dataDir: where });
      process.stdout.write(
        `data in ${r.dataDir} (load average at start ${r.loadAvg.join(" ")}):\n` +
          `  warm pool alone (noop-warm, a fresh work dir per request), concurrency ${SLOTS}: ${r.warmPoolAlone.perSec} requests/s\n` +
          `  noop-warm through WorkerPool + TaskQueue, ${SLOTS} slots: ${r.warm.perSec} tasks/s (${r.warm.count} tasks in ${r.warm.ms} ms, ${r.warm.warmPids} warm processes; ` +
          `worker CPU ${r.warm.cpuUsPerTask} µs/task, main thread ${r.warm.mainThreadCpuUsPerTask ?? "?"} µs/task, event loop busy ${Math.round(r.warm.eventLoopUtilization * 100)} %)\n` +
          `  the same, outputs kept in memory: ${r.warmMemoryOutputs.perSec} tasks/s (worker CPU ${r.warmMemoryOutputs.cpuUsPerTask} µs/task, ` +
          `main thread ${r.warmMemoryOutputs.mainThreadCpuUsPerTask ?? "?"} µs/task)\n` +
          `  noop (a process per task), same path: ${r.oneShot.perSec} tasks/s (${r.oneShot.count} tasks in ${r.oneShot.ms} ms)\n` +
          `  scripts-job/noop spawned directly (child_process.spawn, concurrency ${SLOTS}): ${r.direct.perSec} spawns/s (${r.direct.count} in ${r.direct.ms} ms)\n`,
      );
    }
  };
  run().catch((err: unknown) => {
    process.stderr.write(`bench/warm: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
