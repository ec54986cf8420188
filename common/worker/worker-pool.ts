import { closeSync, createReadStream, createWriteStream, readSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BlobStore } from "../blobs/blob-store.js";
import { ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import type { JobDefinition, JobRegistry } from "../jobs/job-registry.js";
import { createWorkDir, JobFailedError, openInWorkDir, runJob, type JobAnswer, type JobMode, type JobRequest } from "../jobs/job-runner.js";
import { blobKeys } from "../queue/new-task.js";
import type { ChildSpec, LeaseClaim } from "../queue/task-queue.js";
import type { ProcessedBy, Task } from "../model/task-model.js";
import { Spawner } from "../jobs/launch/spawner.js";
import { WarmPool, type WarmPoolOptions, type WarmProcessInfo } from "../jobs/warm-pool.js";

/** How a worker reaches its site's queue: direct calls in tests, broker calls in services. */
export interface QueueClient {
  pull(owner: string, max: number): Promise<Task[]>;
  /** Renews the leases of `ids`; answers the ids no longer held. Also tells the queue the worker's load. */
  heartbeat(owner: string, ids: string[], load: WorkerLoad): Promise<string[]>;
  complete(claim: LeaseClaim, result: { output: string; processedBy: ProcessedBy }): Promise<boolean>;
  fail(claim: LeaseClaim, error: string, opts: { retryable: boolean; processedBy?: ProcessedBy }): Promise<boolean>;
  split(claim: LeaseClaim, children: ChildSpec[], processedBy: ProcessedBy): Promise<boolean>;
  /** The output keys of a parent's children, in order. */
  mergeInputs(id: string): Promise<string[]>;
}

export interface WorkerLoad {
  slots: number;
  busy: number;
}

export interface WorkerLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface WorkerPoolOptions {
  /** Lease owner name: unique per worker process in the site. */
  owner: string;
  processedBy: ProcessedBy;
  slots: number;
  /** Most tasks asked for in one pull; 0 = as many as there are free slots. */
  batchSize: number;
  heartbeatMs: number;
  /** A pull now and then even without a wake-up, in case a "task queued" event was lost. */
  pollMs: number;
  client: QueueClient;
  blobs: BlobStore;
  registry: JobRegistry;
  /** Where per-run temp dirs go; the OS temp dir by default. */
  workRoot?: string;
  log: WorkerLog;
  /** Settings of the warm job processes (restart backoff, exit grace, idle time...); defaults in WARM_POOL_DEFAULTS. */
  warm?: Partial<Omit<WarmPoolOptions, "log" | "workRoot">>;
  /**
   * Start one-shot scripts through a small spawner process rather than forking this one: worth it
   * when this process is large (a worker with a broker, SQLite and HTTP). Default false.
   */
  useSpawner?: boolean;
}

interface Running {
  claim: LeaseClaim;
  abort: AbortController;
  /** Why the run was stopped from outside; a stopped run reports nothing (its lease is gone). */
  stopped: "canceled" | "lease lost" | "shutdown" | null;
  /** True until its script is over: storing the output and reporting happen outside the slot. */
  holdsSlot: boolean;
}

/** Appended to a failure's message so the task's error shows what the script said. */
const STDERR_HEADER = "\n--- stderr (tail) ---\n";

/**
 * A worker's execution slots: pulls tasks when a slot is free (or when woken), runs each job
 * script in its own temp dir, stores the output and reports the result under its lease.
 *
 * A task holds its slot while its script runs (input download included); storing the output and
 * reporting the result come after, outside the slot, so the next script starts meanwhile. At most
 * `slots` tasks are in that last stage at once (the worker never holds more than 2 × slots leases).
 * For a warm job this doubles the rate: storing an output costs about as much as the script.
 */
export class WorkerPool {
  private readonly opts: WorkerPoolOptions;
  private readonly running = new Map<string, Running>();
  /** Tasks holding a slot: pulled and not yet past their script. */
  private inSlot = 0;
  private pulling = false;
  private pullAgain = false;
  private stopping = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly finished = new Set<Promise<void>>();
  /** The processes of warm jobs (job.yaml `warm: true`), at most one per slot per job. */
  private readonly warm: WarmPool;
  /** Where per-run temp dirs go, resolved once (os.tmpdir() reads the environment at each call). */
  private readonly workRoot: string;

  /** Start one-shot scripts when `useSpawner` is set (see WorkerPoolOptions), taken in turn. */
  private readonly spawners: Spawner[];
  private nextSpawner = 0;

  constructor(opts: WorkerPoolOptions) {
    // Two helpers fork in parallel (one fork at a time each); more buys nothing on a 2-core machine.
    this.spawners = opts.useSpawner === true ? Array.from({ length: Math.min(opts.slots, 2) }, () => new Spawner()) : [];
    this.opts = opts;
    this.workRoot = opts.workRoot ?? os.tmpdir();
    this.warm = new WarmPool({ ...opts.warm, log: opts.log, workRoot: this.workRoot });
  }

  /** Slots in use: tasks whose script runs (or is about to). */
  get busy(): number {
    return this.inSlot;
  }

  /** Leases held: tasks pulled and not yet over here (a run's output is stored and reported after its slot frees). */
  get held(): number {
    return this.running.size;
  }

  start(): void {
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.opts.heartbeatMs);
    this.pollTimer = setInterval(() => this.wake(), this.opts.pollMs);
    this.wake();
  }

  /** The warm job processes alive now. */
  warmProcesses(): WarmProcessInfo[] {
    return this.warm.processes();
  }

  /** Stops pulling and kills running scripts and warm processes; their leases lapse and the queue runs them again. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.pollTimer);
    for (const run of this.running.values()) this.stopRun(run, "shutdown");
    const warmStopped = this.warm.stop();
    await Promise.allSettled([...this.finished]);
    await warmStopped;
    await Promise.all(this.spawners.map((s) => s.stop()));
  }

  /** Called on "task queued": pulls at once if a slot is free. */
  wake(): void {
    if (this.stopping) return;
    if (this.pulling) {
      this.pullAgain = true;
      return;
    }
    const free = Math.min(this.opts.slots - this.inSlot, 2 * this.opts.slots - this.running.size);
    if (free <= 0) return;
    const max = this.opts.batchSize > 0 ? Math.min(this.opts.batchSize, free) : free;
    this.pulling = true;
    this.pullAgain = false;
    this.opts.client.pull(this.opts.owner, max).then(
      (tasks) => {
        this.pulling = false;
        // Stopped meanwhile: leave them leased; the lease lapses and the queue runs them elsewhere.
        if (this.stopping) return;
        for (const task of tasks) this.start1(task);
        if (this.pullAgain || tasks.length === max) this.wake();
      },
      (err: unknown) => {
        this.pulling = false;
        this.opts.log.warn(`pull failed, retrying on the next wake-up: ${errorMessage(err)}`);
      },
    );
  }

  /** Stops a running task that was canceled; answers whether it ran here. */
  cancel(id: string): boolean {
    const run = this.running.get(id);
    if (run === undefined) return false;
    this.stopRun(run, "canceled");
    return true;
  }

  private start1(task: Task): void {
    const run: Running = { claim: { id: task.id, owner: this.opts.owner, attempt: task.tries }, abort: new AbortController(), stopped: null, holdsSlot: true };
    this.running.set(task.id, run);
    this.inSlot++;
    const done = this.execute(task, run).finally(() => {
      this.freeSlot(run);
      this.running.delete(task.id);
      this.finished.delete(done);
      this.wake();
    });
    this.finished.add(done);
  }

  /** The script of `run` is over: its slot takes the next task while this one is stored and reported. */
  private freeSlot(run: Running): void {
    if (!run.holdsSlot) return;
    run.holdsSlot = false;
    this.inSlot--;
    this.wake();
  }

  private stopRun(run: Running, why: NonNullable<Running["stopped"]>): void {
    run.stopped ??= why;
    run.abort.abort();
  }

  private async execute(task: Task, run: Running): Promise<void> {
    const { client, blobs, processedBy } = this.opts;
    /** Blobs this attempt wrote: removed again unless the queue accepted the result. */
    const written: string[] = [];
    try {
      const job = await this.opts.registry.resolve(task.job);
      const mode = modeOf(task, job);
      const work = await createWorkDir(this.workRoot);
      let answer: JobAnswer;
      /** Files of the work dir already stored: deleted with it. */
      let stored: string[] = [];
      try {
        const documents =
          mode === "merge"
            ? { inputs: await Promise.all((await client.mergeInputs(task.id)).map((key, i) => this.localFile(key, work.path, `input-${i}`))) }
            : task.input === null
              ? {}
              : { input: await this.localFile(task.input, work.path, "input") };
        const request: JobRequest = {
          mode,
          ...documents,
          outputDir: work.outputDir,
          params: task.params,
          task: { id: task.id, name: task.name, user: task.user, priority: task.priority, parentId: task.parentId, depth: task.depth },
        };
        const launcher = this.spawners.length === 0 ? undefined : this.spawners[this.nextSpawner++ % this.spawners.length];
        const runOpts = { workDir: work.path, signal: run.abort.signal, ...(launcher === undefined ? {} : { launcher }) };
        try {
          answer = job.warm ? await this.warm.run(job, request, runOpts) : await runJob(job, request, runOpts);
        } finally {
          this.freeSlot(run);
        }
        if (answer.kind === "output") {
          const key = blobKeys.output(task.id, run.claim.attempt);
          written.push(key);
          await putFile(blobs, key, answer.output, work.path);
          stored = [answer.output];
        } else {
          for (const [i, child] of answer.children.entries()) {
            const key = blobKeys.splitPart(task.id, run.claim.attempt, i);
            written.push(key);
            await putFile(blobs, key, child.input, work.path);
          }
          stored = answer.children.map((c) => c.input);
        }
      } finally {
        await work.remove(stored);
      }
      if (run.stopped !== null) throw new Error(`stopped: ${run.stopped}`);
      let accepted: boolean;
      if (answer.kind === "output") {
        accepted = await client.complete(run.claim, { output: written[0]!, processedBy });
      } else {
        const children = answer.children.map((c, i) => ({ input: written[i]!, ...(c.params === undefined ? {} : { params: c.params }) }));
        accepted = await client.split(run.claim, children, processedBy);
      }
      if (!accepted) {
        await Promise.all(written.map((key) => blobs.delete(key)));
      } else if (answer.kind === "output") {
        // An attempt that crashed after storing its output left it behind: only this one counts now.
        await Promise.all(Array.from({ length: run.claim.attempt - 1 }, (_, i) => blobs.delete(blobKeys.output(task.id, i + 1)))).catch(() => undefined);
      }
    } catch (err) {
      await Promise.all(written.map((key) => blobs.delete(key))).catch(() => undefined);
      if (run.stopped !== null) return;
      const retryable = !isDocqError(err, ERROR_CODE.JobNotFound) && !isDocqError(err, ERROR_CODE.BadRequest);
      await client.fail(run.claim, failureText(err), { retryable, processedBy }).catch((reportErr: unknown) => {
        // The lease will lapse and the queue retries the task: nothing is lost, only delayed.
        this.opts.log.warn(`could not report the failure of ${task.id}: ${errorMessage(reportErr)}`);
      });
    }
  }

  /** A path the script can read: the blob's own file when the store is local, else a download into the work dir. */
  private async localFile(key: string, workDir: string, name: string): Promise<string> {
    const local = this.opts.blobs.localPath?.(key) ?? null;
    if (local !== null) return local;
    const file = path.join(workDir, name);
    await pipeline(await this.opts.blobs.get(key), createWriteStream(file));
    return file;
  }

  private async heartbeat(): Promise<void> {
    const ids = [...this.running.keys()];
    try {
      const lost = await this.opts.client.heartbeat(this.opts.owner, ids, { slots: this.opts.slots, busy: this.inSlot });
      for (const id of lost) {
        const run = this.running.get(id);
        if (run === undefined) continue;
        this.opts.log.warn(`lease of ${id} lost (requeued or canceled): stopping its script`);
        this.stopRun(run, "lease lost");
      }
    } catch (err) {
      this.opts.log.warn(`heartbeat failed, will retry: ${errorMessage(err)}`);
    }
  }
}

/**
 * What the script is asked to do: merge a parent whose children are done, handle one part as a
 * child (which may split again), split a document when the job splits, else the whole job.
 */
function modeOf(task: Task, job: JobDefinition): JobMode {
  if (task.childrenTotal > 0) return "merge";
  if (task.parentId !== null) return "child";
  return job.split ? "split" : "simple";
}

/** Outputs up to this size are read at once: a read stream costs three thread-pool round trips (open, read, close) more. */
const SMALL_OUTPUT_BYTES = 64 * 1024;

/**
 * Stores a file the script answered, read from the descriptor openInWorkDir opened (a regular file
 * with one link, reached inside the work dir without following any link), never by its path: a
 * path can be swapped for a link to elsewhere between a check and its use, and a rename by path
 * would then move that other file into the store.
 */
async function putFile(blobs: BlobStore, key: string, file: string, workDir: string): Promise<void> {
  const opened = openInWorkDir(file, workDir);
  if (typeof opened === "string") throw new Error(`the answered file ${file} was not stored: ${opened}`);
  const { fd, size } = opened;
  // A stream takes the descriptor over: it closes it once no read is under way (the number could be another file's by then).
  const stream = size <= SMALL_OUTPUT_BYTES ? null : createReadStream("", { fd, start: 0, end: size - 1, highWaterMark: SMALL_OUTPUT_BYTES });
  try {
    await blobs.put(key, stream ?? Readable.from(size === 0 ? [] : [readAll(fd, size)], { objectMode: false }), { size });
  } finally {
    if (stream === null) closeSync(fd);
    else if (!stream.closed) await new Promise<void>((resolve) => stream.destroy().once("close", () => resolve()));
  }
}

/** The first `size` bytes of `fd` (fewer if it is shorter now: the store then reports the size mismatch). */
function readAll(fd: number, size: number): Buffer {
  const buffer = Buffer.allocUnsafe(size);
  let offset = 0;
  while (offset < size) {
    const n = readSync(fd, buffer, offset, size - offset, offset);
    if (n === 0) break;
    offset += n;
  }
  return buffer.subarray(0, offset);
}

function failureText(err: unknown): string {
  if (err instanceof JobFailedError && err.stderrTail.trim() !== "") return err.message + STDERR_HEADER + err.stderrTail.trimEnd();
  return errorMessage(err);
}
