import { BinaryHeap } from "./binary-heap.js";
import { MAX_PRIORITY, MIN_PRIORITY, type QueueEntry } from "../model/task-model.js";

interface Slot {
  entry: QueueEntry;
  /** Insertion order: breaks ties between equal submit times so order stays FIFO. */
  seq: number;
  /** In the delayed heap, waiting for its backoff. */
  delayed: boolean;
  /** This site's own task, not a proxy of a task stolen from another site. */
  home: boolean;
}

function readyBefore(a: Slot, b: Slot): boolean {
  if (a.entry.priority !== b.entry.priority) return a.entry.priority > b.entry.priority;
  // A site runs its own work before stolen work of the same priority: a thief only fills its idle time.
  if (a.home !== b.home) return a.home;
  if (a.entry.submitTime !== b.entry.submitTime) return a.entry.submitTime < b.entry.submitTime;
  return a.seq < b.seq;
}

function delayedBefore(a: Slot, b: Slot): boolean {
  return a.entry.availableAt < b.entry.availableAt || (a.entry.availableAt === b.entry.availableAt && a.seq < b.seq);
}

/**
 * The in-memory queue order: highest priority first, FIFO by submit time within a
 * priority. Tasks whose retry backoff has not elapsed wait in a second heap ordered
 * by `availableAt`. Removal is lazy (a tombstone in `live`), so every operation is
 * O(log n) and a million entries cost two small objects each.
 */
export class PriorityIndex {
  private readonly ready = new BinaryHeap<Slot>(readyBefore);
  private readonly delayed = new BinaryHeap<Slot>(delayedBefore);
  private readonly live = new Map<string, Slot>();
  private nextSeq = 0;
  /** Running counts of the live entries, so stats never walk a million of them. */
  private delayedCount = 0;
  private readonly byPriority = new Array<number>(MAX_PRIORITY - MIN_PRIORITY + 1).fill(0);
  /** Running counts of the live entries that are this site's own (not stolen), and of those delayed. */
  private homeCount = 0;
  private homeDelayedCount = 0;
  private readonly isHome: (id: string) => boolean;

  /** `isHome`: whether an entry is this site's own task (default: every entry is). */
  constructor(opts: { isHome?: (id: string) => boolean } = {}) {
    this.isHome = opts.isHome ?? (() => true);
  }

  get size(): number {
    return this.live.size;
  }

  has(id: string): boolean {
    return this.live.has(id);
  }

  /** Adds or replaces the entry for `entry.id`. */
  add(entry: QueueEntry, now: number = Date.now()): void {
    if (!Number.isInteger(entry.priority) || entry.priority < MIN_PRIORITY || entry.priority > MAX_PRIORITY) {
      throw new RangeError(`priority of ${entry.id} must be an integer ${MIN_PRIORITY}..${MAX_PRIORITY}, got ${entry.priority}`);
    }
    this.remove(entry.id);
    const slot: Slot = { entry, seq: this.nextSeq++, delayed: entry.availableAt > now, home: this.isHome(entry.id) };
    this.live.set(entry.id, slot);
    this.byPriority[entry.priority - MIN_PRIORITY]!++;
    if (slot.delayed) this.delayedCount++;
    if (slot.home) this.homeCount++;
    if (slot.home && slot.delayed) this.homeDelayedCount++;
    (slot.delayed ? this.delayed : this.ready).push(slot);
  }

  /** Records the input size of a live entry (known after it was added). */
  setInputBytes(id: string, bytes: number): void {
    const slot = this.live.get(id);
    if (slot !== undefined) slot.entry = { ...slot.entry, inputBytes: bytes };
  }

  remove(id: string): boolean {
    const slot = this.live.get(id);
    if (slot === undefined) return false;
    this.forget(slot);
    return true;
  }

  /** Takes a live slot out of `live` and the counts; its heap entry becomes a tombstone. */
  private forget(slot: Slot): void {
    this.live.delete(slot.entry.id);
    this.byPriority[slot.entry.priority - MIN_PRIORITY]!--;
    if (slot.delayed) this.delayedCount--;
    if (slot.home) this.homeCount--;
    if (slot.home && slot.delayed) this.homeDelayedCount--;
  }

  /** Takes up to `max` entries, best first, among those available at `now`. */
  take(max: number, now: number = Date.now(), accept?: (entry: QueueEntry) => boolean): QueueEntry[] {
    this.promoteDue(now);
    const taken: QueueEntry[] = [];
    const refused: Slot[] = [];
    while (taken.length < max) {
      const slot = this.ready.pop();
      if (slot === undefined) break;
      if (this.live.get(slot.entry.id) !== slot) continue;
      if (accept !== undefined && !accept(slot.entry)) {
        refused.push(slot);
        continue;
      }
      this.forget(slot);
      taken.push(slot.entry);
    }
    for (const slot of refused) this.ready.push(slot);
    return taken;
  }

  /**
   * Looks at up to `window` of the best entries available at `now`, in order, and takes the ones
   * `choose` names; the others stay where they were. For a choice that weighs entries together
   * (a steal: what each would wait here, whose they are).
   */
  takeChosen(window: number, now: number, choose: (entries: readonly QueueEntry[]) => ReadonlySet<string>): QueueEntry[] {
    this.promoteDue(now);
    const seen: Slot[] = [];
    while (seen.length < window) {
      const slot = this.ready.pop();
      if (slot === undefined) break;
      if (this.live.get(slot.entry.id) === slot) seen.push(slot);
    }
    const chosen = choose(seen.map((slot) => slot.entry));
    const taken: QueueEntry[] = [];
    for (const slot of seen) {
      if (chosen.has(slot.entry.id)) {
        this.forget(slot);
        taken.push(slot.entry);
      } else {
        this.ready.push(slot);
      }
    }
    return taken;
  }

  /** The best entry available at `now`, without taking it. */
  peek(now: number = Date.now()): QueueEntry | undefined {
    this.promoteDue(now);
    for (;;) {
      const slot = this.ready.peek();
      if (slot === undefined) return undefined;
      if (this.live.get(slot.entry.id) === slot) return slot.entry;
      this.ready.pop();
    }
  }

  /** Time of the next entry still waiting for its backoff at `now`, or null. */
  nextAvailableAt(now: number = Date.now()): number | null {
    this.promoteDue(now);
    for (;;) {
      const slot = this.delayed.peek();
      if (slot === undefined) return null;
      if (this.live.get(slot.entry.id) === slot) return slot.entry.availableAt;
      this.delayed.pop();
    }
  }

  /** Counts of live entries: ready now, and waiting for their backoff. */
  counts(now: number = Date.now()): { ready: number; delayed: number; highestPriority: number | null } {
    this.promoteDue(now);
    return { ready: this.live.size - this.delayedCount, delayed: this.delayedCount, highestPriority: this.peek(now)?.priority ?? null };
  }

  /** Live entries ready at `now` that are this site's own (not proxies of stolen tasks). */
  readyHome(now: number = Date.now()): number {
    this.promoteDue(now);
    return this.homeCount - this.homeDelayedCount;
  }

  /** Live entries per priority (ready or delayed), highest priority first; from running counts. */
  countsByPriority(): Record<number, number> {
    const counts: [number, number][] = [];
    for (let priority = MAX_PRIORITY; priority >= MIN_PRIORITY; priority--) {
      const count = this.byPriority[priority - MIN_PRIORITY]!;
      if (count > 0) counts.push([priority, count]);
    }
    return Object.fromEntries(counts);
  }

  clear(): void {
    this.ready.clear();
    this.delayed.clear();
    this.live.clear();
    this.delayedCount = 0;
    this.homeCount = 0;
    this.homeDelayedCount = 0;
    this.byPriority.fill(0);
  }

  private promoteDue(now: number): void {
    for (;;) {
      const slot = this.delayed.peek();
      if (slot === undefined || slot.entry.availableAt > now) return;
      this.delayed.pop();
      if (this.live.get(slot.entry.id) === slot) {
        slot.delayed = false;
        this.delayedCount--;
        if (slot.home) this.homeDelayedCount--;
        this.ready.push(slot);
      }
    }
  }
}
