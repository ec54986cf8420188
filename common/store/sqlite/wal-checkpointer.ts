import { promises as fs } from "node:fs";
import path from "node:path";
import { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";
import { REPO_ROOT } from "../../config/config.js";

/*
 * SQLite checkpoints a WAL file (copies its pages into the database, with an fsync before and
 * after) in the connection that commits past `wal_autocheckpoint` pages: here, on the event loop,
 * every thousand pages, a stall of milliseconds for whatever request was being served. With a
 * checkpointer attached, a thread of the process does it instead (looking every
 * CHECKPOINT_INTERVAL_MS, copying past CHECKPOINT_MIN_FRAMES; PASSIVE: it never blocks a writer),
 * and the writer's own checkpoint stays only as a backstop for a WAL the thread let grow (a stuck
 * disk, a thread that died).
 *
 * The thread costs the process about 10 MB of RSS, so a file is handed to it only once its WAL
 * has grown past THREAD_START_WAL_BYTES: a store that is mostly read (a million tasks queued and
 * a worker parked) keeps SQLite's own checkpoints and never starts the thread.
 *
 * Durability is unchanged: a commit is in the WAL before it returns, as before; the checkpoint
 * only moves committed pages, and its connection has the writer's `synchronous` level.
 */

const THREAD_FILE = path.join(REPO_ROOT, "common", "store", "sqlite", "wal-checkpoint-thread.mjs");
const CHECKPOINT_INTERVAL_MS = 100;
/**
 * The thread copies a WAL once it holds this many frames (4 MB of 4 KB pages), as SQLite's own
 * checkpoint would, and then at every look until the writer starts it over: each WAL copied to its
 * end is started over by the writer's next commit, with an fsync on the event loop. Copying at
 * every look made the writer fsync 458 times in a run of 3,400 tasks, against 56 with this.
 */
export const CHECKPOINT_MIN_FRAMES = 1_000;
/** How often a file not yet handed to the thread has its WAL's size looked at. */
const WAL_WATCH_INTERVAL_MS = 250;
/** A WAL this large (a quarter of SQLite's own checkpoint threshold in 4 KB pages) means writes worth a thread. */
export const THREAD_START_WAL_BYTES = 1024 * 1024;
/** The writer checkpoints itself past this many WAL pages (16 MB of 4 KB pages): only if the thread falls behind. */
export const BACKSTOP_AUTOCHECKPOINT_PAGES = 4_000;
/** SQLite's default, restored when the thread lets go of a file. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1_000;

type ThreadMessage = { op: "removed"; id: number } | { op: "failed"; file: string; message: string };

interface Attachment {
  db: Database.Database;
  file: string;
  synchronous: "NORMAL" | "FULL";
  onFailure?: (message: string) => void;
  /** Handed to the thread (else its WAL is watched). */
  inThread: boolean;
  detached: boolean;
}

/** One thread for every file of the process: a thread costs megabytes, a file only a connection. */
let thread: Worker | null = null;
let filesInThread = 0;
let nextId = 0;
const removals = new Map<number, () => void>();
const failureHandlers = new Map<string, (message: string) => void>();
const watched = new Set<Attachment>();
let watchTimer: NodeJS.Timeout | null = null;
let watching = false;

function startThread(): Worker {
  // execArgv []: plain JavaScript, no TypeScript loader to start (nor its memory) in the thread.
  const worker = new Worker(THREAD_FILE, {
    workerData: { intervalMs: CHECKPOINT_INTERVAL_MS, minFrames: CHECKPOINT_MIN_FRAMES },
    execArgv: [],
    resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 },
  });
  worker.on("message", (message: ThreadMessage) => {
    if (message.op === "removed") {
      removals.get(message.id)?.();
      removals.delete(message.id);
    } else failureHandlers.get(message.file)?.(message.message);
  });
  worker.on("error", () => {
    // A thread that died checkpoints nothing more: each writer's backstop takes over.
    thread = null;
    for (const done of removals.values()) done();
    removals.clear();
  });
  // Never what keeps the process alive: a store left open still lets it exit (after the listeners, which ref it).
  worker.unref();
  return worker;
}

function handToThread(attachment: Attachment): void {
  if (attachment.detached || !attachment.db.open) return;
  unwatch(attachment);
  thread ??= startThread();
  filesInThread++;
  attachment.inThread = true;
  if (attachment.onFailure !== undefined) failureHandlers.set(attachment.file, attachment.onFailure);
  thread.postMessage({ op: "add", file: attachment.file, synchronous: attachment.synchronous });
  attachment.db.pragma(`wal_autocheckpoint = ${BACKSTOP_AUTOCHECKPOINT_PAGES}`);
}

async function walBytes(file: string): Promise<number> {
  try {
    return (await fs.stat(`${file}-wal`)).size;
  } catch {
    // No WAL yet (or it was just removed): nothing written since.
    return 0;
  }
}

async function lookAtWatchedWals(): Promise<void> {
  if (watching) return;
  watching = true;
  try {
    for (const attachment of [...watched]) {
      if ((await walBytes(attachment.file)) >= THREAD_START_WAL_BYTES) handToThread(attachment);
    }
  } finally {
    watching = false;
  }
}

function watch(attachment: Attachment): void {
  watched.add(attachment);
  if (watchTimer !== null) return;
  watchTimer = setInterval(() => void lookAtWatchedWals(), WAL_WATCH_INTERVAL_MS);
  watchTimer.unref();
}

function unwatch(attachment: Attachment): void {
  watched.delete(attachment);
  if (watched.size > 0 || watchTimer === null) return;
  clearInterval(watchTimer);
  watchTimer = null;
}

export interface WalCheckpointer {
  /** Lets go of the file (its connection closed) and restores the writer's own checkpoints. Call before closing `db`. */
  detach(): Promise<void>;
}

/**
 * Checkpoints `file`'s WAL from the process's checkpoint thread once the WAL has grown past
 * THREAD_START_WAL_BYTES; `db` (the file's writer) then checkpoints only past
 * BACKSTOP_AUTOCHECKPOINT_PAGES. `onFailure` hears a checkpoint of the thread that failed (once,
 * until one succeeds again).
 */
export function attachWalCheckpointer(
  db: Database.Database,
  file: string,
  opts: { synchronous: "NORMAL" | "FULL"; onFailure?: (message: string) => void },
): WalCheckpointer {
  const attachment: Attachment = {
    db,
    file: path.resolve(file),
    synchronous: opts.synchronous,
    onFailure: opts.onFailure,
    inThread: false,
    detached: false,
  };
  watch(attachment);
  return { detach: () => detach(attachment) };
}

async function detach(attachment: Attachment): Promise<void> {
  if (attachment.detached) return;
  attachment.detached = true;
  if (!attachment.inThread) {
    unwatch(attachment);
    return;
  }
  const { db, file } = attachment;
  if (db.open) db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
  failureHandlers.delete(file);
  filesInThread--;
  const worker = thread;
  if (worker === null) return;
  const id = nextId++;
  // Held while the answer is awaited: an unref'd thread would let the process exit mid-close.
  worker.ref();
  await new Promise<void>((resolve) => {
    removals.set(id, resolve);
    worker.postMessage({ op: "remove", file, id });
  });
  worker.unref();
  if (filesInThread === 0 && thread === worker) {
    thread = null;
    await worker.terminate();
  }
}

/** Whether the checkpoint thread runs (for tests: it starts with the first WAL grown large, stops with the last file let go). */
export function checkpointThreadRunning(): boolean {
  return thread !== null;
}
