// The body of the WAL checkpointer's thread (wal-checkpointer.ts): plain JavaScript, so the thread
// needs no TypeScript loader. It holds a connection of its own to each SQLite file it is given and
// looks at the file's WAL every `intervalMs`, copying it into the database once it holds
// `minFrames` frames (a PASSIVE checkpoint: it never waits for, nor blocks, the process's writer).
// The copy and its fsyncs are what a commit paid for on the event loop when SQLite checkpointed
// after it.
//   in:  {op:"add", file, synchronous}   {op:"remove", file, id}
//   out: {op:"removed", id}   {op:"failed", file, message} (once per file until a checkpoint succeeds)
import { closeSync, openSync, readSync } from "node:fs";
import { endianness } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** file -> { db, failed, shm: fd of its -shm or null } */
const files = new Map();
/** The WAL index header's two copies and its checkpoint info (sqlite.org/walformat.html). */
const SHM_HEADER_BYTES = 136;
const header = Buffer.alloc(SHM_HEADER_BYTES);
/** The WAL index is in native byte order. */
const u32 = endianness() === "LE" ? (at) => header.readUInt32LE(at) : (at) => header.readUInt32BE(at);

/**
 * Whether the WAL is worth copying now: it holds `minFrames` frames (mxFrame, from the WAL index
 * header read without a lock: a hint, never a decision about data) and some are not yet in the
 * database (nBackfill < mxFrame). Each copy to the end lets the writer start the WAL over with an
 * fsync of its own, on the event loop: a small WAL waits. Unreadable: copied, as without a hint.
 */
function worthCopying(file, entry) {
  try {
    entry.shm ??= openSync(`${file}-shm`, "r");
    if (readSync(entry.shm, header, 0, SHM_HEADER_BYTES, 0) < SHM_HEADER_BYTES) return true;
    const mxFrame = u32(16);
    const nBackfill = u32(96);
    return mxFrame >= workerData.minFrames && nBackfill !== mxFrame;
  } catch {
    return true;
  }
}

function open(file, synchronous) {
  const db = new Database(file, { fileMustExist: true });
  // The process's writer holds the write lock for a moment at a time; a checkpoint is skipped, not waited for.
  db.pragma("busy_timeout = 0");
  db.pragma(`synchronous = ${synchronous}`);
  // This connection never writes; if it did, it must not checkpoint on its own.
  db.pragma("wal_autocheckpoint = 0");
  // A checkpoint copies frames through the VFS, not the page cache: keep its cache tiny (the process is watched for RSS).
  db.pragma("cache_size = 8");
  return db;
}

function checkpointAll() {
  for (const [file, entry] of files) {
    if (!worthCopying(file, entry)) continue;
    try {
      entry.db.pragma("wal_checkpoint(PASSIVE)");
      entry.failed = false;
    } catch (err) {
      if (!entry.failed) parentPort.postMessage({ op: "failed", file, message: err instanceof Error ? err.message : String(err) });
      entry.failed = true;
    }
  }
}

parentPort.on("message", (message) => {
  if (message.op === "add") {
    try {
      files.set(message.file, { db: open(message.file, message.synchronous), failed: false, shm: null });
    } catch (err) {
      parentPort.postMessage({ op: "failed", file: message.file, message: err instanceof Error ? err.message : String(err) });
    }
    return;
  }
  if (message.op === "remove") {
    const entry = files.get(message.file);
    files.delete(message.file);
    try {
      if (entry !== undefined && entry.shm !== null) closeSync(entry.shm);
      entry?.db.close();
    } finally {
      parentPort.postMessage({ op: "removed", id: message.id });
    }
  }
});

setInterval(checkpointAll, workerData.intervalMs);
