import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { GroupCommit, type GroupCommitOptions } from "./group-commit.js";

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A WAL file with a table `t` and a deferred foreign key (a row of `child` naming no `t` row fails at COMMIT), its writer and a second reader. */
function openPair(opts: Partial<GroupCommitOptions> = {}): {
  writer: Database.Database;
  reader: Database.Database;
  group: GroupCommit;
  lost: { operations: readonly string[]; error: unknown }[];
  close(): void;
} {
  const dir = mkdtempSync(path.join(os.tmpdir(), "docq-group-commit-"));
  dirs.push(dir);
  const file = path.join(dir, "g.sqlite");
  const writer = new Database(file);
  writer.pragma("journal_mode = WAL");
  writer.pragma("foreign_keys = ON");
  writer.exec(
    "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL);" +
      "CREATE TABLE child (id TEXT PRIMARY KEY, parent TEXT REFERENCES t (id) DEFERRABLE INITIALLY DEFERRED);",
  );
  const reader = new Database(file, { readonly: true });
  const lost: { operations: readonly string[]; error: unknown }[] = [];
  const group = new GroupCommit(writer, {
    windowMs: 10,
    explain: (operation, err) => new Error(`${operation}: ${err instanceof Error ? err.message : String(err)}`),
    onLost: (operations, error) => lost.push({ operations, error }),
    ...opts,
  });
  return {
    writer,
    reader,
    group,
    lost,
    close: () => {
      reader.close();
      writer.close();
    },
  };
}

function insertInto(db: Database.Database, id: string, n = 1): () => number {
  return () => Number(db.prepare("INSERT INTO t (id, n) VALUES (?, ?)").run(id, n).changes);
}

function committedIds(reader: Database.Database): string[] {
  return reader
    .prepare<[], { id: string }>("SELECT id FROM t ORDER BY id")
    .all()
    .map((row) => row.id);
}

describe("GroupCommit", () => {
  it("answers a durable write once it is committed: another connection sees it by then", async () => {
    const { writer, reader, group, close } = openPair({ windowMs: 60_000 });
    try {
      // Idle (no commit for a while): committed at the end of its turn, not after the window.
      assert.equal(await group.durable("insert a", insertInto(writer, "a")), 1);
      assert.deepEqual(committedIds(reader), ["a"]);
    } finally {
      close();
    }
  });

  it("answers an early write before its commit, and commits it with the group (or before a read that commits first)", async () => {
    const { writer, reader, group, close } = openPair({ windowMs: 60_000 });
    try {
      assert.equal(await group.early("claim a", insertInto(writer, "a")), 1);
      assert.deepEqual(committedIds(reader), [], "answered, not yet committed");
      assert.equal(writer.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM t").get()?.n, 1, "the writer reads its open group");
      group.commit();
      assert.deepEqual(committedIds(reader), ["a"]);
    } finally {
      close();
    }
  });

  it("commits an early write alone within the window, with no other call", async () => {
    const { writer, reader, group, close } = openPair({ windowMs: 5 });
    try {
      await group.early("renew a", insertInto(writer, "a"));
      while (committedIds(reader).length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.deepEqual(committedIds(reader), ["a"]);
      assert.equal(writer.inTransaction, false, "no transaction is left open");
    } finally {
      close();
    }
  });

  it("takes the writes of a stream into one group: durable ones asked meanwhile are answered together, in order", async () => {
    const { writer, reader, group, close } = openPair({ windowMs: 60_000 });
    try {
      await group.durable("warm-up", insertInto(writer, "0"));
      // Asked in one turn: one group, committed once the turns bring it no more writes.
      const answered: string[] = [];
      const writes = ["a", "b", "c"].map((id) =>
        group.durable(`insert ${id}`, insertInto(writer, id)).then(() => {
          answered.push(id);
          // Each answer comes after the group's commit: the whole group is there.
          assert.deepEqual(committedIds(reader), ["0", "a", "b", "c", "d"]);
        }),
      );
      await group.early("claim d", insertInto(writer, "d"));
      assert.deepEqual(committedIds(reader), ["0"], "the group is still open");
      // A turn of the event loop that brings no write ends the wait.
      await Promise.all(writes);
      assert.deepEqual(answered, ["a", "b", "c"]);
      assert.deepEqual(committedIds(reader), ["0", "a", "b", "c", "d"]);
    } finally {
      close();
    }
  });

  it("undoes a failed write alone: the others of its group are committed", async () => {
    const { writer, reader, group, close } = openPair({ windowMs: 60_000 });
    try {
      const a = group.durable("insert a", insertInto(writer, "a"));
      const again = group.durable("insert a again", insertInto(writer, "a", 2));
      const b = group.durable("insert b", insertInto(writer, "b"));
      await assert.rejects(again, /insert a again: UNIQUE constraint failed/);
      assert.deepEqual(await Promise.all([a, b]), [1, 1]);
      assert.deepEqual(committedIds(reader), ["a", "b"]);
      assert.equal(reader.prepare<[], { n: number }>("SELECT n FROM t WHERE id = 'a'").get()?.n, 1);
    } finally {
      close();
    }
  });

  it("fails every durable write of a group whose commit fails, and stores its early writes again in a transaction of their own", async () => {
    const { writer, reader, group, lost, close } = openPair({ windowMs: 60_000 });
    try {
      const early = await group.early("claim a", insertInto(writer, "a"));
      const durable = group.durable("insert b", insertInto(writer, "b"));
      // Fails at COMMIT (a deferred foreign key): the whole group is undone.
      const orphan = group.durable("insert orphan", () => writer.prepare("INSERT INTO child (id, parent) VALUES ('c', 'nobody')").run());
      assert.equal(early, 1);
      await assert.rejects(durable, /insert b, insert orphan \(one commit\): FOREIGN KEY constraint failed/);
      await assert.rejects(orphan, /FOREIGN KEY constraint failed/);
      assert.deepEqual(committedIds(reader), ["a"], "the early write, answered already, is stored; the failed group is not");
      assert.equal(reader.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM child").get()?.n, 0);
      assert.deepEqual(lost, []);
      assert.equal(writer.inTransaction, false);
      // The next group starts afresh.
      assert.equal(await group.durable("insert e", insertInto(writer, "e")), 1);
      assert.deepEqual(committedIds(reader), ["a", "e"]);
    } finally {
      close();
    }
  });

  it("reports early writes it could not store again (onLost), naming them", async () => {
    const { writer, reader, group, lost, close } = openPair({ windowMs: 60_000 });
    try {
      // An early write that itself breaks the deferred key: its group's commit fails, and so does the run again.
      await group.early("claim orphan", () => writer.prepare("INSERT INTO child (id, parent) VALUES ('c', 'nobody')").run());
      const durable = group.durable("insert b", insertInto(writer, "b"));
      await assert.rejects(durable, /FOREIGN KEY constraint failed/);
      assert.equal(lost.length, 1);
      assert.deepEqual(lost[0]?.operations, ["claim orphan"]);
      assert.match(String(lost[0]?.error), /FOREIGN KEY constraint failed/);
      assert.deepEqual(committedIds(reader), []);
      assert.equal(writer.inTransaction, false);
    } finally {
      close();
    }
  });

  it("writes the group's deferred part in its transaction just before the commit (beforeCommit), once per group", async () => {
    let deferred: string[] = [];
    let rolledBack = 0;
    const groups: string[][] = [];
    const { writer, reader, group, close } = openPair({
      windowMs: 60_000,
      beforeCommit: () => {
        if (deferred.length === 0) return;
        groups.push(deferred);
        writer.prepare("INSERT INTO t (id, n) VALUES (?, ?)").run(`sum-of-${deferred.join("-")}`, deferred.length);
        deferred = [];
      },
      afterRollback: () => {
        deferred = [];
        rolledBack++;
      },
    });
    const deferring = (id: string) => () => {
      const changes = insertInto(writer, id)();
      deferred.push(id);
      return changes;
    };
    try {
      await Promise.all([group.durable("insert a", deferring("a")), group.durable("insert b", deferring("b"))]);
      assert.deepEqual(committedIds(reader), ["a", "b", "sum-of-a-b"], "the rows and their deferred part, in one commit");
      assert.deepEqual(groups, [["a", "b"]]);
      // A group whose commit fails: the deferred part is dropped with it (afterRollback), and the next group starts afresh.
      const b = group.durable("insert c", deferring("c"));
      const orphan = group.durable("insert orphan", () => writer.prepare("INSERT INTO child (id, parent) VALUES ('x', 'nobody')").run());
      await assert.rejects(b, /FOREIGN KEY constraint failed/);
      await assert.rejects(orphan, /FOREIGN KEY constraint failed/);
      assert.equal(rolledBack, 1);
      assert.deepEqual(deferred, []);
      await group.durable("insert d", deferring("d"));
      assert.deepEqual(committedIds(reader), ["a", "b", "d", "sum-of-a-b", "sum-of-d"]);
    } finally {
      close();
    }
  });

  it("fails the whole group when its deferred part cannot be written: nothing of it is committed", async () => {
    let rolledBack = 0;
    const { writer, reader, group, close } = openPair({
      windowMs: 60_000,
      beforeCommit: () => {
        throw new Error("the deferred part failed");
      },
      afterRollback: () => rolledBack++,
    });
    try {
      await assert.rejects(group.durable("insert a", insertInto(writer, "a")), /insert a \(one commit\): the deferred part failed/);
      assert.deepEqual(committedIds(reader), []);
      assert.equal(rolledBack, 1);
      assert.equal(writer.inTransaction, false);
    } finally {
      close();
    }
  });
});
