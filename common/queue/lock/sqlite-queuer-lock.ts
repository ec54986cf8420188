import { mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { errorMessage } from "../../model/errors.js";
import type { HeldQueuerLock, QueuerLockAdapter } from "./queuer-lock.js";

/**
 * The queuer lock for queuers sharing a data dir (one machine): an exclusive SQLite transaction
 * held open on a small lock file for as long as the queuer lives. The kernel drops it when the
 * process dies however it dies, so a standby can take over without any stale-lock cleanup. It is
 * never lost while held: its `lost` signal never fires.
 */
export class SqliteQueuerLock implements HeldQueuerLock {
  readonly lost = new AbortController().signal;

  private constructor(private readonly db: Database.Database) {}

  /** The lock, or null when another live process holds it. */
  static tryAcquire(file: string): SqliteQueuerLock | null {
    mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file, { timeout: 0 });
    try {
      db.pragma("locking_mode = EXCLUSIVE");
      db.exec("BEGIN EXCLUSIVE");
      // A write makes SQLite take (and, in exclusive locking mode, keep) the file lock.
      db.exec("CREATE TABLE IF NOT EXISTS holder (pid INTEGER); DELETE FROM holder;");
      db.prepare("INSERT INTO holder (pid) VALUES (?)").run(process.pid);
      return new SqliteQueuerLock(db);
    } catch (err) {
      db.close();
      if (/busy|locked/i.test(errorMessage(err))) return null;
      throw err;
    }
  }

  async release(): Promise<void> {
    this.releaseNow();
  }

  releaseNow(): void {
    if (!this.db.open) return;
    try {
      this.db.exec("ROLLBACK");
    } finally {
      this.db.close();
    }
  }
}

export function sqliteQueuerLock(file: string): QueuerLockAdapter {
  return { where: file, tryAcquire: async () => SqliteQueuerLock.tryAcquire(file), close: async () => undefined };
}
