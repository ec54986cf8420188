import { EventEmitter } from "node:events";
import { docqError, ERROR_CODE } from "./errors.js";
import { newTask, type NewTaskSpec } from "./new-task.js";
import { PriorityIndex } from "./priority-index.js";
import { CANCELABLE } from "./state-machine.js";
import { TASK_STATUS as S, QUEUED_STATUSES, isFinal, toQueueEntry, type ProcessedBy, type Task, type TaskStatus } from "./task-model.js";
import type { TaskStore } from "./task-store.js";

export interface TaskQueueOptions {
  store: TaskStore;
  leaseMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /**
   * True when the workers live and die with this process (embedded mode): a task found in `work`
   * at start-up was then held by a process that is gone, so it is requeued at once instead of
   * after its lease runs out.
   */
  requeueWorkOnReload: boolean;
  now?: () => number;
}

/** The typed events of the queue, `noun:verb`. */
export interface TaskQueueEvents {
  /** Work became available (a submit, a retry whose backoff elapsed, a requeue). */
  "task:queued": [];
  /** A task was canceled while leased: its holder must stop running it. */
  "task:canceled": [{ id: string; leaseOwner: string }];
  /** A task reached a final status. */
  "task:done": [Task];
}

/** What a completing or failing worker proves it holds: the lease owner and the attempt number. */
export interface LeaseClaim {
  id: string;
  owner: string;
  attempt: number;
}

export interface ReloadReport {
  queued: number;
  working: number;
  requeued: number;
  ms: number;
}

/** Exponential backoff after the `tries`-th failed attempt: base, 2·base, 4·base, ..., capped. */
export function retryDelayMs(tries: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, tries - 1));
}

/**
 * A site's queue: the durable task store plus the in-memory priority index over its queued tasks.
 * Every transition is written to the store with a compare-and-set before the index or any caller
 * sees it, so a crash at any point leaves the store right and a reload rebuilds the index.
 */
export class TaskQueue extends EventEmitter<TaskQueueEvents> {
  readonly index = new PriorityIndex();
  private readonly store: TaskStore;
  private readonly opts: Required<Omit<TaskQueueOptions, "store">>;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeAt = Infinity;

  constructor(opts: TaskQueueOptions) {
    super();
    this.store = opts.store;
    this.opts = { now: Date.now, ...opts };
  }

  /** Rebuilds the index from the store. Call once, before serving. */
  async reload(): Promise<ReloadReport> {
    const started = performance.now();
    const now = this.opts.now();
    const report: ReloadReport = { queued: 0, working: 0, requeued: 0, ms: 0 };
    const orphans: string[] = [];
    for await (const batch of this.store.loadNonFinal()) {
      for (const entry of batch) {
        if (QUEUED_STATUSES.has(entry.status)) {
          this.index.add(toQueueEntry(entry), now);
          report.queued++;
        } else if (entry.status === S.work) {
          if (this.opts.requeueWorkOnReload) orphans.push(entry.id);
          else report.working++;
        }
      }
    }
    for (const id of orphans) {
      const task = await this.store.get(id);
      if (task === null || task.status !== S.work) continue;
      const requeued = await this.failAttempt(task, "the process running it stopped (docq restarted)", true);
      if (requeued) report.requeued++;
    }
    report.ms = Math.round(performance.now() - started);
    this.scheduleWake();
    return report;
  }

  stop(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
  }

  /** Stores a new task and queues it. Durable when it resolves. */
  async submit(spec: NewTaskSpec): Promise<Task> {
    const task = newTask(spec, this.opts.now());
    await this.store.create(task);
    this.index.add(toQueueEntry(task), task.submitTime);
    this.emit("task:queued");
    return task;
  }

  /**
   * Leases up to `max` of the best queued tasks to `owner`. Each claim is a compare-and-set from
   * the status the task was queued in, so a task canceled meanwhile is skipped, never run.
   */
  async pull(owner: string, max: number): Promise<Task[]> {
    const now = this.opts.now();
    const entries = this.index.take(max, now);
    const leased: Task[] = [];
    for (const entry of entries) {
      const task = await this.store.get(entry.id);
      if (task === null || !QUEUED_STATUSES.has(task.status)) continue;
      const claimed = await this.store.update(
        task.id,
        { status: task.status, tries: task.tries, leaseOwner: null },
        { status: S.work, tries: task.tries + 1, lease: { owner, expiresAt: now + this.opts.leaseMs }, startTime: now, endTime: null, duration: null },
      );
      if (claimed !== null) leased.push(claimed);
    }
    return leased;
  }

  /** Renews `owner`'s leases; answers the ids it no longer holds (requeued or canceled), which it must stop. */
  async heartbeat(owner: string, ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const renewed = new Set(await this.store.renewLeases(owner, ids, this.opts.now() + this.opts.leaseMs));
    return ids.filter((id) => !renewed.has(id));
  }

  /** A worker's success. False when the claim is stale (lease expired and moved on, or canceled). */
  async complete(claim: LeaseClaim, result: { output: string; processedBy: ProcessedBy }): Promise<boolean> {
    const now = this.opts.now();
    const task = await this.store.get(claim.id);
    if (task === null) return false;
    const done = await this.store.update(
      claim.id,
      { status: S.work, leaseOwner: claim.owner, tries: claim.attempt },
      { status: S.output, output: result.output, processedBy: result.processedBy, lease: null, error: null, endTime: now, duration: now - (task.startTime ?? now) },
    );
    if (done === null) return false;
    this.emit("task:done", done);
    return true;
  }

  /**
   * A worker's failure: requeued after a backoff while tries remain, else `error`. `retryable: false`
   * (a bad request the script can never satisfy) ends it at once. False when the claim is stale.
   */
  async fail(claim: LeaseClaim, error: string, opts: { retryable: boolean; processedBy?: ProcessedBy }): Promise<boolean> {
    const task = await this.store.get(claim.id);
    if (task === null || task.status !== S.work || task.lease?.owner !== claim.owner || task.tries !== claim.attempt) return false;
    return this.failAttempt(task, error, opts.retryable, opts.processedBy);
  }

  /** Requeues tasks whose holder stopped heartbeating; each such attempt counts as a try. */
  async sweepExpiredLeases(): Promise<number> {
    let swept = 0;
    for (;;) {
      const expired = await this.store.expiredLeases(this.opts.now(), 500);
      for (const task of expired) {
        const owner = task.lease?.owner ?? "?";
        if (await this.failAttempt(task, `lease expired: ${owner} stopped renewing it for ${this.opts.leaseMs} ms`, true)) swept++;
      }
      if (expired.length < 500) return swept;
    }
  }

  /**
   * Cancels a non-final task: `canceled`, out of the index, its holder told to stop.
   * Answers the task after, or throws TASK_NOT_IN_STATE when it is already final.
   */
  async cancel(id: string): Promise<Task> {
    for (;;) {
      const task = await this.store.get(id);
      if (task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
      if (isFinal(task.status)) {
        throw docqError(ERROR_CODE.TaskNotInState, `task ${id} is already ${task.status}`, { details: { status: task.status } });
      }
      const now = this.opts.now();
      const canceled = await this.store.update(
        id,
        { status: CANCELABLE, leaseOwner: task.lease?.owner ?? null },
        { status: S.canceled, lease: null, endTime: now, duration: task.startTime === null ? null : now - task.startTime, error: "canceled" },
      );
      // The task moved on between the read and the write (a worker finished it): look again.
      if (canceled === null) continue;
      this.index.remove(id);
      if (task.lease !== null) this.emit("task:canceled", { id, leaseOwner: task.lease.owner });
      this.emit("task:done", canceled);
      return canceled;
    }
  }

  /** Counts of the queue in memory, cheap enough for every stats call. */
  queueCounts(): { ready: number; delayed: number; highestPriority: number | null } {
    return this.index.counts(this.opts.now());
  }

  private async failAttempt(task: Task, error: string, retryable: boolean, processedBy?: ProcessedBy): Promise<boolean> {
    const now = this.opts.now();
    const guard = { status: S.work, leaseOwner: task.lease?.owner ?? null, tries: task.tries };
    const common = { lease: null, error, ...(processedBy === undefined ? {} : { processedBy }) };
    if (!retryable || task.tries >= task.maxTries) {
      const ended = await this.store.update(task.id, guard, { ...common, status: S.error, endTime: now, duration: now - (task.startTime ?? now) });
      if (ended !== null) this.emit("task:done", ended);
      return ended !== null;
    }
    const requeueTo: TaskStatus = S.input;
    const availableAt = now + retryDelayMs(task.tries, this.opts.backoffBaseMs, this.opts.backoffMaxMs);
    const requeued = await this.store.update(task.id, guard, { ...common, status: requeueTo, availableAt });
    if (requeued === null) return false;
    this.index.add(toQueueEntry(requeued), now);
    this.scheduleWake();
    return true;
  }

  /** Announces work again when the earliest backoff elapses, so idle workers need not poll. */
  private scheduleWake(): void {
    const next = this.index.nextAvailableAt(this.opts.now());
    if (next === null || next >= this.wakeAt) return;
    clearTimeout(this.wakeTimer);
    this.wakeAt = next;
    this.wakeTimer = setTimeout(() => {
      this.wakeAt = Infinity;
      this.wakeTimer = undefined;
      this.emit("task:queued");
      this.scheduleWake();
    }, Math.max(0, next - this.opts.now()));
  }
}
