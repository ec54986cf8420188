// Starts one job script with execa: its own process group (detached), the request on stdin,
// stdout buffered up to a limit, a tail of stderr kept. Plain JavaScript, so the spawner process
// (spawner-child.mjs) can use it without a TypeScript loader; the worker uses it too
// (script-launcher.ts), so both start scripts exactly alike. Types: launch-script.d.mts.
import { execa } from "execa";
import { StringDecoder } from "node:string_decoder";
import { killRunNow, LineSplitter, markedEnv, mayBeProgressLine, StderrTail } from "./job-process.mjs";
import { endRun, newRunId } from "./leftovers.mjs";

/** A progress line is short; a longer line is not looked at while the script runs (the answer is read at its end). */
const PROGRESS_LINE_MAX_CHARS = 4096;

/**
 * Starts the script. Every process of the run carries a mark in its environment (leftovers.mjs):
 * when the script exits, is killed or times out, its group is killed and so is every marked
 * process that left the group (setsid); the result comes once none is left.
 */
export function launchScript(spec, onLine) {
  const runId = newRunId();
  const startedAt = Date.now();
  const subprocess = execa(spec.command, spec.args, {
    cwd: spec.cwd,
    input: spec.input,
    env: markedEnv(spec.env, runId),
    extendEnv: false,
    detached: true,
    reject: false,
    stripFinalNewline: false,
    buffer: { stdout: true, stderr: false },
    maxBuffer: { stdout: spec.maxStdoutBytes },
  });
  const stderrTail = new StderrTail(spec.stderrTailChars);
  subprocess.stderr.setEncoding("utf8");
  subprocess.stderr.on("data", (chunk) => stderrTail.add(chunk));
  if (onLine !== undefined) {
    // Read as it comes, beside execa's own buffer (the answer, read at the end): the lines that may
    // be progress lines go to `onLine` while the script runs.
    const decoder = new StringDecoder("utf8");
    const lines = new LineSplitter((line) => {
      if (mayBeProgressLine(line)) onLine(line);
    }, PROGRESS_LINE_MAX_CHARS);
    subprocess.stdout.on("data", (chunk) => lines.add(typeof chunk === "string" ? chunk : decoder.write(chunk)));
  }
  const { pid } = subprocess;
  const scope = pid === undefined ? undefined : { firstPid: pid, startedAt };
  const killAll = () => killRunNow(pid, runId, scope);
  // Leftovers of a finished script would hold stdout open (delaying the result) and outlive the work dir.
  subprocess.once("exit", killAll);
  const result = subprocess.then(async (r) => {
    // Once more, until a pass finds none: a process may have forked while the pass at exit ran.
    if (pid !== undefined) await endRun(runId, scope);
    const out = { stdout: typeof r.stdout === "string" ? r.stdout : "", stderrTail: stderrTail.text, isMaxBuffer: r.isMaxBuffer };
    if (r.exitCode !== undefined) out.exitCode = r.exitCode;
    if (r.signal !== undefined) out.signal = r.signal;
    if (r.exitCode === undefined && r.signal === undefined) out.startError = r.cause instanceof Error ? r.cause.message : String(r.cause);
    return out;
  });
  return {
    pid,
    kill: () => {
      killAll();
    },
    result,
  };
}
