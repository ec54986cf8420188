import { MAX_PRIORITY, MIN_PRIORITY, type QueueEntry } from "../model/task-model.js";
import { EntryTable, FLAG, HandleHeap } from "./entry-table.js";

/**
 * The in-memory queue order: highest priority first, a site's own work before stolen work of the
 * same priority, FIFO by submit time within those. Tasks whose backoff has not elapsed wait in a
 * second heap ordered by `availableAt`. Entries live in an EntryTable (typed-array columns) and the
 * heaps hold their handles, so a million queued tasks cost about a hundred bytes each. Removal is
 * lazy: a removed entry's handle stays in its heap, dead, until a pop meets it and frees it; every
 * allocated handle is in exactly one heap, so it is freed exactly once.
 */
export class PriorityIndex {
  private readonly table = new EntryTable();
  private liveCount = 0;
  /** Calls of `add`: a reload sees whether anything was added beside it (see addAbsent). */
  addCount = 0;
  private readonly ready: HandleHeap;
  private readonly delayed: HandleHeap;
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
    const t = this.table;
    this.ready = new HandleHeap((a, b) => {
      if (t.priority[a] !== t.priority[b]) return t.priority[a]! > t.priority[b]!;
      const home = t.flags[a]! & FLAG.home;
      if (home !== (t.flags[b]! & FLAG.home)) return home !== 0;
      if (t.submitTime[a] !== t.submitTime[b]) return t.submitTime[a]! < t.submitTime[b]!;
      return t.seq[a]! < t.seq[b]!;
    });
    this.delayed = new HandleHeap((a, b) => {
      if (t.availableAt[a] !== t.availableAt[b]) return t.availableAt[a]! < t.availableAt[b]!;
      return t.seq[a]! < t.seq[b]!;
    });
  }

  get size(): number {
    return this.liveCount;
  }

  has(id: string): boolean {
    return this.table.find(id) !== -1;
  }

  /** Adds or replaces the entry for `entry.id`. */
  add(entry: QueueEntry, now: number = Date.now()): void {
    this.checkPriority(entry);
    this.addCount++;
    this.remove(entry.id);
    this.insert(entry, now);
  }

  /**
   * Adds an entry the caller knows no live entry holds the id of, without looking the id up: a
   * reload into an empty index, which the store gives each task once. The lookup (parse, probe)
   * was a fifth of a 1M reload's CPU.
   */
  addAbsent(entry: QueueEntry, now: number = Date.now()): void {
    this.checkPriority(entry);
    this.insert(entry, now);
  }

  /**
   * Makes room for `count` more ready entries at once (a reload that knows how many tasks it
   * brings): the columns, the ids and the heap are then filled without being copied as they grow.
   */
  reserve(count: number): void {
    this.table.reserve(this.liveCount + count);
    this.table.reserveIds(count);
    this.ready.reserve(this.ready.size + count);
  }

  /** Does now what the next lookup would (enter the ids added since into their table): a reload's end. */
  settle(): void {
    this.table.settleIds();
  }

  private checkPriority(entry: QueueEntry): void {
    if (!Number.isInteger(entry.priority) || entry.priority < MIN_PRIORITY || entry.priority > MAX_PRIORITY) {
      throw new RangeError(`priority of ${entry.id} must be an integer ${MIN_PRIORITY}..${MAX_PRIORITY}, got ${entry.priority}`);
    }
  }

  private insert(entry: QueueEntry, now: number): void {
    const delayed = entry.availableAt > now;
    const home = this.isHome(entry.id);
    const handle = this.table.allocate(entry, delayed, home);
    this.liveCount++;
    this.byPriority[entry.priority - MIN_PRIORITY]!++;
    if (delayed) this.delayedCount++;
    if (home) this.homeCount++;
    if (home && delayed) this.homeDelayedCount++;
    (delayed ? this.delayed : this.ready).push(handle);
  }

  remove(id: string): boolean {
    const handle = this.table.find(id);
    if (handle === -1) return false;
    this.forget(handle);
    return true;
  }

  /** Takes up to `max` entries, best first, among those available at `now`. */
  take(max: number, now: number = Date.now(), accept?: (entry: QueueEntry) => boolean): QueueEntry[] {
    this.promoteDue(now);
    const taken: QueueEntry[] = [];
    const refused: number[] = [];
    while (taken.length < max) {
      const handle = this.popLive(this.ready);
      if (handle === undefined) break;
      const entry = this.table.entry(handle);
      if (accept !== undefined && !accept(entry)) {
        refused.push(handle);
        continue;
      }
      this.forget(handle);
      this.table.free(handle);
      taken.push(entry);
    }
    for (const handle of refused) this.ready.push(handle);
    return taken;
  }

  /**
   * Looks at up to `window` of the best entries available at `now`, in order, and takes the ones
   * `choose` names; the others stay where they were. For a choice that weighs entries together
   * (a steal: what each would wait here, whose they are).
   */
  takeChosen(window: number, now: number, choose: (entries: readonly QueueEntry[]) => ReadonlySet<string>): QueueEntry[] {
    this.promoteDue(now);
    const seen: number[] = [];
    while (seen.length < window) {
      const handle = this.popLive(this.ready);
      if (handle === undefined) break;
      seen.push(handle);
    }
    const entries = seen.map((handle) => this.table.entry(handle));
    const chosen = choose(entries);
    const taken: QueueEntry[] = [];
    seen.forEach((handle, i) => {
      const entry = entries[i]!;
      if (chosen.has(entry.id)) {
        this.forget(handle);
        this.table.free(handle);
        taken.push(entry);
      } else {
        this.ready.push(handle);
      }
    });
    return taken;
  }

  /** The best entry available at `now`, without taking it. */
  peek(now: number = Date.now()): QueueEntry | undefined {
    this.promoteDue(now);
    const handle = this.peekLive(this.ready);
    return handle === undefined ? undefined : this.table.entry(handle);
  }

  /** Time of the next entry still waiting for its backoff at `now`, or null. */
  nextAvailableAt(now: number = Date.now()): number | null {
    this.promoteDue(now);
    const handle = this.peekLive(this.delayed);
    return handle === undefined ? null : this.table.availableAt[handle]!;
  }

  /** Counts of live entries: ready now, and waiting for their backoff. */
  counts(now: number = Date.now()): { ready: number; delayed: number; highestPriority: number | null } {
    this.promoteDue(now);
    const best = this.peekLive(this.ready);
    return {
      ready: this.liveCount - this.delayedCount,
      delayed: this.delayedCount,
      highestPriority: best === undefined ? null : this.table.priority[best]! + MIN_PRIORITY,
    };
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
    this.liveCount = 0;
    this.table.clear();
    this.delayedCount = 0;
    this.homeCount = 0;
    this.homeDelayedCount = 0;
    this.byPriority.fill(0);
  }

  /** Takes a live handle out of the live entries and the counts; it stays allocated until its heap lets go of it. */
  private forget(handle: number): void {
    const t = this.table;
    this.liveCount--;
    this.byPriority[t.priority[handle]!]!--;
    const delayed = t.has(handle, FLAG.delayed);
    const home = t.has(handle, FLAG.home);
    if (delayed) this.delayedCount--;
    if (home) this.homeCount--;
    if (home && delayed) this.homeDelayedCount--;
    t.kill(handle);
  }

  /** Pops the heap's best live handle, freeing the dead ones met on the way. */
  private popLive(heap: HandleHeap): number | undefined {
    for (;;) {
      const handle = heap.pop();
      if (handle === undefined || this.table.isLive(handle)) return handle;
      this.table.free(handle);
    }
  }

  /** The heap's best live handle, left in place; dead ones met on the way are freed. */
  private peekLive(heap: HandleHeap): number | undefined {
    for (;;) {
      const handle = heap.peek();
      if (handle === undefined || this.table.isLive(handle)) return handle;
      heap.pop();
      this.table.free(handle);
    }
  }

  private promoteDue(now: number): void {
    const t = this.table;
    for (;;) {
      const handle = this.delayed.peek();
      if (handle === undefined || t.availableAt[handle]! > now) return;
      this.delayed.pop();
      if (!t.isLive(handle)) {
        t.free(handle);
        continue;
      }
      t.flags[handle] = t.flags[handle]! & ~FLAG.delayed;
      this.delayedCount--;
      if (t.has(handle, FLAG.home)) this.homeDelayedCount--;
      this.ready.push(handle);
    }
  }
}
