import {
  closeSync,
  constants as fsConstants,
  existsSync,
  fstatSync,
  ftruncateSync,
  lstatSync,
  promises as fs,
  mkdirSync,
  readdirSync,
  type Dirent,
  mkdtempSync,
  openSync,
  realpathSync,
  rmdirSync,
  statfsSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { endedCleanly, endOfRun, lastLine, type RunEnd } from "./launch/job-process.mjs";
import { isOwnerAlive, killOrphans, OWNER } from "./launch/leftovers.mjs";
import { inProcessLauncher, type ScriptLauncher } from "./launch/script-launcher.js";
import { jobEnvironmentOf } from "./job-env.js";
import type { JobDefinition } from "./job-registry.js";
import { isErrorAnswer, parseAnswerLine, parseProgressLine, type Answer, type ErrorAnswer, type ProgressReport } from "./script-answer.js";
import type { StopSignal } from "./stop-signal.js";

export { checkAnswer, type Answer } from "./script-answer.js";

export type JobMode = "simple" | "split" | "child" | "merge";

export interface JobRequest {
  mode: JobMode;
  input?: string;
  inputs?: string[];
  outputDir: string;
  params: Record<string, unknown>;
  task: { id: string; name: string; user: string; priority: number; parentId: string | null; depth: number };
}

/**
 * A warm job's request with its documents inside (job.yaml `inline: true`): the bytes in base64, no
 * work dir, no outputDir; the answer is `{"outputBase64": ...}`, or children with `inputBase64` (a
 * split, or a child that splits again). Sent for a task whose document the store holds small and at
 * hand (or that has none), and for a merge whose parts it all holds so, up to
 * INLINE_MERGE_MAX_BYTES together; any other gets a JobRequest.
 */
export type InlineJobRequest = {
  inline: true;
  params: Record<string, unknown>;
  task: JobRequest["task"];
} & (
  | {
      mode: "simple" | "child" | "split";
      /** The task's document; absent when the task has none. */
      inputBase64?: string;
    }
  | {
      mode: "merge";
      /** The parts to merge, in order (a split's children's outputs, or a workflow step's upstreams'). */
      inputsBase64: string[];
    }
);

/** The most bytes a merge's parts carry together in an inline request; more go as files. */
export const INLINE_MERGE_MAX_BYTES = 2 * 1024 * 1024;

export type JobAnswer =
  | { kind: "output"; output: string; stderrTail: string }
  | { kind: "children"; children: { input: string; params?: Record<string, unknown> }[]; stderrTail: string };

export class JobFailedError extends Error {
  readonly exitCode: number | null;
  readonly timedOut: boolean;
  readonly canceled: boolean;
  readonly stderrTail: string;
  /** False when the script answered `"retry": false`: the task ends in error at once. */
  readonly retryable: boolean;
  /**
   * True when the run was stopped for another task's sake: its warm process, shared with a task
   * that timed out or was canceled, was killed. Not the task's failure: it runs again, the try not counted.
   */
  readonly collateral: boolean;
  constructor(
    message: string,
    fields: {
      exitCode: number | null;
      timedOut?: boolean;
      canceled?: boolean;
      stderrTail: string;
      retryable?: boolean;
      collateral?: boolean;
    },
  ) {
    super(message);
    this.name = "JobFailedError";
    this.exitCode = fields.exitCode;
    this.timedOut = fields.timedOut ?? false;
    this.canceled = fields.canceled ?? false;
    this.stderrTail = fields.stderrTail;
    this.retryable = fields.retryable ?? true;
    this.collateral = fields.collateral ?? false;
  }
}

/** The error of a run docq stopped before it started: canceled already, or the worker is shutting down. */
export function stoppedBeforeStart(job: { name: string }, why: "cancel" | "stop"): JobFailedError {
  return new JobFailedError(`job "${job.name}" ${endOfRun({ stoppedFor: why })}`, { exitCode: null, canceled: true, stderrTail: "" });
}

export interface WorkDir {
  path: string;
  outputDir: string;
  /** Removes the dir; `known` files in it (outputs already stored) are unlinked first, which usually leaves two empty folders. */
  remove(known?: readonly string[]): Promise<void>;
  /**
   * Empties the dir for another run (the worker keeps a few: work-dir-pool.ts): `known` files are
   * unlinked as remove() does them. Answers true when nothing but an empty `out/` folder is left,
   * false when anything else is there (the caller then removes the dir); never throws.
   */
  empty(known?: readonly string[]): Promise<boolean>;
  /**
   * Writes `bytes` as the file `name` at the top of the dir (a document docq hands its script) and
   * answers its path. The file is kept when the dir is emptied, so the next run rewrites it in place
   * instead of making a new file: on ext4 a new inode costs far more than a write. Until then it
   * holds its document; a run that writes no file of that name has it removed by removeStale(), so
   * a run never finds an earlier run's document.
   */
  writeFile(name: string, bytes: Uint8Array): Promise<string>;
  /**
   * Removes the kept files this run did not write (an earlier run's documents). Call once the
   * run's documents are written, before its script starts. Throws when the dir is gone.
   */
  removeStale(): void;
}

/**
 * A fresh temp dir with an `out/` folder, for one run. On tmpfs it is made and removed with
 * synchronous calls: they take microseconds there, where each async call costs a thread-pool
 * round trip (several times more; with a warm job these calls were a third of a task's time).
 * On a disk (ext4) a folder change can wait for a journal commit that another task's fsync
 * started, so there the calls stay asynchronous and never stall the event loop.
 *
 * Its name, `docq-job-<OWNER>-XXXXXX`, says which process made it (leftovers.mjs): a worker
 * started after a crash removes the dirs of processes that are gone (sweepLeftovers).
 *
 * remove() unlinks the `known` files through the folders it opened without following links (see
 * openInWorkDir), so a script that swapped a folder for a link cannot make docq unlink a file
 * elsewhere; whatever else is left goes the same way (removeTree).
 */
export async function createWorkDir(root?: string): Promise<WorkDir> {
  const base = root ?? os.tmpdir();
  const inMemory = isInMemoryFs(base);
  const prefix = path.join(base, `docq-job-${OWNER}-`);
  const dir = inMemory ? mkdtempSync(prefix) : await fs.mkdtemp(prefix);
  const outputDir = path.join(dir, "out");
  if (inMemory) mkdirSync(outputDir);
  else await fs.mkdir(outputDir);
  const held: OpenDir = { fd: openSync(dir, DIR_FLAGS), path: path.resolve(dir), held: true };
  heldWorkDirs.set(held.path, held);
  /** Lets go of the held folder once the dir is removed (or given up on). */
  const letGo = (): void => {
    if (heldWorkDirs.get(held.path) !== held) return;
    heldWorkDirs.delete(held.path);
    closeSync(held.fd);
  };
  /** Files docq wrote for its script (writeFile): kept, truncated, when the dir is emptied. */
  const kept = new KeptFiles(dir);
  /** Only an `out` folder (a real one, not a link) in the dir, and nothing in it, besides the kept files. */
  const isEmpty = (all: Dirent[], outEntries: string[]): boolean => {
    const entries = all.filter((e) => !(e.isFile() && kept.has(e.name)));
    return entries.length === 1 && entries[0]?.name === "out" && entries[0].isDirectory() && outEntries.length === 0;
  };
  /** What is in the dir now, and in its `out/` (["?"] when that is not a lone folder). */
  const listed = (): boolean => {
    const entries = readdirSync(dir, { withFileTypes: true });
    const out = entries.find((e) => e.name === "out");
    return isEmpty(entries, out?.isDirectory() === true ? readdirSync(outputDir) : ["?"]);
  };
  return {
    path: dir,
    outputDir,
    writeFile: async (name, bytes) => kept.write(name, bytes),
    removeStale: () => kept.removeStale(),
    empty: inMemory
      ? async (known = []) => {
          dropAnswered(dir);
          try {
            for (const file of known) {
              const problem = inParentDir(file, dir, (parent, name) => unlinkSync(at(parent, name)));
              if (problem !== undefined) return false;
            }
            kept.endRun();
            return listed();
          } catch {
            return false;
          }
        }
      : async (known = []) => {
          dropAnswered(dir);
          try {
            const problems = await Promise.all(
              known.map((file) => inParentDirAsync(file, dir, (parent, name) => fs.unlink(at(parent, name)))),
            );
            if (problems.some((p) => p !== undefined)) return false;
            kept.endRun();
            // Reading a small folder waits for no journal commit (unlike making or removing one):
            // synchronous, it costs microseconds where an async call is a thread-pool round trip.
            return listed();
          } catch {
            return false;
          }
        },
    remove: inMemory
      ? async (known = []) => {
          dropAnswered(dir);
          try {
            for (const file of [...known, ...kept.paths()]) inParentDir(file, dir, (parent, name) => unlinkSync(at(parent, name)));
            const problem = inParentDir(outputDir, dir, (parent, name) => rmdirSync(at(parent, name)));
            if (problem !== undefined) throw new Error(problem);
            letGo();
            rmdirSync(dir);
          } catch {
            letGo();
            await removeTree(dir);
          }
        }
      : async (known = []) => {
          dropAnswered(dir);
          try {
            await Promise.all(
              [...known, ...kept.paths()].map((file) => inParentDirAsync(file, dir, (parent, name) => fs.unlink(at(parent, name)))),
            );
            const problem = await inParentDirAsync(outputDir, dir, (parent, name) => fs.rmdir(at(parent, name)));
            if (problem !== undefined) throw new Error(problem);
            letGo();
            await fs.rmdir(dir);
          } catch {
            letGo();
            await removeTree(dir);
          }
        },
  };
}

/**
 * The files docq writes at the top of a work dir for its script, rewritten in place run after run.
 * Each is reached through the opened dir and written only when it is a regular file with one link:
 * whatever a script left under that name instead (a link, a hard link to a file elsewhere, a
 * folder) is unlinked and a new file made, so docq never writes through to another file.
 *
 * A file keeps its document between runs: the next run mostly writes the same name (in place,
 * cut to the new length), and emptying every file after each run cost a task an open, a truncate
 * and a close on the event loop (on ext4, 100-200 µs of a warm task's 1 ms). removeStale() removes
 * only those the next run did not write, before its script starts.
 */
class KeptFiles {
  private readonly names = new Set<string>();
  /** Written for the run under way (since the last endRun). */
  private readonly written = new Set<string>();
  constructor(private readonly dir: string) {}

  has(name: string): boolean {
    return this.names.has(name);
  }

  paths(): string[] {
    return [...this.names].map((name) => path.join(this.dir, name));
  }

  /** Writes `bytes` as `name` (one path segment); answers its path. */
  write(name: string, bytes: Uint8Array): string {
    if (name === "" || name.includes(path.sep) || name === "." || name === ".." || name === "out") {
      throw new Error(`work dir file name ${JSON.stringify(name)} is not a plain name`);
    }
    this.inDir((dir) => {
      const { fd, size } = openOwnFile(dir, name);
      try {
        for (let offset = 0; offset < bytes.byteLength;) offset += writeSync(fd, bytes, offset, bytes.byteLength - offset, offset);
        if (size > bytes.byteLength) ftruncateSync(fd, bytes.byteLength);
      } finally {
        closeSync(fd);
      }
    });
    this.names.add(name);
    this.written.add(name);
    return path.join(this.dir, name);
  }

  /** The run is over: its files become the next run's to rewrite or empty. */
  endRun(): void {
    this.written.clear();
  }

  /**
   * Removes every kept file this run did not write, and forgets it. Removed rather than emptied: a
   * name a run did not write is mostly not written by the next ones either (a split's children and
   * its merge read their documents elsewhere), and an emptied file cost each of those runs an
   * open, an fstat and a close to find it still empty (50 µs of a warm child here), where a name
   * written again after a removal costs one new file. Throws when the dir is gone.
   */
  removeStale(): void {
    const stale = [...this.names].filter((name) => !this.written.has(name));
    if (stale.length === 0) return;
    this.inDir((dir) => {
      for (const name of stale) {
        this.names.delete(name);
        try {
          unlinkSync(at(dir, name));
        } catch {
          // Gone already, or a folder now: the emptiness check sees what is left.
        }
      }
    });
  }

  /** Runs `fn` on the work dir opened (never through a link), closed after. */
  private inDir(fn: (dir: OpenDir) => void): void {
    const dir = openWorkDirRoot(this.dir);
    try {
      fn(dir);
    } finally {
      closeOpenDir(dir);
    }
  }
}

/**
 * `name` in `dir`, opened for writing, with its size: a regular file with one link (no other name
 * elsewhere writes through to it), made when missing or when something else holds the name.
 */
function openOwnFile(dir: OpenDir, name: string): { fd: number; size: number } {
  const file = at(dir, name);
  try {
    const fd = openSync(file, KEPT_FILE_FLAGS | O_CREAT, 0o600);
    const stats = fstatSync(fd);
    if (stats.isFile() && stats.nlink === 1) return { fd, size: stats.size };
    closeSync(fd);
  } catch (err) {
    // A link (ELOOP), a folder (EISDIR), a FIFO with no reader (ENXIO): the name is taken over below.
    const code = errnoCode(err);
    if (code !== "ELOOP" && code !== "EISDIR" && code !== "ENXIO") throw err;
  }
  try {
    unlinkSync(file);
  } catch (err) {
    if (errnoCode(err) !== "EISDIR") throw err;
    rmdirSync(file);
  }
  return { fd: openSync(file, KEPT_FILE_FLAGS | O_CREAT | O_EXCL, 0o600), size: 0 };
}

/** Passes of removeTree over a dir that a live process keeps filling (a warm process's child). */
const REMOVE_ATTEMPTS = 10;

/**
 * Removes the dir `dir` and everything in it, each entry through the folder it was found in,
 * opened without following links (see openInWorkDir): rm -r by path (fs.rm) lists a folder by its
 * path after checking it is one, so a folder swapped for a link meanwhile has it empty the folder
 * the link leads to. A link is removed, never followed. Where /proc/self/fd is missing it is fs.rm.
 */
export async function removeTree(dir: string): Promise<void> {
  if (!FD_PATHS) {
    await fs.rm(dir, { recursive: true, force: true, maxRetries: REMOVE_ATTEMPTS });
    return;
  }
  // The temp root itself is configuration: opened as its path says.
  const rootPath = path.dirname(path.resolve(dir));
  const root: OpenDir = { fd: openSync(rootPath, O_RDONLY | O_DIRECTORY), path: rootPath };
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await removeEntry(root, path.basename(dir));
        return;
      } catch (err) {
        // ENOTEMPTY, ENOTDIR: a live process changed the tree meanwhile; the next pass sees it as it is now.
        if (attempt >= REMOVE_ATTEMPTS) throw err;
        await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
      }
    }
  } finally {
    closeSync(root.fd);
  }
}

/** Removes `name` in the opened folder `parent`: a file or a link is unlinked, a folder emptied (the same way) and removed. */
async function removeEntry(parent: OpenDir, name: string): Promise<void> {
  let fd: number;
  try {
    fd = openSync(at(parent, name), DIR_FLAGS);
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT") return;
    if (code !== "ENOTDIR" && code !== "ELOOP") throw err;
    // Not a folder (a file, a link): unlinked, never followed.
    await fs.unlink(at(parent, name)).catch((e: unknown) => (errnoCode(e) === "ENOENT" ? undefined : Promise.reject(e)));
    return;
  }
  const dir: OpenDir = { fd, path: path.join(parent.path, name) };
  try {
    for (const entry of await fs.readdir(`/proc/self/fd/${fd}`)) await removeEntry(dir, entry);
  } finally {
    closeSync(fd);
  }
  await fs.rmdir(at(parent, name)).catch((e: unknown) => (errnoCode(e) === "ENOENT" ? undefined : Promise.reject(e)));
}

/** Names of the dirs docq makes in a temp root: `docq-job-<OWNER>-...` (createWorkDir), `docq-warm-<OWNER>-<job>-...` (warm-process.ts). */
const OWNED_DIR = /^docq-(?:job|warm)-(\d+\.\d+)-/;
/** The same dirs named before their owner was part of the name. */
const UNOWNED_DIR = /^docq-(?:job|warm)-/;
/** A dir named without its owner is removed once untouched this long (its owner cannot be told). */
const UNOWNED_DIR_MAX_AGE_MS = 24 * 60 * 60 * 1000;
/** How often a worker looks for what dead docq processes left behind. */
const LEFTOVER_SWEEP_MS = 60_000;

/**
 * Removes what docq processes that are gone (a crash, a kill) left behind: the processes their runs
 * left running (killOrphans in leftovers.mjs), then their work dirs and warm process dirs in
 * `root`. A dir whose owner still runs is never touched; one named without its owner (an older
 * docq) only once untouched for UNOWNED_DIR_MAX_AGE_MS. Answers what it did.
 */
export async function sweepLeftovers(root: string = os.tmpdir(), now: number = Date.now()): Promise<{ processes: number; dirs: string[] }> {
  const processes = killOrphans();
  const names = await fs.readdir(root).catch(() => [] as string[]);
  const dirs: string[] = [];
  for (const name of names) {
    const owner = OWNED_DIR.exec(name)?.[1];
    const dir = path.join(root, name);
    if (owner !== undefined) {
      if (isOwnerAlive(owner)) continue;
    } else {
      if (!UNOWNED_DIR.test(name)) continue;
      const stats = await fs.lstat(dir).catch(() => null);
      if (stats === null || !stats.isDirectory() || now - stats.mtimeMs < UNOWNED_DIR_MAX_AGE_MS) continue;
    }
    try {
      await removeTree(dir);
      dirs.push(name);
    } catch {
      // A process of the dead owner still dying may add a file meanwhile: the next sweep takes it.
    }
  }
  return { processes, dirs };
}

/**
 * Sweeps leftovers (sweepLeftovers) now and every `intervalMs` (LEFTOVER_SWEEP_MS): after a crash
 * and restart, what the dead process left is gone once the worker has started, and what a process
 * that dies meanwhile (a spawner helper) leaves is gone within `intervalMs`. Answers a stop function.
 */
export function startLeftoverSweeper(opts: {
  root?: string;
  intervalMs?: number;
  log: { info(msg: string): void; warn(msg: string): void };
}): () => void {
  const root = opts.root ?? os.tmpdir();
  let running: Promise<void> | null = null;
  const sweep = (): void => {
    if (running !== null) return;
    running = sweepLeftovers(root)
      .then(({ processes, dirs }) => {
        if (processes > 0) opts.log.warn(`killed ${processes} process(es) left running by docq processes that are gone`);
        if (dirs.length > 0)
          opts.log.info(`removed ${dirs.length} dir(s) left in ${root} by docq processes that are gone: ${dirs.join(", ")}`);
      })
      .catch((err: unknown) =>
        opts.log.warn(`sweeping leftovers in ${root} failed, will retry: ${err instanceof Error ? err.message : String(err)}`),
      )
      .finally(() => (running = null));
  };
  sweep();
  const timer = setInterval(sweep, opts.intervalMs ?? LEFTOVER_SWEEP_MS);
  timer.unref();
  return () => clearInterval(timer);
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
const inMemoryRoots = new Map<string, boolean>();

/** True when `dir` is on tmpfs or ramfs (asked once per dir). */
function isInMemoryFs(dir: string): boolean {
  let known = inMemoryRoots.get(dir);
  if (known === undefined) {
    try {
      const { type } = statfsSync(dir);
      known = type === TMPFS_MAGIC || type === RAMFS_MAGIC;
    } catch {
      known = false;
    }
    inMemoryRoots.set(dir, known);
  }
  return known;
}

export const STDERR_TAIL_CHARS = 4096;
/** An answer is one line; a few MB leaves room for chatter and a large children list. */
export const STDOUT_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Runs one job script for one task and returns what it answered. The script gets its own process
 * group, so a timeout or a cancel kills everything it started, and so does its own exit: a job is
 * over when its script exits.
 */
export async function runJob(
  job: JobDefinition,
  request: JobRequest,
  opts: {
    workDir: string;
    signal?: StopSignal;
    onSpawn?: (pid: number) => void;
    launcher?: ScriptLauncher;
    /** Called with each progress line the script prints while it runs. */
    onProgress?: (report: ProgressReport) => void;
    /** This run's time limit in place of the job's (a workflow step's `timeoutMs`). */
    timeoutMs?: number;
  },
): Promise<JobAnswer> {
  const { signal } = opts;
  const timeoutMs = opts.timeoutMs ?? job.timeoutMs;
  if (signal?.aborted) throw stoppedBeforeStart(job, "cancel");

  const run = (opts.launcher ?? inProcessLauncher).launch(
    {
      command: job.command,
      args: job.args,
      cwd: opts.workDir,
      input: requestLine(request),
      // Only what a job may see: no secret of the server's (job-env.ts).
      env: jobEnvironmentOf(job, opts.workDir),
      maxStdoutBytes: STDOUT_MAX_BYTES,
      stderrTailChars: STDERR_TAIL_CHARS,
    },
    onProgressLine(opts.onProgress),
  );
  let exited = false;
  let timedOut = false;
  let canceled = false;
  const timer = setTimeout(() => {
    if (exited) return;
    timedOut = true;
    run.kill();
  }, timeoutMs);
  const onAbort = (): void => {
    if (exited) return;
    canceled = true;
    run.kill();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.onSpawn !== undefined) {
    const onSpawn = opts.onSpawn;
    void run.pid.then((pid) => {
      if (pid !== undefined) onSpawn(pid);
    });
  }

  let result;
  try {
    result = await run.result;
  } finally {
    exited = true;
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
  const { stderrTail } = result;

  const fail = (message: string): JobFailedError =>
    new JobFailedError(`job "${job.name}" ${message}`, {
      exitCode: result.exitCode ?? null,
      timedOut,
      canceled,
      stderrTail,
    });
  // A cancel after a timeout says canceled: the task was canceled, whatever the script did.
  const stoppedFor = canceled ? "cancel" : timedOut ? "timeout" : undefined;
  const end: RunEnd = {
    ...(stoppedFor === undefined ? {} : { stoppedFor, timeoutMs }),
    ...(result.isMaxBuffer ? { stdoutOverflowBytes: STDOUT_MAX_BYTES } : {}),
    ...(result.startError === undefined ? {} : { startError: result.startError }),
    signal: result.signal ?? null,
    exitCode: result.exitCode ?? null,
    stderrTail,
  };
  // A run docq stopped, or whose stdout overflowed or never started, has no answer to believe.
  const answered = end.stoppedFor === undefined && end.stdoutOverflowBytes === undefined && end.startError === undefined;
  const answer = answered ? parseAnswerLine(lastLine(result.stdout)) : null;
  // The script's own failure counts whatever its exit code: it said why, and whether to retry.
  if (answer !== null && typeof answer !== "string" && isErrorAnswer(answer))
    throw answerFailure(job, answer, stderrTail, result.exitCode ?? null);
  if (!endedCleanly(end)) throw fail(endOfRun(end));
  if (answer === null || typeof answer === "string") throw fail(`printed no valid answer on stdout: ${answer ?? "stdout is empty"}`);
  return placeAnswer(answer, request, { workDir: opts.workDir, stderrTail, fail });
}

/** The error of a run whose script answered `{"error": ..., "retry"?: ...}`, one-shot or warm. */
export function answerFailure(job: { name: string }, answer: ErrorAnswer, stderrTail: string, exitCode: number | null): JobFailedError {
  const why = answer.error.trim() === "" ? "(no reason given)" : answer.error;
  return new JobFailedError(`job "${job.name}" failed: ${why}${answer.retry ? "" : " (the script asked for no retry)"}`, {
    exitCode,
    stderrTail,
    retryable: answer.retry,
  });
}

/** The launcher's line callback for `onProgress`: only progress lines reach it (checked here). */
function onProgressLine(onProgress: ((report: ProgressReport) => void) | undefined): ((line: string) => void) | undefined {
  if (onProgress === undefined) return undefined;
  return (line) => {
    const report = parseProgressLine(line);
    if (report !== null) onProgress(report);
  };
}

/**
 * Turns a valid answer into a JobAnswer: paths resolved against the request's outputDir, each one
 * a regular file with one link inside `workDir`, reached without following any link (see
 * openInWorkDir; an output is kept open for the worker to store: takeAnswered, a child input is
 * opened again the same way), children only in split and child mode. `fail` makes the error thrown for a bad answer. Shared by one-shot and warm runs.
 */
export async function placeAnswer(
  answer: Answer,
  request: JobRequest,
  opts: { workDir: string; stderrTail: string; fail: (message: string) => Error },
): Promise<JobAnswer> {
  const { stderrTail, fail } = opts;
  const outputDir = path.resolve(opts.workDir, request.outputDir);
  /** The answered file checked; an output stays open for the worker to store (keepAnswered). */
  const place = (p: string, what: string, keep: boolean): string => {
    const abs = path.resolve(outputDir, p);
    const opened = openMovableInWorkDir(abs, opts.workDir);
    if (typeof opened === "string") throw fail(`answered ${what} ${JSON.stringify(p)}: ${opened}`);
    if (keep) keepAnswered(opts.workDir, abs, opened);
    else closeMovable(opened);
    return abs;
  };

  if (answer.outputBase64 !== undefined)
    throw fail("answered outputBase64, which only an inline request takes (job.yaml inline: true): answer the output file's name");
  if (answer.output !== undefined) return { kind: "output", output: place(answer.output, "output", true), stderrTail };
  const children = answer.children ?? [];
  checkChildrenMode(request.mode, fail);
  const placed = children.map((c) => ({
    input: place(childFile(c, fail), "child input", false),
    ...(c.params === undefined ? {} : { params: c.params }),
  }));
  return { kind: "children", children: placed, stderrTail };
}

/**
 * Answered outputs as placeAnswer opened them, by work dir and path, until the worker takes one to
 * store it (takeAnswered): the file checked is the file stored, opened once. What is not taken is
 * closed when its work dir is emptied or removed (dropAnswered).
 */
const answeredFiles = new Map<string, Map<string, MovableFile>>();

function keepAnswered(workDir: string, file: string, opened: MovableFile): void {
  const dir = path.resolve(workDir);
  let files = answeredFiles.get(dir);
  if (files === undefined) answeredFiles.set(dir, (files = new Map()));
  const earlier = files.get(file);
  if (earlier !== undefined) closeMovable(earlier);
  files.set(file, opened);
}

/** The output placeAnswer opened at `file` in `workDir`, now the caller's to close; undefined when there is none. */
export function takeAnswered(file: string, workDir: string): MovableFile | undefined {
  const dir = path.resolve(workDir);
  const files = answeredFiles.get(dir);
  const opened = files?.get(file);
  if (files === undefined || opened === undefined) return undefined;
  files.delete(file);
  if (files.size === 0) answeredFiles.delete(dir);
  return opened;
}

/** Closes what placeAnswer opened in `workDir` and nobody took. */
function dropAnswered(workDir: string): void {
  const dir = path.resolve(workDir);
  const files = answeredFiles.get(dir);
  if (files === undefined) return;
  answeredFiles.delete(dir);
  for (const opened of files.values()) closeMovable(opened);
}

function closeMovable(opened: MovableFile): void {
  opened.closeDir();
  closeSync(opened.fd);
}

/** A file of a work dir, open for reading: read it through `fd` (never again by its path), then closeSync(fd). */
export interface OpenedFile {
  fd: number;
  size: number;
}

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = fsConstants;
/** A folder, and never a link to one. */
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
/** Never through a link; never waiting (a FIFO), never taking a terminal. */
const FILE_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
/** A kept file (WorkDir.writeFile) opened for writing, with the same care. */
const KEPT_FILE_FLAGS = O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
/**
 * With /proc/self/fd, `/proc/self/fd/<fd of a folder>/<name>` makes the kernel look `name` up in
 * the folder that fd holds, whatever its path leads to now: a walk down from the work dir one
 * opened folder at a time cannot be led elsewhere by a folder swapped for a link meanwhile.
 * Without it (not Linux) each step opens a path again: no link is followed at the moment of each
 * open, but a swap between two opens is not seen.
 */
const FD_PATHS = existsSync("/proc/self/fd");

/** An opened folder of a work dir: `fd`, and `path` for messages (and to open by where /proc/self/fd is missing). */
interface OpenDir {
  fd: number;
  path: string;
  /** The work dir's own folder, held open while the dir lives (heldWorkDirs): closeOpenDir leaves it open. */
  held?: true;
}

/**
 * The folders of the live work dirs, opened once when made and closed when removed (by their
 * resolved path): a warm task's input write and output check each opened and closed the work dir
 * again, 4 of a task's two dozen file calls, 15-25 µs each on this project's VM. The fd holds the
 * folder docq made, whatever its path leads to later.
 */
const heldWorkDirs = new Map<string, OpenDir>();

/** The work dir's folder: the held one, else opened now (never through a link); closeOpenDir after. */
function openWorkDirRoot(workDir: string): OpenDir {
  const resolved = path.resolve(workDir);
  return heldWorkDirs.get(resolved) ?? { fd: openSync(workDir, DIR_FLAGS), path: resolved };
}

/** Closes `dir` unless it is a held work dir. */
function closeOpenDir(dir: OpenDir): void {
  if (dir.held !== true) closeSync(dir.fd);
}

/** A path to `name` inside `dir` that goes through the opened folder, not through its path. */
function at(dir: OpenDir, name: string): string {
  return FD_PATHS ? `/proc/self/fd/${dir.fd}/${name}` : path.join(dir.path, name);
}

/** `file` relative to `workDir` (as given, or its real path: a script may answer `$PWD/...`), or null when it is not inside. */
function insideWorkDir(file: string, workDir: string): string | null {
  const abs = path.resolve(file);
  const given = path.resolve(workDir);
  const relative = (base: string): string | null => {
    const rel = path.relative(base, abs);
    return rel === "" || rel === ".." || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel) ? null : rel;
  };
  const rel = relative(given);
  if (rel !== null) return rel;
  let real: string;
  try {
    // The work dir's own name is docq's: only its parent's path is resolved.
    real = path.join(realpathSync.native(path.dirname(given)), path.basename(given));
  } catch {
    return null;
  }
  return real === given ? null : relative(real);
}

function errnoCode(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? String(err);
}

/**
 * Opens the folder holding `file` (inside `workDir`) one folder at a time from `workDir`, never
 * following a link; answers it (the caller closes its fd) with the file's name, or why the folder
 * could not be reached.
 */
function openParentDir(file: string, workDir: string): { dir: OpenDir; name: string } | string {
  const rel = insideWorkDir(file, workDir);
  if (rel === null) return "path escapes the work dir";
  const parts = rel.split(path.sep);
  const name = parts.pop() ?? "";
  let dir: OpenDir;
  try {
    dir = openWorkDirRoot(workDir);
  } catch (err) {
    return `the work dir ${workDir} cannot be opened (${errnoCode(err)}): it is gone or was replaced by a link`;
  }
  let walked = "";
  for (const part of parts) {
    walked = walked === "" ? part : path.join(walked, part);
    let fd: number;
    try {
      fd = openSync(at(dir, part), DIR_FLAGS);
    } catch (err) {
      const code = errnoCode(err);
      let problem = code === "ENOENT" ? "no such file" : `folder ${JSON.stringify(walked)} cannot be opened (${code})`;
      // ENOTDIR for a link as for a file (O_DIRECTORY|O_NOFOLLOW): look, for the message only.
      if (code === "ENOTDIR")
        problem = isLink(at(dir, part))
          ? `${JSON.stringify(walked)} is a symbolic link: docq follows no link in an answered path`
          : `${JSON.stringify(walked)} is not a folder`;
      closeOpenDir(dir);
      return problem;
    }
    closeOpenDir(dir);
    dir = { fd, path: path.join(dir.path, part) };
  }
  return { dir, name };
}

function isLink(file: string): boolean {
  try {
    return lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Runs `fn` on the opened folder of `file` (see openParentDir); answers why not when it could not be reached. */
function inParentDir(file: string, workDir: string, fn: (dir: OpenDir, name: string) => void): string | undefined {
  const parent = openParentDir(file, workDir);
  if (typeof parent === "string") return parent;
  try {
    fn(parent.dir, parent.name);
  } finally {
    closeOpenDir(parent.dir);
  }
  return undefined;
}

async function inParentDirAsync(
  file: string,
  workDir: string,
  fn: (dir: OpenDir, name: string) => Promise<void>,
): Promise<string | undefined> {
  const parent = openParentDir(file, workDir);
  if (typeof parent === "string") return parent;
  try {
    await fn(parent.dir, parent.name);
  } finally {
    closeOpenDir(parent.dir);
  }
  return undefined;
}

/**
 * Opens `file`, a path a script answered, for storing: only a regular file with one link, inside
 * `workDir`, reached from `workDir` one opened folder at a time without following any link (so a
 * process that swaps a folder for a link to elsewhere, before or while docq looks, gets its answer
 * refused, never an outside file stored). One link only: a hard link in the work dir to a file
 * elsewhere is that file. Answers the opened file, or why not (for a message).
 *
 * Synchronous, as createWorkDir on tmpfs: a few opens and an fstat, microseconds each.
 */
export function openInWorkDir(file: string, workDir: string): OpenedFile | string {
  const movable = openMovableInWorkDir(file, workDir);
  if (typeof movable === "string") return movable;
  movable.closeDir();
  return { fd: movable.fd, size: movable.size };
}

/** An answered file opened as openInWorkDir opens it, its folder kept open so the file can be moved out through it. */
export interface MovableFile extends OpenedFile {
  /**
   * The file's name through its opened folder (`/proc/self/fd/<n>/<name>`), a rename source that a
   * folder swapped for a link cannot redirect; null where /proc/self/fd is missing (then copy it).
   */
  path: string | null;
  /** Closes the folder (the file's fd is the caller's to close, or a stream's). */
  closeDir(): void;
}

/** openInWorkDir, keeping the file's folder open: for a move into the blob store (BlobStore.adopt) rather than a copy. */
export function openMovableInWorkDir(file: string, workDir: string): MovableFile | string {
  const parent = openParentDir(file, workDir);
  if (typeof parent === "string") return parent;
  const { dir, name } = parent;
  let opened: OpenedFile | string;
  try {
    opened = openFileIn(dir, name);
  } catch (err) {
    closeOpenDir(dir);
    throw err;
  }
  if (typeof opened === "string") {
    closeOpenDir(dir);
    return opened;
  }
  return { ...opened, path: FD_PATHS ? at(dir, name) : null, closeDir: () => closeOpenDir(dir) };
}

/** Opens `name` in the opened folder `dir`: a regular file with one link, never through a link; or why not. */
function openFileIn(dir: OpenDir, name: string): OpenedFile | string {
  let fd: number;
  try {
    fd = openSync(at(dir, name), FILE_FLAGS);
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT") return "no such file";
    if (code === "ELOOP") return "is a symbolic link: docq stores only a regular file, opened without following links";
    return `cannot be opened (${code})`;
  }
  let problem: string | null = null;
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) problem = "not a file";
    else if (stats.nlink !== 1)
      problem = `has ${stats.nlink} hard links: docq stores only a file with one link (another link may be a file outside the work dir)`;
    else return { fd, size: stats.size };
  } catch (err) {
    problem = `cannot be read (${errnoCode(err)})`;
  }
  closeSync(fd);
  return problem;
}

/** Children are answered in split and child mode only. */
export function checkChildrenMode(mode: JobMode, fail: (message: string) => Error): void {
  if (mode === "simple") throw fail("answered children in simple mode: declare split: true in job.yaml");
  if (mode === "merge") throw fail("answered children in merge mode: a merge answers an output");
}

/** A child's file, answering a request with files (inputBase64 answers an inline request only). */
function childFile(child: { input?: string | undefined; inputBase64?: string | undefined }, fail: (message: string) => Error): string {
  if (child.input === undefined) {
    throw fail(
      "answered a child's inputBase64, which only an inline request takes (job.yaml inline: true): answer the part's file name as input",
    );
  }
  return child.input;
}

/**
 * One line of JSON, keys in a fixed order (mode, input|inputs, outputDir, params, task): sh scripts
 * rely on it to pick the first fields out with parameter expansion instead of a JSON parser.
 */
export function requestLine(request: JobRequest): string {
  return JSON.stringify(orderedRequest(request)) + "\n";
}

/**
 * A warm job's request line: `requestId` first (a sh loop takes it with one prefix strip), then
 * the one-shot request's keys in their fixed order. The answer line carries the same requestId.
 */
export function warmRequestLine(requestId: string, request: JobRequest | InlineJobRequest): string {
  if (isInlineRequest(request)) {
    const { mode, inline, params, task } = request;
    const documents =
      request.mode === "merge"
        ? { inputsBase64: request.inputsBase64 }
        : request.inputBase64 === undefined
          ? {}
          : { inputBase64: request.inputBase64 };
    return JSON.stringify({ requestId, mode, inline, ...documents, params, task }) + "\n";
  }
  return JSON.stringify({ requestId, ...orderedRequest(request) }) + "\n";
}

export function isInlineRequest(request: JobRequest | InlineJobRequest): request is InlineJobRequest {
  return "inline" in request;
}

function orderedRequest(request: JobRequest): Record<string, unknown> {
  return {
    mode: request.mode,
    ...(request.input === undefined ? {} : { input: request.input }),
    ...(request.inputs === undefined ? {} : { inputs: request.inputs }),
    outputDir: request.outputDir,
    params: request.params,
    task: request.task,
  };
}
