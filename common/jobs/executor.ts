import type { JobDefinition } from "./job-registry.js";
import { runJob, type InlineJobRequest, type JobAnswer, type JobRequest } from "./job-runner.js";
import type { ScriptLauncher } from "./launch/script-launcher.js";
import type { ProgressReport } from "./script-answer.js";
import { Spawner } from "./launch/spawner.js";
import type { StopSignal } from "./stop-signal.js";

/*
 * How a worker runs one attempt of a job: a one-shot script per task (OneShotExecutor), or a
 * request to a warm process (WarmPool, job.yaml `warm: true`). Both answer alike and fail alike
 * (launch/job-process.mjs words how a run ended), so the worker never asks which one ran.
 */

export interface JobRunOptions {
  /** The attempt's work dir: the answered paths must be files inside it. */
  workDir: string;
  /** Aborted when the task is canceled, its lease is lost or the worker stops: the run is killed. */
  signal?: StopSignal;
  /** Called with each progress line the script prints while it runs (`{"progress": 0.4, "message": ...}`). */
  onProgress?: (report: ProgressReport) => void;
  /** This run's time limit in place of the job's (a workflow step's `timeoutMs`). */
  timeoutMs?: number;
  /** Called once the script has answered or ended, before its answer is checked: its slot may take the next task. */
  onScriptOver?: () => void;
}

export interface JobExecutor {
  /**
   * Runs `job` once on `request` and answers what the script answered, its paths checked; throws a
   * JobFailedError saying how the run ended when it failed, timed out or was stopped.
   */
  run(job: JobDefinition, request: JobRequest, opts: JobRunOptions): Promise<JobAnswer>;
  /**
   * Runs `job` once on an inline request (its document inside, no work dir) and answers the
   * output's bytes, or a split's parts' bytes; fails as run() does. Only an executor of warm processes has it.
   */
  runInline?(job: JobDefinition, request: InlineJobRequest, opts: Omit<JobRunOptions, "workDir">): Promise<InlineJobAnswer>;
}

/** What an inline request answered: the output's bytes or its parts' (a split), and the stderr printed meanwhile. */
export type InlineJobAnswer =
  | { kind: "output"; output: Buffer; stderrTail: string }
  | { kind: "children"; children: { input: Buffer; params?: Record<string, unknown> }[]; stderrTail: string };

/**
 * Starts one script per run: from this process, or through spawner processes (`useSpawner`), which
 * keep forks off a large process (each fork copies the forking process's page tables).
 */
export class OneShotExecutor implements JobExecutor {
  /** Taken in turn; empty when scripts start from this process. */
  private readonly spawners: Spawner[];
  private nextSpawner = 0;

  constructor(opts: { useSpawner: boolean; slots: number }) {
    // Two helpers fork in parallel (one fork at a time each); more buys nothing on a 2-core machine.
    this.spawners = opts.useSpawner ? Array.from({ length: Math.min(opts.slots, 2) }, () => new Spawner()) : [];
  }

  run(job: JobDefinition, request: JobRequest, opts: JobRunOptions): Promise<JobAnswer> {
    const launcher: ScriptLauncher | undefined =
      this.spawners.length === 0 ? undefined : this.spawners[this.nextSpawner++ % this.spawners.length];
    return runJob(job, request, { ...opts, ...(launcher === undefined ? {} : { launcher }) });
  }

  /** Stops the spawner processes; each kills the scripts it still runs. */
  async stop(): Promise<void> {
    await Promise.all(this.spawners.map((s) => s.stop()));
  }
}

/** The executor of `job`: its warm processes when job.yaml says `warm: true`, else a one-shot run. */
export function executorFor(job: JobDefinition, executors: { oneShot: JobExecutor; warm: JobExecutor }): JobExecutor {
  return job.warm ? executors.warm : executors.oneShot;
}
