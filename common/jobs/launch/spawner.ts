import { fork, type ChildProcess } from "node:child_process";
import path from "node:path";
import { REPO_ROOT } from "../../config/config.js";
import type { LaunchedScript, LaunchResult, LaunchSpec, ScriptLauncher, StdoutLineListener } from "./script-launcher.js";

const CHILD = path.join(REPO_ROOT, "common", "jobs", "launch", "spawner-child.mjs");

type ChildMessage =
  | { op: "pid"; id: number; pid: number | undefined }
  | { op: "line"; id: number; line: string }
  | { op: "result"; id: number; result: LaunchResult };

interface Pending {
  onLine: StdoutLineListener | undefined;
  resolvePid(pid: number | undefined): void;
  resolveResult(result: LaunchResult): void;
}

/**
 * Starts job scripts through a small helper process (common/jobs/launch/spawner-child.mjs) instead of forking
 * this one: a worker holding a broker, SQLite and HTTP is several times the size of the helper, and
 * a fork costs in proportion (its page tables are copied); it also takes the fork off this event loop.
 * The helper is started on first use and again after it dies; runs it held then fail (and retry).
 */
export class Spawner implements ScriptLauncher {
  private child: ChildProcess | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  launch(spec: LaunchSpec, onLine?: StdoutLineListener): LaunchedScript {
    const child = this.ensureChild();
    const id = this.nextId++;
    let resolvePid!: (pid: number | undefined) => void;
    let resolveResult!: (result: LaunchResult) => void;
    const pid = new Promise<number | undefined>((r) => (resolvePid = r));
    const result = new Promise<LaunchResult>((r) => (resolveResult = r));
    this.pending.set(id, { onLine, resolvePid, resolveResult });
    child.send({ op: "launch", id, spec, ...(onLine === undefined ? {} : { lines: true }) });
    return {
      pid,
      result,
      kill: () => {
        if (this.pending.has(id) && child.connected) child.send({ op: "kill", id });
      },
    };
  }

  /** Stops the helper; it kills every script it still runs as it goes. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    if (child.connected) child.disconnect();
    await exited;
  }

  private ensureChild(): ChildProcess {
    if (this.child !== null && this.child.connected) return this.child;
    // No execArgv: the helper must not load this process's TypeScript loader.
    const child = fork(CHILD, [], { execArgv: [], stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "json" });
    child.on("message", (message: ChildMessage) => {
      const entry = this.pending.get(message.id);
      if (entry === undefined) return;
      if (message.op === "pid") {
        entry.resolvePid(message.pid);
      } else if (message.op === "line") {
        entry.onLine?.(message.line);
      } else {
        this.pending.delete(message.id);
        entry.resolvePid(undefined);
        entry.resolveResult(message.result);
      }
    });
    child.once("exit", (code, signal) => {
      if (this.child === child) this.child = null;
      const startError = `the spawner process exited (${signal ?? `code ${code}`}) while the script ran`;
      for (const [id, entry] of this.pending) {
        this.pending.delete(id);
        entry.resolvePid(undefined);
        entry.resolveResult({ stdout: "", stderrTail: "", isMaxBuffer: false, startError });
      }
    });
    this.child = child;
    return child;
  }
}
