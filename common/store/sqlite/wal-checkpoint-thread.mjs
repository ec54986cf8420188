// The body of the WAL checkpointer's thread (wal-checkpointer.ts): plain JavaScript, so the thread
// needs no TypeScript loader. It holds a connection of its own to each SQLite file it is given and
// copies the file's WAL into the database every `intervalMs` (a PASSIVE checkpoint: it never waits
// for, nor blocks, the process's writer). The copy and its fsyncs are what a commit paid for on
// the event loop when SQLite checkpointed after it.
//   in:  {op:"add", file, synchronous}   {op:"remove", file, id}
//   out: {op:"removed", id}   {op:"failed", file, message} (once per file until a checkpoint succeeds)
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

/** file -> { db, failed } */
const files = new Map();

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
      files.set(message.file, { db: open(message.file, message.synchronous), failed: false });
    } catch (err) {
      parentPort.postMessage({ op: "failed", file: message.file, message: err instanceof Error ? err.message : String(err) });
    }
    return;
  }
  if (message.op === "remove") {
    const entry = files.get(message.file);
    files.delete(message.file);
    try {
      entry?.db.close();
    } finally {
      parentPort.postMessage({ op: "removed", id: message.id });
    }
  }
});

setInterval(checkpointAll, workerData.intervalMs);
