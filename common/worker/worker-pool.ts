import os from "node:os";
import type { BlobStore } from "../blobs/blob-store.js";
import { executorFor, OneShotExecutor } from "../jobs/executor.js";
import type { JobRegistry } from "../jobs/job-registry.js";
import { WarmPool, type WarmPoolOptions, type WarmProcessInfo } from "../jobs/warm-pool.js";
import { RunStop } from "../jobs/stop-signal.js";
import type { LeaseClaim, PulledTask } from "../model/claims.js";
import { errorMessage } from "../model/errors.js";
import type { ProcessedBy } from "../model/task-model.js";
import type { WorkerQueue } from "../queue/queue-client.js";
import { ProgressThrottle } from "./progress-throttle.js";
import { WorkDirPool } from "./work-dir-pool.js";
import { runLeasedTask, type AttemptReport, type LeasedRun, type TaskRunContext } from "./task-run.js";

export interface WorkerLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface WorkerPoolOptions {
  /** Lease owner name: unique per worker process in the site. */
  owner: string;
  processedBy: ProcessedBy;
  slots: number;
  /** Most tasks asked for in one pull; 0 = as many as there are free slots. */
  batchSize: number;
  heartbeatMs: number;
  /** A pull now and then even without a wake-up, in case a "task queued" event was lost. */
  pollMs: number;
  client: WorkerQueue;
  blobs: BlobStore;
  registry: JobRegistry;
  /** Where per-run temp dirs go; the OS temp dir by default. */
  workRoot?: string;
  log: WorkerLog;
  /** Settings of the warm job processes (restart backoff, exit grace, idle time...); defaults in WARM_POOL_DEFAULTS. */
  warm?: Partial<Omit<WarmPoolOptions, "log" | "workRoot">>;
  /**
   * Start one-shot scripts through a small spawner process rather than forking this one: worth it
   * when this process is large (a worker with a broker, SQLite and HTTP). Default false.
   */
  useSpawner?: boolean;
}

interface Running {
  claim: LeaseClaim;
  abort: RunStop;
  /** Why the run was stopped from outside; a stopped run reports nothing (its lease is gone). */
  stopped: "canceled" | "lease lost" | "shutdown" | null;
  /** True until its script is over: storing the output and reporting happen outside the slot. */
  holdsSlot: boolean;
  /** Its script's progress reports on their way to the queue, throttled. */
  progress: ProgressThrottle;
}

/**
 * A worker's execution slots: pulls tasks when a slot is free (or when woken), hands each to
 * runLeasedTask (task-run.ts: its script in its own work dir, kept emptied for a later run; its output stored) and reports the
 * result to the queue under its lease, which it keeps alive with heartbeats.
 *
 * A task holds its slot while its script runs (input download included); storing the output and
 * reporting the result come after, outside the slot, so the next script starts meanwhile. At most
 * `slots` tasks are storing their output at once; those past it wait only for the queue's answer.
 * For a warm job this doubles the rate: storing an output costs about as much as the script.
 */
export class WorkerPool {
  private readonly opts: WorkerPoolOptions;
  private readonly running = new Map<string, Running>();
  /** Tasks holding a slot: pulled and not yet past their script. */
  private inSlot = 0;
  /**
   * Runs whose output is stored and whose report waits for the queue's answer (a store may hold
   * it a few milliseconds to commit it with others': group-commit.ts).
   */
  private reporting = 0;
  private pulling = false;
  /** A wake-up is due at the end of this turn (wakeSoon). */
  private wakeQueued = false;
  private pullAgain = false;
  private stopping = false;
  /** Stopping gracefully (drain): tasks pulled meanwhile are released rather than left to lapse. */
  private draining = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly finished = new Set<Promise<void>>();
  /** The processes of warm jobs (job.yaml `warm: true`), at most one per slot per job. */
  private readonly warm: WarmPool;
  private readonly oneShot: OneShotExecutor;
  private readonly taskRun: TaskRunContext;
  /** Work dirs kept between runs (emptied), removed when the pool stops. */
  private readonly workDirs: WorkDirPool;

  constructor(opts: WorkerPoolOptions) {
    this.opts = opts;
    // Resolved once: os.tmpdir() reads the environment at each call.
    const workRoot = opts.workRoot ?? os.tmpdir();
    this.warm = new WarmPool({ ...opts.warm, log: opts.log, workRoot });
    this.oneShot = new OneShotExecutor({ useSpawner: opts.useSpawner === true, slots: opts.slots });
    const executors = { oneShot: this.oneShot, warm: this.warm };
    // A run holds its dir until its output is stored: at most 2 × slots at once.
    this.workDirs = new WorkDirPool({ root: workRoot, keep: 2 * opts.slots });
    this.taskRun = {
      registry: opts.registry,
      blobs: opts.blobs,
      workRoot,
      workDirs: this.workDirs,
      executorOf: (job) => executorFor(job, executors),
    };
  }

  /** Slots in use: tasks whose script runs (or is about to). */
  get busy(): number {
    return this.inSlot;
  }

  /** Leases held: tasks pulled and not yet over here (a run's output is stored and reported after its slot frees). */
  get held(): number {
    return this.running.size;
  }

  start(): void {
    // Stopped before the queuer ever showed up: nothing to start.
    if (this.stopping) return;
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.opts.heartbeatMs);
    this.pollTimer = setInterval(() => this.wake(), this.opts.pollMs);
    this.wake();
  }

  /** The warm job processes alive now. */
  warmProcesses(): WarmProcessInfo[] {
    return this.warm.processes();
  }

  /** Stops pulling and kills running scripts and warm processes; their leases lapse and the queue runs them again. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.pollTimer);
    for (const run of this.running.values()) this.stopRun(run, "shutdown");
    const warmStopped = this.warm.stop();
    await Promise.allSettled([...this.finished]);
    await this.workDirs.close();
    await warmStopped;
    await this.oneShot.stop();
  }

  /**
   * Graceful stop: pulls no more; the running tasks get `graceMs` to finish and report (less if
   * `hurry` is aborted: a second signal); the scripts still running then are killed, their process
   * groups with them, and their tasks released: queued again at once without counting the try.
   * Leases stay renewed until then. The warm processes stop last. Answers how many tasks ran to their
   * end and how many were released.
   */
  async drain(graceMs: number, hurry?: AbortSignal): Promise<{ finished: number; released: number }> {
    this.stopping = true;
    this.draining = true;
    clearInterval(this.pollTimer);
    const running = this.running.size;
    if (running > 0) {
      this.opts.log.info(`stopping: waiting up to ${graceMs} ms for ${running} running task(s) to finish`);
      await settledWithin([...this.finished], graceMs, hurry);
    }
    // Only scripts still running are stopped: a run past its script is storing its output or
    // reporting, and finishing that costs less than running it again.
    const left = [...this.running.values()].filter((run) => run.holdsSlot);
    for (const run of left) this.stopRun(run, "shutdown");
    // Killed first, released after: the task must not run elsewhere while its script still runs here.
    await Promise.allSettled([...this.finished]);
    const released = await this.release(
      left.map((run) => run.claim),
      `still running when its worker stopped (after shutdownGraceMs ${graceMs} ms): queued again, the try not counted`,
    );
    if (left.length > 0) this.opts.log.info(`stopping: ${released} of ${left.length} task(s) still running were released`);
    clearInterval(this.heartbeatTimer);
    await this.workDirs.close();
    await this.warm.stop();
    await this.oneShot.stop();
    return { finished: running - left.length, released };
  }

  /** Hands leased tasks back to the queue without counting their try; answers how many it took (a failure is logged: that lease lapses instead). */
  private async release(claims: readonly LeaseClaim[], reason: string): Promise<number> {
    const answers = await Promise.all(
      claims.map((claim) =>
        this.opts.client.release(claim, reason).catch((err: unknown) => {
          this.opts.log.warn(`could not release ${claim.id} (its lease lapses and the queue runs it again): ${errorMessage(err)}`);
          return false;
        }),
      ),
    );
    return answers.filter(Boolean).length;
  }

  /** Called on "task queued": pulls at once if a slot is free. */
  wake(): void {
    if (this.stopping) return;
    if (this.pulling) {
      this.pullAgain = true;
      return;
    }
    // A run waiting for the queue's answer to its report holds a lease and nothing else: it does not count.
    const free = Math.min(this.opts.slots - this.inSlot, 2 * this.opts.slots - (this.running.size - this.reporting));
    if (free <= 0) return;
    const max = this.opts.batchSize > 0 ? Math.min(this.opts.batchSize, free) : free;
    this.pulling = true;
    this.pullAgain = false;
    this.opts.client.pull(this.opts.owner, max).then(
      (tasks) => {
        this.pulling = false;
        // Stopped meanwhile: a graceful stop hands them back at once; a hard one leaves them leased, the lease lapses and the queue runs them elsewhere.
        if (this.stopping) {
          if (this.draining)
            void this.release(
              tasks.map((task) => ({ id: task.id, owner: this.opts.owner, tries: task.tries })),
              "pulled as its worker was stopping: queued again, the try not counted",
            );
          return;
        }
        for (const task of tasks) this.start1(task);
        if (this.pullAgain || tasks.length === max) this.wake();
      },
      (err: unknown) => {
        this.pulling = false;
        this.opts.log.warn(`pull failed, retrying on the next wake-up: ${errorMessage(err)}`);
      },
    );
  }

  /** Stops a running task that was canceled; answers whether it ran here. */
  cancel(id: string): boolean {
    const run = this.running.get(id);
    if (run === undefined) return false;
    this.stopRun(run, "canceled");
    return true;
  }

  private start1(task: PulledTask): void {
    const claim = { id: task.id, owner: this.opts.owner, tries: task.tries };
    // Fire and forget: a report that fails is superseded by the next one (or by the end of the run).
    const progress = new ProgressThrottle((r) => void this.opts.client.progress(claim, r.progress, r.message).catch(() => false));
    const run: Running = { claim, abort: new RunStop(), stopped: null, holdsSlot: true, progress };
    this.running.set(task.id, run);
    this.inSlot++;
    const leased: LeasedRun = {
      task,
      tries: task.tries,
      signal: run.abort,
      stoppedFor: () => run.stopped,
      scriptOver: () => this.freeSlot(run),
      report: (report) => this.report(run, report),
      progress: (report) => run.progress.offer(report),
    };
    const done = runLeasedTask(leased, this.taskRun).finally(() => {
      this.freeSlot(run);
      this.running.delete(task.id);
      this.finished.delete(done);
      this.wake();
    });
    this.finished.add(done);
  }

  /** The script of `run` is over: its slot takes the next task while this one is stored and reported. */
  private freeSlot(run: Running): void {
    if (!run.holdsSlot) return;
    run.holdsSlot = false;
    // The script said its last: that goes before the result is reported.
    run.progress.flush();
    run.progress.stop();
    this.inSlot--;
    this.wakeSoon();
  }

  /**
   * Wakes once the current turn's callbacks are over: slots freed by answers read together (a warm
   * process answering several requests in one write) are filled by one pull, one claim for all.
   */
  private wakeSoon(): void {
    if (this.wakeQueued) return;
    this.wakeQueued = true;
    process.nextTick(() => {
      this.wakeQueued = false;
      this.wake();
    });
  }

  private stopRun(run: Running, why: NonNullable<Running["stopped"]>): void {
    run.stopped ??= why;
    run.progress.stop();
    run.abort.abort();
  }

  /** Tells the queue how the attempt of `run` went; answers whether the queue took it (a failure it was not told is logged). */
  private async report(run: Running, report: AttemptReport): Promise<boolean> {
    this.reporting++;
    // Its slot's next task may start meanwhile.
    this.wakeSoon();
    try {
      return await this.reportToQueue(run, report);
    } finally {
      this.reporting--;
    }
  }

  private async reportToQueue(run: Running, report: AttemptReport): Promise<boolean> {
    const { client, processedBy, log } = this.opts;
    switch (report.kind) {
      case "output":
        return client.succeed(run.claim, { output: report.output, processedBy });
      case "split":
        return client.split(run.claim, report.children, processedBy);
      case "failed":
        return client.fail(run.claim, report.error, { retryable: report.retryable, processedBy }).catch((err: unknown) => {
          // The lease will lapse and the queue retries the task: nothing is lost, only delayed.
          log.warn(`could not report the failure of ${run.claim.id}: ${errorMessage(err)}`);
          return false;
        });
      case "released":
        return client.release(run.claim, report.reason).catch((err: unknown) => {
          log.warn(`could not release ${run.claim.id} (its lease lapses and the queue runs it again): ${errorMessage(err)}`);
          return false;
        });
    }
  }

  private async heartbeat(): Promise<void> {
    const ids = [...this.running.keys()];
    try {
      const lost = await this.opts.client.heartbeat(this.opts.owner, ids, { slots: this.opts.slots, busy: this.inSlot });
      for (const id of lost) {
        const run = this.running.get(id);
        // Past its script, a run's lease may have ended with its own report while the heartbeat was on
        // its way (taken, not lost): the report is answered taken or refused, and that decides.
        if (run === undefined || !run.holdsSlot) continue;
        this.opts.log.warn(`lease of ${id} lost (requeued or canceled): stopping its script`);
        this.stopRun(run, "lease lost");
      }
    } catch (err) {
      this.opts.log.warn(`heartbeat failed, will retry: ${errorMessage(err)}`);
    }
  }
}

/** Resolves when every one of `promises` has settled, after `ms`, or when `hurry` is aborted, whichever comes first. */
async function settledWithin(promises: readonly Promise<unknown>[], ms: number, hurry?: AbortSignal): Promise<void> {
  if (hurry?.aborted === true) return;
  let timer: NodeJS.Timeout | undefined;
  let onHurry: (() => void) | undefined;
  try {
    await Promise.race([
      Promise.allSettled(promises),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms);
        onHurry = resolve;
        hurry?.addEventListener("abort", onHurry, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onHurry !== undefined) hurry?.removeEventListener("abort", onHurry);
  }
}
