import assert from "node:assert/strict";
import { existsSync, promises as fs, readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, it } from "node:test";
import Database from "better-sqlite3";
import { newTask } from "../../queue/new-task.js";
import { SqliteTaskStore } from "./sqlite-task-store.js";
import {
  attachWalCheckpointer,
  BACKSTOP_AUTOCHECKPOINT_PAGES,
  CHECKPOINT_MIN_FRAMES,
  checkpointThreadRunning,
  THREAD_START_WAL_BYTES,
} from "./wal-checkpointer.js";

const PAGE = 4096;

function openWal(file: string): Database.Database {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.exec("CREATE TABLE t (x BLOB NOT NULL)");
  return db;
}

/**
 * The WAL's frame count and how many of them are in the database, read from the WAL index (`-shm`,
 * see sqlite.org/walformat.html): mxFrame at byte 16 of its header, nBackfill at byte 96 (after the
 * header's two 48-byte copies), native byte order. Read, not asked: a checkpoint call would copy.
 */
function walIndex(file: string): { mxFrame: number; nBackfill: number } {
  const shm = readFileSync(`${file}-shm`);
  const u32 = (at: number): number => (os.endianness() === "LE" ? shm.readUInt32LE(at) : shm.readUInt32BE(at));
  return { mxFrame: u32(16), nBackfill: u32(96) };
}

/** Commits of about a page each until the WAL is past the size that hands the file to the thread. */
function growWal(db: Database.Database, file: string): void {
  const insert = db.prepare("INSERT INTO t (x) VALUES (?)");
  while (!existsSync(`${file}-wal`) || statSync(`${file}-wal`).size < THREAD_START_WAL_BYTES) insert.run(Buffer.alloc(3_000, 7));
}

/** A WAL file in `dir` with the checkpointer attached, for `use`; let go of and closed after. */
async function withAttachedWal(dir: string, use: (db: Database.Database, file: string) => Promise<void>): Promise<void> {
  const file = path.join(dir, "t.sqlite");
  const db = openWal(file);
  const checkpointer = attachWalCheckpointer(db, file, { synchronous: "NORMAL" });
  try {
    await use(db, file);
  } finally {
    await checkpointer.detach();
    db.close();
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe("attachWalCheckpointer", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-wal-checkpointer-test-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("copies the writer's commits into the database from its thread; the writer checkpoints only past the backstop", async () => {
    await withAttachedWal(dir, async (db, file) => {
      growWal(db, file);
      await until("the thread started", () => checkpointThreadRunning());
      assert.equal(db.pragma("wal_autocheckpoint", { simple: true }), BACKSTOP_AUTOCHECKPOINT_PAGES);
      const before = db.prepare("SELECT count(*) FROM t").pluck().get() as number;
      const sizeBefore = statSync(file).size;
      const insert = db.prepare("INSERT INTO t (x) VALUES (?)");
      // 1,000 commits of a page each, about 3,000 WAL frames with the tree's pages: past the thread's
      // threshold, below the backstop, so the database file grows only by the thread's copies.
      for (let i = 0; i < 1_000; i++) insert.run(Buffer.alloc(3_000, i % 251));
      await until("the thread's checkpoint", () => statSync(file).size >= sizeBefore + 300 * PAGE);
      assert.equal(db.prepare("SELECT count(*) FROM t").pluck().get(), before + 1_000);
    });
  });

  it("copies a WAL past its threshold to the end once commits pause, so the writer starts it over before the backstop", async () => {
    await withAttachedWal(dir, async (db, file) => {
      growWal(db, file);
      await until("the thread started", () => checkpointThreadRunning());
      const before = db.prepare("SELECT count(*) FROM t").pluck().get() as number;
      const insert = db.prepare("INSERT INTO t (x) VALUES (?)");
      // 10 rounds of 600 commits, 1,200-1,800 WAL frames a round (over 12,000 in all): a WAL never
      // started over would reach the backstop (4,000 frames). Between rounds the thread copies what
      // is past its threshold to the end (a smaller WAL left, when the writer started it over
      // mid-round, waits for the next round).
      let largest = 0;
      let copiedToEnd = 0;
      for (let round = 1; round <= 10; round++) {
        for (let i = 0; i < 600; i++) insert.run(Buffer.alloc(3_000, i % 251));
        largest = Math.max(largest, statSync(`${file}-wal`).size);
        await until(`round ${round} copied into the database`, () => {
          const { mxFrame, nBackfill } = walIndex(file);
          return mxFrame < CHECKPOINT_MIN_FRAMES || nBackfill === mxFrame;
        });
        if (walIndex(file).nBackfill > 0) copiedToEnd++;
      }
      assert.ok(copiedToEnd >= 1, "the thread never copied a WAL to its end");
      assert.ok(largest < 3_000 * PAGE, `the WAL grew to ${largest} bytes`);
      assert.equal(db.prepare("SELECT count(*) FROM t").pluck().get(), before + 6_000);
    });
  });

  it("stops its thread with the last file let go, and the writer checkpoints itself again", async () => {
    const first = openWal(path.join(dir, "a.sqlite"));
    const second = openWal(path.join(dir, "b.sqlite"));
    const a = attachWalCheckpointer(first, path.join(dir, "a.sqlite"), { synchronous: "NORMAL" });
    const b = attachWalCheckpointer(second, path.join(dir, "b.sqlite"), { synchronous: "FULL" });
    growWal(first, path.join(dir, "a.sqlite"));
    growWal(second, path.join(dir, "b.sqlite"));
    await until(
      "both files handed to the thread",
      () => second.pragma("wal_autocheckpoint", { simple: true }) === BACKSTOP_AUTOCHECKPOINT_PAGES,
    );
    await until(
      "both files handed to the thread",
      () => first.pragma("wal_autocheckpoint", { simple: true }) === BACKSTOP_AUTOCHECKPOINT_PAGES,
    );
    assert.equal(checkpointThreadRunning(), true);
    await a.detach();
    await a.detach();
    assert.equal(checkpointThreadRunning(), true, "b is still attached");
    assert.equal(first.pragma("wal_autocheckpoint", { simple: true }), 1_000);
    await b.detach();
    assert.equal(checkpointThreadRunning(), false);
    first.close();
    second.close();
  });

  it("a file whose WAL stays small never starts the thread: the writer keeps SQLite's own checkpoints", async () => {
    await withAttachedWal(dir, async (db) => {
      const insert = db.prepare("INSERT INTO t (x) VALUES (?)");
      for (let i = 0; i < 20; i++) insert.run(Buffer.alloc(3_000, i));
      // Several looks at the WAL (one every 250 ms) find it far below THREAD_START_WAL_BYTES.
      await sleep(800);
      assert.equal(checkpointThreadRunning(), false);
      assert.equal(db.pragma("wal_autocheckpoint", { simple: true }), 1_000);
    });
  });

  it("a SqliteTaskStore closed is the file's last connection: its WAL is checkpointed and removed", async () => {
    const file = path.join(dir, "tasks.sqlite");
    const store = SqliteTaskStore.open(file);
    const now = Date.now();
    await store.create(
      newTask({ id: "t1", site: "s", user: "u", name: "doc", job: "noop", params: {}, priority: 0, maxTries: 1, input: null }, now),
    );
    await store.close();
    assert.equal(existsSync(`${file}-wal`), false);
    const reopened = SqliteTaskStore.open(file);
    try {
      assert.equal((await reopened.get("t1"))?.id, "t1");
    } finally {
      await reopened.close();
    }
  });
});
