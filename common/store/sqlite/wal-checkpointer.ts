import path from "node:path";
import { Worker } from "node:worker_threads";
import type Database from "better-sqlite3";
import { REPO_ROOT } from "../../config/config.js";

/*
 * SQLite checkpoints a WAL file (copies its pages into the database, with an fsync before and
 * after) in the connection that commits past `wal_autocheckpoint` pages: here, on the event loop,
 * every thousand pages, a stall of milliseconds for whatever request was being served. With a
 * checkpointer attached, a thread of the process does it instead (every CHECKPOINT_INTERVAL_MS,
 * PASSIVE: it never blocks a writer), and the writer's own checkpoint stays only as a backstop
 * for a WAL the thread let grow (a stuck disk, a thread that died).
 *
 * Durability is unchanged: a commit is in the WAL before it returns, as before; the checkpoint
 * only moves committed pages, and its connection has the writer's `synchronous` level.
 */

const THREAD_FILE = path.join(REPO_ROOT, "common", "store", "sqlite", "wal-checkpoint-thread.mjs");
const CHECKPOINT_INTERVAL_MS = 100;
/** The writer checkpoints itself past this many WAL pages (16 MB of 4 KB pages): only if the thread falls behind. */
export const BACKSTOP_AUTOCHECKPOINT_PAGES = 4_000;
/** SQLite's default, restored when the thread lets go of a file. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1_000;

type ThreadMessage = { op: "removed"; id: number } | { op: "failed"; file: string; message: string };

/** One thread for every file of the process: a thread costs megabytes, a file only a connection. */
let thread: Worker | null = null;
let attached = 0;
let nextId = 0;
const removals = new Map<number, () => void>();
const failureHandlers = new Map<string, (message: string) => void>();

function startThread(): Worker {
  const worker = new Worker(THREAD_FILE, { workerData: { intervalMs: CHECKPOINT_INTERVAL_MS } });
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

export interface WalCheckpointer {
  /** Lets go of the file (its connection closed) and restores the writer's own checkpoints. Call before closing `db`. */
  detach(): Promise<void>;
}

/**
 * Checkpoints `file`'s WAL from the process's checkpoint thread from now on; `db` (the file's
 * writer) then checkpoints only past BACKSTOP_AUTOCHECKPOINT_PAGES. `onFailure` hears a checkpoint
 * that failed (once, until one succeeds again).
 */
export function attachWalCheckpointer(
  db: Database.Database,
  file: string,
  opts: { synchronous: "NORMAL" | "FULL"; onFailure?: (message: string) => void },
): WalCheckpointer {
  thread ??= startThread();
  const worker = thread;
  attached++;
  const absolute = path.resolve(file);
  if (opts.onFailure !== undefined) failureHandlers.set(absolute, opts.onFailure);
  worker.postMessage({ op: "add", file: absolute, synchronous: opts.synchronous });
  db.pragma(`wal_autocheckpoint = ${BACKSTOP_AUTOCHECKPOINT_PAGES}`);
  let detached = false;
  return {
    async detach(): Promise<void> {
      if (detached) return;
      detached = true;
      if (db.open) db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
      failureHandlers.delete(absolute);
      attached--;
      if (thread === worker) {
        const id = nextId++;
        // Held while the answer is awaited: an unref'd thread would let the process exit mid-close.
        worker.ref();
        await new Promise<void>((resolve) => {
          removals.set(id, resolve);
          worker.postMessage({ op: "remove", file: absolute, id });
        });
        worker.unref();
      }
      if (attached === 0 && thread === worker) {
        thread = null;
        await worker.terminate();
      }
    },
  };
}

/** Whether the checkpoint thread runs (for tests: it stops with the last file let go). */
export function checkpointThreadRunning(): boolean {
  return thread !== null;
}
