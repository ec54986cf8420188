import { USAGE_DAY_PATTERN, type AccountRecords, type UsageCounts } from "../accounts/account-records.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import type { LeaseClaim } from "../model/claims.js";
import type { ScheduleStore } from "../schedules/schedule-store.js";
import { STORE_STEPS, type StoreStep } from "../model/state-machine.js";
import type { CallbackDelivery, Lease, ProcessedBy, Task, TaskStatus } from "../model/task-model.js";

/** Where an attempt ran, as its record names it (AttemptRecord's site and node). */
export interface AttemptPlace {
  site: string | null;
  node: string | null;
}

/** The lease owner of a task lent to another site is `site:<thief>`. */
export const REMOTE_OWNER_PREFIX = "site:";

/** The most of an error's text an attempt's record keeps: its end, where scripts print the cause. */
export const ATTEMPT_ERROR_TAIL = 2000;

/** The last ATTEMPT_ERROR_TAIL characters of an attempt's error. */
export function errorTail(error: string | null): string | null {
  return error === null || error.length <= ATTEMPT_ERROR_TAIL ? error : error.slice(-ATTEMPT_ERROR_TAIL);
}

/** Who a claim is for, which decides whether it may be answered before it is durable. */
export interface ClaimOptions {
  /**
   * The runner lives in the store's own process, so a crash that loses the claim stops its run
   * too: the claim may be answered before its commit. A runner elsewhere (another process, another
   * site) would go on with an attempt the file never recorded while the restarted queue claims the
   * task again under the same attempt number: two runs writing the same output key, and a lease
   * guard (owner, tries) that cannot tell them apart. Absent: answered once durable.
   */
  sameProcess?: boolean;
}

/** A worker process's lease owner is `worker@<nodeID>` (services/worker.service.ts); its reports name the node alone. */
export const WORKER_OWNER_PREFIX = "worker@";

/**
 * Where an attempt ran: the worker's word when it reported one (processedBy), else what its lease
 * owner says: `site:<x>` ran at site x (a task lent to it), a local worker's owner ran here, on
 * its node (the node id, as in processedBy).
 */
export function attemptPlace(processedBy: ProcessedBy | null, leaseOwner: string | null, localSite: string | null): AttemptPlace {
  if (processedBy !== null) return { site: processedBy.site, node: processedBy.node };
  if (leaseOwner === null) return { site: null, node: null };
  if (leaseOwner.startsWith(REMOTE_OWNER_PREFIX)) return { site: leaseOwner.slice(REMOTE_OWNER_PREFIX.length), node: null };
  const node = leaseOwner.startsWith(WORKER_OWNER_PREFIX) ? leaseOwner.slice(WORKER_OWNER_PREFIX.length) : leaseOwner;
  return { site: localSite, node };
}

/** Why a store step wrote nothing. */
export type StepMiss = "missing" | "not-in-state" | "lease-lost";

/**
 * What a store step answers: the task after it, or why it missed and the row as it is now (read in
 * the same step), so the caller never reads again to learn why.
 */
export type StepResult = { ok: true; task: Task } | { ok: false; why: StepMiss; task: Task | null };

/** A cancel also says who held the lease it ended, so the holder can be told to stop. */
export type CancelResult = ({ ok: true; task: Task } | { ok: false; why: StepMiss; task: Task | null }) & {
  previousLeaseOwner: string | null;
};

/** What a successful attempt records. */
export interface SuccessRecord {
  output: string;
  processedBy: ProcessedBy;
}

/** What an ended attempt records: its error, and who ran it when known. */
export interface FailureRecord {
  error: string;
  processedBy: ProcessedBy | null;
  /** Where the attempt ran, for its record in `attempts` (attemptPlace). */
  ranAt: AttemptPlace;
  /** The attempt ended because its lease ran out (its holder went silent): recorded as `lease_lost`. */
  leaseLost?: boolean;
}

/** What a released attempt (stopped by a graceful shutdown, not counted as a try) records. */
export interface ReleaseRecord {
  reason: string;
  ranAt: AttemptPlace;
}

/** One row of a retry: the status it goes back to, and (for a parent) how many of its children are output. */
export interface RetryRow {
  id: string;
  status: "input" | "wait" | "complete";
  childrenCompleted: number;
}

/** What a retry answers: every row after it, or the first row whose guard missed (and nothing written). */
export type RetryResult = { ok: true; tasks: Task[] } | { ok: false; id: string; why: StepMiss; task: Task | null };

/** Finished top-level tasks, for retention and the bulk clean. */
export interface FinishedQuery {
  status: "output" | "error" | "canceled";
  /** Only tasks whose endTime is before this. */
  endedBefore: number;
  user?: string;
  job?: string;
  /** Leave out tasks of these jobs (they have windows of their own). */
  exceptJobs?: readonly string[];
}

/** A list's filters, each an exact match on a field that has an index in the list's order (newest first). */
export interface TaskFilter {
  status?: TaskStatus;
  user?: string;
  job?: string;
  /** The task's name, exactly (a prefix would read every match before the newest could be answered). */
  name?: string;
  parentId?: string;
}

export interface TaskPage {
  items: Task[];
  /** Opaque; pass back to get the next page. `null` on the last page. */
  nextCursor: string | null;
}

/** How many top-level tasks ended in one minute (its start, ms since the epoch, a multiple of 60 000), by final status. */
export interface MinuteCounts {
  minute: number;
  output: number;
  error: number;
  canceled: number;
}

export interface StolenCounts {
  in: Record<string, number>;
  out: Record<string, number>;
}

/** What reload needs of a non-final task: small, so a million fit in memory. */
export type ReloadEntry = Pick<
  Task,
  "id" | "priority" | "submitTime" | "availableAt" | "status" | "lease" | "offload" | "tries" | "maxTries"
>;

/**
 * The durable record of every task. Adapters: SQLite (embedded), MongoDB.
 * Every adapter passes `task-store.contract.ts` unchanged. Beside the tasks it keeps the
 * account records (API keys, per-user usage and active counts): see `account-records.ts`, and the
 * schedules: see `schedules/schedule-store.ts`.
 */
export interface TaskStore extends AccountRecords, ScheduleStore {
  /** Inserts a new task; rejects when the id exists. Durable when it resolves. */
  create(task: Task): Promise<void>;
  /** Inserts many tasks at once (the bulk path); all or nothing where the store allows. */
  createMany(tasks: readonly Task[]): Promise<void>;
  get(id: string): Promise<Task | null>;

  /*
   * The steps: one per edge of the state diagram (STORE_STEPS in model/state-machine.ts), each one
   * statement or one transaction with its guard inside. A miss answers why and the row as it is now.
   * Steps that hold a lease (succeed, requeue, giveUp, split, release) take the worker's claim: they guard on
   * `status = work AND lease owner = claim.owner AND tries = claim.tries`, and miss with
   * `lease-lost` when the task is in work under another owner or attempt.
   * Every step that ends an attempt (succeed, split, requeue, giveUp, release, cancel of a task in
   * work) appends its AttemptRecord to `attempts` in the same write, keeping the last
   * MAX_ATTEMPTS_KEPT: n = tries, start = startTime, end = now, error = errorTail of its error.
   */

  /**
   * input | complete → work, for every id still queued and unleased: tries + 1, the lease, startTime
   * = now. Answers the tasks it leased (in no particular order); the queue then emits nothing.
   * Durable when it resolves, unless `opts.sameProcess` lets a store that groups its commits answer
   * before the commit.
   */
  claim(ids: readonly string[], lease: Lease, now: number, opts?: ClaimOptions): Promise<Task[]>;
  /**
   * work → output. Sets output, processedBy, endTime = now, duration = now − startTime; clears the
   * lease and error. The queue then emits task:done (and moves the parent on: childSucceeded).
   */
  succeed(claim: LeaseClaim, result: SuccessRecord, now: number): Promise<StepResult>;
  /**
   * work → input (a plain task) or work → complete (a parent whose merge failed: children_total > 0),
   * while tries < maxTries: error, availableAt, processedBy when given; clears the lease. A task with no
   * try left misses with `not-in-state` (the row shows it held by the claim): give it up instead.
   * The queue then re-indexes the task and wakes idle workers when its backoff ends.
   */
  requeue(claim: LeaseClaim, failure: FailureRecord, availableAt: number, now: number): Promise<StepResult>;
  /**
   * work → input (a plain task) or work → complete (a merge): the attempt was stopped by a graceful
   * shutdown and does not count, so tries − 1; availableAt = now; clears the lease. Its attempt is
   * recorded as `released`. The queue then re-indexes the task.
   */
  release(claim: LeaseClaim, release: ReleaseRecord, now: number): Promise<StepResult>;
  /**
   * error | canceled → input | wait | complete, for every row in one transaction, each guarded: tries
   * = 0, error, endTime, duration and progress cleared, availableAt = now, childrenCompleted as
   * given; attempts kept. A row whose guard misses writes nothing of the whole retry and is answered.
   */
  retry(rows: readonly RetryRow[], now: number): Promise<RetryResult>;
  /** work → error: error, processedBy when given, endTime, duration. The queue emits task:done and fails the parent. */
  giveUp(claim: LeaseClaim, failure: FailureRecord, now: number): Promise<StepResult>;
  /**
   * work → wait, and the children inserted, in one transaction: processedBy, children = childIds,
   * childrenTotal, childrenCompleted = 0; clears the lease. `makeChildren` builds the children (with
   * those ids) from the parent as the step left it; when it throws, nothing is written and the error
   * goes to the caller. The queue then indexes the children and emits task:queued.
   */
  split(
    claim: LeaseClaim,
    processedBy: ProcessedBy,
    childIds: readonly string[],
    makeChildren: (parent: Task) => readonly Task[],
    now: number,
  ): Promise<StepResult>;
  /**
   * wait: childrenCompleted + 1 while below childrenTotal; the statement that reaches childrenTotal
   * also moves the parent to complete with availableAt = now. The queue then indexes it, task:queued.
   */
  childSucceeded(parentId: string, now: number): Promise<StepResult>;
  /** wait: childrenCompleted = `completed` (reload's recount); at childrenTotal the parent moves to complete, availableAt = now. */
  recountChildren(parentId: string, completed: number, now: number): Promise<StepResult>;
  /** wait → error: error, endTime = now. The queue emits task:done and cancels the other descendants. */
  failParent(parentId: string, error: string, now: number): Promise<StepResult>;
  /**
   * wait → output for a workflow whose final step is output: output = that step's output key,
   * childrenCompleted = childrenTotal, endTime = now, error cleared. The queue emits task:done.
   */
  finishWorkflow(workflowId: string, output: string, now: number): Promise<StepResult>;
  /**
   * input | work | wait | complete → canceled: error = reason, endTime = now, duration when it had
   * started; clears the lease and answers who held it. A task in work records its attempt as
   * `canceled`, placed by its lease owner (attemptPlace with `localSite`, the queue's site; without
   * it a local worker's attempt names no site). The queue emits
   * task:canceled (when leased) and task:done.
   */
  cancel(id: string, reason: string, now: number, localSite?: string): Promise<CancelResult>;
  /**
   * work (stays work): the latest progress the running attempt's script reported (0..1) and its
   * message, guarded by the claim as the steps that hold a lease are. A stale attempt's report
   * misses (`lease-lost`). claim clears both for the next attempt.
   */
  progress(claim: LeaseClaim, progress: number, message: string | null): Promise<StepResult>;
  /** Extends the leases of `ids` held by `owner` in status work; returns the ids renewed. */
  renew(owner: string, ids: readonly string[], expiresAt: number): Promise<string[]>;
  /** Tasks in `work` whose lease expired before `now`, oldest first. */
  expired(now: number, limit: number): Promise<Task[]>;
  /** Paged listing, newest first. */
  list(filter: TaskFilter, page: { limit: number; cursor?: string | null }): Promise<TaskPage>;
  /** Every non-final task, in batches, for the queuer's reload. */
  loadNonFinal(batchSize?: number): AsyncIterable<ReloadEntry[]>;
  /** Children of a parent, in the order they were created. */
  children(parentId: string): Promise<Task[]>;
  delete(id: string): Promise<boolean>;
  /** Top-level tasks in a final status that ended before `query.endedBefore`, oldest end first, at most `limit`. */
  finished(query: FinishedQuery, limit: number): Promise<Task[]>;
  /**
   * Removes a task in a final status with all its descendants, in one step; answers the ids
   * removed (none when the task is missing or not final, so a task retried meanwhile stays).
   */
  deleteFinishedTree(id: string): Promise<string[]>;
  countByStatus(): Promise<Record<TaskStatus, number>>;
  /**
   * Top-level tasks that ended (output, error, canceled) at or after `since`, counted per minute of
   * their endTime, oldest minute first; minutes with none are left out. A range of the final-end
   * index per status, never a scan of the table: for the dashboard's throughput chart.
   */
  finishedPerMinute(since: number): Promise<MinuteCounts[]>;
  /**
   * Top-level tasks that crossed sites: `in`, run here for another site (by origin site); `out`,
   * this site's own run elsewhere (by the site that ran them). For stats, not the hot path.
   */
  countStolen(localSite: string): Promise<StolenCounts>;
  /**
   * Writes how the webhook delivery of a task's end went (`callback`), guarded: only on a task in a
   * final status (not a state change: no edge of the diagram). Answers the record after, or null
   * when the task is gone or not final.
   */
  recordCallback(id: string, delivery: CallbackDelivery): Promise<Task | null>;
  /**
   * Top-level tasks in a final status with a callbackUrl whose delivery is not over (callback
   * pending, or not begun: null, or last tried before the task's end: a retried task that ended
   * again), oldest end first, at most `limit`: what a queuer resumes at start.
   */
  pendingCallbacks(limit: number): Promise<Task[]>;
  close(): Promise<void>;
}

/**
 * Why `step` missed, judged from the row as it is now: gone, in a status the step does not start
 * from, in work under another owner or attempt, or else (its status fits but a further condition of
 * the step failed: no try left, every child already counted) not in the state the step needs.
 */
export function stepMiss(step: StoreStep, task: Task | null, claim?: LeaseClaim): StepMiss {
  if (task === null) return "missing";
  if (!(STORE_STEPS[step].from as readonly TaskStatus[]).includes(task.status)) return "not-in-state";
  if (claim !== undefined && (task.lease?.owner !== claim.owner || task.tries !== claim.tries)) return "lease-lost";
  return "not-in-state";
}

/** The answer of a step that wrote `after` (its row, or undefined when the guard missed). */
export function stepResult(step: StoreStep, after: Task | null, readNow: () => Task | null, claim?: LeaseClaim): StepResult {
  if (after !== null) return { ok: true, task: after };
  const task = readNow();
  return { ok: false, why: stepMiss(step, task, claim), task };
}

/** A minute's length: finishedPerMinute's buckets. */
export const MINUTE_MS = 60_000;

/** The per-minute rows of finishedPerMinute from per-status counts of (status, minute start), oldest minute first. */
export function minuteCountsOf(rows: readonly { status: string; minute: number; count: number }[]): MinuteCounts[] {
  const byMinute = new Map<number, MinuteCounts>();
  for (const { status, minute, count } of rows) {
    if (status !== "output" && status !== "error" && status !== "canceled") continue;
    const bucket = byMinute.get(minute) ?? { minute, output: 0, error: 0, canceled: 0 };
    bucket[status] += count;
    byMinute.set(minute, bucket);
  }
  return [...byMinute.values()].sort((a, b) => a.minute - b.minute);
}

/** The counters of a usage row, in one order for every adapter (a Record so the compiler refuses one missing here). */
const USAGE_COUNTER_PRESENT: Record<keyof UsageCounts, true> = {
  submitted: true,
  output: true,
  error: true,
  canceled: true,
  runMs: true,
  bytesIn: true,
  bytesOut: true,
  ranElsewhere: true,
};
export const USAGE_COUNTERS = Object.freeze(Object.keys(USAGE_COUNTER_PRESENT) as (keyof UsageCounts)[]);

/** Refuses a usage day not written `YYYY-MM-DD` (USAGE_DAY_PATTERN). */
export function requireUsageDay(day: string, field: string): void {
  if (typeof day !== "string" || !USAGE_DAY_PATTERN.test(day)) {
    throw docqError(ERROR_CODE.BadRequest, `${field} must be a day as YYYY-MM-DD, got ${JSON.stringify(day)}`, { field });
  }
}

/** `delta` with every counter present (0 where not given); refuses a counter that is not a safe integer. */
export function usageDelta(delta: Partial<UsageCounts>): UsageCounts {
  const counts = {} as UsageCounts;
  for (const counter of USAGE_COUNTERS) {
    const value = delta[counter] ?? 0;
    if (!Number.isSafeInteger(value)) {
      throw docqError(ERROR_CODE.BadRequest, `usage ${counter} must be an integer, got ${String(value)}`, { field: counter });
    }
    counts[counter] = value;
  }
  return counts;
}
