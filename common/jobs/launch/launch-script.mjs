// Starts one job script with execa: its own process group (detached), the request on stdin,
// stdout buffered up to a limit, a tail of stderr kept. Plain JavaScript, so the spawner process
// (spawner-child.mjs) can use it without a TypeScript loader; the worker uses it too
// (script-launcher.ts), so both start scripts exactly alike. Types: launch-script.d.mts.
import { execa } from "execa";
import { killRunNow, markedEnv, StderrTail } from "./job-process.mjs";
import { endRun, newRunId } from "./leftovers.mjs";

/**
 * Starts the script. Every process of the run carries a mark in its environment (leftovers.mjs):
 * when the script exits, is killed or times out, its group is killed and so is every marked
 * process that left the group (setsid); the result comes once none is left.
 */
export function launchScript(spec) {
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
