import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import path from "node:path";
import { jobEnvironmentOf } from "./job-env.js";
import type { JobDefinition } from "./job-registry.js";
import {
  answerFailure,
  JobFailedError,
  removeTree,
  STDERR_TAIL_CHARS,
  STDOUT_MAX_BYTES,
  warmRequestLine,
  type InlineJobRequest,
  type JobRequest,
} from "./job-runner.js";
import { checkAnswer, isErrorAnswer, progressOf, type Answer, type ProgressReport } from "./script-answer.js";
import { endOfRun, killRunNow, markedEnv, StderrTail } from "./launch/job-process.mjs";
import { endRun, newRunId, OWNER, type RunScope } from "./launch/leftovers.mjs";
import type { StopSignal } from "./stop-signal.js";

/*
 * One warm job process: started once, it reads one JSON request per line on stdin and answers one
 * JSON line per request on stdout, `{"requestId": ..., "output": ...}` (or `children`, or
 * `error`). docq sends it up to its job's `concurrency` requests at a time (one unless job.yaml
 * says more); an answer is matched by its requestId, in any order, other stdout lines are chatter
 * and ignored. It runs in its own process group, so a kill (timeout,
 * cancel, recycle, shutdown) takes everything it started; what left the group (setsid) carries the
 * process's run mark in its environment and is killed with it (leftovers.mjs). Processes it starts
 * for a request and leaves running are its own business until it ends: they die with it.
 */

/** Why docq ended a warm process. */
export type WarmKillReason = "timeout" | "cancel" | "protocol" | "recycle" | "idle" | "stop";

/** idle: no request; busy: at least one (it may have room for more: hasRoom). */
export type WarmProcessState = "idle" | "busy" | "closing" | "exited";

export interface WarmExit {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why docq ended it; null when it exited by itself (a crash, or its own choice). */
  killedFor: WarmKillReason | null;
  /** Requests it answered. */
  served: number;
  /** True when it died holding a request (one or more). */
  duringRequest: boolean;
  /** Its stderr since its last request started (or since it started). */
  stderrTail: string;
  /** How it ended, for messages: `exited with code 1: <last stderr line>`, `was killed by SIGSEGV`... */
  description: string;
}

/** What a request answered: a valid answer (paths not yet checked) and the stderr it printed meanwhile. */
export interface WarmReply {
  answer: Answer;
  stderrTail: string;
}

interface Pending {
  requestId: string;
  resolve: (reply: WarmReply) => void;
  reject: (err: JobFailedError) => void;
  timer: NodeJS.Timeout;
  signal: StopSignal | undefined;
  onAbort: () => void;
  onProgress: ((report: ProgressReport) => void) | undefined;
  /** Its timeout, for the message. */
  timeoutMs: number;
}

/** After the process exits, how long its stdio may stay open (a leftover that escaped the group) before docq stops waiting. */
const CLOSE_WAIT_MS = 1000;

export class WarmProcess {
  readonly job: JobDefinition;
  /** What the process was started from; the pool retires it when the job's signature changes. */
  readonly signature: string;
  readonly pid: number | undefined;
  readonly startedAt = Date.now();
  /** Resolves once the process is gone and its pending request (if any) is settled. */
  readonly exited: Promise<WarmExit>;
  /** Requests answered (a valid answer, an invalid one or an error answer). */
  served = 0;
  /** When the pool last read its RSS. */
  rssCheckedAt = 0;
  private stateValue: WarmProcessState = "idle";
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly cwd: string;
  /** The mark of every process it starts (leftovers.mjs). */
  private readonly runId = newRunId();
  private readonly scope: RunScope | undefined;
  /** The requests it holds, by requestId (at most `capacity`). */
  private readonly pending = new Map<string, Pending>();
  /** Requests it may hold at once: its job's `concurrency`. */
  readonly capacity: number;
  private killedFor: WarmKillReason | null = null;
  /** The request whose timeout or cancel killed it: the others it held were only in the way. */
  private killedForRequest: string | null = null;
  private protocolProblem = "";
  private stdoutBuffer = "";
  /** Its stdin holds this turn's requests, written at the turn's end (writeCorked). */
  private stdinCorked = false;
  private readonly stderrTail = new StderrTail(STDERR_TAIL_CHARS);
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private spawnError: Error | null = null;
  private finalized = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private closeWaitTimer: NodeJS.Timeout | undefined;
  private resolveExited!: (exit: WarmExit) => void;
  private readonly onEnd: (exit: WarmExit) => void;

  /**
   * Starts the process at once. Its cwd is a private temp dir under `root`, kept across its
   * requests (each request still has its own work dir and outputDir) and removed when it exits.
   * The dir's name starts with `docq-warm-<OWNER>-`, so a later worker removes it when this one
   * died without doing so (sweepLeftovers in job-runner.ts).
   */
  constructor(
    job: JobDefinition,
    opts: {
      root: string;
      signature: string;
      /** It ended: called before the request it held fails, so its pool has counted the end when the caller learns of it. */
      onEnd: (exit: WarmExit) => void;
      /** It ended and its dir is gone. */
      onExit: (exit: WarmExit) => void;
    },
  ) {
    this.job = job;
    this.capacity = Math.max(1, job.concurrency);
    this.signature = opts.signature;
    this.onEnd = opts.onEnd;
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    void this.exited.then(opts.onExit);
    this.cwd = mkdtempSync(path.join(opts.root, `docq-warm-${OWNER}-${job.name}-`));
    const startedAt = Date.now();
    this.child = spawn(job.command, job.args, {
      cwd: this.cwd,
      env: markedEnv(jobEnvironmentOf(job, this.cwd), this.runId),
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.pid = this.child.pid;
    this.scope = this.pid === undefined ? undefined : { firstPid: this.pid, startedAt };
    this.child.stdin.on("error", () => undefined); // EPIPE once it is gone: its exit says why
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk: string) => this.onStdout(chunk));
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (chunk: string) => this.stderrTail.add(chunk));
    this.child.stdout.on("error", () => undefined); // a broken pipe: its exit says why
    this.child.stderr.on("error", () => undefined);
    this.child.on("error", (err) => {
      if (this.pid !== undefined) return; // a failed kill(): nothing to do, its exit follows
      this.spawnError = err;
      this.finalize();
    });
    this.child.once("exit", (code, signal) => {
      this.exitStatus = { code, signal };
      // Gone: not to be handed a request while its stdio drains (a busy one fails when it is closed).
      if (this.stateValue === "idle") this.stateValue = "closing";
      // Leftovers would hold its stdio open and outlive it.
      this.killGroup();
      this.closeWaitTimer = setTimeout(() => this.finalize(), CLOSE_WAIT_MS);
    });
    this.child.once("close", () => this.finalize());
  }

  get state(): WarmProcessState {
    return this.stateValue;
  }

  /** Requests it holds now. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Whether it can take a request now: alive, and holding fewer than its capacity. */
  get hasRoom(): boolean {
    return (this.stateValue === "idle" || this.stateValue === "busy") && this.pending.size < this.capacity;
  }

  /**
   * Sends one request and resolves with its answer. Rejects with a JobFailedError when it answers
   * an error or an invalid answer (the process stays usable), or when it times out, is canceled,
   * breaks the protocol or dies (the process is then gone, and every request it held fails).
   */
  request(
    requestId: string,
    request: JobRequest | InlineJobRequest,
    opts: { timeoutMs: number; signal?: StopSignal; onProgress?: (report: ProgressReport) => void },
  ): Promise<WarmReply> {
    if (!this.hasRoom) {
      throw new Error(
        `warm process ${this.pid} of job "${this.job.name}" is ${this.stateValue} with ${this.pending.size} of ${this.capacity} requests`,
      );
    }
    // A process holding other requests shares its stderr between them: the tail is cleared only when it held none.
    if (this.stateValue === "idle") this.stderrTail.clear();
    this.stateValue = "busy";
    return new Promise<WarmReply>((resolve, reject) => {
      const { signal } = opts;
      const pending: Pending = {
        requestId,
        resolve,
        reject,
        timer: setTimeout(() => this.kill("timeout", "", requestId), opts.timeoutMs),
        signal,
        onAbort: () => this.kill("cancel", "", requestId),
        onProgress: opts.onProgress,
        timeoutMs: opts.timeoutMs,
      };
      this.pending.set(requestId, pending);
      signal?.addEventListener("abort", pending.onAbort, { once: true });
      this.writeCorked(warmRequestLine(requestId, request));
    });
  }

  /** Requests written in one turn leave in one write: one wake-up of the process for all of them. */
  private writeCorked(line: string): void {
    const { stdin } = this.child;
    if (!this.stdinCorked) {
      this.stdinCorked = true;
      stdin.cork();
      process.nextTick(() => {
        this.stdinCorked = false;
        stdin.uncork();
      });
    }
    stdin.write(line);
  }

  /**
   * Ends the process now: SIGKILL to its whole group. The requests it holds fail with `reason`;
   * with `forRequest` (a timeout or cancel of that request) only that one does, and the others
   * fail as collateral (JobFailedError.collateral: run again, the try not counted).
   */
  kill(reason: WarmKillReason, problem = "", forRequest: string | null = null): void {
    if (this.finalized) return;
    if (this.killedFor === null) {
      this.killedFor = reason;
      this.protocolProblem = problem;
      this.killedForRequest = forRequest;
    }
    if (this.stateValue !== "exited") this.stateValue = "closing";
    this.killGroup();
  }

  /**
   * Ends an idle process gently: its stdin is closed (the helpers then return from serve() and the
   * process exits), and its group is killed after `graceMs` if it is still there. A busy one is
   * killed at once.
   */
  close(reason: "recycle" | "idle" | "stop", graceMs: number): void {
    if (this.finalized || this.killedFor !== null) return;
    if (this.stateValue === "busy" || graceMs <= 0) {
      this.kill(reason);
      return;
    }
    this.killedFor = reason;
    this.stateValue = "closing";
    this.child.stdin.end();
    this.graceTimer = setTimeout(() => this.killGroup(), graceMs);
  }

  /** Its resident set size in MB, from /proc/<pid>/status (null where that cannot be read). */
  rssMb(): number | null {
    if (this.pid === undefined) return null;
    try {
      const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${this.pid}/status`, "utf8"));
      return match === null ? null : Number(match[1]) / 1024;
    } catch {
      return null;
    }
  }

  private onStdout(chunk: string): void {
    let buffer = this.stdoutBuffer + chunk;
    let newline = buffer.indexOf("\n");
    while (newline !== -1) {
      this.onLine(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf("\n");
    }
    this.stdoutBuffer = buffer;
    if (buffer.length > STDOUT_MAX_BYTES) {
      this.stdoutBuffer = "";
      this.kill("protocol", `printed more than ${STDOUT_MAX_BYTES} bytes on stdout without a newline`);
    }
  }

  /** An answer is a JSON object with a requestId; any other line is chatter. */
  private onLine(raw: string): void {
    const line = raw.trim();
    if (!line.startsWith("{") || this.killedFor !== null) return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      return;
    }
    if (typeof json !== "object" || json === null || Array.isArray(json) || !("requestId" in json)) return;
    const { requestId, ...rest } = json as Record<string, unknown>;
    const pending = typeof requestId === "string" ? this.pending.get(requestId) : undefined;
    const progress = progressOf(rest);
    if (progress !== null) {
      // Progress of another request (one that timed out, say) is stale chatter, not a broken protocol.
      pending?.onProgress?.(progress);
      return;
    }
    if (pending === undefined) {
      const held = [...this.pending.keys()].map((id) => JSON.stringify(id)).join(", ");
      this.kill(
        "protocol",
        held === ""
          ? `answered request ${JSON.stringify(requestId)} while it held none: the process was restarted`
          : `answered request ${JSON.stringify(requestId)} while request ${held} was asked: the process was restarted`,
      );
      return;
    }
    this.pending.delete(pending.requestId);
    this.served++;
    clearTimeout(pending.timer);
    pending.signal?.removeEventListener("abort", pending.onAbort);
    if (this.pending.size === 0) this.stateValue = "idle";
    const answer = checkAnswer(rest);
    if (typeof answer !== "string" && !isErrorAnswer(answer)) {
      // Settled at once: its slot's next request goes out before the other work this turn of the
      // event loop holds (a warm task's answer waited 350 µs for it here). Only a failure's message
      // needs the stderr written before the answer, which may come in later this turn.
      pending.resolve({ answer, stderrTail: this.stderrTail.text });
      return;
    }
    // Failed after the poll phase, so stderr written before the answer (a traceback) is in its tail.
    setImmediate(() => {
      const stderrTail = this.stderrTail.text;
      if (typeof answer === "string")
        pending.reject(
          new JobFailedError(`job "${this.job.name}" printed no valid answer on stdout: ${answer}`, { exitCode: null, stderrTail }),
        );
      else pending.reject(answerFailure(this.job, answer, stderrTail, null));
    });
  }

  /** SIGKILL to its process group and to every process carrying its run mark. */
  private killGroup(): void {
    killRunNow(this.pid, this.runId, this.scope);
  }

  private finalize(): void {
    if (this.finalized) return;
    this.finalized = true;
    this.stateValue = "exited";
    clearTimeout(this.graceTimer);
    clearTimeout(this.closeWaitTimer);
    // Over only once nothing it started is left (a process that called setsid outlived its group):
    // its request fails and `exited` resolves after that, and its cwd goes (a leftover could still
    // write there). The first pass usually finds nothing and this is a microtask later.
    const leftovers = this.pid === undefined ? Promise.resolve(0) : endRun(this.runId, this.scope);
    void leftovers.catch(() => 0).then(() => this.settle());
  }

  /** Tells the pool it ended, fails the request it held (if any), removes its cwd and then resolves `exited`. */
  private settle(): void {
    const stderrTail = this.stderrTail.text;
    const description = this.describeEnd(stderrTail);
    const held = [...this.pending.values()];
    this.pending.clear();
    const exit: WarmExit = {
      pid: this.pid,
      code: this.exitStatus?.code ?? null,
      signal: this.exitStatus?.signal ?? null,
      killedFor: this.killedFor,
      served: this.served,
      duringRequest: held.length > 0,
      stderrTail,
      description,
    };
    // First the pool counts the end (a crash, its backoff), then the caller learns of it: a retry
    // sent at once must meet the backoff, not a process started before the crash was counted.
    this.onEnd(exit);
    for (const pending of held) {
      clearTimeout(pending.timer);
      pending.signal?.removeEventListener("abort", pending.onAbort);
      pending.reject(this.failure(pending, description, stderrTail));
    }
    // Exited once its dir is gone too: a pool stopping waits for it, so docq stopping leaves no dir.
    // A dir that cannot be removed now is swept by the next worker (its owner is gone by then).
    void removeTree(this.cwd)
      .catch(() => undefined)
      .then(() => this.resolveExited(exit));
  }

  private describeEnd(stderrTail: string, beforeAnswering = false): string {
    if (this.spawnError !== null) return endOfRun({ startError: this.spawnError.message });
    const { code, signal } = this.exitStatus ?? { code: null, signal: null };
    return endOfRun({ signal, exitCode: code, stderrTail, beforeAnswering });
  }

  /** The error of a request it held when it ended, in runJob's words. */
  private failure(pending: Pending, description: string, stderrTail: string): JobFailedError {
    const name = `job "${this.job.name}"`;
    const code = this.exitStatus?.code ?? null;
    const culprit = this.killedForRequest;
    if (culprit !== null && culprit !== pending.requestId) {
      const why = this.killedFor === "timeout" ? "timed out" : "was canceled";
      return new JobFailedError(
        `${name} (warm process ${this.pid}, shared with other requests: concurrency ${this.capacity}) was killed because another request it held ${why}`,
        { exitCode: code, canceled: true, stderrTail, collateral: true },
      );
    }
    switch (this.killedFor) {
      case "timeout":
        return new JobFailedError(`${name} ${endOfRun({ stoppedFor: "timeout", timeoutMs: pending.timeoutMs })}`, {
          exitCode: code,
          timedOut: true,
          stderrTail,
        });
      case "cancel":
        return new JobFailedError(`${name} ${endOfRun({ stoppedFor: "cancel" })}`, { exitCode: code, canceled: true, stderrTail });
      case "stop":
      case "recycle":
      case "idle":
        return new JobFailedError(`${name} ${endOfRun({ stoppedFor: "stop" })}`, { exitCode: code, canceled: true, stderrTail });
      case "protocol":
        return new JobFailedError(`${name} (warm process ${this.pid}) ${this.protocolProblem}`, { exitCode: code, stderrTail });
      case null:
        if (this.spawnError !== null) return new JobFailedError(`${name} ${description}`, { exitCode: null, stderrTail });
        return new JobFailedError(`${name} (warm process ${this.pid}) ${this.describeEnd(stderrTail, true)}`, {
          exitCode: code,
          stderrTail,
        });
    }
  }
}
