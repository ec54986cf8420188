import { setTimeout as sleep } from "node:timers/promises";
import { errorMessage } from "../../model/errors.js";

/**
 * The one-active-queuer-per-site rule. A queuer serves only while it holds its site's lock; the
 * lock lives where the task store is (a file beside the SQLite store, an advisory lock in
 * PostgreSQL, a lease document in MongoDB), so queuers on other machines can stand by for it.
 */
export interface HeldQueuerLock {
  /**
   * Aborted when this process can no longer be sure it holds the lock (its lock connection
   * dropped, its lease lapsed or was taken): another queuer may hold it now, so the holder must
   * stop acting as the queuer at once. Its reason says what happened.
   */
  readonly lost: AbortSignal;
  /** Gives the lock up (idempotent); a standby may take it at its next poll. */
  release(): Promise<void>;
}

export interface QueuerLockAdapter {
  /** Where the lock is, for the logs (never a password). */
  readonly where: string;
  /** The lock, or null while another live queuer holds it. Throws when the lock's home cannot be reached. */
  tryAcquire(): Promise<HeldQueuerLock | null>;
  /** Closes what a standby kept open between tries (a held lock is released by its own release). */
  close(): Promise<void>;
}

export interface AcquireOptions {
  pollMs: number;
  signal?: AbortSignal;
  /** Said once, when the lock is found held by another queuer: this one stands by. */
  onWait?: () => void;
  /** Said when a try failed (the store unreachable): the poll goes on. Said once per run of failures. */
  onUnreachable?: (err: unknown) => void;
}

/**
 * Polls until the lock is free (its holder died, stopped or lost it), then holds it. A lock home
 * that cannot be reached (PostgreSQL restarting) is not an error here: the standby keeps polling.
 */
export async function acquireQueuerLock(adapter: QueuerLockAdapter, opts: AcquireOptions): Promise<HeldQueuerLock> {
  let toldWaiting = false;
  let toldUnreachable = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const lock = await adapter.tryAcquire();
      if (lock !== null) {
        if (opts.signal?.aborted === true) {
          await lock.release();
          opts.signal.throwIfAborted();
        }
        return lock;
      }
      toldUnreachable = false;
      if (!toldWaiting) {
        opts.onWait?.();
        toldWaiting = true;
      }
    } catch (err) {
      if (!toldUnreachable) {
        opts.onUnreachable?.(err);
        toldUnreachable = true;
      }
    }
    await sleep(opts.pollMs, undefined, opts.signal === undefined ? {} : { signal: opts.signal }).catch(() => undefined);
  }
}

/** How often a standby polls a lock so that it takes over well within leaseMs of the holder dying. */
export function lockPollMs(leaseMs: number): number {
  return Math.max(50, Math.min(500, Math.floor(leaseMs / 4)));
}

/** The reason a lost lock is aborted with: an Error naming what happened. */
export function lockLost(why: string, cause?: unknown): Error {
  return new Error(cause === undefined ? why : `${why}: ${errorMessage(cause)}`);
}
