import { mkdirSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { attachWalCheckpointer, type WalCheckpointer } from "../store/sqlite/wal-checkpointer.js";
import type { BlobEntry } from "./blob-store.js";
import { RecentRows } from "./recent-rows.js";

/*
 * The fs blob store's small documents, as rows of one SQLite file beside the blobs' folders. A new
 * small document written as a file costs a folder and a file: two new inodes, which on ext4
 * without a journal cost 0.1-3 ms of kernel time each (the allocator scans past every inode freed
 * in the last minutes). As a row it costs an INSERT into a WAL: a batch of a thousand 1 KB
 * documents goes from a few hundred milliseconds to a few.
 *
 * A key is split into its folder (first segment, a task's id) and the rest, so a task's rows are
 * found and removed by their folder as its files are, and listed folder by folder for the GC.
 */

/** Another process (a worker of the same data dir) may hold the write lock for a moment. */
const BUSY_TIMEOUT_MS = 5_000;
/** The rows this process inserted last, kept in memory for their reads: at most this many bytes... */
const RECENT_BYTES = 8 * 1024 * 1024;
/** ...and rows (a queue of small documents submitted ahead of its workers is read back in this order). */
const RECENT_ROWS = 16_384;

/** Above every character a key may hold (BLOB_KEY_CHARS is ASCII): `p` ≤ k < `p` + this is "k starts with p". */
const AFTER_KEY_CHARS = "\u007f";

export class SmallBlobTable {
  private readonly db: Database.Database;
  private readonly insertRow: Database.Statement<[string, string, Uint8Array, number]>;
  private readonly bytesOf: Database.Statement<[string, string], { bytes: Buffer }>;
  private readonly sizeOf: Database.Statement<[string, string], { size: number }>;
  private readonly deleteRow: Database.Statement<[string, string]>;
  private readonly rowExists: Database.Statement<[string, string], number>;
  private readonly deleteFolder: Database.Statement<[string]>;
  private readonly deleteInFolder: Database.Statement<[string, string, string]>;
  private readonly deleteFolders: Database.Statement<[string, string]>;
  private readonly folderAfter: Database.Statement<[string], { folder: string }>;
  private readonly rowsOf: Database.Statement<[string], { rest: string; modified_at: number }>;
  private readonly insertAll: (rows: readonly PendingRow[]) => void;
  /** Rows asked for in this turn of the event loop: written in one transaction, one commit for all. */
  private pending: PendingRow[] = [];
  /** The rows inserted last, read without SQLite; every removal here drops them too. */
  private readonly recent = new RecentRows({ maxBytes: RECENT_BYTES, maxRows: RECENT_ROWS });

  /** Checkpoints the file's WAL off the event loop. */
  private readonly checkpointer: WalCheckpointer;

  private constructor(db: Database.Database, checkpointer: WalCheckpointer) {
    this.db = db;
    this.checkpointer = checkpointer;
    this.insertRow = db.prepare("INSERT INTO blobs (folder, rest, bytes, modified_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING");
    this.bytesOf = db.prepare("SELECT bytes FROM blobs WHERE folder = ? AND rest = ?");
    this.sizeOf = db.prepare("SELECT length(bytes) AS size FROM blobs WHERE folder = ? AND rest = ?");
    this.deleteRow = db.prepare("DELETE FROM blobs WHERE folder = ? AND rest = ?");
    this.rowExists = db.prepare<[string, string], number>("SELECT 1 FROM blobs WHERE folder = ? AND rest = ?").pluck();
    this.deleteFolder = db.prepare("DELETE FROM blobs WHERE folder = ?");
    this.deleteInFolder = db.prepare("DELETE FROM blobs WHERE folder = ? AND rest >= ? AND rest < ?");
    this.deleteFolders = db.prepare("DELETE FROM blobs WHERE folder >= ? AND folder < ?");
    this.folderAfter = db.prepare("SELECT folder FROM blobs WHERE folder > ? ORDER BY folder LIMIT 1");
    this.rowsOf = db.prepare("SELECT rest, modified_at FROM blobs WHERE folder = ? ORDER BY rest");
    this.insertAll = db.transaction((rows: readonly PendingRow[]) => {
      for (const row of rows) row.inserted = this.insertRow.run(row.folder, row.rest, row.bytes, row.now).changes === 1;
    });
  }

  /**
   * Opens (creating it and its folder when missing) the table in `file`. "power" fsyncs the WAL at
   * each commit; "process" leaves the commit in the OS's page cache, where a killed process cannot
   * lose it, as the SQLite task store does.
   */
  static open(file: string, durability: "process" | "power"): SmallBlobTable {
    mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file);
    try {
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const mode = db.pragma("journal_mode = WAL", { simple: true });
      if (mode !== "wal") throw new Error(`journal_mode is ${String(mode)}, not wal (is the folder on a network file system?)`);
      db.pragma(`synchronous = ${durability === "power" ? "FULL" : "NORMAL"}`);
      db.exec(
        "CREATE TABLE IF NOT EXISTS blobs (folder TEXT NOT NULL, rest TEXT NOT NULL, bytes BLOB NOT NULL, modified_at INTEGER NOT NULL, PRIMARY KEY (folder, rest))",
      );
      return new SmallBlobTable(db, attachWalCheckpointer(db, file, { synchronous: durability === "power" ? "FULL" : "NORMAL" }));
    } catch (err) {
      db.close();
      throw new Error(`small blob table ${file}: open failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  /**
   * Stores a new row, answering once it is committed; false (nothing written) when `folder/rest`
   * has one already. The rows asked for in one turn of the event loop share one commit: a batch's
   * documents cost one WAL commit, not one each (45 µs each here).
   */
  insert(folder: string, rest: string, bytes: Uint8Array, now: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.flush());
      this.pending.push({ folder, rest, bytes, now, inserted: false, resolve, reject });
    });
  }

  private flush(): void {
    const rows = this.pending;
    if (rows.length === 0) return;
    this.pending = [];
    try {
      this.insertAll(rows);
    } catch (err) {
      for (const row of rows) row.reject(err);
      return;
    }
    this.recent.addAll(rows.filter((row) => row.inserted));
    for (const row of rows) row.resolve(row.inserted);
  }

  bytes(folder: string, rest: string): Buffer | null {
    return this.recent.get(folder, rest) ?? this.bytesOf.get(folder, rest)?.bytes ?? null;
  }

  size(folder: string, rest: string): number | null {
    return this.sizeOf.get(folder, rest)?.size ?? null;
  }

  /**
   * Removes the row if there is one. Looked up first: a DELETE that finds nothing still takes the
   * write lock and commits (30 µs here), and most calls find nothing (a file stored under a key
   * that was never a row: each of a split's part outputs).
   */
  delete(folder: string, rest: string): void {
    // A row still waiting for its commit would come back after the delete.
    this.flush();
    this.recent.delete(folder, rest);
    if (this.rowExists.get(folder, rest) !== undefined) this.deleteRow.run(folder, rest);
  }

  /**
   * Removes the rows whose key starts with `prefix`: a whole folder (`t/`), the names of a folder
   * starting so (`t/input`), or the folders starting so (`t`).
   */
  deletePrefix(prefix: string): void {
    this.flush();
    const slash = prefix.indexOf("/");
    if (slash === -1) {
      this.recent.deleteFolders(prefix);
      this.deleteFolders.run(prefix, prefix + AFTER_KEY_CHARS);
      return;
    }
    const folder = prefix.slice(0, slash);
    const rest = prefix.slice(slash + 1);
    this.recent.deleteWithPrefix(folder, rest);
    if (rest === "") this.deleteFolder.run(folder);
    else this.deleteInFolder.run(folder, rest, rest + AFTER_KEY_CHARS);
  }

  /** The first folder after `after` (in byte order, "" for the first), or null past the last. */
  nextFolder(after: string): string | null {
    return this.folderAfter.get(after)?.folder ?? null;
  }

  /** A folder's rows, by name. */
  entriesOf(folder: string): BlobEntry[] {
    return this.rowsOf.all(folder).map((row) => ({ key: `${folder}/${row.rest}`, modifiedAt: row.modified_at }));
  }

  /** Closes the file once the rows asked for are written. */
  async close(): Promise<void> {
    this.flush();
    await this.checkpointer.detach();
    if (this.db.open) this.db.close();
  }
}

interface PendingRow {
  folder: string;
  rest: string;
  bytes: Uint8Array;
  now: number;
  inserted: boolean;
  resolve(inserted: boolean): void;
  reject(err: unknown): void;
}
