import { USAGE_DAY_PATTERN, type AccountRecords, type UsageCounts } from "../accounts/account-records.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import type { Task, TaskStatus } from "../model/task-model.js";

/**
 * What a compare-and-set update expects to find. Every field given must match,
 * so a stale worker (whose lease moved on) cannot overwrite a task.
 */
export interface TaskGuard {
  status?: TaskStatus | readonly TaskStatus[];
  /** `null` means "no lease". */
  leaseOwner?: string | null;
  /** The attempt number the caller holds: guards against the same owner re-claiming a task. */
  tries?: number;
}

export type TaskPatch = Partial<Omit<Task, "id">>;

export interface TaskFilter {
  status?: TaskStatus;
  user?: string;
  job?: string;
  parentId?: string;
}

export interface TaskPage {
  items: Task[];
  /** Opaque; pass back to get the next page. `null` on the last page. */
  nextCursor: string | null;
}

export interface StolenCounts {
  in: Record<string, number>;
  out: Record<string, number>;
}

/** What reload needs of a non-final task: small, so a million fit in memory. */
export type ReloadEntry = Pick<Task, "id" | "priority" | "submitTime" | "availableAt" | "status" | "lease" | "offload">;

/**
 * The durable record of every task. Adapters: SQLite (embedded), MongoDB.
 * Every adapter passes `task-store.contract.ts` unchanged. Beside the tasks it keeps the
 * account records (API keys, per-user usage and active counts): see `account-records.ts`.
 */
export interface TaskStore extends AccountRecords {
  /** Inserts a new task; rejects when the id exists. Durable when it resolves. */
  create(task: Task): Promise<void>;
  /** Inserts many tasks at once (the bulk path); all or nothing where the store allows. */
  createMany(tasks: readonly Task[]): Promise<void>;
  get(id: string): Promise<Task | null>;
  /** Compare-and-set: applies `patch` only when the task matches `guard`. Returns the updated task, or null. */
  update(id: string, guard: TaskGuard, patch: TaskPatch): Promise<Task | null>;
  /**
   * One atomic step for a split: creates `children` and applies `parentPatch` to the
   * parent when it matches `guard`. Returns the updated parent, or null (nothing written).
   */
  split(parentId: string, guard: TaskGuard, parentPatch: TaskPatch, children: readonly Task[]): Promise<Task | null>;
  /** Atomically adds 1 to the parent's childrenCompleted when it is in `wait` and not yet at childrenTotal; returns the parent after, or null. */
  incrementChildrenCompleted(parentId: string): Promise<Task | null>;
  /** Extends the leases of `ids` held by `owner` in status work; returns the ids renewed. */
  renewLeases(owner: string, ids: readonly string[], expiresAt: number): Promise<string[]>;
  /** Tasks in `work` whose lease expired before `now`, oldest first. */
  expiredLeases(now: number, limit: number): Promise<Task[]>;
  /** Paged listing, newest first. */
  list(filter: TaskFilter, page: { limit: number; cursor?: string | null }): Promise<TaskPage>;
  /** Every non-final task, in batches, for the queuer's reload. */
  loadNonFinal(batchSize?: number): AsyncIterable<ReloadEntry[]>;
  /** Children of a parent, in the order they were created. */
  children(parentId: string): Promise<Task[]>;
  delete(id: string): Promise<boolean>;
  countByStatus(): Promise<Record<TaskStatus, number>>;
  /**
   * Top-level tasks that crossed sites: `in`, run here for another site (by origin site); `out`,
   * this site's own run elsewhere (by the site that ran them). For stats, not the hot path.
   */
  countStolen(localSite: string): Promise<StolenCounts>;
  close(): Promise<void>;
}

export function guardMatches(task: Pick<Task, "status" | "lease" | "tries">, guard: TaskGuard): boolean {
  if (guard.status !== undefined) {
    const allowed: readonly TaskStatus[] = typeof guard.status === "string" ? [guard.status] : guard.status;
    if (!allowed.includes(task.status)) return false;
  }
  if (guard.leaseOwner !== undefined && (task.lease?.owner ?? null) !== guard.leaseOwner) return false;
  if (guard.tries !== undefined && task.tries !== guard.tries) return false;
  return true;
}

/** The counters of a usage row, in one order for every adapter (a Record so the compiler refuses one missing here). */
const USAGE_COUNTER_PRESENT: Record<keyof UsageCounts, true> = {
  submitted: true, output: true, error: true, canceled: true, runMs: true, bytesIn: true, bytesOut: true, ranElsewhere: true,
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
