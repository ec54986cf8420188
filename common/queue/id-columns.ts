/**
 * The ids of the queue's entries, by handle, and the lookup from an id to its handle, kept out of
 * the garbage-collected heap: a task id `<site>-<ULID>` is held as numbers (a code for the site
 * part, the ULID's 48-bit time and its 80 random bits as two 40-bit halves), and the lookup is an
 * open-addressing table of handles. A million ids as strings in a Map cost ~90 B each on the heap
 * (the string, the Map's slot, its growth) and most of a reload's time hashing them; here they cost
 * ~40 B each in typed arrays. An id of any other form is kept as its string (tests, foreign ids).
 */

const NONE = -1;
/** Crockford's base 32, as ULIDs write it: uppercase, no I, L, O, U. */
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ULID_LENGTH = 26;
/** The ULID's time part: 10 characters (48 bits used of 50, exact in a double). */
const TIME_CHARS = 10;
/** Each half of the random part: 8 characters, 40 bits, exact in a double. */
const HALF_CHARS = 8;
const DIGIT = new Int8Array(128).fill(NONE);
for (let i = 0; i < ALPHABET.length; i++) DIGIT[ALPHABET.charCodeAt(i)] = i;
const TWO_32 = 2 ** 32;
const MIN_SLOTS = 1024;
/** Pending handles from which settle enters them in slot order (fewer: in the order they came). */
const SORTED_SETTLE_MIN = 4096;
const MIN_PENDING = 64;

/** What parsing an id found; one shared instance, so a lookup allocates nothing. */
interface ParsedId {
  /** False: the id is not `<prefix>-<ULID>` and is kept as its string. */
  compact: boolean;
  /** The code of the part before the ULID; -1 when it has none yet. */
  code: number;
  time: number;
  high: number;
  low: number;
  hash: number;
}

function decode(id: string, from: number, chars: number): number {
  let value = 0;
  for (let i = from; i < from + chars; i++) {
    const code = id.charCodeAt(i);
    const digit = code < 128 ? DIGIT[code]! : NONE;
    if (digit === NONE) return NONE;
    value = value * 32 + digit;
  }
  return value;
}

function encode(value: number, chars: number): string {
  let text = "";
  for (let i = 0; i < chars; i++) {
    const digit = value % 32;
    text = ALPHABET[digit]! + text;
    value = (value - digit) / 32;
  }
  return text;
}

function mix(hash: number, value: number): number {
  return Math.imul(hash ^ value, 0x9e3779b1);
}

function numbersHash(prefixCode: number, time: number, high: number, low: number): number {
  let hash = mix(0x811c9dc5, prefixCode);
  hash = mix(hash, time | 0);
  hash = mix(hash, (time / TWO_32) | 0);
  hash = mix(hash, high | 0);
  hash = mix(hash, (high / TWO_32) | 0);
  hash = mix(hash, low | 0);
  hash = mix(hash, (low / TWO_32) | 0);
  return hash ^ (hash >>> 15);
}

function stringHash(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193);
  return hash ^ (hash >>> 15);
}

export class IdColumns {
  private capacity = 0;
  private prefix = new Int32Array(0);
  private time = new Float64Array(0);
  private high = new Float64Array(0);
  private low = new Float64Array(0);
  private hash = new Int32Array(0);
  /** The ids that are not `<prefix>-<ULID>`, by handle. */
  private readonly plain = new Map<number, string>();
  private readonly prefixCodes = new Map<string, number>();
  private readonly prefixes: string[] = [];
  /**
   * Open addressing, linear probing. Slot i is [2i] handle + 1 (0 when empty) and [2i + 1] its id's
   * hash, side by side: a probe compares hashes without touching the columns (a cache miss each).
   */
  private slots = new Int32Array(2 * MIN_SLOTS);
  private linked = 0;
  /** Handles linked but not yet in the table (see link). */
  private pending = new Int32Array(MIN_PENDING);
  private pendingCount = 0;
  private readonly parsed: ParsedId = { compact: false, code: NONE, time: 0, high: 0, low: 0, hash: 0 };
  /** The id `parsed` holds: an add looks its id up, then links it, and parses it once. */
  private parsedId: string | undefined;
  /** The last prefix met: a queue's ids share one or a few, so most parses compare instead of hashing. */
  private lastPrefix = "";
  private lastPrefixCode = NONE;

  /** Makes room for handles below `capacity`. */
  grow(capacity: number): void {
    this.prefix = grown(this.prefix, new Int32Array(capacity));
    this.time = grown(this.time, new Float64Array(capacity));
    this.high = grown(this.high, new Float64Array(capacity));
    this.low = grown(this.low, new Float64Array(capacity));
    this.hash = grown(this.hash, new Int32Array(capacity));
    this.capacity = capacity;
  }

  /** The handle whose live id is `id`, or -1. */
  find(id: string): number {
    this.settle();
    const p = this.parse(id, false);
    if (p.compact && p.code === NONE) return NONE;
    return this.probe(id, p);
  }

  /**
   * Stores `id` at `handle` (below the capacity) and makes it findable; `id` must not be live. The
   * handle enters the table at the next lookup or unlink (settle): a reload links a million ids
   * and then enters them at once, in the order of their slots, instead of one cache miss each.
   */
  link(handle: number, id: string): void {
    const p = this.parse(id, true);
    if (p.compact) {
      this.prefix[handle] = p.code;
      this.time[handle] = p.time;
      this.high[handle] = p.high;
      this.low[handle] = p.low;
    } else {
      this.prefix[handle] = NONE;
      this.plain.set(handle, id);
    }
    this.hash[handle] = p.hash;
    if (this.pendingCount === this.pending.length) this.growPending(2 * this.pending.length);
    this.pending[this.pendingCount++] = handle;
  }

  /** Makes room for `count` more handles waiting to be settled: a reload links that many before its settle. */
  reservePending(count: number): void {
    const needed = this.pendingCount + count;
    if (needed > this.pending.length) this.growPending(needed);
  }

  private growPending(capacity: number): void {
    const bigger = new Int32Array(capacity);
    bigger.set(this.pending.subarray(0, this.pendingCount));
    this.pending = bigger;
  }

  /** Makes `handle`'s id unfindable; it can still be read until released. */
  unlink(handle: number): void {
    this.settle();
    const slots = this.slots;
    const mask = (slots.length >> 1) - 1;
    let slot = this.hash[handle]! & mask;
    while (slots[2 * slot] !== handle + 1) {
      if (slots[2 * slot] === 0) return;
      slot = (slot + 1) & mask;
    }
    // Backward-shift deletion: entries after the hole that may sit in it move up, so no probe
    // chain is ever broken and no tombstone is needed.
    let hole = slot;
    let next = (hole + 1) & mask;
    while (slots[2 * next] !== 0) {
      const home = slots[2 * next + 1]! & mask;
      const movable = hole <= next ? home <= hole || home > next : home <= hole && home > next;
      if (movable) {
        slots[2 * hole] = slots[2 * next]!;
        slots[2 * hole + 1] = slots[2 * next + 1]!;
        hole = next;
      }
      next = (next + 1) & mask;
    }
    slots[2 * hole] = 0;
    this.linked--;
  }

  /** Forgets what `handle` held: it may be given to another id. */
  release(handle: number): void {
    if (this.prefix[handle] === NONE) this.plain.delete(handle);
  }

  /** The id at `handle`. */
  get(handle: number): string {
    const code = this.prefix[handle]!;
    if (code === NONE) return this.plain.get(handle)!;
    return `${this.prefixes[code]!}-${encode(this.time[handle]!, TIME_CHARS)}${encode(this.high[handle]!, HALF_CHARS)}${encode(this.low[handle]!, HALF_CHARS)}`;
  }

  clear(): void {
    this.capacity = 0;
    this.prefix = new Int32Array(0);
    this.time = new Float64Array(0);
    this.high = new Float64Array(0);
    this.low = new Float64Array(0);
    this.hash = new Int32Array(0);
    this.plain.clear();
    this.slots = new Int32Array(2 * MIN_SLOTS);
    this.linked = 0;
    this.pending = new Int32Array(MIN_PENDING);
    this.pendingCount = 0;
    this.parsedId = undefined;
  }

  private probe(id: string, p: ParsedId): number {
    const slots = this.slots;
    const mask = (slots.length >> 1) - 1;
    for (let slot = p.hash & mask; slots[2 * slot] !== 0; slot = (slot + 1) & mask) {
      if (slots[2 * slot + 1] !== p.hash) continue;
      const handle = slots[2 * slot]! - 1;
      if (p.compact) {
        if (this.prefix[handle] === p.code && this.low[handle] === p.low && this.high[handle] === p.high && this.time[handle] === p.time) {
          return handle;
        }
      } else if (this.prefix[handle] === NONE && this.plain.get(handle) === id) {
        return handle;
      }
    }
    return NONE;
  }

  /** Parses `id` into the shared result; `register`: a new prefix gets a code (else it is left unknown). */
  private parse(id: string, register: boolean): ParsedId {
    const p = this.parsed;
    if (id === this.parsedId && !(register && p.compact && p.code === NONE)) return p;
    this.parsedId = id;
    const dash = id.length - ULID_LENGTH - 1;
    p.compact = false;
    if (dash >= 0 && id.charCodeAt(dash) === 45 /* - */) {
      const time = decode(id, dash + 1, TIME_CHARS);
      const high = time === NONE ? NONE : decode(id, dash + 1 + TIME_CHARS, HALF_CHARS);
      const low = high === NONE ? NONE : decode(id, dash + 1 + TIME_CHARS + HALF_CHARS, HALF_CHARS);
      if (low !== NONE) {
        p.compact = true;
        p.time = time;
        p.high = high;
        p.low = low;
        p.code = this.prefixCode(id, dash, register);
        p.hash = numbersHash(p.code, time, high, low);
        return p;
      }
    }
    p.hash = stringHash(id);
    return p;
  }

  /** The code of `id`'s first `length` characters; -1 when unknown and not to be registered. */
  private prefixCode(id: string, length: number, register: boolean): number {
    if (this.lastPrefixCode !== NONE && length === this.lastPrefix.length && id.startsWith(this.lastPrefix)) return this.lastPrefixCode;
    const prefix = id.slice(0, length);
    let code = this.prefixCodes.get(prefix);
    if (code === undefined) {
      if (!register) return NONE;
      code = this.prefixes.length;
      this.prefixes.push(prefix);
      this.prefixCodes.set(prefix, code);
    }
    this.lastPrefix = prefix;
    this.lastPrefixCode = code;
    return code;
  }

  /** Enters the pending handles into the table, grown first to hold them all (at most half full). */
  settle(): void {
    const count = this.pendingCount;
    if (count === 0) return;
    const pending = this.pending.subarray(0, count);
    let size = this.slots.length >> 1;
    while (2 * (this.linked + count) > size) size *= 2;
    if (size !== this.slots.length >> 1) this.rehash(size);
    const mask = size - 1;
    const order = count < SORTED_SETTLE_MIN ? pending : this.bySlot(pending, mask);
    const slots = this.slots;
    for (let i = 0; i < count; i++) {
      const handle = order[i]!;
      const hash = this.hash[handle]!;
      let slot = hash & mask;
      while (slots[2 * slot] !== 0) slot = (slot + 1) & mask;
      slots[2 * slot] = handle + 1;
      slots[2 * slot + 1] = hash;
    }
    this.linked += count;
    this.pendingCount = 0;
    // A reload's list of a million goes back to the allocator.
    if (this.pending.length > MIN_PENDING) this.pending = new Int32Array(MIN_PENDING);
  }

  /** `handles` in the order of their home slots' high bits (a counting sort): the table is then written front to back. */
  private bySlot(handles: Int32Array, mask: number): Int32Array {
    const bucketBits = Math.min(16, 31 - Math.clz32(mask + 1));
    const shift = 31 - Math.clz32(mask + 1) - bucketBits;
    const starts = new Int32Array((1 << bucketBits) + 1);
    for (const handle of handles) starts[((this.hash[handle]! & mask) >>> shift) + 1]!++;
    for (let b = 1; b < starts.length; b++) starts[b]! += starts[b - 1]!;
    const sorted = new Int32Array(handles.length);
    for (const handle of handles) sorted[starts[(this.hash[handle]! & mask) >>> shift]!++] = handle;
    return sorted;
  }

  /** Moves every slot into a table of `size` slots. */
  private rehash(size: number): void {
    const old = this.slots;
    const slots = new Int32Array(2 * size);
    const mask = size - 1;
    for (let i = 0; i < old.length; i += 2) {
      if (old[i] === 0) continue;
      const hash = old[i + 1]!;
      let slot = hash & mask;
      while (slots[2 * slot] !== 0) slot = (slot + 1) & mask;
      slots[2 * slot] = old[i]!;
      slots[2 * slot + 1] = hash;
    }
    this.slots = slots;
  }
}

function grown<T extends Int32Array | Float64Array>(old: T, bigger: T): T {
  bigger.set(old);
  return bigger;
}
