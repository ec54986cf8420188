import { ERROR_CODE } from "./errors.js";

/**
 * Errors that say "the other side is not reachable right now", not "the other side said no":
 * Moleculer's while a service restarts or the transporter reconnects, and a store that went away.
 */
const TRANSIENT_NAMES = new Set([
  "ServiceNotFoundError",
  "ServiceNotAvailableError",
  "RequestTimeoutError",
  "RequestSkippedError",
  "RequestRejectedError",
  "BrokerDisconnectedError",
  "QueueIsFullError",
]);

export function isTransient(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const { name, code } = err as { name?: unknown; code?: unknown };
  return (typeof name === "string" && TRANSIENT_NAMES.has(name)) || code === ERROR_CODE.StoreUnavailable;
}

export interface RetryOptions {
  /** Give up (rethrow) after this long. */
  maxMs: number;
  firstDelayMs?: number;
  maxDelayMs?: number;
  onRetry?: (err: unknown, attempt: number) => void;
}

/**
 * Calls `call` until it succeeds or fails with a non-transient error, waiting longer between
 * tries. Used for the reports a worker owes the queue: a result must survive a queuer restart.
 */
export async function retryTransient<T>(call: () => Promise<T>, opts: RetryOptions): Promise<T> {
  const deadline = Date.now() + opts.maxMs;
  let delay = opts.firstDelayMs ?? 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (!isTransient(err) || Date.now() + delay > deadline) throw err;
      opts.onRetry?.(err, attempt);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, opts.maxDelayMs ?? 2000);
    }
  }
}
