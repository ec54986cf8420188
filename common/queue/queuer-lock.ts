import { mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { errorMessage } from "../model/errors.js";

/**
 * The one-active-queuer-per-site rule, for queuers sharing a data dir: an exclusive SQLite
 * transaction held open on a small lock file for as long as the queuer lives. The kernel drops it
 * when the process dies however it dies, so a standby can take over without any stale-lock cleanup.
 */
export class QueuerLock {
  private constructor(private readonly db: Database.Database) {}

  /** The lock, or null when another live process holds it. */
  static tryAcquire(file: string): QueuerLock | null {
    mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file, { timeout: 0 });
    try {
      db.pragma("locking_mode = EXCLUSIVE");
      db.exec("BEGIN EXCLUSIVE");
      // A write makes SQLite take (and, in exclusive locking mode, keep) the file lock.
      db.exec("CREATE TABLE IF NOT EXISTS holder (pid INTEGER); DELETE FROM holder;");
      db.prepare("INSERT INTO holder (pid) VALUES (?)").run(process.pid);
      return new QueuerLock(db);
    } catch (err) {
      db.close();
      if (/busy|locked/i.test(errorMessage(err))) return null;
      throw err;
    }
  }

  /** Polls until the lock is free (the holder died or stopped), then holds it. */
  static async acquire(file: string, opts: { pollMs: number; signal?: AbortSignal; onWait?: () => void }): Promise<QueuerLock> {
    let told = false;
    for (;;) {
      const lock = QueuerLock.tryAcquire(file);
      if (lock !== null) return lock;
      if (!told) {
        opts.onWait?.();
        told = true;
      }
      opts.signal?.throwIfAborted();
      await new Promise((resolve) => setTimeout(resolve, opts.pollMs));
    }
  }

  release(): void {
    if (!this.db.open) return;
    try {
      this.db.exec("ROLLBACK");
    } finally {
      this.db.close();
    }
  }
}
