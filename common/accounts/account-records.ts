/*
 * API keys and per-user usage: the records every TaskStore keeps beside its tasks, so a site can
 * check a caller's quota and bill from what ran. The adapters (SQLite, MongoDB) implement them
 * under the TaskStore interface; `task-store.contract.ts` holds both to the same behaviour.
 */

export interface ApiKeyLimits {
  maxPriority?: number;
  maxQueued?: number;
  maxPerDay?: number;
  maxBytesPerDay?: number;
  /** false: this user's tasks are never lent to another site */
  offload: boolean;
}

export interface ApiKeyRecord {
  id: string;
  user: string;
  /** sha256 hex of the secret key; the key itself is never stored */
  hash: string;
  limits: ApiKeyLimits;
  createdAt: number;
  revokedAt: number | null;
}

export interface UsageCounts {
  submitted: number;
  output: number;
  error: number;
  canceled: number;
  runMs: number;
  bytesIn: number;
  bytesOut: number;
  ranElsewhere: number;
}

export interface UsageRow extends UsageCounts {
  user: string;
  /** YYYY-MM-DD, UTC */
  day: string;
}

/** Frozen: spread it (`{ ...ZERO_USAGE }`) for a row to add to. */
export const ZERO_USAGE: UsageCounts = Object.freeze({
  submitted: 0,
  output: 0,
  error: 0,
  canceled: 0,
  runMs: 0,
  bytesIn: 0,
  bytesOut: 0,
  ranElsewhere: 0,
});

/** The records kept beside the tasks: API keys and usage to bill from. */
export interface AccountRecords {
  /** Inserts a key; rejects (TASK_EXISTS-like DocqError with code BAD_REQUEST is fine, or a clear error) when the id or hash exists. */
  createKey(key: ApiKeyRecord): Promise<void>;
  /** Every key, revoked ones included, oldest first. */
  listKeys(): Promise<ApiKeyRecord[]>;
  /** Sets revokedAt (keeps the first one when already revoked); answers the key after, or null when there is no such id. */
  revokeKey(id: string, now: number): Promise<ApiKeyRecord | null>;
  /** Adds `delta` to the user's row of `day` (created at zero when missing), atomically (one upsert statement). */
  addUsage(user: string, day: string, delta: Partial<UsageCounts>): Promise<void>;
  /** Rows of days from..to inclusive (YYYY-MM-DD), of `user` or of every user, ordered by day then user. */
  usage(query: { user?: string; from: string; to: string }): Promise<UsageRow[]>;
  /**
   * Top-level tasks (parentId null) of `user` that are not final: what maxQueued limits. Must not scan all tasks
   * (SQLite: a trigger-kept counter table like status_counts; Mongo: an index-backed count).
   */
  countActive(user: string): Promise<number>;
}

/** A usage day: `YYYY-MM-DD` (UTC). Stores compare days as text, which only this form keeps in date order. */
export const USAGE_DAY_PATTERN = /^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$/;

/** The usage day (UTC) of a moment. */
export function usageDay(at: number): string {
  return new Date(at).toISOString().slice(0, 10);
}
