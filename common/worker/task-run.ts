import { closeSync, createReadStream, createWriteStream, readSync, unlinkSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { BlobStore } from "../blobs/blob-store.js";
import type { JobExecutor, JobRunOptions } from "../jobs/executor.js";
import type { JobDefinition, JobRegistry } from "../jobs/job-registry.js";
import {
  INLINE_MERGE_MAX_BYTES,
  JobFailedError,
  openMovableInWorkDir,
  takeAnswered,
  type InlineJobRequest,
  type JobAnswer,
  type JobMode,
  type JobRequest,
  type WorkDir,
} from "../jobs/job-runner.js";
import type { ProgressReport } from "../jobs/script-answer.js";
import type { StopSignal } from "../jobs/stop-signal.js";
import type { ChildSpec, PulledTask } from "../model/claims.js";
import { ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { blobKeys, outputKeyOf } from "../queue/new-task.js";
import type { WorkDirPool } from "./work-dir-pool.js";

/*
 * One leased task, end to end, on the worker: its input reached (the blob's own file, or a
 * download into an empty work dir), its job run by an executor, the answered output or parts
 * stored, the work dir removed, and the result reported under the lease. What the attempt stored
 * is deleted again unless the queue accepted it. The worker pool around it deals in slots and
 * leases only.
 */

/** What an attempt came to, as the worker reports it to the queue. */
export type AttemptReport =
  | { kind: "output"; output: string }
  | { kind: "split"; children: ChildSpec[] }
  | { kind: "failed"; error: string; retryable: boolean }
  /** Stopped for another task's sake (a shared warm process was killed): queued again, the try not counted. */
  | { kind: "released"; reason: string };

/** What a task run needs from its worker, the same for every task. */
export interface TaskRunContext {
  registry: JobRegistry;
  blobs: BlobStore;
  /** Where per-run temp dirs go. */
  workRoot: string;
  /** The run's work dir comes from here and goes back here (emptied and kept, or removed). */
  workDirs: Pick<WorkDirPool, "acquire" | "release">;
  /** The executor of a job (executorFor in jobs/executor.ts). */
  executorOf(job: JobDefinition): JobExecutor;
}

/** One leased task as the worker pool hands it over. */
export interface LeasedRun {
  task: PulledTask;
  /** The task's `tries` when the lease was granted: the attempt number, in the blob keys it writes. */
  tries: number;
  /** Aborted when the run is stopped from outside: its script is killed. */
  signal: StopSignal;
  /** Why the run was stopped from outside, null while it runs on: a stopped run reports nothing (its lease is gone). */
  stoppedFor(): string | null;
  /** Called once the script is over: its slot can take the next task while this one is stored and reported. */
  scriptOver(): void;
  /** Reports the attempt to the queue under the lease; answers whether the queue accepted it. */
  report(report: AttemptReport): Promise<boolean>;
  /** Takes a progress line the script printed while it runs (the pool throttles what it sends on). */
  progress?(report: ProgressReport): void;
}

/** The name of a task's input in its work dir, when the store has no file of it to point at. */
const SINGLE_INPUT = "input";

/** Appended to a failure's message so the task's error shows what the script said. */
const STDERR_HEADER = "\n--- stderr (tail) ---\n";

/**
 * Runs one leased task to its end: stored and reported, or failed and reported (retryable unless
 * the job is unknown or the request is bad), or stopped and silent. Never throws.
 */
export async function runLeasedTask(run: LeasedRun, ctx: TaskRunContext): Promise<void> {
  /** Blobs this attempt wrote: removed again unless the queue accepted the result. */
  const written: string[] = [];
  try {
    const report = await runAndStore(run, ctx, written);
    const stopped = run.stoppedFor();
    if (stopped !== null) throw new Error(`stopped: ${stopped}`);
    const accepted = await run.report(report);
    if (!accepted) {
      await deleteBlobs(ctx.blobs, written);
    } else if (report.kind === "output" && run.tries > 1) {
      // An attempt that crashed after storing its output left it behind: only this one counts now.
      const earlier = Array.from({ length: run.tries - 1 }, (_, i) => outputKeyOf(run.task, i + 1));
      // Most earlier attempts stored nothing: a key that cannot be deleted only takes room until the task's folder goes.
      await deleteBlobs(ctx.blobs, earlier).catch(() => undefined);
    }
  } catch (err) {
    // What is left only takes room until the task's folder is dropped (on cancel or delete); the failure report matters more.
    await deleteBlobs(ctx.blobs, written).catch(() => undefined);
    if (run.stoppedFor() !== null) return;
    if (err instanceof JobFailedError && err.collateral) {
      await run.report({ kind: "released", reason: `${err.message}: queued again, the try not counted` });
      return;
    }
    // Never retried: an unknown job, a bad request, or a script that answered `"retry": false`.
    const retryable =
      !isDocqError(err, ERROR_CODE.JobNotFound) &&
      !isDocqError(err, ERROR_CODE.BadRequest) &&
      !(err instanceof JobFailedError && !err.retryable);
    await run.report({ kind: "failed", error: failureText(err), retryable });
  }
}

/** Runs the task's script in an empty work dir and stores what it answered (the keys go to `written` as they are written). */
async function runAndStore(run: LeasedRun, ctx: TaskRunContext, written: string[]): Promise<AttemptReport> {
  const { task } = run;
  const job = await ctx.registry.resolve(task.job);
  const executor = ctx.executorOf(job);
  const runInline = executor.runInline?.bind(executor);
  const inline = runInline === undefined ? null : inlineRequestOf(task, job, ctx.blobs);
  if (runInline !== undefined && inline !== null) {
    // No work dir: the documents go inside the request, the output (or the parts) come back inside the answer.
    const answer = await runScriptOver(run, (opts) => runInline(job, inline, opts));
    if (answer.kind === "output") {
      const key = outputKeyOf(task, run.tries);
      written.push(key);
      await putBytes(ctx.blobs, key, answer.output);
      return { kind: "output", output: key };
    }
    const keys = answer.children.map((_, i) => blobKeys.splitPart(task.id, run.tries, i));
    written.push(...keys);
    // All at once: the rows share a commit per turn of the event loop (the bytes are in memory already).
    await Promise.all(answer.children.map((child, i) => putBytes(ctx.blobs, keys[i] as string, child.input)));
    return {
      kind: "split",
      children: answer.children.map((child, i) => ({
        input: keys[i] as string,
        ...(child.params === undefined ? {} : { params: child.params }),
      })),
    };
  }
  const work = await ctx.workDirs.acquire();
  /**
   * Files of the work dir docq wrote (a downloaded input) or stored by a copy (a moved one is gone
   * from it): unlinked first when it is emptied or removed, so the dir can be kept for the next run.
   */
  const stored: string[] = [];
  try {
    const answer = await runScript(run, job, work, ctx, stored);
    if (answer.kind === "output") {
      const key = outputKeyOf(task, run.tries);
      written.push(key);
      // A split's part ends in its parent's merge, which reads every part's output as a file (unless it is inline): those stay files.
      const asBytes = task.depth === 0 || takesInline(job);
      if (!(await storeAnswered(ctx.blobs, key, answer.output, work.path, { move: true, asBytes }))) stored.push(answer.output);
      return { kind: "output", output: key };
    }
    const children: ChildSpec[] = answer.children.map((child, i) => ({
      input: blobKeys.splitPart(task.id, run.tries, i),
      ...(child.params === undefined ? {} : { params: child.params }),
    }));
    // A file answered for several parts (one document, different params) is copied for each: a move would take it from the next.
    const answeredOnce = filesAnsweredOnce(answer.children.map((child) => child.input));
    // An inline job's child gets its part inside its request when the store holds it as a row.
    const asBytes = takesInline(job);
    // A few at once: a thousand parts one after the other wait a thousand times for the thread pool.
    await eachWithin(PART_PUTS_AT_ONCE, answer.children, async (child, i) => {
      const key = blobKeys.splitPart(task.id, run.tries, i);
      written.push(key);
      const move = answeredOnce.has(child.input);
      if (!(await storeAnswered(ctx.blobs, key, child.input, work.path, { move, asBytes }))) stored.push(child.input);
    });
    return { kind: "split", children };
  } finally {
    await ctx.workDirs.release(work, stored);
  }
}

/** Reaches the task's documents and runs its job on them; the slot is free again once the script is over, however it ended. */
async function runScript(run: LeasedRun, job: JobDefinition, work: WorkDir, ctx: TaskRunContext, written: string[]): Promise<JobAnswer> {
  const { task } = run;
  const mode = modeOf(task, job);
  const documents = await documentsOf(task, mode, work, ctx.blobs, written);
  // A kept file of an earlier run that this run did not rewrite is removed before the script sees the dir.
  work.removeStale();
  const request: JobRequest = {
    mode,
    ...documents,
    outputDir: work.outputDir,
    params: task.params,
    task: requestTask(task),
  };
  return runScriptOver(run, (opts) => ctx.executorOf(job).run(job, request, { workDir: work.path, ...opts }));
}

/** Runs the task's script through `start` with the run's options; the slot is free again once the script is over, however it ended. */
async function runScriptOver<T>(run: LeasedRun, start: (opts: Omit<JobRunOptions, "workDir">) => Promise<T>): Promise<T> {
  const { task } = run;
  try {
    const onProgress = run.progress === undefined ? {} : { onProgress: run.progress.bind(run) };
    // A workflow step may set its own timeout in place of its job's.
    const timeout = task.timeoutMs === null || task.timeoutMs === undefined ? {} : { timeoutMs: task.timeoutMs };
    const onScriptOver = (): void => run.scriptOver();
    return await start({ signal: run.signal, onScriptOver, ...onProgress, ...timeout });
  } finally {
    run.scriptOver();
  }
}

/**
 * The task's request with its documents inside (InlineJobRequest) when its job takes one (warm,
 * job.yaml `inline: true`) and the task fits it: a document the store holds small and at hand (or
 * none), or a merge whose parts it all holds so, up to INLINE_MERGE_MAX_BYTES together. Else null:
 * the task gets a work dir and files as any other.
 */
function inlineRequestOf(task: PulledTask, job: JobDefinition, blobs: BlobStore): InlineJobRequest | null {
  if (!takesInline(job)) return null;
  const mode = modeOf(task, job);
  const common = { inline: true, params: task.params, task: requestTask(task) } as const;
  if (mode === "merge") {
    const parts = mergeInputsOf(task);
    const inputsBase64: string[] = [];
    let total = 0;
    for (const key of parts) {
      const bytes = blobs.readSmall?.(key) ?? null;
      if (bytes === null) return null;
      total += bytes.byteLength;
      if (total > INLINE_MERGE_MAX_BYTES) return null;
      inputsBase64.push(bytes.toString("base64"));
    }
    return { mode, inputsBase64, ...common };
  }
  const input = task.input === null ? null : (blobs.readSmall?.(task.input) ?? null);
  if (task.input !== null && input === null) return null;
  return { mode, ...(input === null ? {} : { inputBase64: input.toString("base64") }), ...common };
}

function takesInline(job: JobDefinition): boolean {
  return job.warm && job.inline === true;
}

function requestTask(task: PulledTask): JobRequest["task"] {
  return { id: task.id, name: task.name, user: task.user, priority: task.priority, parentId: task.parentId, depth: task.depth };
}

/** The request's documents: the parts of a merge (its children's outputs, in order), else the task's input if it has one. */
async function documentsOf(
  task: PulledTask,
  mode: JobMode,
  work: WorkDir,
  blobs: BlobStore,
  written: string[],
): Promise<{ input?: string; inputs?: string[] }> {
  if (mode === "merge") {
    return { inputs: await Promise.all(mergeInputsOf(task).map((key, i) => localFile(blobs, key, work, `input-${i}`, written))) };
  }
  return task.input === null ? {} : { input: await localFile(blobs, task.input, work, SINGLE_INPUT, written) };
}

/** The keys of a merge's parts, in order. */
function mergeInputsOf(task: PulledTask): readonly string[] {
  // A workflow step's upstream outputs travel in its record (a site that stole it has no mergeInputs).
  const mergeInputs = task.mergeInputs ?? task.inputs ?? undefined;
  if (mergeInputs === undefined) {
    throw new Error(`task ${task.id} was leased for its merge without its children's outputs (mergeInputs)`);
  }
  return mergeInputs;
}

/**
 * What the script is asked to do: merge a parent whose children are done, handle one part as a
 * child (which may split again), split a document when the job splits, else the whole job.
 */
function modeOf(task: PulledTask, job: JobDefinition): JobMode {
  // A workflow step with several upstreams merges their outputs, as a parent merges its children's.
  if (task.childrenTotal > 0 || (task.inputs ?? null) !== null) return "merge";
  // A workflow's step has a parent but is no part of a split (depth 0): it runs as a submitted task.
  if (task.parentId !== null && task.depth > 0) return "child";
  return job.split ? "split" : "simple";
}

/**
 * A path the script can read: a small document the store holds at hand written into the work dir
 * (in place of the last run's: WorkDir.writeFile), the blob's own file when the store is local,
 * else a download into the work dir (added to `written`).
 */
async function localFile(blobs: BlobStore, key: string, work: WorkDir, name: string, written: string[]): Promise<string> {
  const small = blobs.readSmall?.(key) ?? null;
  // A task's one input is kept for the next run; a merge's many inputs are not (a later run writing fewer would empty the rest).
  if (small !== null && name === SINGLE_INPUT) return work.writeFile(name, small);
  const local = small === null ? (blobs.localPath?.(key) ?? null) : null;
  if (local !== null) return local;
  const file = path.join(work.path, name);
  written.push(file);
  if (small !== null) await writeFile(file, small, { flag: "wx" });
  else await pipeline(await blobs.get(key), createWriteStream(file));
  return file;
}

async function deleteBlobs(blobs: BlobStore, keys: readonly string[]): Promise<void> {
  await Promise.all(keys.map((key) => blobs.delete(key)));
}

/** Parts of a split stored at once. */
const PART_PUTS_AT_ONCE = 8;

/**
 * Runs `fn` on every item, at most `limit` at once. On a failure no further item starts; it
 * rejects with the first error once those under way have settled (so what they stored is known
 * to the caller, which removes it).
 */
async function eachWithin<T>(limit: number, items: readonly T[], fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const runner = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const i = next++;
      try {
        await fn(items[i] as T, i);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
  if (failure !== null) throw (failure as { error: unknown }).error;
}

/** Outputs up to this size are read at once: a read stream costs three thread-pool round trips (open, read, close) more. */
const SMALL_OUTPUT_BYTES = 64 * 1024;

/**
 * Stores a file the script answered, reached inside the work dir without following any link (a
 * regular file with one link: openInWorkDir), never by its path: a path can be swapped for a link
 * to elsewhere between a check and its use. A store that can adopt a local file gets it moved in,
 * by a rename through the file's opened folder, and checks that what it moved is the opened file
 * (else it answers null and the file is copied); any other store gets a copy read from the
 * descriptor. A move costs one rename where a copy cost a temp file's open, write, close and
 * rename, and the unlink when the work dir is emptied. With `asBytes`, a small file (up to
 * SMALL_OUTPUT_BYTES) is read and stored with putNew (a new key's bytes: the fs store keeps them as
 * a row, where a move would make the task's folder, a new inode) and unlinked through its opened
 * folder. Answers true when the file is no longer in the work dir (moved, or stored and unlinked).
 */
async function storeAnswered(
  blobs: BlobStore,
  key: string,
  file: string,
  workDir: string,
  opts: { move: boolean; asBytes: boolean },
): Promise<boolean> {
  const refused = (why: string): Error => new Error(`the answered file ${file} was not stored: ${why}`);
  const adopt = opts.move ? blobs.adopt?.bind(blobs) : undefined;
  // The output as the executor checked it (placeAnswer), else opened now the same way.
  const answered = takeAnswered(file, workDir);
  const movable = answered ?? openMovableInWorkDir(file, workDir);
  if (typeof movable === "string") throw refused(movable);
  if (adopt === undefined) {
    movable.closeDir();
    await copyInto(blobs, key, movable);
    return false;
  }
  if (opts.asBytes && movable.size <= SMALL_OUTPUT_BYTES) {
    // A new key's small bytes: the store may keep them as a row (fs), where a move would make the task's folder.
    try {
      let bytes: Uint8Array;
      try {
        bytes = readAll(movable.fd, movable.size);
      } finally {
        closeSync(movable.fd);
      }
      await putAttemptBytes(blobs, key, bytes);
      // Unlinked now through its opened folder, which spares the emptying its walk down from the work dir.
      return movable.path !== null && unlinkedOrGone(movable.path);
    } finally {
      movable.closeDir();
    }
  }
  let moved: boolean;
  try {
    moved = movable.path !== null && (await adopt(key, { path: movable.path, fd: movable.fd })) !== null;
  } catch (err) {
    closeSync(movable.fd);
    throw err;
  } finally {
    movable.closeDir();
  }
  if (moved) {
    closeSync(movable.fd);
    return true;
  }
  await copyInto(blobs, key, movable);
  return false;
}

/** Stores bytes an inline request answered under an attempt's key: a small one as a new key's bytes, else as a blob. */
async function putBytes(blobs: BlobStore, key: string, bytes: Buffer): Promise<void> {
  if (bytes.byteLength <= SMALL_OUTPUT_BYTES) await putAttemptBytes(blobs, key, bytes);
  else await blobs.put(key, Readable.from([bytes]), { size: bytes.byteLength });
}

/**
 * Stores an attempt's small output under its key, new but for one case: a run of the same attempt
 * number whose claim a crash of this process lost (a claim for a worker of the store's own process
 * is answered before its commit: ClaimOptions) may have stored it before the crash. That run died
 * with the process, so what it left is replaced; a claim for a worker elsewhere is durable, so no
 * live run ever shares this key.
 */
async function putAttemptBytes(blobs: BlobStore, key: string, bytes: Uint8Array): Promise<void> {
  try {
    await blobs.putNew(key, bytes);
  } catch (err) {
    if (!isDocqError(err, ERROR_CODE.BadRequest)) throw err;
    await blobs.put(key, Readable.from(bytes.byteLength === 0 ? [] : [bytes]), { size: bytes.byteLength });
  }
}

/** Unlinks `file`; true when it is gone (already, or now), false when it could not be (the work dir's emptying tries again). */
function unlinkedOrGone(file: string): boolean {
  try {
    unlinkSync(file);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT";
  }
}

/** The files named once in `files` (by their resolved path). */
function filesAnsweredOnce(files: readonly string[]): Set<string> {
  const counts = new Map<string, number>();
  for (const file of files) counts.set(path.resolve(file), (counts.get(path.resolve(file)) ?? 0) + 1);
  return new Set(files.filter((file) => counts.get(path.resolve(file)) === 1));
}

/** Puts a copy of the opened file `fd` (closed once read: a stream takes it over when it is large). */
async function copyInto(blobs: BlobStore, key: string, opened: { fd: number; size: number }): Promise<void> {
  const { fd, size } = opened;
  // A stream takes the descriptor over: it closes it once no read is under way (the number could be another file's by then).
  const stream =
    size <= SMALL_OUTPUT_BYTES ? null : createReadStream("", { fd, start: 0, end: size - 1, highWaterMark: SMALL_OUTPUT_BYTES });
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
