import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { JobDefinition } from "./job-registry.js";
import type { InlineJobAnswer, JobExecutor, JobRunOptions } from "./executor.js";
import {
  checkChildrenMode,
  JobFailedError,
  placeAnswer,
  stoppedBeforeStart,
  type InlineJobRequest,
  type JobAnswer,
  type JobRequest,
} from "./job-runner.js";
import { WarmProcess, type WarmExit, type WarmProcessState, type WarmReply } from "./warm-process.js";

/*
 * The warm processes of one worker: for each warm job (job.yaml `warm: true`), up to one process
 * per slot, started when a task first needs it and kept alive between tasks. A process holds up to
 * its job's `concurrency` requests at once (1 unless job.yaml says more): a request goes to a
 * process that holds some and has room, else to an idle one, else to a new one. The worker never
 * runs more tasks at once than it has slots, and a process is only started when no process of the
 * job has room, so a job never has more processes than slots.
 *
 * - A request that times out or is canceled kills its process (and only it); a replacement is
 *   started at once. The other requests that process held fail as collateral: their tasks run
 *   again without counting the try.
 * - A process that dies by itself fails the request it held (the task follows the retry rule) and
 *   is replaced when next needed: at once after the first crash, then after a backoff growing
 *   with each crash in a row (base · 2^(n-2), capped). During that backoff the job's tasks fail
 *   at once with the crash's explanation instead of hogging the slots. An answered request resets
 *   the count.
 * - A process is recycled (stdin closed, killed after a grace time, a replacement started) after
 *   `maxRequests` requests or when its RSS exceeds `maxRssMb`, and stopped after `idleMs` without
 *   a request. Editing the job (job.yaml, or a file of its folder) retires the processes started
 *   from the old version (checked at most once a second).
 */

export interface WarmPoolOptions {
  /** Where each warm process gets its private cwd; the OS temp dir by default. */
  workRoot?: string;
  /** Restart delay after the second crash in a row; doubled for each further one. */
  restartBackoffBaseMs: number;
  restartBackoffMaxMs: number;
  /** How long a recycled or stopped idle process may take to exit after its stdin is closed. */
  exitGraceMs: number;
  /** An idle process is stopped after this long without a request. */
  idleMs: number;
  /** Least time between two reads of a process's RSS (checked after a request, for jobs with maxRssMb). */
  rssCheckMs: number;
  log: { info(msg: string): void; warn(msg: string): void };
}

export const WARM_POOL_DEFAULTS = Object.freeze({
  restartBackoffBaseMs: 250,
  restartBackoffMaxMs: 30_000,
  exitGraceMs: 2000,
  idleMs: 300_000,
  rssCheckMs: 1000,
});

/** One warm process as seen from outside, for tests and stats. */
export interface WarmProcessInfo {
  job: string;
  pid: number | undefined;
  state: WarmProcessState;
  served: number;
  startedAt: number;
}

/** How often a job's files and definition are compared with those its processes were started from. */
const SIGNATURE_CHECK_MS = 1000;

/** Why a process takes no more requests and is retired once it holds none (it holds some now). */
type RetireWhenDone = { why: string; replace: boolean };

interface JobGroup {
  name: string;
  /** The newest definition seen: its limits apply to every process of the job. */
  job: JobDefinition;
  signature: string;
  checkedAt: number;
  procs: Set<WarmProcess>;
  /** Idle processes, most recently used last (taken first: it is the hottest). */
  idle: WarmProcess[];
  idleTimers: Map<WarmProcess, NodeJS.Timeout>;
  crashes: number;
  lastCrash: WarmExit | null;
  restartAt: number;
  /** Busy processes that take no more requests, with why: retired when their last request is over. */
  retiring: Map<WarmProcess, RetireWhenDone>;
}

export class WarmPool implements JobExecutor {
  private readonly opts: WarmPoolOptions;
  private readonly groups = new Map<string, JobGroup>();
  /** Every process not yet exited, retiring ones included. */
  private readonly live = new Set<WarmProcess>();
  private seq = 0;
  private stopping = false;

  constructor(opts: Partial<WarmPoolOptions> & Pick<WarmPoolOptions, "log">) {
    this.opts = { ...WARM_POOL_DEFAULTS, ...opts };
    for (const key of ["restartBackoffBaseMs", "restartBackoffMaxMs", "exitGraceMs", "idleMs", "rssCheckMs"] as const) {
      const value = this.opts[key];
      if (!Number.isFinite(value) || value < 0) throw new Error(`WarmPool: ${key} must be a number >= 0, got ${value}`);
    }
  }

  /**
   * Runs one request on a warm process of `job` and returns what a one-shot run would: the same
   * JobAnswer, the same JobFailedError (timedOut, canceled, an exit, an invalid answer).
   */
  async run(job: JobDefinition, request: JobRequest, opts: JobRunOptions): Promise<JobAnswer> {
    const { answer, stderrTail } = await this.ask(job, request, opts);
    return placeAnswer(answer, request, {
      workDir: opts.workDir,
      stderrTail,
      fail: (message) => new JobFailedError(`job "${job.name}" ${message}`, { exitCode: null, stderrTail }),
    });
  }

  /** Runs one inline request (the documents inside it) and answers the output's bytes or the parts', failing as run() does. */
  async runInline(job: JobDefinition, request: InlineJobRequest, opts: Omit<JobRunOptions, "workDir">): Promise<InlineJobAnswer> {
    const { answer, stderrTail } = await this.ask(job, request, opts);
    const fail = (message: string): JobFailedError => new JobFailedError(`job "${job.name}" ${message}`, { exitCode: null, stderrTail });
    /** A file answered where the inline request wants bytes. */
    const fileAnswered = (what: string, instead: string): JobFailedError =>
      fail(`answered ${what} to an inline request (job.yaml inline: true): answer ${instead}, as the docq-warm helpers do`);
    if (answer.outputBase64 !== undefined) return { kind: "output", output: Buffer.from(answer.outputBase64, "base64"), stderrTail };
    if (answer.output !== undefined) throw fileAnswered(`the output file ${JSON.stringify(answer.output)}`, '{"outputBase64": ...}');
    const children = answer.children ?? [];
    checkChildrenMode(request.mode, fail);
    return {
      kind: "children",
      children: children.map(({ input, inputBase64, params }) => {
        if (inputBase64 === undefined) throw fileAnswered(`the child file ${JSON.stringify(input)}`, "its bytes as inputBase64");
        return { input: Buffer.from(inputBase64, "base64"), ...(params === undefined ? {} : { params }) };
      }),
      stderrTail,
    };
  }

  /** Sends `request` to a process of `job` with room and answers its valid answer (a failure, a timeout, a crash throw). */
  private async ask(job: JobDefinition, request: JobRequest | InlineJobRequest, opts: Omit<JobRunOptions, "workDir">): Promise<WarmReply> {
    if (this.stopping) throw stoppedBeforeStart(job, "stop");
    if (opts.signal?.aborted) throw stoppedBeforeStart(job, "cancel");
    // Its group as checked a moment ago, else checked now: no await between a slot freed and the next request.
    const group = this.checkedGroup(job) ?? (await this.checkGroup(job));
    if (this.stopping) throw stoppedBeforeStart(job, "stop");
    const proc = this.acquire(group);
    try {
      return await proc.request(String(++this.seq), request, {
        timeoutMs: opts.timeoutMs ?? group.job.timeoutMs,
        ...(opts.signal === undefined ? {} : { signal: opts.signal }),
        ...(opts.onProgress === undefined ? {} : { onProgress: opts.onProgress }),
      });
    } finally {
      this.release(group, proc);
      opts.onScriptOver?.();
    }
  }

  processes(): WarmProcessInfo[] {
    return [...this.groups.values()].flatMap((g) =>
      [...g.procs].map((p) => ({ job: g.name, pid: p.pid, state: p.state, served: p.served, startedAt: p.startedAt })),
    );
  }

  /** Ends every warm process (idle ones gently, busy ones at once) and starts no more. */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const group of this.groups.values()) {
      for (const timer of group.idleTimers.values()) clearTimeout(timer);
      group.idleTimers.clear();
      group.idle = [];
      for (const proc of group.procs) proc.close("stop", this.opts.exitGraceMs);
    }
    // Retiring processes are already closing; their grace time bounds the wait.
    await Promise.all([...this.live].map((p) => p.exited));
  }

  /** The group of `job` when its signature was checked less than SIGNATURE_CHECK_MS ago, else undefined. */
  private checkedGroup(job: JobDefinition): JobGroup | undefined {
    const group = this.groups.get(job.name);
    return group !== undefined && group.job === job && Date.now() - group.checkedAt < SIGNATURE_CHECK_MS ? group : undefined;
  }

  /** The group of `job` with its signature checked now, made or retired as it changed (run calls it when checkedGroup has none). */
  private async checkGroup(job: JobDefinition): Promise<JobGroup> {
    const now = Date.now();
    const signature = await signatureOf(job);
    let group = this.groups.get(job.name);
    if (group === undefined) {
      group = {
        name: job.name,
        job,
        signature,
        checkedAt: now,
        procs: new Set(),
        idle: [],
        idleTimers: new Map(),
        crashes: 0,
        lastCrash: null,
        restartAt: 0,
        retiring: new Map(),
      };
      this.groups.set(job.name, group);
      return group;
    }
    group.job = job;
    group.checkedAt = now;
    if (group.signature !== signature) {
      group.signature = signature;
      // A fixed job deserves a fresh start, not the backoff of its broken version.
      group.crashes = 0;
      group.restartAt = 0;
      for (const proc of [...group.idle]) this.retire(group, proc, "the job changed", false);
    }
    return group;
  }

  private acquire(group: JobGroup): WarmProcess {
    // A busy process with room first: requests in flight share one process rather than wake another.
    if (group.job.concurrency > 1) {
      for (const proc of group.procs) if (proc.state === "busy" && this.takesMore(group, proc)) return proc;
    }
    for (let proc = group.idle.pop(); proc !== undefined; proc = group.idle.pop()) {
      clearTimeout(group.idleTimers.get(proc));
      group.idleTimers.delete(proc);
      if (proc.state !== "idle") continue; // exiting: onExit forgets it
      if (proc.signature === group.signature) return proc;
      this.retire(group, proc, "the job changed", false);
    }
    const wait = group.restartAt - Date.now();
    if (wait > 0 && group.lastCrash !== null) {
      const last = group.lastCrash;
      throw new JobFailedError(
        `job "${group.name}" keeps crashing: its warm process ${last.description} (${group.crashes} crashes in a row); the next start is in ${wait} ms`,
        { exitCode: last.code, stderrTail: last.stderrTail },
      );
    }
    return this.startProcess(group);
  }

  private startProcess(group: JobGroup): WarmProcess {
    const proc: WarmProcess = new WarmProcess(group.job, {
      root: this.opts.workRoot ?? os.tmpdir(),
      signature: group.signature,
      onEnd: (exit) => this.onExit(group, proc, exit),
      // Live until its dir is gone: a pool stopping waits for that.
      onExit: () => this.live.delete(proc),
    });
    this.live.add(proc);
    group.procs.add(proc);
    return proc;
  }

  /** Whether a busy process of the group may take one more request: room, its job's version, and its recycling limits not reached. */
  private takesMore(group: JobGroup, proc: WarmProcess): boolean {
    const { maxRequests } = group.job;
    return (
      proc.hasRoom &&
      proc.signature === group.signature &&
      !group.retiring.has(proc) &&
      (maxRequests === null || proc.served + proc.inFlight < maxRequests)
    );
  }

  /** After a request: back to the idle list, or recycled (a process still holding requests only once they are over). */
  private release(group: JobGroup, proc: WarmProcess): void {
    if (proc.state !== "idle" && proc.state !== "busy") return; // it died or is being killed: onExit takes it from there
    group.crashes = 0;
    if (this.stopping) {
      if (proc.state === "idle") proc.close("stop", this.opts.exitGraceMs);
      return;
    }
    const retire = group.retiring.get(proc) ?? this.recyclingDue(group, proc);
    if (proc.state === "busy") {
      if (retire !== null) group.retiring.set(proc, retire);
      return;
    }
    group.retiring.delete(proc);
    if (retire !== null) this.retire(group, proc, retire.why, retire.replace);
    else this.makeIdle(group, proc);
  }

  /** Why `proc` is due to be retired now (maxRequests, maxRssMb, the job changed), or null. */
  private recyclingDue(group: JobGroup, proc: WarmProcess): RetireWhenDone | null {
    const { maxRequests, maxRssMb } = group.job;
    if (maxRequests !== null && proc.served >= maxRequests) {
      return { why: `it served ${proc.served} requests (maxRequests ${maxRequests})`, replace: true };
    }
    if (maxRssMb !== null && Date.now() - proc.rssCheckedAt >= this.opts.rssCheckMs) {
      proc.rssCheckedAt = Date.now();
      const rss = proc.rssMb();
      if (rss !== null && rss > maxRssMb) return { why: `its RSS is ${Math.round(rss)} MB (maxRssMb ${maxRssMb})`, replace: true };
    }
    if (proc.signature !== group.signature) return { why: "the job changed", replace: false };
    return null;
  }

  /** Starts a process ahead of need (after a kill, a recycle or a clean exit); a failure to start is only logged. */
  private startSpare(group: JobGroup): void {
    if (this.stopping) return;
    try {
      this.makeIdle(group, this.startProcess(group));
    } catch (err) {
      this.opts.log.warn(`could not start a warm process for job "${group.name}": ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private makeIdle(group: JobGroup, proc: WarmProcess): void {
    group.idle.push(proc);
    const timer = setTimeout(() => this.retire(group, proc, `it was idle for ${this.opts.idleMs} ms`, false, "idle"), this.opts.idleMs);
    timer.unref();
    group.idleTimers.set(proc, timer);
  }

  private retire(group: JobGroup, proc: WarmProcess, why: string, replace: boolean, reason: "recycle" | "idle" = "recycle"): void {
    this.forget(group, proc);
    proc.close(reason, this.opts.exitGraceMs);
    this.opts.log.info(`warm process ${proc.pid} of job "${group.name}" ${reason === "idle" ? "stopped" : "recycled"}: ${why}`);
    if (replace) this.startSpare(group);
  }

  private forget(group: JobGroup, proc: WarmProcess): void {
    group.procs.delete(proc);
    group.retiring.delete(proc);
    const i = group.idle.indexOf(proc);
    if (i !== -1) group.idle.splice(i, 1);
    clearTimeout(group.idleTimers.get(proc));
    group.idleTimers.delete(proc);
  }

  private onExit(group: JobGroup, proc: WarmProcess, exit: WarmExit): void {
    const known = group.procs.has(proc);
    this.forget(group, proc);
    if (this.stopping || !known) return; // stopped, or retired (and replaced if it had to be)
    const name = `warm process ${exit.pid} of job "${group.name}"`;
    if (exit.killedFor !== null) {
      // Killed for a timeout, a cancel or a protocol error: the process was fine to start, start another.
      this.opts.log.info(`${name} killed (${exit.killedFor}): starting another`);
      this.startSpare(group);
      return;
    }
    const crashed = exit.duringRequest || exit.served === 0 || exit.code !== 0 || exit.signal !== null;
    if (!crashed) {
      this.opts.log.info(`${name} exited by itself after ${exit.served} requests: starting another`);
      this.startSpare(group);
      return;
    }
    group.crashes++;
    group.lastCrash = exit;
    const delay = restartDelayMs(group.crashes, this.opts.restartBackoffBaseMs, this.opts.restartBackoffMaxMs);
    group.restartAt = Date.now() + delay;
    this.opts.log.warn(
      `${name} ${exit.description} ${exit.duringRequest ? "during a request" : "while idle"} (${group.crashes} in a row): ` +
        (delay === 0 ? "restarted when next needed" : `restarted when next needed, not before ${delay} ms`),
    );
  }
}

/** No delay after one crash (a task killed it: run the retry at once); then base, 2·base, 4·base... capped. */
export function restartDelayMs(crashes: number, baseMs: number, maxMs: number): number {
  if (crashes <= 1) return 0;
  return Math.min(maxMs, baseMs * 2 ** (crashes - 2));
}

/**
 * What a warm process is started from: the command line, its env and folder, and the newest
 * mtime of the job's files (every file at the top of a folder job, the script of a single-file
 * job), so editing a module beside the entry script restarts the job too.
 */
async function signatureOf(job: JobDefinition): Promise<string> {
  const script = job.args[0] ?? job.command;
  const folderJob = path.basename(job.dir) === job.name;
  const files = folderJob
    ? await fs.readdir(job.dir).then(
        (names) => names.map((n) => path.join(job.dir, n)),
        () => [script],
      )
    : [script];
  const mtimes = await Promise.all(
    files.map((f) =>
      fs.stat(f).then(
        (s) => (s.isFile() ? s.mtimeMs : 0),
        () => 0,
      ),
    ),
  );
  return JSON.stringify([job.command, job.args, job.env, job.dir, Math.max(0, ...mtimes)]);
}
