import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { isFinal, TASK_STATUS } from "../../model/task-model.js";
import type { ReloadEntry } from "../task-store.js";
import { makeTask, reloadFields } from "../task-store.contract.js";
import { RELOAD_SELECT, reloadRowsAsJson } from "./sqlite-reload-rows.js";
import { SqliteTaskStore } from "./sqlite-task-store.js";
import { readNonFinal, seqRanges, type NonFinalReadOptions } from "./threaded-reload.js";

const SELECT = reloadRowsAsJson(
  `SELECT ${RELOAD_SELECT} FROM tasks WHERE status IN ('input', 'work', 'wait', 'complete') AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
);

async function collect(batches: AsyncIterable<ReloadEntry[]>): Promise<ReloadEntry[]> {
  const entries: ReloadEntry[] = [];
  for await (const batch of batches) entries.push(...batch);
  return entries;
}

describe("seqRanges", () => {
  it("cuts a span into consecutive ranges that cover it once, no more ranges than seqs", () => {
    for (const [after, upTo, count] of [
      [0, 100, 16],
      [7, 8, 16],
      [0, 3, 16],
      [1_000, 1_000_000, 6],
    ] as const) {
      const ranges = seqRanges(after, upTo, count);
      assert.equal(ranges.length, Math.min(count, upTo - after));
      assert.equal(ranges[0]!.after, after);
      assert.equal(ranges[ranges.length - 1]!.upTo, upTo);
      for (let i = 1; i < ranges.length; i++) assert.equal(ranges[i]!.after, ranges[i - 1]!.upTo);
      for (const range of ranges) assert.ok(range.upTo > range.after, JSON.stringify(range));
    }
    assert.deepEqual(seqRanges(5, 5, 4), []);
  });
});

describe("readNonFinal", () => {
  let dir = "";
  let file = "";
  const tasks = Array.from({ length: 200 }, (_, i) =>
    makeTask({
      ...(i % 13 === 0 ? { id: `plain ${i}` } : {}),
      status: i % 17 === 0 ? TASK_STATUS.work : [TASK_STATUS.input, TASK_STATUS.output, TASK_STATUS.wait, TASK_STATUS.complete][i % 4]!,
      ...(i % 17 === 0 ? { lease: { owner: `worker-${i}`, expiresAt: 1_000 + i } } : {}),
      ...(i % 19 === 0 ? { tries: 2 ** 22, maxTries: 2 ** 30 } : {}),
      priority: i % 101,
      offload: i % 2 === 0,
      submitTime: 1_700_000_000_000 + (i % 7),
      availableAt: 1_700_000_000_000 + i,
    }),
  );
  const expected = tasks.filter((task) => !isFinal(task.status)).map(reloadFields);

  let db: Database.Database | undefined;
  /** What the store passes: its own connection reading on the event loop. */
  const read = (opts: Omit<NonFinalReadOptions, "file" | "select" | "readHere"> & { file?: string }): AsyncGenerator<ReloadEntry[]> => {
    const statement = db!.prepare<[number, number, number], string>(SELECT).pluck();
    return readNonFinal({ file, select: SELECT, readHere: (after, upTo, limit) => statement.get(after, upTo, limit)!, ...opts });
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "docq-threaded-reload-"));
    file = join(dir, "tasks.db");
    const store = SqliteTaskStore.open(file);
    await store.createMany(tasks);
    await store.close();
    db = new Database(file, { readonly: true });
  });
  after(async () => {
    db?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("gives every non-final row in seq order, the event loop alone or with threads, each reading several ranges in small batches", async () => {
    for (const threads of [0, 1, 2, 3]) {
      const entries = await collect(read({ afterSeq: 0, upToSeq: tasks.length, threads, batchSize: 3 }));
      assert.deepEqual(entries, expected, `${threads} threads`);
    }
  });

  it("reads the ranges of the span it is given, then past it to the end", async () => {
    const entries = await collect(read({ afterSeq: 50, upToSeq: 120, threads: 2, batchSize: 4 }));
    assert.deepEqual(
      entries,
      expected.filter((entry) => tasks.findIndex((task) => task.id === entry.id) >= 50),
    );
  });

  it("stops its threads when the reader stops early", async () => {
    let batches = 0;
    for await (const batch of read({ afterSeq: 0, upToSeq: tasks.length, threads: 2, batchSize: 2 })) {
      assert.ok(batch.length > 0);
      if (++batches === 2) break;
    }
    assert.equal(batches, 2);
  });

  it("fails naming the file when a thread cannot read it", async () => {
    const broken = join(dir, "no-tasks.db");
    new Database(broken).close();
    await assert.rejects(
      collect(read({ file: broken, afterSeq: 0, upToSeq: 1_000, threads: 2, batchSize: 5 })),
      (err: unknown) => err instanceof Error && err.message.includes(broken) && err.message.includes("no such table: tasks"),
    );
    await assert.rejects(
      collect(read({ file: join(dir, "missing.db"), afterSeq: 0, upToSeq: 1_000, threads: 2, batchSize: 5 })),
      (err: unknown) => err instanceof Error && err.message.includes("missing.db"),
    );
  });
});
