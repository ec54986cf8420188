import { promises as fs, mkdirSync, mkdtempSync, realpathSync, rmdirSync, rmSync, statfsSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { inProcessLauncher, type ScriptLauncher } from "./script-launcher.js";
import { z } from "zod";
import { formatZodIssues, type JobDefinition } from "./job-registry.js";

export type JobMode = "simple" | "split" | "child" | "merge";

export interface JobRequest {
  mode: JobMode;
  input?: string;
  inputs?: string[];
  outputDir: string;
  params: Record<string, unknown>;
  task: { id: string; name: string; user: string; priority: number; parentId: string | null; depth: number };
}

export type JobAnswer =
  | { kind: "output"; output: string; stderrTail: string }
  | { kind: "children"; children: { input: string; params?: Record<string, unknown> }[]; stderrTail: string };

export class JobFailedError extends Error {
  readonly exitCode: number | null;
  readonly timedOut: boolean;
  readonly canceled: boolean;
  readonly stderrTail: string;
  constructor(message: string, fields: { exitCode: number | null; timedOut?: boolean; canceled?: boolean; stderrTail: string }) {
    super(message);
    this.name = "JobFailedError";
    this.exitCode = fields.exitCode;
    this.timedOut = fields.timedOut ?? false;
    this.canceled = fields.canceled ?? false;
    this.stderrTail = fields.stderrTail;
  }
}

export interface WorkDir {
  path: string;
  outputDir: string;
  /** Removes the dir; `known` files in it (outputs already stored) are unlinked first, which usually leaves two empty folders. */
  remove(known?: readonly string[]): Promise<void>;
}

/**
 * A fresh temp dir with an `out/` folder, for one run. On tmpfs it is made and removed with
 * synchronous calls: they take microseconds there, where each async call costs a thread-pool
 * round trip (several times more; with a warm job these calls were a third of a task's time).
 * On a disk (ext4) a folder change can wait for a journal commit that another task's fsync
 * started, so there the calls stay asynchronous and never stall the event loop.
 */
export async function createWorkDir(root?: string): Promise<WorkDir> {
  const base = root ?? os.tmpdir();
  const inMemory = isInMemoryFs(base);
  const dir = inMemory ? mkdtempSync(path.join(base, "docq-job-")) : await fs.mkdtemp(path.join(base, "docq-job-"));
  const outputDir = path.join(dir, "out");
  if (inMemory) mkdirSync(outputDir);
  else await fs.mkdir(outputDir);
  return {
    path: dir,
    outputDir,
    remove: inMemory
      ? async (known = []) => {
          try {
            for (const file of known) rmSync(file, { force: true });
            rmdirSync(outputDir);
            rmdirSync(dir);
          } catch {
            rmSync(dir, { recursive: true, force: true });
          }
        }
      : async (known = []) => {
          try {
            await Promise.all(known.map((file) => fs.rm(file, { force: true })));
            await fs.rmdir(outputDir);
            await fs.rmdir(dir);
          } catch {
            await fs.rm(dir, { recursive: true, force: true });
          }
        },
  };
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

/** process.env plus the job's own variables, per job definition (the registry reuses definitions). */
const fullEnvs = new WeakMap<JobDefinition, Record<string, string | undefined>>();

function fullEnv(job: JobDefinition): Record<string, string | undefined> {
  let env = fullEnvs.get(job);
  if (env === undefined) {
    env = { ...process.env, ...job.env };
    fullEnvs.set(job, env);
  }
  return env;
}

export const STDERR_TAIL_CHARS = 4096;
/** An answer is one line; a few MB leaves room for chatter and a large children list. */
export const STDOUT_MAX_BYTES = 4 * 1024 * 1024;

/** The answer line of a job, one-shot or warm (a warm answer also carries its `requestId`, checked apart). */
export const AnswerSchema = z
  .object({
    output: z.string().min(1).optional(),
    children: z
      .array(z.object({ input: z.string().min(1), params: z.record(z.string(), z.unknown()).optional() }))
      .min(1, "is empty: a job that does not split answers an output")
      .optional(),
  })
  .refine((a) => (a.output === undefined) !== (a.children === undefined), "the answer needs exactly one of output or children");

/**
 * Runs one job script for one task and returns what it answered. The script gets its own process
 * group, so a timeout or a cancel kills everything it started, and so does its own exit: a job is
 * over when its script exits.
 */
export async function runJob(
  job: JobDefinition,
  request: JobRequest,
  opts: { workDir: string; signal?: AbortSignal; onSpawn?: (pid: number) => void; launcher?: ScriptLauncher },
): Promise<JobAnswer> {
  const { signal } = opts;
  if (signal?.aborted) throw new JobFailedError(`job "${job.name}" was canceled`, { exitCode: null, canceled: true, stderrTail: "" });

  const run = (opts.launcher ?? inProcessLauncher).launch({
    command: job.command,
    args: job.args,
    cwd: opts.workDir,
    input: requestLine(request),
    // The environment is merged once per job definition, not copied from process.env on every run.
    env: fullEnv(job),
    maxStdoutBytes: STDOUT_MAX_BYTES,
    stderrTailChars: STDERR_TAIL_CHARS,
  });
  let exited = false;
  let timedOut = false;
  let canceled = false;
  const timer = setTimeout(() => {
    if (exited) return;
    timedOut = true;
    run.kill();
  }, job.timeoutMs);
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
    new JobFailedError(`job "${job.name}" ${message}`, { exitCode: result.exitCode ?? null, timedOut, canceled, stderrTail });
  const lastErr = lastLine(stderrTail);
  const withStderr = lastErr === "" ? "" : `: ${lastErr}`;

  if (canceled) throw fail("was canceled");
  if (timedOut) throw fail(`timed out after ${job.timeoutMs} ms`);
  if (result.isMaxBuffer) throw fail(`printed more than ${STDOUT_MAX_BYTES} bytes on stdout`);
  if (result.startError !== undefined) throw fail(`could not start: ${result.startError}`);
  if (result.signal !== undefined) throw fail(`was killed by ${result.signal}${withStderr}`);
  if (result.exitCode !== 0) throw fail(`exited with code ${result.exitCode}${withStderr}`);

  const answer = parseAnswer(lastLine(result.stdout));
  if (typeof answer === "string") throw fail(`printed no valid answer on stdout: ${answer}`);
  return placeAnswer(answer, request, { workDir: opts.workDir, stderrTail, fail });
}

/**
 * Turns a valid answer into a JobAnswer: paths resolved against the request's outputDir, each one
 * an existing file inside `workDir` (symlinks followed), children only in split and child mode.
 * `fail` makes the error thrown for a bad answer. Shared by one-shot and warm runs.
 */
export async function placeAnswer(
  answer: Answer,
  request: JobRequest,
  opts: { workDir: string; stderrTail: string; fail: (message: string) => Error },
): Promise<JobAnswer> {
  const { stderrTail, fail } = opts;
  const workDir = realpathSync.native(opts.workDir);
  const outputDir = path.resolve(opts.workDir, request.outputDir);
  const place = async (p: string, what: string): Promise<string> => {
    const abs = path.resolve(outputDir, p);
    const problem = checkInside(abs, workDir);
    if (problem !== null) throw fail(`answered ${what} ${JSON.stringify(p)}: ${problem}`);
    return abs;
  };

  if (answer.output !== undefined) return { kind: "output", output: await place(answer.output, "output"), stderrTail };
  const children = answer.children ?? [];
  if (request.mode === "simple") throw fail("answered children in simple mode: declare split: true in job.yaml");
  if (request.mode === "merge") throw fail("answered children in merge mode: a merge answers an output");
  const placed = await Promise.all(
    children.map(async (c) => ({ input: await place(c.input, "child input"), ...(c.params === undefined ? {} : { params: c.params }) })),
  );
  return { kind: "children", children: placed, stderrTail };
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
export function warmRequestLine(requestId: string, request: JobRequest): string {
  return JSON.stringify({ requestId, ...orderedRequest(request) }) + "\n";
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

export type Answer = z.infer<typeof AnswerSchema>;

/** The answer, or why there is none. */
function parseAnswer(line: string): Answer | string {
  if (line === "") return "stdout is empty";
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return `last line is not JSON: ${line.slice(0, 200)}`;
  }
  return checkAnswer(json);
}

/** `json` as a valid answer, or what is wrong with it. */
export function checkAnswer(json: unknown): Answer | string {
  const result = AnswerSchema.safeParse(json);
  return result.success ? result.data : formatZodIssues(result.error.issues);
}

/** Null when `abs` is an existing file inside `workDir` (after following symlinks), else the problem. Synchronous: see createWorkDir. */
function checkInside(abs: string, workDir: string): string | null {
  let real: string;
  try {
    real = realpathSync.native(abs);
  } catch {
    return "no such file";
  }
  if (!real.startsWith(workDir + path.sep)) return "path escapes the work dir";
  if (!statSync(real).isFile()) return "not a file";
  return null;
}

/** The last non-empty line of `text`, trimmed ("" when there is none). */
export function lastLine(text: string): string {
  const lines = text.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = (lines[i] ?? "").trim();
    if (line !== "") return line;
  }
  return "";
}
