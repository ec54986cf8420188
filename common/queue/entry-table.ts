import { MIN_PRIORITY, type QueueEntry } from "../model/task-model.js";
import { IdColumns } from "./id-columns.js";

/** Bits of an entry's `flags`. */
export const FLAG = { live: 1, delayed: 2, lendable: 4, home: 8 } as const;

const NONE = -1;
const INITIAL_CAPACITY = 1024;

/** Small-integer codes for the few distinct strings a column holds (users, jobs): 4 bytes an entry instead of a pointer. */
class StringCodes {
  private readonly codes = new Map<string, number>();
  private readonly strings: string[] = [];

  code(value: string | undefined): number {
    if (value === undefined) return NONE;
    let code = this.codes.get(value);
    if (code === undefined) {
      code = this.strings.length;
      this.strings.push(value);
      this.codes.set(value, code);
    }
    return code;
  }

  value(code: number): string | undefined {
    return code === NONE ? undefined : this.strings[code];
  }
}

/**
 * The queue's entries as columns of typed arrays, addressed by a handle (a row number), ids
 * included (IdColumns), so a million queued tasks cost about a hundred bytes each instead of three
 * objects and a string each, and the garbage collector has almost nothing to walk. A live entry is
 * found by its id; freed handles are reused.
 */
export class EntryTable {
  private capacity = 0;
  private readonly ids = new IdColumns();
  priority = new Int8Array(0);
  submitTime = new Float64Array(0);
  availableAt = new Float64Array(0);
  /** Insertion order: breaks ties between equal submit times so order stays FIFO. */
  seq = new Float64Array(0);
  flags = new Uint8Array(0);
  private user = new Int32Array(0);
  private job = new Int32Array(0);
  /** The input's size in bytes; -1 when unknown. */
  private inputBytes = new Float64Array(0);
  private readonly users = new StringCodes();
  private readonly jobs = new StringCodes();
  private freeHandles: number[] = [];
  private nextHandle = 0;
  private nextSeq = 0;

  /** A handle holding `entry`, flagged live (and delayed/home as told); no live entry may hold its id. */
  allocate(entry: QueueEntry, delayed: boolean, home: boolean): number {
    const handle = this.freeHandles.pop() ?? this.nextHandle++;
    if (handle >= this.capacity) this.grow();
    this.ids.link(handle, entry.id);
    this.priority[handle] = entry.priority - MIN_PRIORITY;
    this.submitTime[handle] = entry.submitTime;
    this.availableAt[handle] = entry.availableAt;
    this.seq[handle] = this.nextSeq++;
    this.flags[handle] = FLAG.live | (delayed ? FLAG.delayed : 0) | (entry.lendable ? FLAG.lendable : 0) | (home ? FLAG.home : 0);
    this.user[handle] = this.users.code(entry.user);
    this.job[handle] = this.jobs.code(entry.job);
    this.inputBytes[handle] = entry.inputBytes ?? NONE;
    return handle;
  }

  /** The live entry holding `id`, or -1. */
  find(id: string): number {
    return this.ids.find(id);
  }

  /** Makes room for `count` more ids waiting to be settled (see IdColumns.reservePending); reserve grows the id columns. */
  reserveIds(count: number): void {
    this.ids.reservePending(count);
  }

  /** Makes the ids allocated since the last lookup findable now (see IdColumns.link), not at the next lookup. */
  settleIds(): void {
    this.ids.settle();
  }

  /** Takes the entry out of the live ones: its id is found no more, but read until it is freed. */
  kill(handle: number): void {
    this.ids.unlink(handle);
    this.flags[handle] = this.flags[handle]! & ~FLAG.live;
  }

  /** Gives a dead handle back for reuse; it must be in no heap any more. */
  free(handle: number): void {
    this.ids.release(handle);
    this.flags[handle] = 0;
    this.freeHandles.push(handle);
  }

  id(handle: number): string {
    return this.ids.get(handle);
  }

  isLive(handle: number): boolean {
    return (this.flags[handle]! & FLAG.live) !== 0;
  }

  has(handle: number, flag: number): boolean {
    return (this.flags[handle]! & flag) !== 0;
  }

  /** The entry a handle holds, as the queue's callers see it. */
  entry(handle: number): QueueEntry {
    const entry: QueueEntry = {
      id: this.ids.get(handle),
      priority: this.priority[handle]! + MIN_PRIORITY,
      submitTime: this.submitTime[handle]!,
      availableAt: this.availableAt[handle]!,
      lendable: this.has(handle, FLAG.lendable),
    };
    const user = this.users.value(this.user[handle]!);
    const job = this.jobs.value(this.job[handle]!);
    const inputBytes = this.inputBytes[handle]!;
    if (user !== undefined) entry.user = user;
    if (job !== undefined) entry.job = job;
    if (inputBytes !== NONE) entry.inputBytes = inputBytes;
    return entry;
  }

  clear(): void {
    this.capacity = 0;
    this.ids.clear();
    this.priority = new Int8Array(0);
    this.submitTime = new Float64Array(0);
    this.availableAt = new Float64Array(0);
    this.seq = new Float64Array(0);
    this.flags = new Uint8Array(0);
    this.user = new Int32Array(0);
    this.job = new Int32Array(0);
    this.inputBytes = new Float64Array(0);
    this.freeHandles = [];
    this.nextHandle = 0;
  }

  /** Makes room for `count` entries at once: a reload that knows how many it brings copies no column as it fills them. */
  reserve(count: number): void {
    if (count > this.capacity) this.grow(count);
  }

  private grow(atLeast = 0): void {
    // Doubling: fewer copies of every column while a reload fills it.
    const capacity = Math.max(INITIAL_CAPACITY, this.capacity * 2, atLeast);
    this.priority = grown(this.priority, new Int8Array(capacity));
    this.submitTime = grown(this.submitTime, new Float64Array(capacity));
    this.availableAt = grown(this.availableAt, new Float64Array(capacity));
    this.seq = grown(this.seq, new Float64Array(capacity));
    this.flags = grown(this.flags, new Uint8Array(capacity));
    this.user = grown(this.user, new Int32Array(capacity));
    this.job = grown(this.job, new Int32Array(capacity));
    this.inputBytes = grown(this.inputBytes, new Float64Array(capacity));
    this.ids.grow(capacity);
    this.capacity = capacity;
  }
}

function grown<T extends Int8Array | Uint8Array | Int32Array | Float64Array>(old: T, bigger: T): T {
  bigger.set(old);
  return bigger;
}

/** A binary min-heap of handles in an Int32Array, ordered by `before`. */
export class HandleHeap {
  private items = new Int32Array(INITIAL_CAPACITY);
  size = 0;

  constructor(private readonly before: (a: number, b: number) => boolean) {}

  peek(): number | undefined {
    return this.size === 0 ? undefined : this.items[0];
  }

  /** Makes room for `count` handles at once. */
  reserve(count: number): void {
    if (count > this.items.length) this.resize(count);
  }

  push(handle: number): void {
    if (this.size === this.items.length) this.resize(Math.ceil(this.items.length * 1.5));
    const items = this.items;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const above = items[parent]!;
      if (!this.before(handle, above)) break;
      items[i] = above;
      i = parent;
    }
    items[i] = handle;
  }

  pop(): number | undefined {
    if (this.size === 0) return undefined;
    const items = this.items;
    const top = items[0]!;
    const last = items[--this.size]!;
    const size = this.size;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= size) break;
      const right = left + 1;
      const child = right < size && this.before(items[right]!, items[left]!) ? right : left;
      if (!this.before(items[child]!, last)) break;
      items[i] = items[child]!;
      i = child;
    }
    if (size > 0) items[i] = last;
    return top;
  }

  clear(): void {
    this.items = new Int32Array(INITIAL_CAPACITY);
    this.size = 0;
  }

  private resize(capacity: number): void {
    const bigger = new Int32Array(capacity);
    bigger.set(this.items.subarray(0, this.size));
    this.items = bigger;
  }
}
