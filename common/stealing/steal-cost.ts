import type { QueueEntry } from "../model/task-model.js";

/**
 * Whether a steal pays, and which tasks a victim lends: pure functions and small estimators, no I/O.
 *
 * The rule: a task is lent only when the time it would still wait at its owner is longer than
 * moving it: the round trip plus its document there and its result back over the thief's link
 * (the result is assumed as large as the document until it exists). The owner's wait is simulated
 * over its own slots: its idle slots start the first tasks at once, so a task the owner would
 * start sooner itself is never lent.
 */

/** What a thief measured of its link to one victim. */
export interface LinkFigures {
  /** A request's round trip with no payload to speak of. */
  rttMs: number;
  /** Throughput of large transfers. */
  bytesPerMs: number;
}

/** Transfers at least this large measure the throughput; smaller ones only the round trip. */
export const THROUGHPUT_SAMPLE_MIN_BYTES = 64 * 1024;

/** How much a new sample weighs in a moving average (exponentially weighted). */
const ALPHA = 0.3;

function blend(old: number | undefined, sample: number): number {
  return old === undefined ? sample : old + ALPHA * (sample - old);
}

/** Exponentially weighted moving averages per key (a job's run time, its document size), and over all keys. */
export class MovingAverages {
  private readonly byKey = new Map<string, number>();
  private all: number | undefined;

  add(key: string, value: number): void {
    if (!Number.isFinite(value) || value < 0) return;
    this.byKey.set(key, blend(this.byKey.get(key), value));
    this.all = blend(this.all, value);
  }

  /** The key's average; the average over every key when it has none; `fallback` when nothing was seen. */
  get(key: string | undefined, fallback: number): number {
    return (key === undefined ? undefined : this.byKey.get(key)) ?? this.all ?? fallback;
  }
}

/** Measures each link to another site as transfers happen: round trips from small ones, throughput from large ones. */
export class LinkMeter {
  private readonly links = new Map<string, { rttMs?: number; bytesPerMs?: number }>();

  constructor(private readonly prior: LinkFigures) {}

  /** An exchange of `bytes` with `site` that took `ms`. */
  record(site: string, bytes: number, ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    const link = this.links.get(site) ?? {};
    this.links.set(site, link);
    if (bytes < THROUGHPUT_SAMPLE_MIN_BYTES) {
      link.rttMs = blend(link.rttMs, ms);
      return;
    }
    const rtt = link.rttMs ?? this.prior.rttMs;
    link.bytesPerMs = blend(link.bytesPerMs, bytes / Math.max(1, ms - rtt));
  }

  /** Whether a large enough transfer measured the link's throughput (else the prior stands in). */
  measured(site: string): boolean {
    return this.links.get(site)?.bytesPerMs !== undefined;
  }

  figures(site: string): LinkFigures {
    const link = this.links.get(site);
    return { rttMs: link?.rttMs ?? this.prior.rttMs, bytesPerMs: link?.bytesPerMs ?? this.prior.bytesPerMs };
  }
}

/**
 * The size a document of unknown size is weighed as when nothing of its job or any other was seen
 * (a task queued again after a restart): large enough that only a fast link moves it, never free.
 */
export const UNKNOWN_INPUT_BYTES = 16 * 1024 * 1024;

/** What moving a task with a document of `inputBytes` costs: the round trip, the document there, the result back. */
export function moveCostMs(inputBytes: number, link: LinkFigures): number {
  return link.rttMs + (2 * inputBytes) / Math.max(link.bytesPerMs, 1e-9);
}

/** The most stolen tasks a thief buffers per slot, however short the runs (the cost rule weighs each steal anyway). */
const MAX_BUFFER_PER_SLOT = 4;

/**
 * How many stolen tasks a thief keeps ahead of its free slots: one per slot, because slots filled
 * by one steal start together and so free together (a buffer of fewer leaves the rest idle for a
 * round trip each time they do); more when a run is shorter than the round trip, each slot then
 * freeing several times while a steal travels (slots × 2 × round trip / run time, a second round
 * trip as margin for its ups and downs), at most MAX_BUFFER_PER_SLOT per slot.
 */
export function bufferSlots(slots: number, stealRoundTripMs: number, runMs: number): number {
  if (slots <= 0) return 0;
  const freeing = Math.ceil((slots * 2 * stealRoundTripMs) / Math.max(runMs, 1));
  return Math.min(slots * MAX_BUFFER_PER_SLOT, Math.max(slots, freeing));
}

/**
 * Splits `capacity` slots among users, max-min fair: each user gets an equal share, a user needing
 * less than that leaves the rest to the others (one slot at a time, in the order given, so the
 * first-queued user gets an odd slot). `demand`: per user, the tasks it holds plus the ones it could take.
 */
export function fairShares(demand: ReadonlyMap<string, number>, capacity: number): Map<string, number> {
  const shares = new Map<string, number>([...demand.keys()].map((user) => [user, 0]));
  let left = Math.max(0, Math.floor(capacity));
  let open = [...demand.keys()].filter((user) => (demand.get(user) ?? 0) > 0);
  while (left > 0 && open.length > 0) {
    for (const user of open) {
      if (left === 0) break;
      shares.set(user, (shares.get(user) ?? 0) + 1);
      left--;
    }
    open = open.filter((user) => (shares.get(user) ?? 0) < (demand.get(user) ?? 0));
  }
  return shares;
}

/** What the victim weighs a thief's request by. */
export interface LendRequest {
  /** The most tasks to lend. */
  max: number;
  minPriority: number;
  /** Only task ids starting with this (the owner's own tasks, never proxies of tasks it stole) are lent: no task bounces on. */
  homePrefix: string;
  /** The owner's slots, and how many of them are busy now. */
  ownerSlots: number;
  ownerBusy: number;
  /** Expected run time of a task of `job` (the job's moving average, or a prior). */
  runMs: (job: string | undefined) => number;
  /** Size of a task's input document (known at submit, else the job's average). */
  inputBytes: (entry: QueueEntry) => number;
  link: LinkFigures;
  /** The tasks of this owner the thief holds now, per user: what fairness counts against each user's share. */
  heldByUser: Readonly<Record<string, number>>;
}

/** A user for fairness: an entry rebuilt from the store's short rows does not name one. */
const userOf = (entry: QueueEntry): string => entry.user ?? "?";

/**
 * The tasks to lend among `entries` (the owner's best queued entries, in the order its own slots
 * would start them): the lendable ones whose wait at the owner exceeds their move's cost, each
 * user within its fair share of the thief's slots (its tasks held plus `max`), best first.
 */
export function planLend(entries: readonly QueueEntry[], req: LendRequest): Set<string> {
  // When each of the owner's slots frees: idle ones now, busy ones in half a run on average.
  const freeAt = Array.from({ length: req.ownerSlots }, (_, i) => (i < req.ownerBusy ? req.runMs(undefined) / 2 : 0));
  const paying: QueueEntry[] = [];
  for (const entry of entries) {
    const lendable = entry.lendable && entry.priority >= req.minPriority && entry.id.startsWith(req.homePrefix);
    let soonest = 0;
    for (let i = 1; i < freeAt.length; i++) if (freeAt[i]! < freeAt[soonest]!) soonest = i;
    // No slot at the owner (no worker alive): the wait is unbounded, any move pays.
    const waitMs = freeAt.length === 0 ? Infinity : freeAt[soonest]!;
    if (lendable && waitMs > moveCostMs(req.inputBytes(entry), req.link)) {
      paying.push(entry);
      continue;
    }
    // The owner runs it: it takes one of its slots for a run.
    if (freeAt.length > 0) freeAt[soonest] = waitMs + req.runMs(entry.job);
  }
  const demand = new Map<string, number>();
  let held = 0;
  for (const entry of paying) demand.set(userOf(entry), (demand.get(userOf(entry)) ?? req.heldByUser[userOf(entry)] ?? 0) + 1);
  for (const [user, count] of Object.entries(req.heldByUser)) {
    held += count;
    if (demand.has(user)) continue;
    // A user whose tasks the thief holds but who has none left to lend keeps what it holds in the count.
    demand.set(user, count);
  }
  const shares = fairShares(demand, held + req.max);
  const allowed = new Map([...shares].map(([user, share]) => [user, share - (req.heldByUser[user] ?? 0)]));
  const chosen = new Set<string>();
  for (const entry of paying) {
    if (chosen.size >= req.max) break;
    const left = allowed.get(userOf(entry)) ?? 0;
    if (left <= 0) continue;
    allowed.set(userOf(entry), left - 1);
    chosen.add(entry.id);
  }
  return chosen;
}
