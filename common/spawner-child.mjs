// The spawner: a small plain-JavaScript process that starts job scripts for a large one (a docq
// worker), which then never forks itself. Fork cost grows with the forking process's memory; this
// process stays small (no TypeScript loader, no broker). It speaks over the IPC channel:
//   in:  {op:"launch", id, spec: LaunchSpec}   {op:"kill", id}
//   out: {op:"pid", id, pid}   {op:"result", id, result: LaunchResult}
// When the channel closes (the worker died or stopped), every script it started is killed.
import { execa } from "execa";

const groups = new Map();

function killGroup(pid) {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: the group is already gone.
  }
}

function launch(id, spec) {
  const subprocess = execa(spec.command, spec.args, {
    cwd: spec.cwd,
    input: spec.input,
    env: spec.env,
    extendEnv: false,
    detached: true,
    reject: false,
    stripFinalNewline: false,
    buffer: { stdout: true, stderr: false },
    maxBuffer: { stdout: spec.maxStdoutBytes },
  });
  let stderrTail = "";
  subprocess.stderr.setEncoding("utf8");
  subprocess.stderr.on("data", (chunk) => {
    stderrTail += chunk;
    if (stderrTail.length > 2 * spec.stderrTailChars) stderrTail = stderrTail.slice(-spec.stderrTailChars);
  });
  const { pid } = subprocess;
  groups.set(id, pid);
  process.send({ op: "pid", id, pid });
  subprocess.once("exit", () => killGroup(pid));
  subprocess.then((r) => {
    groups.delete(id);
    const result = {
      stdout: typeof r.stdout === "string" ? r.stdout : "",
      stderrTail: stderrTail.slice(-spec.stderrTailChars),
      isMaxBuffer: r.isMaxBuffer,
    };
    if (r.exitCode !== undefined) result.exitCode = r.exitCode;
    if (r.signal !== undefined) result.signal = r.signal;
    if (r.exitCode === undefined && r.signal === undefined) result.startError = r.cause instanceof Error ? r.cause.message : String(r.cause);
    process.send({ op: "result", id, result });
  });
}

process.on("message", (message) => {
  if (message.op === "launch") launch(message.id, message.spec);
  else if (message.op === "kill") killGroup(groups.get(message.id));
});

process.on("disconnect", () => {
  for (const pid of groups.values()) killGroup(pid);
  process.exit(0);
});
