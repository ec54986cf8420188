import type { WebhooksConfig } from "../config/config.js";
import type { CallbackDelivery, Task } from "../model/task-model.js";
import { errorMessage } from "../model/errors.js";
import { SIGNATURE_HEADER, signBody } from "./signature.js";

/** The `webhooks` section of the config (timeoutMs: one try, connecting included; concurrency: tries in flight at once). */
export type WebhookSettings = WebhooksConfig;

export interface WebhookDispatcherOptions {
  settings: WebhookSettings;
  /** Keeps the delivery's state in the task's record (the store's recordCallback). */
  record(id: string, delivery: CallbackDelivery): Promise<void>;
  log: { info(msg: string): void; warn(msg: string): void };
  now?: () => number;
}

/** The delay before the try after `failedTries` failed ones: base · 2^(failedTries − 1), capped. */
export function webhookBackoffMs(failedTries: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(failedTries - 1, 30)));
}

/** One task's delivery while it waits for a try, or is being tried. */
interface Delivery {
  id: string;
  url: string;
  /** The exact bytes sent at every try, so the signature of each try is the same. */
  body: string;
  state: CallbackDelivery;
  timer: NodeJS.Timeout | undefined;
}

const NOT_BEGUN: CallbackDelivery = { state: "pending", tries: 0, lastStatus: null, lastError: null, lastTryAt: null, deliveredAt: null };

/**
 * Delivers the records of ended tasks to their callbackUrl: a POST of the record as JSON, signed,
 * retried with exponential backoff until a 2xx or `maxTries`, at most `concurrency` at once. Fire
 * and forget: `deliver` returns at once and nothing the queue does waits for a delivery. Each try's
 * outcome goes into the task's record (`callback`); a delivery still pending when the dispatcher
 * stops stays pending there, and the next start hands it back (the store's pendingCallbacks).
 */
export class WebhookDispatcher {
  private readonly opts: WebhookDispatcherOptions;
  private readonly now: () => number;
  /** Every delivery under way (waiting for its backoff, queued for a free place, or being tried), by task id. */
  private readonly deliveries = new Map<string, Delivery>();
  private readonly ready: Delivery[] = [];
  private readonly tries = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  private warnedUnsigned = false;

  constructor(opts: WebhookDispatcherOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
  }

  /** Deliveries under way. */
  get pending(): number {
    return this.deliveries.size;
  }

  /** Starts (or, for a record whose delivery is pending, resumes) the delivery of an ended task; does nothing when it has no callbackUrl or its delivery is over or under way. */
  deliver(task: Task): void {
    if (this.stopping.signal.aborted || task.callbackUrl === null || this.deliveries.has(task.id)) return;
    const prior = deliveryOfThisEnd(task);
    if (prior !== null && prior.state !== "pending") return;
    if (this.opts.settings.secret === null && !this.warnedUnsigned) {
      // Once, at the first delivery: an install that never uses webhooks is not bothered.
      this.warnedUnsigned = true;
      this.opts.log.warn(
        "DOCQ_WEBHOOK_SECRET is not set: webhooks go without X-Docq-Signature, so receivers cannot tell them from forgeries",
      );
    }
    // The receiver gets the record as it ended; the delivery's own state is not part of it.
    const { callback: _delivery, ...record } = task;
    const delivery: Delivery = {
      id: task.id,
      url: task.callbackUrl,
      body: JSON.stringify(record),
      state: prior ?? NOT_BEGUN,
      timer: undefined,
    };
    this.deliveries.set(task.id, delivery);
    this.enqueue(delivery);
  }

  /** Stops trying: a try in flight is cut off and not recorded, so its delivery stays pending in the record for the next start. */
  async stop(): Promise<void> {
    this.stopping.abort();
    for (const delivery of this.deliveries.values()) clearTimeout(delivery.timer);
    this.ready.length = 0;
    await Promise.allSettled([...this.tries]);
    this.deliveries.clear();
  }

  private enqueue(delivery: Delivery): void {
    this.ready.push(delivery);
    this.pump();
  }

  private pump(): void {
    while (!this.stopping.signal.aborted && this.tries.size < this.opts.settings.concurrency) {
      const next = this.ready.shift();
      if (next === undefined) return;
      const attempt: Promise<void> = this.tryOnce(next)
        .catch((err: unknown) => this.opts.log.warn(`webhook of task ${next.id}: ${errorMessage(err)}`))
        .finally(() => {
          this.tries.delete(attempt);
          this.pump();
        });
      this.tries.add(attempt);
    }
  }

  private async tryOnce(delivery: Delivery): Promise<void> {
    const { settings, log } = this.opts;
    const n = delivery.state.tries + 1;
    const triedAt = this.now();
    const outcome = await this.post(delivery, n);
    // Cut off by stop: nothing is known of this try, and the record still says pending.
    if (outcome === null) return;
    const delivered = outcome.error === null;
    const over = delivered || n >= settings.maxTries;
    delivery.state = {
      state: delivered ? "delivered" : over ? "failed" : "pending",
      tries: n,
      lastStatus: outcome.status,
      lastError: outcome.error,
      lastTryAt: triedAt,
      deliveredAt: delivered ? this.now() : null,
    };
    await this.opts
      .record(delivery.id, delivery.state)
      // The delivery goes on: only the record of this try is missing (a pending one is tried again at the next start).
      .catch((err: unknown) => log.warn(`webhook of task ${delivery.id}: recording try ${n} failed: ${errorMessage(err)}`));
    if (over) {
      this.deliveries.delete(delivery.id);
      if (!delivered)
        log.warn(`webhook of task ${delivery.id} to ${originOf(delivery.url)} failed for good after ${n} tries: ${outcome.error}`);
      return;
    }
    const delayMs = webhookBackoffMs(n, settings.backoffBaseMs, settings.backoffMaxMs);
    log.info(`webhook of task ${delivery.id} to ${originOf(delivery.url)}: try ${n} failed (${outcome.error}), next in ${delayMs} ms`);
    delivery.timer = setTimeout(() => {
      delivery.timer = undefined;
      this.enqueue(delivery);
    }, delayMs);
  }

  /** One POST; answers its status and, unless it is a 2xx, why it failed; null when stop cut it off. */
  private async post(delivery: Delivery, n: number): Promise<{ status: number | null; error: string | null } | null> {
    const { settings } = this.opts;
    const headers: Record<string, string> = {
      "Content-Type": "application/json",
      "User-Agent": "docq-webhook",
      "X-Docq-Task": delivery.id,
      "X-Docq-Delivery-Try": String(n),
      ...(settings.secret === null ? {} : { [SIGNATURE_HEADER]: signBody(settings.secret, delivery.body) }),
    };
    try {
      const response = await fetch(delivery.url, {
        method: "POST",
        headers,
        body: delivery.body,
        // A redirect is not a delivery: following it would POST the record somewhere the submitter did not name.
        redirect: "manual",
        signal: AbortSignal.any([AbortSignal.timeout(settings.timeoutMs), this.stopping.signal]),
      });
      // The answer's body is not needed; reading it to its end would let a slow receiver hold the place.
      await response.body?.cancel().catch(() => undefined);
      const ok = response.status >= 200 && response.status < 300;
      return { status: response.status, error: ok ? null : `answered ${response.status}` };
    } catch (err) {
      if (this.stopping.signal.aborted) return null;
      return { status: null, error: fetchFailure(err, settings.timeoutMs) };
    }
  }
}

/**
 * The task's delivery record if it is about its latest end, else null: one tried before the task
 * ended belongs to an earlier end (the task was retried and ended again), and the new end is
 * delivered afresh.
 */
function deliveryOfThisEnd(task: Task): CallbackDelivery | null {
  const delivery = task.callback;
  if (delivery === null) return null;
  if (delivery.lastTryAt !== null && task.endTime !== null && delivery.lastTryAt < task.endTime) return null;
  return delivery;
}

/** What to log of a URL: its origin (the path and query may hold a token). */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "(invalid URL)";
  }
}

/** fetch's "fetch failed" says nothing: its cause does (ECONNREFUSED, a TLS error, a DNS miss). */
function fetchFailure(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")) return `no answer within ${timeoutMs} ms`;
  const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
  return errorMessage(cause);
}
