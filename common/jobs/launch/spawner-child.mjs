// The spawner: a small plain-JavaScript process that starts job scripts for a large one (a docq
// worker), which then never forks itself. Fork cost grows with the forking process's memory; this
// process stays small (no TypeScript loader, no broker). It speaks over the IPC channel:
//   in:  {op:"launch", id, spec: LaunchSpec, lines?: true}   {op:"kill", id}
//   out: {op:"pid", id, pid}   {op:"line", id, line} (a stdout line that may be progress)   {op:"result", id, result: LaunchResult}
// When the channel closes (the worker died or stopped), every script it started is killed, with
// whatever the script started (its process group and every process carrying its run's mark).
import { launchScript } from "./launch-script.mjs";

const running = new Map();

process.on("message", (message) => {
  if (message.op === "kill") {
    running.get(message.id)?.kill();
    return;
  }
  if (message.op !== "launch") return;
  const { id } = message;
  // Only when asked: the lines that may be progress lines go back to the worker as they come.
  const onLine = message.lines === true ? (line) => process.send({ op: "line", id, line }) : undefined;
  const script = launchScript(message.spec, onLine);
  running.set(id, script);
  process.send({ op: "pid", id, pid: script.pid });
  void script.result.then((result) => {
    running.delete(id);
    process.send({ op: "result", id, result });
  });
});

process.on("disconnect", () => {
  for (const script of running.values()) script.kill();
  process.exit(0);
});
