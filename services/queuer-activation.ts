import { setTimeout as sleep } from "node:timers/promises";
import type { LoggerInstance } from "moleculer";
import { errorMessage } from "../common/model/errors.js";
import { acquireQueuerLock, lockPollMs, type HeldQueuerLock, type QueuerLockAdapter } from "../common/queue/lock/queuer-lock.js";

/** Starts serving the site's queue (store, queue, queuer service); answers the function that stops it all. */
export type ServeQueue = () => Promise<() => Promise<void>>;

export interface QueuerActivationOptions {
  site: string;
  lock: QueuerLockAdapter;
  leaseMs: number;
  log: LoggerInstance;
  serve: ServeQueue;
  /** Said each time this process starts serving (a cluster queuer announces itself). */
  onServing?: (serving: AbortSignal) => void;
}

export interface QueuerActivation {
  /** Resolves when this process first serves the queue; rejects when that first start fails. */
  readonly ready: Promise<void>;
  /** Stops serving (or standing by) and gives the lock up. */
  stop(): Promise<void>;
}

/**
 * The life of a queuer process: stand by until it holds the site's queuer lock, then serve the
 * queue. If the lock is lost (its connection to PostgreSQL dropped, its MongoDB lease lapsed or
 * taken), another queuer may hold it now: this one stops serving at once, lets go of the store,
 * and stands by again; when it gets the lock back it reloads the queue from the store, as a
 * queuer taking over does. So a restart of PostgreSQL needs no human: the site serves again once
 * the server is back.
 */
export function runQueuerActivation(opts: QueuerActivationOptions): QueuerActivation {
  const { log, lock } = opts;
  const stopping = new AbortController();
  const pollMs = lockPollMs(opts.leaseMs);
  let firstServed: (() => void) | undefined;
  let firstFailed: ((err: unknown) => void) | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    firstServed = resolve;
    firstFailed = reject;
  });
  // Settled by the loop's current turn: stop waits for it to have let go.
  let current: { held: HeldQueuerLock; stopServing: (() => Promise<void>) | null } | null = null;

  const letGo = async (): Promise<void> => {
    const turn = current;
    current = null;
    if (turn === null) return;
    if (turn.stopServing !== null)
      await turn.stopServing().catch((err: unknown) => log.warn(`stopping the queue left an error: ${errorMessage(err)}`));
    await turn.held.release().catch((err: unknown) => log.warn(`releasing the queuer lock failed: ${errorMessage(err)}`));
  };

  const loop = (async () => {
    let first = true;
    while (!stopping.signal.aborted) {
      const standingSince = Date.now();
      let stoodBy = false;
      let held: HeldQueuerLock;
      try {
        held = await acquireQueuerLock(lock, {
          pollMs,
          signal: stopping.signal,
          onWait: () => {
            stoodBy = true;
            log.warn(
              `another queuer of site "${opts.site}" holds the queuer lock ${lock.where}: standing by, and taking over the queue when it stops`,
            );
          },
          onUnreachable: (err) => {
            stoodBy = true;
            log.warn(
              `the queuer lock (${lock.where}) cannot be reached: standing by, trying again every ${pollMs} ms: ${errorMessage(err)}`,
            );
          },
        });
      } catch {
        return; // stopping
      }
      const lockedAt = Date.now();
      current = { held, stopServing: null };
      try {
        const turn = current;
        turn.stopServing = await opts.serve();
        if (stopping.signal.aborted || current !== turn) return;
      } catch (err) {
        await letGo();
        if (first) {
          firstFailed?.(err);
          return;
        }
        log.error(`the queuer got the lock but cannot serve: ${errorMessage(err)}; standing by again`);
        await sleep(pollMs);
        continue;
      }
      const servedAt = Date.now();
      if (stoodBy)
        log.warn(
          `took over as the active queuer of site "${opts.site}" after ${servedAt - standingSince} ms standing by ` +
            `(lock ${lock.where}; serving ${servedAt - lockedAt} ms after it got the lock, the queue reloaded)`,
        );
      else log.info(`active queuer of site "${opts.site}" (lock ${lock.where})`);
      const serving = new AbortController();
      opts.onServing?.(serving.signal);
      if (first) {
        first = false;
        firstServed?.();
      }
      // Serve until the lock is lost or the site stops.
      await new Promise<void>((resolve) => {
        if (held.lost.aborted || stopping.signal.aborted) return resolve();
        held.lost.addEventListener("abort", () => resolve(), { once: true });
        stopping.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      serving.abort();
      if (stopping.signal.aborted) return;
      log.error(
        `lost the queuer lock of site "${opts.site}" (${errorMessage(held.lost.reason)}): ` +
          "another queuer may hold it now, so this one stops serving at once and stands by",
      );
      await letGo();
    }
  })();

  return {
    ready,
    async stop() {
      stopping.abort();
      await loop;
      await letGo();
      await lock.close().catch(() => undefined);
    },
  };
}
