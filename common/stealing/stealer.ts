import type { Readable } from "node:stream";
import type { BlobStore } from "../blobs/blob-store.js";
import { dropTaskDocuments } from "../blobs/task-documents.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError, type ErrorCode } from "../model/errors.js";
import { blobKeys } from "../queue/new-task.js";
import type { QueuerClient } from "../queue/queue-client.js";
import { parseStealMessage, toLentTask, type Backlog, type LentTask, type StealMessage } from "./steal-messages.js";
import { allows, chooseVictim, stealCount, type StealPolicy } from "./steal-policy.js";
import { remoteOwner } from "../queue/task-queue.js";
import type { ProcessedBy, Task } from "../model/task-model.js";
import { retryTransient } from "../model/transient-retry.js";
import type { StealMetrics } from "../metrics/definitions.js";

/** This site's queue as the stealer reaches it: the part of the queuer's client it uses. */
export type LocalQueue = Pick<QueuerClient, "lend" | "backlog" | "renew" | "succeed" | "fail" | "submit" | "cancel" | "get">;

/** Queues a task lent by its own site as a proxy here: one try, as retries are the owner's business. */
async function submitProxy(local: LocalQueue, task: LentTask, input: string | null): Promise<void> {
  const { id, site, user, name, job, params, priority } = task;
  await local.submit({ id, site, user, name, job, params, priority, maxTries: 1, input });
}

/** Whether `err` carries `code`: over the broker it arrives as a plain error with the code, not as a DocqError. */
function hasCode(err: unknown, code: ErrorCode): boolean {
  return isDocqError(err, code) || (typeof err === "object" && err !== null && (err as { code?: unknown }).code === code);
}

/** The task, or null when this site has no such task. */
async function taskOrNull(local: LocalQueue, id: string): Promise<Task | null> {
  try {
    return await local.get(id);
  } catch (err) {
    if (hasCode(err, ERROR_CODE.TaskNotFound)) return null;
    throw err;
  }
}

/** The other sites' stealers (calls over the global NATS). */
export interface OtherSites {
  offer(victim: string, request: StealMessage<"offerRequest">): Promise<unknown>;
  input(victim: string, request: StealMessage<"input">): Promise<Readable>;
  heartbeat(ownerSite: string, request: StealMessage<"heartbeat">): Promise<unknown>;
  complete(ownerSite: string, output: Readable, meta: StealMessage<"complete">): Promise<unknown>;
  fail(ownerSite: string, request: StealMessage<"fail">): Promise<unknown>;
  cancel(thief: string, request: StealMessage<"cancel">): Promise<unknown>;
  publishBacklog(backlog: Backlog): void;
}

export interface StealerLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface StealerOptions {
  policy: StealPolicy;
  local: LocalQueue;
  others: OtherSites;
  blobs: BlobStore;
  heartbeatMs: number;
  /** How long a report home is retried while the global link is down. */
  reportRetryMs: number;
  log: StealerLog;
  /** Counts the tasks taken in from each site and lent out to each (docq_stolen_total). */
  metrics?: StealMetrics;
  now?: () => number;
}

interface InFlight {
  /** The site whose task it is: the results go there. */
  ownerSite: string;
  tries: number;
}

/**
 * A site's stealer: as a thief it takes queued tasks from a busy site when its own workers are
 * idle, runs them here as local proxy tasks and reports the results home; as a victim it lends
 * its queued tasks (leased to the thief site, renewed by the thief's heartbeats) and takes the
 * results. The owner keeps the record: a thief that dies only lets its leases lapse.
 */
export class Stealer {
  private readonly opts: StealerOptions;
  private readonly backlogs = new Map<string, Backlog>();
  /** Proxies running here, by task id: their owner site and the attempt (`tries`) they report under. */
  private readonly inFlight = new Map<string, InFlight>();
  private stealing = false;
  /** The last time this site's workers found nothing to do, and how many slots were idle then. */
  private idle: { at: number; slots: number } | null = null;

  constructor(opts: StealerOptions) {
    this.opts = opts;
  }

  private get now(): number {
    return (this.opts.now ?? Date.now)();
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Tells the other sites what this one could lend. */
  async publishBacklog(): Promise<void> {
    const own = await this.opts.local.backlog();
    this.opts.others.publishBacklog({
      site: this.opts.policy.site,
      queued: own.queued,
      highestPriority: own.highestPriority,
      idleSlots: own.idleSlots,
      at: this.now,
    });
  }

  // ---- thief side ----

  onBacklog(raw: unknown): void {
    const backlog = parseStealMessage("backlog", raw);
    if (backlog.site === this.opts.policy.site) return;
    this.backlogs.set(backlog.site, backlog);
    // A busy site appeared while this one idles: steal now rather than at the next empty pull.
    if (backlog.queued === 0) return;
    if (this.idle !== null && this.now - this.idle.at < this.opts.policy.backlogTtlMs) {
      void this.stealRound(this.idle.slots);
    } else if (!this.opts.policy.onlyWhenIdle) {
      // Allowed to steal with work of its own queued: whenever slots are idle.
      void this.opts.local
        .backlog()
        .then((own) => (own.idleSlots > 0 ? this.stealRound(own.idleSlots) : 0))
        .catch((err: unknown) => this.opts.log.warn(`could not read this site's backlog to steal: ${errorMessage(err)}`));
    }
  }

  /** This site's workers asked for work and found none. */
  onQueueEmpty(idleSlots: number): void {
    this.idle = { at: this.now, slots: idleSlots };
    void this.stealRound(idleSlots);
  }

  /** One steal at a time: choose a victim, lease its best tasks, fetch their inputs, queue them here. */
  async stealRound(idleSlots: number): Promise<number> {
    const { policy, others, local, blobs, log } = this.opts;
    if (this.stealing) return 0;
    const want = stealCount(policy, idleSlots, this.inFlight.size);
    if (want === 0) return 0;
    const victim = chooseVictim(policy, this.backlogs.values(), this.now);
    if (victim === null) return 0;
    this.stealing = true;
    let queued = 0;
    try {
      const answer = parseStealMessage(
        "offerAnswer",
        await others.offer(victim.site, { thief: policy.site, max: want, minPriority: policy.minPriority }),
      );
      // The victim's backlog shrank by what it gave: do not ask it again on stale news.
      this.backlogs.set(victim.site, { ...victim, queued: Math.max(0, victim.queued - answer.tasks.length) });
      for (const task of answer.tasks) {
        if (task.site !== victim.site) {
          log.warn(`site ${victim.site} lent task ${task.id} of site ${task.site}: ignored`);
          continue;
        }
        this.inFlight.set(task.id, { ownerSite: task.site, tries: task.tries });
        try {
          let input: string | null = null;
          if (task.hasInput) {
            input = blobKeys.input(task.id);
            await blobs.put(input, await others.input(task.site, { id: task.id, thief: policy.site }));
          }
          await submitProxy(local, task, input);
          queued++;
        } catch (err) {
          // Hand it back at once rather than letting its lease lapse: the owner retries it.
          this.inFlight.delete(task.id);
          // Its input may be stored here, and the queue never took it: nothing else would drop it.
          await dropTaskDocuments(blobs, [blobKeys.folder(task.id)], log);
          const why = `site ${policy.site} could not take the stolen task: ${errorMessage(err)}`;
          await this.reportFailure(task.id, task.site, task.tries, why);
        }
      }
      if (queued > 0) {
        this.opts.metrics?.stolen("in", victim.site, queued);
        log.info(`stole ${queued} task(s) from site ${victim.site}`);
        // Busy again until the workers find the queue empty once more.
        this.idle = null;
      }
    } catch (err) {
      log.warn(`stealing from site ${victim.site} failed: ${errorMessage(err)}`);
    } finally {
      this.stealing = false;
    }
    return queued;
  }

  /** A proxy ended here: its result goes home, then its local documents go (a canceled one's, the queuer dropped). */
  async onProxyDone(task: Task): Promise<void> {
    const flight = this.inFlight.get(task.id);
    if (flight === undefined) return;
    const { policy, others, blobs, log } = this.opts;
    try {
      if (task.status === "output" && task.output !== null) {
        const output = task.output;
        const processedBy = task.processedBy ?? { site: policy.site, node: "?" };
        const meta = { id: task.id, thief: policy.site, tries: flight.tries, processedBy };
        await this.retry(`report ${task.id} home`, async () =>
          parseStealMessage("accepted", await others.complete(flight.ownerSite, await blobs.get(output), meta)),
        );
      } else if (task.status === "error") {
        await this.reportFailure(task.id, flight.ownerSite, flight.tries, task.error ?? "failed", task.processedBy ?? undefined);
      }
      // canceled: the owner canceled it, or took it back; nothing to report.
    } catch (err) {
      // The owner's lease lapses and it runs the task again: nothing is lost.
      log.warn(`could not report ${task.id} to site ${flight.ownerSite}: ${errorMessage(err)}`);
    } finally {
      this.inFlight.delete(task.id);
      if (task.status !== "canceled") await dropTaskDocuments(blobs, [blobKeys.folder(task.id)], log);
    }
  }

  /** Renews the leases of the proxies running here; stops those their owner took back. */
  async heartbeat(): Promise<void> {
    const byOwnerSite = new Map<string, string[]>();
    for (const [id, f] of this.inFlight) {
      const ids = byOwnerSite.get(f.ownerSite);
      if (ids === undefined) byOwnerSite.set(f.ownerSite, [id]);
      else ids.push(id);
    }
    for (const [ownerSite, ids] of byOwnerSite) {
      try {
        const answer = await this.opts.others.heartbeat(ownerSite, { thief: this.opts.policy.site, ids });
        const lost = parseStealMessage("heartbeatAnswer", answer);
        for (const id of lost) await this.dropProxy(id, `site ${ownerSite} took it back`);
      } catch (err) {
        this.opts.log.warn(`heartbeat to site ${ownerSite} failed: ${errorMessage(err)}`);
      }
    }
  }

  /** The owner canceled a task running here. */
  async onCancel(raw: unknown): Promise<void> {
    const { id, ownerSite } = parseStealMessage("cancel", raw);
    if (this.inFlight.get(id)?.ownerSite !== ownerSite) return;
    await this.dropProxy(id, `canceled by site ${ownerSite}`);
  }

  /** Stops a proxy: the local queuer cancels it and drops its documents. */
  private async dropProxy(id: string, why: string): Promise<void> {
    if (!this.inFlight.delete(id)) return;
    this.opts.log.info(`stolen task ${id} dropped: ${why}`);
    try {
      await this.opts.local.cancel(id);
    } catch (err) {
      // It ended here before the cancel came: nobody reports it now, so its documents go here.
      if (hasCode(err, ERROR_CODE.TaskNotInState)) await dropTaskDocuments(this.opts.blobs, [blobKeys.folder(id)], this.opts.log);
      else this.opts.log.warn(`could not cancel the proxy of stolen task ${id} (its result is refused at home): ${errorMessage(err)}`);
    }
  }

  private async reportFailure(id: string, ownerSite: string, tries: number, error: string, processedBy?: ProcessedBy): Promise<void> {
    const message = { id, thief: this.opts.policy.site, tries, error, ...(processedBy === undefined ? {} : { processedBy }) };
    await this.retry(`report the failure of ${id} home`, async () =>
      parseStealMessage("accepted", await this.opts.others.fail(ownerSite, message)),
    ).catch((err: unknown) => this.opts.log.warn(`could not report the failure of ${id} to site ${ownerSite}: ${errorMessage(err)}`));
  }

  private retry<T>(what: string, call: () => Promise<T>): Promise<T> {
    return retryTransient(call, {
      maxMs: this.opts.reportRetryMs,
      onRetry: (err, n) => {
        if (n === 1) this.opts.log.warn(`${what}: other site unreachable (${errorMessage(err)}), retrying`);
      },
    });
  }

  // ---- victim side ----

  async handleOffer(raw: unknown): Promise<StealMessage<"offerAnswer">> {
    const { thief, max, minPriority } = parseStealMessage("offerRequest", raw);
    if (!allows(this.opts.policy, thief)) return { tasks: [] };
    const lent = await this.opts.local.lend(thief, max, Math.max(minPriority, this.opts.policy.minPriority));
    if (lent.length > 0) {
      this.opts.metrics?.stolen("out", thief, lent.length);
      this.opts.log.info(`lent ${lent.length} task(s) to site ${thief}`);
    }
    return { tasks: lent.map(toLentTask) };
  }

  async handleInput(raw: unknown): Promise<Readable> {
    const { id, thief } = parseStealMessage("input", raw);
    const task = await this.lentTo(id, thief);
    if (task.input === null) throw docqError(ERROR_CODE.BlobNotFound, `task ${id} has no input`);
    return this.opts.blobs.get(task.input);
  }

  async handleHeartbeat(raw: unknown): Promise<string[]> {
    const { thief, ids } = parseStealMessage("heartbeat", raw);
    return this.opts.local.renew(remoteOwner(thief), ids);
  }

  /** A thief's result: stored under the attempt's own key, then recorded only if the lease still holds. */
  async handleComplete(output: Readable, rawMeta: unknown): Promise<boolean> {
    const meta = parseStealMessage("complete", rawMeta);
    const key = blobKeys.output(meta.id, meta.tries);
    await this.opts.blobs.put(key, output);
    const claim = { id: meta.id, owner: remoteOwner(meta.thief), tries: meta.tries };
    const accepted = await this.opts.local.succeed(claim, { output: key, processedBy: meta.processedBy });
    if (!accepted) await this.opts.blobs.delete(key);
    return accepted;
  }

  async handleFail(raw: unknown): Promise<boolean> {
    const m = parseStealMessage("fail", raw);
    return this.opts.local.fail({ id: m.id, owner: remoteOwner(m.thief), tries: m.tries }, m.error, {
      retryable: true,
      ...(m.processedBy === undefined ? {} : { processedBy: m.processedBy }),
    });
  }

  /** This site canceled a task it had lent: tell the thief to stop it. */
  async onLocalCanceled(id: string, leaseOwner: string): Promise<void> {
    if (!leaseOwner.startsWith("site:")) return;
    const thief = leaseOwner.slice("site:".length);
    await this.opts.others
      .cancel(thief, { id, ownerSite: this.opts.policy.site })
      .catch((err: unknown) =>
        this.opts.log.warn(`could not tell site ${thief} that ${id} was canceled (its lease will lapse): ${errorMessage(err)}`),
      );
  }

  private async lentTo(id: string, thief: string): Promise<Task> {
    const task = await taskOrNull(this.opts.local, id);
    if (task === null || task.status !== "work" || task.lease?.owner !== remoteOwner(thief)) {
      throw docqError(ERROR_CODE.LeaseLost, `task ${id} is not leased to site ${thief}`);
    }
    return task;
  }
}
