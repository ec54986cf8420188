import { EventEmitter } from "node:events";
import { usageDay, type ApiKeyLimits, type UsageCounts } from "../accounts/account-records.js";
import { docqError, ERROR_CODE, errorMessage } from "../model/errors.js";
import { newTask, newTaskId, type NewTaskSpec } from "./new-task.js";
import { PriorityIndex } from "./priority-index.js";
import { CANCELABLE } from "../model/state-machine.js";
import { TASK_STATUS as S, QUEUED_STATUSES, isFinal, toQueueEntry, type ProcessedBy, type QueueEntry, type Task, type TaskStatus } from "../model/task-model.js";
import type { TaskStore } from "../store/task-store.js";

export interface TaskQueueOptions {
  store: TaskStore;
  /** This site: only its own tasks are lent to other sites. */
  site: string;
  leaseMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /**
   * True when the workers live and die with this process (embedded mode): a task found in `work`
   * at start-up was then held by a process that is gone, so it is requeued at once instead of
   * after its lease runs out.
   */
  requeueWorkOnReload: boolean;
  /** How deep splits may nest: a split whose children would be deeper fails. */
  maxSplitDepth: number;
  now?: () => number;
}

/** A child as a splitting attempt describes it: its input already stored under `input`. */
export interface ChildSpec {
  input: string;
  params?: Record<string, unknown>;
}

/** The typed events of the queue, `noun:verb`. */
export interface TaskQueueEvents {
  /** Work became available (a submit, a retry whose backoff elapsed, a requeue). */
  "task:queued": [];
  /** A task was canceled while leased: its holder must stop running it. */
  "task:canceled": [{ id: string; leaseOwner: string }];
  /** A task reached a final status. */
  "task:done": [Task];
  /** A pull found nothing ready: `idleSlots` slots asked in vain (the stealer's cue). */
  "queue:empty": [{ idleSlots: number }];
  /** A usage figure could not be written (the store failed): for the log. */
  "usage:lost": [{ user: string; delta: Partial<UsageCounts>; error: string }];
}

/** The limits of the submitting key that a submit checks (maxPriority is checked by the caller). */
export type SubmitQuota = Pick<ApiKeyLimits, "maxQueued" | "maxPerDay" | "maxBytesPerDay">;

/** A user over maxQueued may retry once some of their tasks finish. */
const QUEUED_RETRY_AFTER_S = 10;

function secondsToNextDay(now: number): number {
  const day = 86_400_000;
  return Math.max(1, Math.ceil((Math.floor(now / day) * day + day - now) / 1000));
}

/** The lease owner of a task lent to another site. */
export function remoteOwner(site: string): string {
  return `site:${site}`;
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
  /** Parents waiting for children whose count was checked against the children's records. */
  waiting: number;
  ms: number;
}

/** What a cancel did: the task after, and every task it canceled (itself and its descendants). */
export interface CancelReport {
  task: Task;
  canceledIds: string[];
}

/** Exponential backoff after the `tries`-th failed attempt: base, 2·base, 4·base, ..., capped. */
export function retryDelayMs(tries: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, tries - 1));
}

/** Whether `task`'s recorded result came from this very attempt (same try, same node). */
function sameAttempt(task: Task, claim: LeaseClaim, processedBy: ProcessedBy): boolean {
  return task.tries === claim.attempt && task.processedBy?.node === processedBy.node;
}

function splitBy(task: Task, claim: LeaseClaim, processedBy: ProcessedBy): boolean {
  return task.childrenTotal > 0 && task.status !== S.work && sameAttempt(task, claim, processedBy);
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
  /** Per user, the end of their last quota-checked submit: the next one waits for it. */
  private readonly userSteps = new Map<string, Promise<void>>();

  constructor(opts: TaskQueueOptions) {
    super();
    this.store = opts.store;
    this.opts = { now: Date.now, ...opts };
  }

  /** Rebuilds the index from the store. Call once, before serving. */
  async reload(): Promise<ReloadReport> {
    const started = performance.now();
    const now = this.opts.now();
    const report: ReloadReport = { queued: 0, working: 0, requeued: 0, waiting: 0, ms: 0 };
    const orphans: string[] = [];
    const waiting: string[] = [];
    const working: { id: string; owner: string }[] = [];
    for await (const batch of this.store.loadNonFinal()) {
      for (const entry of batch) {
        if (QUEUED_STATUSES.has(entry.status)) {
          this.index.add(toQueueEntry(entry), now);
          report.queued++;
        } else if (entry.status === S.work) {
          if (this.opts.requeueWorkOnReload) orphans.push(entry.id);
          else if (entry.lease !== null) working.push({ id: entry.id, owner: entry.lease.owner });
        } else if (entry.status === S.wait) {
          waiting.push(entry.id);
        }
      }
    }
    for (const id of orphans) {
      const task = await this.store.get(id);
      if (task === null || task.status !== S.work) continue;
      const requeued = await this.failAttempt(task, "the process running it stopped (docq restarted)", true);
      if (requeued) report.requeued++;
    }
    // Workers outlive a queuer restart: give each a full lease to re-attach with its next heartbeat,
    // instead of sweeping leases that lapsed only because nobody could renew them meanwhile.
    const byOwner = new Map<string, string[]>();
    for (const { id, owner } of working) {
      const ids = byOwner.get(owner);
      if (ids === undefined) byOwner.set(owner, [id]);
      else ids.push(id);
    }
    for (const [owner, ids] of byOwner) report.working += (await this.store.renewLeases(owner, ids, now + this.opts.leaseMs)).length;
    // A crash between a child's completion and its parent's count leaves the count behind: recount.
    for (const id of waiting) {
      await this.reconcileParent(id);
      report.waiting++;
    }
    report.ms = Math.round(performance.now() - started);
    this.scheduleWake();
    return report;
  }

  stop(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
  }

  /**
   * Stores a new task and queues it. Durable when it resolves. With a `quota`, its limits are
   * checked and the task inserted as one step per user (QUOTA_EXCEEDED when one is reached), so
   * concurrent submissions of a user can never overshoot them.
   */
  async submit(spec: NewTaskSpec, opts: { quota?: SubmitQuota; inputBytes?: number } = {}): Promise<Task> {
    const { quota } = opts;
    const limited = quota !== undefined && (quota.maxQueued !== undefined || quota.maxPerDay !== undefined || quota.maxBytesPerDay !== undefined);
    if (!limited) return this.insert(spec, opts.inputBytes ?? 0);
    return this.perUser(spec.user, async () => {
      await this.checkQuota(spec.user, quota, opts.inputBytes ?? 0);
      return this.insert(spec, opts.inputBytes ?? 0);
    });
  }

  private async insert(spec: NewTaskSpec, inputBytes: number): Promise<Task> {
    const task = newTask(spec, this.opts.now());
    await this.store.create(task);
    this.index.add(toQueueEntry(task), task.submitTime);
    this.emit("task:queued");
    if (task.parentId === null) await this.recordUsage(task.user, task.submitTime, { submitted: 1, bytesIn: inputBytes });
    return task;
  }

  /** Runs `step` after every earlier step of the same user has finished. */
  private perUser<T>(user: string, step: () => Promise<T>): Promise<T> {
    const before = this.userSteps.get(user) ?? Promise.resolve();
    const result = before.then(step);
    const done = result.then(
      () => undefined,
      () => undefined,
    );
    this.userSteps.set(user, done);
    void done.then(() => {
      if (this.userSteps.get(user) === done) this.userSteps.delete(user);
    });
    return result;
  }

  private async checkQuota(user: string, quota: SubmitQuota, inputBytes: number): Promise<void> {
    const now = this.opts.now();
    if (quota.maxQueued !== undefined) {
      const active = await this.store.countActive(user);
      if (active >= quota.maxQueued) {
        throw docqError(ERROR_CODE.QuotaExceeded, `maxQueued: ${user} has ${active} tasks not yet finished, the most their key allows (${quota.maxQueued})`, {
          field: "maxQueued",
          details: { retryAfter: QUEUED_RETRY_AFTER_S, limit: "maxQueued" },
        });
      }
    }
    if (quota.maxPerDay === undefined && quota.maxBytesPerDay === undefined) return;
    const today = usageDay(now);
    const [usage] = await this.store.usage({ user, from: today, to: today });
    const untilTomorrow = secondsToNextDay(now);
    if (quota.maxPerDay !== undefined && (usage?.submitted ?? 0) >= quota.maxPerDay) {
      throw docqError(ERROR_CODE.QuotaExceeded, `maxPerDay: ${user} submitted ${usage?.submitted ?? 0} tasks today (UTC), the most their key allows (${quota.maxPerDay})`, {
        field: "maxPerDay",
        details: { retryAfter: untilTomorrow, limit: "maxPerDay" },
      });
    }
    if (quota.maxBytesPerDay !== undefined && (usage?.bytesIn ?? 0) + inputBytes > quota.maxBytesPerDay) {
      throw docqError(
        ERROR_CODE.QuotaExceeded,
        `maxBytesPerDay: ${user} submitted ${usage?.bytesIn ?? 0} bytes today (UTC); ${inputBytes} more would pass their key's limit of ${quota.maxBytesPerDay}`,
        { field: "maxBytesPerDay", details: { retryAfter: untilTomorrow, limit: "maxBytesPerDay" } },
      );
    }
  }

  /** Adds to a user's usage of the day of `at`; a failure costs a usage figure, never a task. */
  async recordUsage(user: string, at: number, delta: Partial<UsageCounts>): Promise<void> {
    try {
      await this.store.addUsage(user, usageDay(at), delta);
    } catch (err) {
      this.emit("usage:lost", { user, delta, error: errorMessage(err) });
    }
  }

  /** Usage of a task that ended here, its own site's: run time of every task, outcomes of submitted ones. */
  private async recordEnd(task: Task): Promise<void> {
    if (task.site !== this.opts.site) return;
    const delta: Partial<UsageCounts> = {};
    if (task.duration !== null && task.status !== S.canceled) delta.runMs = task.duration;
    if (task.parentId === null) {
      if (task.status === S.output || task.status === S.error || task.status === S.canceled) delta[task.status] = 1;
      if (task.status === S.output && task.processedBy !== null && task.processedBy.site !== this.opts.site) delta.ranElsewhere = 1;
    }
    if (Object.keys(delta).length > 0) await this.recordUsage(task.user, task.endTime ?? this.opts.now(), delta);
  }

  /** A task reached a final status: said, and counted in its user's usage. */
  private async ended(task: Task): Promise<void> {
    this.emit("task:done", task);
    await this.recordEnd(task);
  }

  /**
   * Leases up to `max` of the best queued tasks to `owner`. Each claim is a compare-and-set from
   * the status the task was queued in, so a task canceled meanwhile is skipped, never run.
   */
  async pull(owner: string, max: number): Promise<Task[]> {
    const leased = await this.claim(owner, this.index.take(max, this.opts.now()));
    if (leased.length < max && this.index.peek(this.opts.now()) === undefined) this.emit("queue:empty", { idleSlots: max - leased.length });
    return leased;
  }

  /**
   * Leases up to `max` of this site's best plain queued tasks at or above `minPriority` to another
   * site (lease owner `site:<thief>`, renewed by its heartbeats): the victim side of stealing.
   * Highest priority first, as for local workers, so priority order holds across sites.
   */
  async lend(thiefSite: string, max: number, minPriority: number): Promise<Task[]> {
    const ownPrefix = `${this.opts.site}-`;
    const entries = this.index.take(max, this.opts.now(), (e) => e.lendable && e.priority >= minPriority && e.id.startsWith(ownPrefix));
    return this.claim(remoteOwner(thiefSite), entries);
  }

  /** One compare-and-set per entry from the status it was queued in: a task canceled meanwhile is skipped. */
  private async claim(owner: string, entries: readonly QueueEntry[]): Promise<Task[]> {
    const now = this.opts.now();
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
    if (done === null) {
      // A retried report whose first try got through (its answer was lost on the way back) is accepted again.
      const after = await this.store.get(claim.id);
      return after !== null && after.status === S.output && after.output === result.output && sameAttempt(after, claim, result.processedBy);
    }
    await this.ended(done);
    if (done.parentId !== null) await this.childSucceeded(done.parentId);
    return true;
  }

  /**
   * A worker's split: the parent waits, its children are queued, each inheriting user, name, job,
   * priority and maxTries. One store transaction, so the children exist exactly when the parent
   * waits for them. False when the claim is stale.
   */
  async split(claim: LeaseClaim, children: readonly ChildSpec[], processedBy: ProcessedBy): Promise<boolean> {
    const parent = await this.store.get(claim.id);
    if (parent === null) return false;
    if (!this.holds(parent, claim)) return splitBy(parent, claim, processedBy);
    const depth = parent.depth + 1;
    if (depth > this.opts.maxSplitDepth) {
      const why = `split refused: the children would be at depth ${depth}, deeper than queue.maxSplitDepth (${this.opts.maxSplitDepth})`;
      return this.failAttempt(parent, why, false, processedBy);
    }
    const now = this.opts.now();
    const kids = children.map((child) =>
      newTask(
        {
          id: newTaskId(parent.site),
          site: parent.site,
          user: parent.user,
          name: parent.name,
          job: parent.job,
          params: child.params ?? parent.params,
          priority: parent.priority,
          maxTries: parent.maxTries,
          input: child.input,
          parentId: parent.id,
          depth,
          offload: parent.offload,
        },
        now,
      ),
    );
    const waiting = await this.store.split(
      parent.id,
      { status: S.work, leaseOwner: claim.owner, tries: claim.attempt },
      { status: S.wait, lease: null, processedBy, children: kids.map((k) => k.id), childrenTotal: kids.length, childrenCompleted: 0 },
      kids,
    );
    if (waiting === null) {
      // As for complete: a retried split that already went through is accepted, not split twice.
      const after = await this.store.get(claim.id);
      return after !== null && splitBy(after, claim, processedBy);
    }
    for (const kid of kids) this.index.add(toQueueEntry(kid), now);
    this.emit("task:queued");
    return true;
  }

  /** The output keys of a parent's children, in order: the inputs of its merge. */
  async mergeInputs(id: string): Promise<string[]> {
    const children = await this.store.children(id);
    const parent = await this.store.get(id);
    const missing = parent === null ? [] : parent.children.filter((childId) => !children.some((c) => c.id === childId));
    if (parent !== null && (missing.length > 0 || children.length !== parent.childrenTotal)) {
      // A merge of fewer parts than the split made would be a wrong output: the parent fails for good.
      const why = `cannot merge ${id}: ${children.length} of its ${parent.childrenTotal} parts exist (missing: ${missing.join(", ") || "?"})`;
      if (parent.status === S.work) await this.failAttempt(parent, why, false);
      throw docqError(ERROR_CODE.TaskNotInState, why, { details: { status: parent.status } });
    }
    return children.map((child) => {
      if (child.status !== S.output || child.output === null) {
        throw docqError(ERROR_CODE.TaskNotInState, `cannot merge ${id}: child ${child.id} is ${child.status}, not output`, { details: { status: child.status } });
      }
      return child.output;
    });
  }

  /**
   * A worker's failure: requeued after a backoff while tries remain, else `error`. `retryable: false`
   * (a bad request the script can never satisfy) ends it at once. False when the claim is stale.
   */
  async fail(claim: LeaseClaim, error: string, opts: { retryable: boolean; processedBy?: ProcessedBy }): Promise<boolean> {
    const task = await this.store.get(claim.id);
    if (task === null || !this.holds(task, claim)) return false;
    return this.failAttempt(task, error, opts.retryable, opts.processedBy);
  }

  private holds(task: Task, claim: LeaseClaim): boolean {
    return task.status === S.work && task.lease?.owner === claim.owner && task.tries === claim.attempt;
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
   * Cancels a non-final task and all its descendants: `canceled`, out of the index, holders told
   * to stop. A canceled child fails its waiting parent. Throws TASK_NOT_IN_STATE when already final.
   */
  async cancel(id: string): Promise<CancelReport> {
    const task = await this.cancelOne(id, "canceled");
    if (task === null) {
      const now = await this.store.get(id);
      if (now === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
      throw docqError(ERROR_CODE.TaskNotInState, `task ${id} is already ${now.status}`, { details: { status: now.status } });
    }
    const canceledIds = [id, ...(await this.cancelDescendants(id))];
    if (task.parentId !== null) await this.failParent(task.parentId, `child ${id} was canceled`);
    return { task, canceledIds };
  }

  /**
   * Deletes the record of a final task and of all its descendants; answers the ids deleted.
   * Throws TASK_NOT_IN_STATE for a task that is not over (cancel it first).
   */
  async remove(id: string): Promise<string[]> {
    const task = await this.store.get(id);
    if (task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
    if (!isFinal(task.status)) throw docqError(ERROR_CODE.TaskNotInState, `task ${id} is ${task.status}: cancel it before deleting it`, { details: { status: task.status } });
    // A child's output is a part of its parent's merge: while the parent lives, the part must stay.
    if (task.parentId !== null) {
      const parent = await this.store.get(task.parentId);
      if (parent !== null && !isFinal(parent.status)) {
        throw docqError(
          ERROR_CODE.TaskNotInState,
          `task ${id} is a part of task ${parent.id}, which is ${parent.status}: its output is needed for the merge; delete (or cancel) the parent instead`,
          { details: { status: task.status, parentId: parent.id, parentStatus: parent.status } },
        );
      }
    }
    const removed: string[] = [];
    const removeTree = async (taskId: string): Promise<void> => {
      for (const child of await this.store.children(taskId)) {
        if (!isFinal(child.status)) await this.cancelOne(child.id, `parent ${id} deleted`);
        await removeTree(child.id);
      }
      this.index.remove(taskId);
      if (await this.store.delete(taskId)) removed.push(taskId);
    };
    await removeTree(id);
    return removed;
  }

  /** Cancels one task if it is not final; answers it after, or null when it already was final or missing. */
  private async cancelOne(id: string, reason: string): Promise<Task | null> {
    for (;;) {
      const task = await this.store.get(id);
      if (task === null || isFinal(task.status)) return null;
      const now = this.opts.now();
      const canceled = await this.store.update(
        id,
        { status: CANCELABLE, leaseOwner: task.lease?.owner ?? null },
        { status: S.canceled, lease: null, endTime: now, duration: task.startTime === null ? null : now - task.startTime, error: reason },
      );
      // The task moved on between the read and the write (a worker finished it): look again.
      if (canceled === null) continue;
      this.index.remove(id);
      if (task.lease !== null) this.emit("task:canceled", { id, leaseOwner: task.lease.owner });
      await this.ended(canceled);
      return canceled;
    }
  }

  /** Cancels every non-final descendant of `id`; answers their ids. */
  private async cancelDescendants(id: string): Promise<string[]> {
    const canceled: string[] = [];
    for (const child of await this.store.children(id)) {
      if ((await this.cancelOne(child.id, `parent ${id} ended`)) !== null) canceled.push(child.id);
      canceled.push(...(await this.cancelDescendants(child.id)));
    }
    return canceled;
  }

  private async childSucceeded(parentId: string): Promise<void> {
    const parent = await this.store.incrementChildrenCompleted(parentId);
    if (parent !== null && parent.childrenCompleted >= parent.childrenTotal) await this.queueMerge(parent);
  }

  /** All children are output: the parent is queued for its merge. */
  private async queueMerge(parent: Task): Promise<void> {
    const now = this.opts.now();
    const complete = await this.store.update(parent.id, { status: S.wait }, { status: S.complete, childrenCompleted: parent.childrenTotal, availableAt: now });
    if (complete === null) return;
    this.index.add(toQueueEntry(complete), now);
    this.emit("task:queued");
  }

  /** A child ended without output: its waiting parent fails and its other descendants are canceled. */
  private async failParent(parentId: string, reason: string): Promise<void> {
    const now = this.opts.now();
    const parent = await this.store.update(parentId, { status: S.wait }, { status: S.error, error: reason, endTime: now });
    if (parent === null) return;
    await this.ended(parent);
    await this.cancelDescendants(parentId);
    if (parent.parentId !== null) await this.failParent(parent.parentId, `child ${parentId} failed: ${reason}`);
  }

  /** Brings a waiting parent's count in line with its children's records, and moves it on if they are all over. */
  private async reconcileParent(id: string): Promise<void> {
    const parent = await this.store.get(id);
    if (parent === null || parent.status !== S.wait) return;
    const children = await this.store.children(id);
    const failed = children.find((c) => c.status === S.error || c.status === S.canceled);
    if (failed !== undefined) {
      await this.failParent(id, `child ${failed.id} ended ${failed.status}: ${failed.error ?? ""}`);
      return;
    }
    if (children.length < parent.childrenTotal) {
      // A part whose record is gone can never complete: waiting for it would wait forever.
      await this.failParent(id, `${parent.childrenTotal - children.length} of its ${parent.childrenTotal} parts are missing`);
      return;
    }
    const done = children.filter((c) => c.status === S.output).length;
    if (done === parent.childrenTotal) {
      await this.queueMerge(parent);
    } else if (done !== parent.childrenCompleted) {
      await this.store.update(id, { status: S.wait }, { childrenCompleted: done });
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
      if (ended === null) return false;
      await this.ended(ended);
      if (ended.parentId !== null) await this.failParent(ended.parentId, `child ${ended.id} failed: ${error}`);
      return true;
    }
    // A parent whose merge failed retries the merge: its children are done and must not run again.
    const requeueTo: TaskStatus = task.childrenTotal > 0 ? S.complete : S.input;
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
