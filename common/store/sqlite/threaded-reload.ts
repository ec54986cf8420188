import path from "node:path";
import { Worker } from "node:worker_threads";
import { REPO_ROOT } from "../../config/config.js";
import type { ReloadEntry } from "../task-store.js";
import { parseJsonReloadRows, reloadEntryOf } from "./sqlite-reload-rows.js";

/*
 * A reload of a million tasks spends most of its time in better-sqlite3 handing rows over (about
 * 2 s of CPU here, where filling the index from them takes under 1 s). So the seq span is cut
 * into ranges, read by reader threads, each with a read-only connection of its own, while the
 * event loop fills the index from what they hand over. Ranges are yielded in seq order, so the
 * index is filled in the order a single reader would fill it (ties of priority and submit time
 * keep their order). Each read is its own short statement: writers are never held behind the
 * reload. With no threads (few tasks, one core), the event loop reads the span itself.
 */

const THREAD_FILE = path.join(REPO_ROOT, "common", "store", "sqlite", "sqlite-reload-thread.mjs");
/** Ranges per thread: one that finishes early takes the next, so an uneven span keeps every thread busy. */
const RANGES_PER_THREAD = 32;
/**
 * Ranges read ahead of the one being yielded, per thread, at most: the rows of ranges after it
 * wait in memory until their turn.
 */
const READ_AHEAD_PER_THREAD = 1;

export interface NonFinalReadOptions {
  /** The SQLite file, for the threads to open (and for error messages). */
  file: string;
  /** The reload rows' statement (reloadRowsAsJson), with three parameters: after seq, up to seq (inclusive), limit. */
  select: string;
  /** Runs `select` on the event loop's own connection: the JSON text of the rows. */
  readHere: (afterSeq: number, upToSeq: number, limit: number) => string;
  /** The span of the ranges: seq > afterSeq and seq <= upToSeq. Past it, the event loop reads to the end, last. */
  afterSeq: number;
  upToSeq: number;
  /** Reader threads (0: the event loop reads alone). */
  threads: number;
  batchSize: number;
}

/** A batch a thread hands over: three numbers a row (submit_time, available_at, packed; NaN: the JSON text is in `unpacked`). */
interface ThreadBatch {
  range: number;
  ids: string[];
  numbers: Float64Array;
  unpacked: string[];
  last: boolean;
}

type ThreadMessage = ThreadBatch | { range: number; error: string };

interface Reader {
  thread: Worker;
  /** The range it is reading, or -1 when idle. */
  range: number;
  /** Settles once the thread has ended. */
  exited: Promise<void>;
}

/** Splits (after, upTo] into `count` consecutive ranges (fewer when the span is short). */
export function seqRanges(after: number, upTo: number, count: number): { after: number; upTo: number }[] {
  const span = upTo - after;
  if (span <= 0) return [];
  const parts = Math.max(1, Math.min(count, span));
  const ranges: { after: number; upTo: number }[] = [];
  for (let i = 0; i < parts; i++) {
    ranges.push({ after: after + Math.floor((span * i) / parts), upTo: after + Math.floor((span * (i + 1)) / parts) });
  }
  return ranges;
}

function threadBatchEntries(batch: ThreadBatch): ReloadEntry[] {
  const { ids, numbers, unpacked } = batch;
  const entries = new Array<ReloadEntry>(ids.length);
  let json = 0;
  for (let i = 0; i < ids.length; i++) {
    const packed = numbers[3 * i + 2]!;
    entries[i] = reloadEntryOf(ids[i]!, numbers[3 * i]!, numbers[3 * i + 1]!, Number.isNaN(packed) ? unpacked[json++]! : packed);
  }
  return entries;
}

/** Reads (after, upTo] on the event loop, in batches of entries. */
function* readRangeHere(opts: NonFinalReadOptions, after: number, upTo: number): Generator<ReloadEntry[]> {
  for (let from = after; ;) {
    const rows = parseJsonReloadRows(opts.readHere(from, upTo, opts.batchSize));
    const last = rows[rows.length - 1];
    if (last === undefined) return;
    yield rows.map((row) => reloadEntryOf(row[1], row[2], row[3], row[4]));
    if (rows.length < opts.batchSize) return;
    from = last[0];
  }
}

/** Every non-final row from afterSeq on, in batches in seq order. */
export async function* readNonFinal(opts: NonFinalReadOptions): AsyncGenerator<ReloadEntry[]> {
  const ranges = seqRanges(opts.afterSeq, opts.upToSeq, Math.max(1, opts.threads * RANGES_PER_THREAD));
  const readAhead = opts.threads * READ_AHEAD_PER_THREAD;
  const received = ranges.map((): ThreadBatch[] => []);
  const complete = ranges.map(() => false);
  let nextRange = 0;
  let yielding = 0;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const notify = (): void => {
    wake?.();
    wake = null;
  };
  const readers: Reader[] = [];
  const assign = (reader: Reader): void => {
    reader.range = -1;
    if (nextRange >= ranges.length || nextRange - yielding >= readAhead) return;
    const range = nextRange++;
    reader.range = range;
    reader.thread.postMessage({ range, ...ranges[range]! });
  };
  const fail = (message: string): void => {
    failure ??= new Error(`reading the queue's tasks from ${opts.file} in a thread failed: ${message}`);
    notify();
  };
  try {
    for (let i = 0; i < Math.min(opts.threads, ranges.length); i++) {
      const thread = new Worker(THREAD_FILE, {
        workerData: { file: opts.file, select: opts.select, batchSize: opts.batchSize },
        // Plain JavaScript: no TypeScript loader to start in the thread.
        execArgv: [],
        resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 },
      });
      const reader: Reader = { thread, range: -1, exited: new Promise((resolve) => thread.once("exit", () => resolve())) };
      reader.thread.on("message", (message: ThreadMessage) => {
        if ("error" in message) return fail(message.error);
        received[message.range]!.push(message);
        if (message.last) {
          complete[message.range] = true;
          assign(reader);
        }
        notify();
      });
      // A thread's uncaught error arrives serialized: an SqliteError keeps its code, not its message.
      reader.thread.on("error", (err: unknown) => fail(err instanceof Error ? err.message : JSON.stringify(err)));
      reader.thread.on("exit", (code) => {
        if (reader.range !== -1) fail(`the thread exited (code ${code}) while reading`);
      });
      readers.push(reader);
    }
    for (const reader of readers) assign(reader);
    for (yielding = 0; yielding < ranges.length; yielding++) {
      // The event loop moved on: readers held back by the read-ahead bound may take a range.
      for (const reader of readers) if (reader.range === -1) assign(reader);
      for (;;) {
        if (failure !== null) throw failure;
        const batch = received[yielding]!.shift();
        if (batch !== undefined) {
          if (batch.ids.length > 0) yield threadBatchEntries(batch);
          continue;
        }
        if (complete[yielding]) break;
        if (readers.length === 0) {
          // No threads: the event loop reads each range itself, in its turn.
          nextRange++;
          yield* readRangeHere(opts, ranges[yielding]!.after, ranges[yielding]!.upTo);
          break;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    }
  } finally {
    // Every range read (or the reload given up): the threads and their connections go. Asked, not
    // terminated: a thread terminated inside better-sqlite3 (an open failing, say) aborts the
    // whole process (v8 ToLocalChecked), so each ends once the range it is reading is over.
    nextRange = ranges.length;
    for (const reader of readers) {
      reader.range = -1;
      reader.thread.postMessage({ stop: true });
    }
    await Promise.all(readers.map((reader) => reader.exited));
  }
  // What was created since the span was measured, read last.
  yield* readRangeHere(opts, Math.max(opts.afterSeq, opts.upToSeq), Number.MAX_SAFE_INTEGER);
}
