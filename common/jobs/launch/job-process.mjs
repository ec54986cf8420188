// What every job process has in common, one-shot or warm: its environment carries its run's mark,
// it is killed as a whole process group, the tail of its stderr is kept for the error, and the way
// it ended is told in one sentence. Plain JavaScript, so the spawner process (spawner-child.mjs,
// through launch-script.mjs) uses it without a TypeScript loader; warm-process.ts uses it too, so
// both kinds of run end and fail alike. Types: job-process.d.mts.
import { killRun, RUN_ID_VAR } from "./leftovers.mjs";

/** The environment of a run's first process: the job's own (job-env.ts) plus the run's mark (leftovers.mjs). */
export function markedEnv(env, runId) {
  return { ...env, [RUN_ID_VAR]: runId };
}

/** Kills a script's whole process group; a group already gone is not an error. */
export function killGroup(pid) {
  // Never 0 or below: kill(-0) would signal this process's own group.
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: the group is already gone.
  }
}

/**
 * Kills the process group led by `pid` and every process carrying the run's mark that left it
 * (setsid); answers how many marked processes were killed. Nothing when the run never started.
 */
export function killRunNow(pid, runId, scope) {
  if (pid === undefined) return 0;
  killGroup(pid);
  return killRun(runId, scope);
}

/** The last `chars` characters of a stream of text (stderr), kept without copying at every chunk. */
export class StderrTail {
  #chars;
  #text = "";

  constructor(chars) {
    this.#chars = chars;
  }

  add(chunk) {
    this.#text += chunk;
    // Cut only once it is twice the tail: one slice per `chars` of output, not one per chunk.
    if (this.#text.length > 2 * this.#chars) this.#text = this.#text.slice(-this.#chars);
  }

  /** Forgets what came before (a warm process starting its next request). */
  clear() {
    this.#text = "";
  }

  get text() {
    return this.#text.slice(-this.#chars);
  }
}

/** The last non-empty line of `text`, trimmed ("" when there is none). */
export function lastLine(text) {
  const lines = text.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = (lines[i] ?? "").trim();
    if (line !== "") return line;
  }
  return "";
}

/** Whether a stdout line may be a progress line (starts with `{` and mentions "progress"): a cheap test before any parse. */
export function mayBeProgressLine(line) {
  const trimmed = line.trimStart();
  return trimmed.startsWith("{") && trimmed.includes('"progress"');
}

/**
 * Splits a stream of text (a script's stdout) into lines as it comes, calling `onLine` with each
 * complete one. A line longer than `maxChars` is dropped (its rest too, up to the next newline):
 * a progress line is short, and holding a huge one would cost memory for nothing.
 */
export class LineSplitter {
  #onLine;
  #maxChars;
  #partial = "";
  #skipping = false;

  constructor(onLine, maxChars) {
    this.#onLine = onLine;
    this.#maxChars = maxChars;
  }

  add(chunk) {
    let rest = chunk;
    let newline = rest.indexOf("\n");
    while (newline !== -1) {
      const line = this.#partial + rest.slice(0, newline);
      this.#partial = "";
      if (!this.#skipping && line.length <= this.#maxChars) this.#onLine(line);
      this.#skipping = false;
      rest = rest.slice(newline + 1);
      newline = rest.indexOf("\n");
    }
    if (this.#skipping) return;
    this.#partial += rest;
    if (this.#partial.length > this.#maxChars) {
      this.#partial = "";
      this.#skipping = true;
    }
  }
}

/**
 * How a run ended, as the end of one sentence whose subject is the job: `was canceled`,
 * `timed out after 500 ms`, `exited with code 1: <last stderr line>`... The first that applies of:
 * docq stopped it (cancel, timeout, shutdown), it printed too much, it could not start, a signal,
 * its exit code.
 */
export function endOfRun(end) {
  switch (end.stoppedFor) {
    case "cancel":
      return "was canceled";
    case "timeout":
      return `timed out after ${end.timeoutMs} ms`;
    case "stop":
      return "was stopped: the worker is shutting down";
    default:
      break;
  }
  if (end.stdoutOverflowBytes !== undefined) return `printed more than ${end.stdoutOverflowBytes} bytes on stdout`;
  if (end.startError !== undefined) return `could not start: ${end.startError}`;
  const lastErr = lastLine(end.stderrTail ?? "");
  const withStderr = lastErr === "" ? "" : `: ${lastErr}`;
  if (end.signal !== undefined && end.signal !== null) return `was killed by ${end.signal}${withStderr}`;
  return `exited with code ${end.exitCode ?? "?"}${end.beforeAnswering === true ? " before answering" : ""}${withStderr}`;
}

/** True when the run ended by itself with code 0: its answer decides how it went. */
export function endedCleanly(end) {
  return (
    end.stoppedFor === undefined &&
    end.stdoutOverflowBytes === undefined &&
    end.startError === undefined &&
    (end.signal === undefined || end.signal === null) &&
    end.exitCode === 0
  );
}
