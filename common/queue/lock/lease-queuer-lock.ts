import { lockLost, type HeldQueuerLock, type QueuerLockAdapter } from "./queuer-lock.js";

/**
 * The queuer lock as a lease record where the store has no session-bound lock (MongoDB): the
 * holder renews it, a standby takes it once it lapses. Expiry is reckoned by the store's clock
 * (the adapter's `records`), so machines' clocks need not agree.
 */
export interface LeaseRecords {
  /** Takes the lease for `owner` if it has lapsed, was never taken, or is already `owner`'s; true when taken. */
  take(owner: string, leaseMs: number): Promise<boolean>;
  /** Extends `owner`'s lease by leaseMs from now; false when the lease is no longer `owner`'s. */
  renew(owner: string, leaseMs: number): Promise<boolean>;
  /** Lets the lease lapse at once if `owner` holds it. */
  release(owner: string): Promise<void>;
  /** Closes the connection to the store. */
  close(): Promise<void>;
}

export interface LeaseQueuerLockOptions {
  records: LeaseRecords;
  /** Unique to this process (and this run of it). */
  owner: string;
  leaseMs: number;
  where: string;
  /** The local clock (tests). */
  now?: () => number;
}

/**
 * Timing, from leaseMs (L): the holder renews every L/4. A renewal is sent at local time t and
 * the store sets the lease to end L after it applies it, so the lease surely runs to t + L. The
 * holder counts itself the holder only until t + 2L/3 of its last confirmed renewal: when renewals
 * fail (store unreachable) it stops serving L/3 before any standby can take the lease. A renewal
 * answering that the lease is another's stops it at once. A standby takes over at most L after
 * the holder's last renewal, so within L of the holder dying.
 */
export function leaseQueuerLock(opts: LeaseQueuerLockOptions): QueuerLockAdapter {
  const now = opts.now ?? Date.now;
  return {
    where: opts.where,
    async tryAcquire() {
      const sentAt = now();
      if (!(await opts.records.take(opts.owner, opts.leaseMs))) return null;
      return new HeldLease(opts, sentAt, now);
    },
    close: () => opts.records.close(),
  };
}

class HeldLease implements HeldQueuerLock {
  private readonly loss = new AbortController();
  private readonly renewTimer: NodeJS.Timeout;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  private released = false;

  constructor(
    private readonly opts: LeaseQueuerLockOptions,
    confirmedAt: number,
    private readonly now: () => number,
  ) {
    this.confirmed(confirmedAt);
    this.renewTimer = setInterval(() => void this.renew(), Math.max(10, Math.floor(opts.leaseMs / 4)));
    this.renewTimer.unref();
  }

  get lost(): AbortSignal {
    return this.loss.signal;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stopTimers();
    if (this.loss.signal.aborted) return;
    await this.opts.records.release(this.opts.owner).catch(() => undefined);
  }

  private confirmed(sentAt: number): void {
    clearTimeout(this.deadlineTimer);
    const validForMs = Math.max(0, sentAt + Math.floor((this.opts.leaseMs * 2) / 3) - this.now());
    this.deadlineTimer = setTimeout(
      () =>
        this.lose(
          lockLost(`the queuer lease was not renewed for ${Math.floor((this.opts.leaseMs * 2) / 3)} ms (the store did not answer)`),
        ),
      validForMs,
    );
    this.deadlineTimer.unref();
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.released || this.loss.signal.aborted) return;
    this.renewing = true;
    const sentAt = this.now();
    try {
      const ours = await this.opts.records.renew(this.opts.owner, this.opts.leaseMs);
      if (this.released || this.loss.signal.aborted) return;
      if (ours) this.confirmed(sentAt);
      else this.lose(lockLost("the queuer lease was taken by another queuer"));
    } catch {
      // The deadline timer decides: the next renewal may still get through in time.
    } finally {
      this.renewing = false;
    }
  }

  private lose(reason: Error): void {
    if (this.released || this.loss.signal.aborted) return;
    this.stopTimers();
    this.loss.abort(reason);
  }

  private stopTimers(): void {
    clearInterval(this.renewTimer);
    clearTimeout(this.deadlineTimer);
  }
}
