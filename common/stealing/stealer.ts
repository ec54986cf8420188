import { Readable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import type { BlobStore } from "../blobs/blob-store.js";
import { dropTaskDocuments } from "../blobs/task-documents.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError, type ErrorCode } from "../model/errors.js";
import { blobKeys } from "../queue/new-task.js";
import type { QueuerClient } from "../queue/queue-client.js";
import { parseStealMessage, toLentTask, type Backlog, type LentTask, type StealMessage } from "./steal-messages.js";
import { allows, chooseVictim, plateAllowed, stealCount, type StealPolicy } from "./steal-policy.js";
import { bufferSlots, LinkMeter, MovingAverages, THROUGHPUT_SAMPLE_MIN_BYTES, type LinkFigures } from "./steal-cost.js";
import { remoteOwner } from "../queue/task-queue.js";
import type { ProcessedBy, Task } from "../model/task-model.js";
import { retryTransient } from "../model/transient-retry.js";
import { TransferStalledError, watchTransfer } from "./transfer-watchdog.js";
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
  probe(victim: string, request: StealMessage<"probe">): Promise<Readable>;
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
  /** What a link not yet measured is assumed to be. */
  linkPrior?: LinkFigures;
  /** Bytes of the transfer timed before the first steal from a site (0: none, the prior holds). */
  probeBytes?: number;
  /** A probe that takes longer is cut short: the link is at least that slow (default 20 s). */
  probeTimeoutMs?: number;
  /** A stolen task's document (or its result going home) that sends no byte for this long is given up, the task given back (default 15 s). */
  transferStallMs?: number;
  /**
   * How long a request of a thief of another plate waits before it is answered while a site of
   * this one's plate steals too (default 0): the plate-mates pick first.
   */
  crossPlateHoldMs?: number;
  /** Called when this site lent tasks: its backlog changed, the others should hear soon. */
  onBacklogChanged?: () => void;
  now?: () => number;
}

interface InFlight {
  /** The site whose task it is: the results go there. */
  ownerSite: string;
  tries: number;
  user: string;
  job: string;
  /** Ended here, its result on its way home: its lease still renewed, its slot free for the next stolen task. */
  reporting: boolean;
}

/** A link's round trip assumed before one was measured. */
const PRIOR_RTT_MS = 20;
/** A stolen task's run time assumed before one ended here. */
const PRIOR_RUN_MS = 1000;
/** A pull that found nothing says how many slots are idle for this long after. */
const FRESH_EMPTY_MS = 1000;
/** A probe that takes longer is cut short: the link is at least that slow. */
const PROBE_TIMEOUT_MS = 20_000;
/** A transfer of a stolen task's document or result that sends nothing for this long is given up. */
const TRANSFER_STALL_MS = 15_000;
/** A link whose throughput no steal measured is probed again after this long. */
const PROBE_EVERY_MS = 600_000;
/**
 * The throughput a link being probed is assumed at, at most (1 Mbit/s): a steal that pays even
 * then (a small document) need not wait for the probe.
 */
const CAUTIOUS_BYTES_PER_MS = 125;
/** The chunks a probe's bytes are sent in. */
const PROBE_CHUNK = Buffer.alloc(64 * 1024);
/** Steal rounds in a row before handing back to the event loop (each round asks one victim). */
const ROUNDS_PER_REFILL = 4;

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
  /** A refill was asked for while one ran: run another right after. */
  private refillAgain = false;
  /** The most slots this site's workers were seen idle with at once: counted on before their heartbeats say how many they have. */
  private idleSlotsSeen = 0;
  /** Measures each link to a victim (the thief's side of the cost of a steal). */
  private readonly links: LinkMeter;
  /** Run times of the stolen tasks that ended here, per job. */
  private readonly runTimes = new MovingAverages();
  /** The last time this site's workers found nothing to do, and how many slots asked: idle then, whatever their last heartbeat said. */
  private lastEmpty: { at: number; idleSlots: number } | null = null;
  /** Probes under way, by site: steals there meanwhile weigh on a cautious figure. */
  private readonly probes = new Map<string, Promise<void>>();
  /** When each link was last probed. */
  private readonly probedAt = new Map<string, number>();
  /** A whole steal's time (its moving average): asking, fetching the inputs, queueing the proxies. */
  private stealRoundTripMs: number | undefined;

  constructor(opts: StealerOptions) {
    this.opts = opts;
    this.links = new LinkMeter(opts.linkPrior ?? { rttMs: PRIOR_RTT_MS, bytesPerMs: 10_000 });
  }

  private get now(): number {
    return (this.opts.now ?? Date.now)();
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** The other sites' backlogs as last heard, by site: what the dashboard's overview shows of them. */
  siteBacklogs(): Record<string, { queued: number; highestPriority: number | null; idleSlots: number; at: number }> {
    return Object.fromEntries(
      [...this.backlogs.values()].map((b) => [
        b.site,
        { queued: b.queued, highestPriority: b.highestPriority, idleSlots: b.idleSlots, at: b.at },
      ]),
    );
  }

  /** Tells the other sites what this one could lend. */
  async publishBacklog(): Promise<void> {
    const own = await this.opts.local.backlog();
    this.opts.others.publishBacklog({
      site: this.opts.policy.site,
      queued: own.readyHome,
      highestPriority: own.highestPriority,
      idleSlots: own.idleSlots,
      slots: own.slots,
      plate: this.opts.policy.plate,
      crossPlate: typeof this.opts.policy.crossPlate === "boolean" ? this.opts.policy.crossPlate : [...this.opts.policy.crossPlate],
      at: this.now,
    });
  }

  // ---- thief side ----

  onBacklog(raw: unknown): void {
    const backlog = parseStealMessage("backlog", raw);
    if (backlog.site === this.opts.policy.site) return;
    this.backlogs.set(backlog.site, backlog);
    // A busy site appeared: fill this site's slots now rather than at the next empty pull.
    if (backlog.queued > 0) this.refill();
  }

  /** This site's workers asked for work and found none. */
  onQueueEmpty(idleSlots: number): void {
    this.idleSlotsSeen = Math.max(this.idleSlotsSeen, idleSlots);
    this.lastEmpty = { at: this.now, idleSlots };
    this.refill();
  }

  /**
   * Keeps stolen work ahead of this site's slots: while its own queue has nothing ready, steals
   * until the proxies here fill its slots and a buffer for the slots that free during a steal's
   * round trip (within maxInFlight). One refill at a time; asked again meanwhile, it runs once more.
   */
  refill(): void {
    if (this.stealing) {
      this.refillAgain = true;
      return;
    }
    this.stealing = true;
    void this.refillRounds()
      .catch((err: unknown) => this.opts.log.warn(`stealing failed: ${errorMessage(err)}`))
      .finally(() => {
        this.stealing = false;
        if (this.refillAgain) {
          this.refillAgain = false;
          this.refill();
        }
      });
  }

  /** One steal for `slots` free slots, without a buffer (what refill does in each of its rounds); answers how many were queued. */
  async stealRound(slots: number): Promise<number> {
    const want = stealCount(this.opts.policy, slots, this.queuedOrRunning());
    if (want === 0) return 0;
    const victim = chooseVictim(this.opts.policy, this.backlogs.values(), this.now);
    return victim === null ? 0 : this.stealFrom(victim, want);
  }

  /** The proxies this site should hold: its slots and the buffer. */
  private target(slots: number): number {
    const runMs = this.runTimes.get(undefined, PRIOR_RUN_MS);
    return slots + bufferSlots(slots, this.stealRoundTripMs ?? PRIOR_RTT_MS, runMs);
  }

  private async refillRounds(): Promise<void> {
    const { policy, local } = this.opts;
    for (let round = 0; round < ROUNDS_PER_REFILL; round++) {
      const own = await local.backlog();
      // Its own work first: with onlyWhenIdle a site steals only while nothing of its own is ready.
      if (policy.onlyWhenIdle && own.readyHome > 0) return;
      if (!policy.onlyWhenIdle && own.readyHome > 0 && own.idleSlots === 0) return;
      // The slots that can run stolen work soon: not those running this site's own tasks (a long
      // run of its own would leave a stolen task waiting here while its owner could run it).
      // Before the workers' first heartbeat says how many slots they have: the slots seen idle.
      // Slots its workers just found idle count too: a heartbeat may still show them busy with its own tasks.
      const idleNow = this.lastEmpty !== null && this.now - this.lastEmpty.at < FRESH_EMPTY_MS ? this.lastEmpty.idleSlots : 0;
      const slots = Math.max(own.slots > 0 ? Math.max(0, own.slots - own.busyHome) : this.idleSlotsSeen, idleNow);
      const want = stealCount(policy, this.target(slots), this.queuedOrRunning());
      if (want === 0) return;
      const victim = chooseVictim(policy, this.backlogs.values(), this.now);
      if (victim === null) return;
      await this.stealFrom(victim, want);
    }
  }

  /** The stolen tasks queued or running here: what counts against maxInFlight (not those whose result is on its way home). */
  private queuedOrRunning(): number {
    let n = 0;
    for (const f of this.inFlight.values()) if (!f.reporting) n++;
    return n;
  }

  /** Held proxies of `ownerSite`'s tasks, per user: what the victim counts against each user's share. */
  private heldByUser(ownerSite: string): Record<string, number> {
    const held: Record<string, number> = {};
    for (const f of this.inFlight.values()) if (f.ownerSite === ownerSite && !f.reporting) held[f.user] = (held[f.user] ?? 0) + 1;
    return held;
  }

  /**
   * Starts timing a transfer from `site` when no steal has measured that link yet (once every
   * PROBE_EVERY_MS), so steals there are weighed on the link's throughput, not on the prior.
   * Answers the probe under way, or undefined when none is.
   */
  private probeOnce(site: string): Promise<void> | undefined {
    const running = this.probes.get(site);
    if (running !== undefined) return running;
    const bytes = this.opts.probeBytes ?? 0;
    if (bytes === 0 || this.links.measured(site)) return undefined;
    const last = this.probedAt.get(site);
    if (last !== undefined && this.now - last < PROBE_EVERY_MS) return undefined;
    this.probedAt.set(site, this.now);
    const probing = this.probe(site, bytes).finally(() => this.probes.delete(site));
    this.probes.set(site, probing);
    // Measured: what did not pay on the cautious figure may pay now.
    void probing.then(() => this.refill());
    return probing;
  }

  /** Times a transfer of `bytes` from `site` (never rejects: a failed probe leaves the prior). */
  private async probe(site: string, bytes: number): Promise<void> {
    const started = this.now;
    let received = 0;
    let stream: Readable | undefined;
    let timer: NodeJS.Timeout | undefined;
    // A probe stalled on a slow link must not hold the stealer: after PROBE_TIMEOUT_MS it stops,
    // and what came through by then is the (pessimistic) measure.
    const limitMs = this.opts.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
    const timedOut = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), limitMs)));
    const transfer = (async (): Promise<"done"> => {
      stream = await this.opts.others.probe(site, { thief: this.opts.policy.site, bytes });
      for await (const chunk of stream) received += (chunk as Buffer).length;
      return "done";
    })();
    try {
      const outcome = await Promise.race([transfer, timedOut]);
      if (outcome === "timeout") {
        stream?.destroy();
        transfer.catch(() => undefined);
      }
      const ms = this.now - started;
      // A probe cut short counts as at least the sample size, so the link is measured as slow as it showed.
      this.links.record(site, Math.max(received, outcome === "timeout" ? THROUGHPUT_SAMPLE_MIN_BYTES : 0), ms);
      this.opts.log.info(`link to site ${site}: ${received} of ${bytes} bytes in ${ms} ms${outcome === "timeout" ? " (cut short)" : ""}`);
    } catch (err) {
      this.opts.log.warn(`probing the link to site ${site} failed (the prior throughput stands): ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One steal: lease the victim's best tasks that pay, fetch their inputs, queue them here.
   * Answers how many were queued. While the link is being probed (before the first steal there),
   * the tasks whose move is cheap even over a slow link (small documents, weighed at no more than
   * CAUTIOUS_BYTES_PER_MS) are stolen at once, beside the probe; the others wait for its figure.
   */
  async stealFrom(victim: Backlog, want: number): Promise<number> {
    const probing = this.probeOnce(victim.site);
    if (probing !== undefined) {
      const link = this.links.figures(victim.site);
      const cautious = { rttMs: link.rttMs, bytesPerMs: Math.min(link.bytesPerMs, CAUTIOUS_BYTES_PER_MS) };
      const quick = await this.stealWith(victim, want, cautious, false);
      if (quick > 0) return quick;
      await probing;
    }
    return this.stealWith(victim, want, this.links.figures(victim.site), true);
  }

  /**
   * One offer to `victim` weighed on `link`. `final`: a short answer means nothing more there pays
   * now (not so for a cautious figure standing in for one being measured).
   */
  private async stealWith(victim: Backlog, want: number, link: LinkFigures, final: boolean): Promise<number> {
    const { policy, others, local, blobs, log } = this.opts;
    const started = this.now;
    let queued = 0;
    try {
      const request = {
        thief: policy.site,
        plate: policy.plate,
        max: want,
        minPriority: policy.minPriority,
        link,
        heldByUser: this.heldByUser(victim.site),
      };
      const answer = parseStealMessage("offerAnswer", await others.offer(victim.site, request));
      this.links.record(victim.site, 0, this.now - started);
      // The victim gave less than asked: nothing more there pays now; do not ask it again before its next backlog.
      const left = answer.tasks.length < want ? 0 : Math.max(0, victim.queued - answer.tasks.length);
      if (final || left > 0) this.backlogs.set(victim.site, { ...victim, queued: left });
      const taken = await Promise.all(
        answer.tasks.map(async (task) => {
          if (task.site !== victim.site) {
            log.warn(`site ${victim.site} lent task ${task.id} of site ${task.site}: ignored`);
            return false;
          }
          this.inFlight.set(task.id, { ownerSite: task.site, tries: task.tries, user: task.user, job: task.job, reporting: false });
          try {
            let input: string | null = null;
            if (task.hasInput) {
              input = blobKeys.input(task.id);
              const fetchStarted = this.now;
              const source = await others.input(task.site, { id: task.id, thief: policy.site });
              // A stream from another site can stall for good (see watchTransfer): given up, the task goes home at once.
              const watched = watchTransfer(source, `the document of stolen task ${task.id} from site ${task.site}`, this.stallMs);
              try {
                const stored = await Promise.race([blobs.put(input, watched.stream), watched.stalled]);
                this.links.record(task.site, stored.size, this.now - fetchStarted);
              } catch (err) {
                this.recordStall(task.site, err, watched.bytes(), this.now - fetchStarted);
                throw err;
              }
            }
            await submitProxy(local, task, input);
            return true;
          } catch (err) {
            // Hand it back at once rather than letting its lease lapse: the owner retries it.
            this.inFlight.delete(task.id);
            // Its input may be stored here, and the queue never took it: nothing else would drop it.
            await dropTaskDocuments(blobs, [blobKeys.folder(task.id)], log);
            const why = `site ${policy.site} could not take the stolen task: ${errorMessage(err)}`;
            await this.reportFailure(task.id, task.site, task.tries, why);
            return false;
          }
        }),
      );
      queued = taken.filter(Boolean).length;
      if (queued > 0) {
        const took = this.now - started;
        this.stealRoundTripMs = this.stealRoundTripMs === undefined ? took : this.stealRoundTripMs + 0.3 * (took - this.stealRoundTripMs);
        this.opts.metrics?.stolen("in", victim.site, queued);
        log.info(`stole ${queued} task(s) from site ${victim.site}`);
      }
    } catch (err) {
      log.warn(`stealing from site ${victim.site} failed: ${errorMessage(err)}`);
      // Not asked again on the same news: the next backlog it publishes says whether it can lend.
      this.backlogs.set(victim.site, { ...victim, queued: 0 });
    }
    return queued;
  }

  /** A proxy ended here: its result goes home, then its local documents go (a canceled one's, the queuer dropped). */
  async onProxyDone(task: Task): Promise<void> {
    const flight = this.inFlight.get(task.id);
    if (flight === undefined) return;
    const { policy, others, blobs, log } = this.opts;
    if (task.duration !== null && task.status === "output") this.runTimes.add(task.job, task.duration);
    // A slot freed here: the next stolen task is already queued (the buffer); steal its replacement now.
    flight.reporting = true;
    this.refill();
    // When the result set off home: a stall measures the link from then.
    const sent = this.now;
    try {
      if (task.status === "output" && task.output !== null) {
        const output = task.output;
        const processedBy = task.processedBy ?? { site: policy.site, node: "?" };
        const meta = { id: task.id, thief: policy.site, tries: flight.tries, processedBy };
        await this.retry(`report ${task.id} home`, async () => {
          const watched = watchTransfer(
            await blobs.get(output),
            `the result of stolen task ${task.id} to site ${flight.ownerSite}`,
            this.stallMs,
          );
          const call = others.complete(flight.ownerSite, watched.stream, meta);
          return parseStealMessage("accepted", await Promise.race([call, watched.stalled]));
        });
        const size = (await blobs.stat(output))?.size ?? 0;
        this.links.record(flight.ownerSite, size, this.now - sent);
      } else if (task.status === "error") {
        await this.reportFailure(task.id, flight.ownerSite, flight.tries, task.error ?? "failed", task.processedBy ?? undefined);
      }
      // canceled: the owner canceled it, or took it back; nothing to report.
    } catch (err) {
      log.warn(`could not report ${task.id} to site ${flight.ownerSite}: ${errorMessage(err)}`);
      // A result that stalled on its way is given back at once (the owner runs the task again),
      // rather than left to a lease this site's heartbeats might keep renewing. Otherwise the
      // owner's lease lapses and it runs the task again: nothing is lost either way.
      if (err instanceof TransferStalledError) {
        this.recordStall(flight.ownerSite, err, err.bytes, this.now - sent);
        await this.reportFailure(task.id, flight.ownerSite, flight.tries, `site ${policy.site} gave it back: ${err.message}`);
      }
    } finally {
      this.inFlight.delete(task.id);
      if (task.status !== "canceled") await dropTaskDocuments(blobs, [blobKeys.folder(task.id)], log);
    }
  }

  private get stallMs(): number {
    return this.opts.transferStallMs ?? TRANSFER_STALL_MS;
  }

  /** A transfer with `site` stalled: said why, and the link taken for as slow as it showed (the next steals there weigh that). */
  private recordStall(site: string, err: unknown, bytes: number, ms: number): void {
    if (!(err instanceof TransferStalledError)) return;
    this.opts.log.warn(`${err.message}: given up, the task goes back to site ${site}`);
    this.links.record(site, Math.max(bytes, THROUGHPUT_SAMPLE_MIN_BYTES), ms);
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
    const { thief, plate, max, minPriority, link, heldByUser } = parseStealMessage("offerRequest", raw);
    const { policy } = this.opts;
    if (!allows(policy, thief) || !plateAllowed(policy.plate, policy.crossPlate, plate)) return { tasks: [] };
    // The plate-mates heard the same backlog and are asking now: what they leave goes across.
    const hold = this.opts.crossPlateHoldMs ?? 0;
    if (plate !== policy.plate && hold > 0 && this.plateMateStealing()) await delay(hold);
    const lent = await this.opts.local.lend(thief, max, Math.max(minPriority, policy.minPriority), { link, heldByUser });
    if (lent.length > 0) {
      this.opts.metrics?.stolen("out", thief, lent.length);
      this.opts.log.info(`lent ${lent.length} task(s) to site ${thief}`);
      this.opts.onBacklogChanged?.();
    }
    return { tasks: lent.map(toLentTask) };
  }

  /** Whether another site of this one's plate that it lends to is stealing: its stealer's backlog is fresh. */
  private plateMateStealing(): boolean {
    const { policy } = this.opts;
    for (const b of this.backlogs.values()) {
      if (b.plate === policy.plate && allows(policy, b.site) && this.now - b.at <= policy.backlogTtlMs) return true;
    }
    return false;
  }

  async handleInput(raw: unknown): Promise<Readable> {
    const { id, thief } = parseStealMessage("input", raw);
    const task = await this.lentTo(id, thief);
    if (task.input === null) throw docqError(ERROR_CODE.BlobNotFound, `task ${id} has no input`);
    return this.opts.blobs.get(task.input);
  }

  /** A thief's probe of the link: `bytes` of nothing, streamed. */
  handleProbe(raw: unknown): Readable {
    const { bytes } = parseStealMessage("probe", raw);
    const chunks = function* (): Generator<Buffer> {
      for (let left = bytes; left > 0; left -= PROBE_CHUNK.length) yield PROBE_CHUNK.subarray(0, Math.min(left, PROBE_CHUNK.length));
    };
    return Readable.from(chunks(), { objectMode: false });
  }

  async handleHeartbeat(raw: unknown): Promise<string[]> {
    const { thief, ids } = parseStealMessage("heartbeat", raw);
    return this.opts.local.renew(remoteOwner(thief), ids);
  }

  /** A thief's result: stored under the attempt's own key, then recorded only if the lease still holds. */
  async handleComplete(output: Readable, rawMeta: unknown): Promise<boolean> {
    const meta = parseStealMessage("complete", rawMeta);
    const key = blobKeys.output(meta.id, meta.tries);
    const claim = { id: meta.id, owner: remoteOwner(meta.thief), tries: meta.tries };
    const watched = watchTransfer(output, `the result of task ${meta.id} from site ${meta.thief}`, this.stallMs);
    try {
      await Promise.race([this.opts.blobs.put(key, watched.stream), watched.stalled]);
    } catch (err) {
      if (!(err instanceof TransferStalledError)) throw err;
      // The thief may never hear of it (the link that stalled carries its answer): the task is
      // given back here at once, under the thief's claim, as the thief would on a failure.
      this.opts.log.warn(`${err.message}: given up, task ${meta.id} queued again here`);
      await this.opts.blobs.delete(key).catch(() => undefined);
      await this.opts.local.fail(claim, `site ${meta.thief}'s result stalled on its way: ${err.message}`, { retryable: true });
      throw err;
    }
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
