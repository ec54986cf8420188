import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { ERROR_CODE, isDocqError, type ErrorCode } from "./errors.js";
import { SqliteTaskStore } from "./sqlite-task-store.js";
import { TASK_STATUS } from "./task-model.js";
import { makeTask, taskStoreContract } from "./task-store.contract.js";

taskStoreContract("SqliteTaskStore", async () => {
  const dir = await mkdtemp(join(tmpdir(), "docq-task-store-"));
  const store = SqliteTaskStore.open(join(dir, "tasks.db"));
  return {
    store,
    async cleanup() {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

function rejectsWithCode(code: ErrorCode, fileInMessage?: string) {
  return (err: unknown): boolean => {
    assert.ok(isDocqError(err, code), `expected DocqError ${code}, got ${String(err)}`);
    if (fileInMessage !== undefined) assert.ok(err.message.includes(fileInMessage), `message names ${fileInMessage}: ${err.message}`);
    return true;
  };
}

describe("SqliteTaskStore", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "docq-sqlite-store-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  let fileCount = 0;
  /** A fresh file per test, in a folder that does not exist yet (open creates it). */
  const freshFile = (): string => join(dir, `case-${++fileCount}`, "nested", "tasks.db");

  it("sees everything again after close and reopen", async () => {
    const file = freshFile();
    const parent = makeTask({ status: TASK_STATUS.work, tries: 1, lease: { owner: "w", expiresAt: 10 } });
    const children = [makeTask({ parentId: parent.id, depth: 1 }), makeTask({ parentId: parent.id, depth: 1 })];
    const others = Array.from({ length: 30 }, (_, i) => makeTask({ params: { i } }));

    const first = SqliteTaskStore.open(file);
    await first.createMany(others);
    await first.create(parent);
    const waiting = await first.split(parent.id, { status: TASK_STATUS.work, leaseOwner: "w" }, {
      status: TASK_STATUS.wait,
      lease: null,
      children: children.map((c) => c.id),
      childrenTotal: 2,
    }, children);
    assert.ok(waiting !== null);
    const counted = await first.incrementChildrenCompleted(parent.id);
    const listed = await first.list({}, { limit: 100 });
    await first.close();

    const second = SqliteTaskStore.open(file);
    try {
      assert.deepEqual(await second.get(parent.id), counted);
      assert.deepEqual(await second.children(parent.id), children);
      assert.deepEqual(await second.list({}, { limit: 100 }), listed);
      assert.equal((await second.countByStatus()).input, 32);
      // seq continues after reopen: the next task is the newest.
      const next = makeTask();
      await second.create(next);
      assert.equal((await second.list({}, { limit: 1 })).items[0]?.id, next.id);
    } finally {
      await second.close();
    }
  });

  it("runs in WAL mode at the current schema version", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    await store.create(makeTask());
    const raw = new Database(file, { readonly: true });
    try {
      assert.equal(raw.pragma("journal_mode", { simple: true }), "wal");
      assert.equal(raw.pragma("user_version", { simple: true }), 2);
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("keeps its stats counts in step with the rows through inserts, transitions and deletes, without a scan", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const raw = new Database(file, { readonly: true });
    try {
      const tasks = Array.from({ length: 40 }, (_, i) => makeTask({ site: i % 3 === 0 ? "bb" : "aa", ...(i % 5 === 0 ? { parentId: "aa-parent" } : {}) }));
      await store.createMany(tasks.slice(0, 30));
      for (const task of tasks.slice(30)) await store.create(task);
      for (const [i, task] of tasks.entries()) {
        if (i % 2 === 0) await store.update(task.id, { status: "input" }, { status: "work", tries: 1, lease: { owner: "w", expiresAt: 9 } });
        if (i % 4 === 0) await store.update(task.id, { status: "work" }, { status: "output", lease: null, output: "o", processedBy: { site: i % 8 === 0 ? "cc" : "aa", node: "n" } });
        if (i % 7 === 0) await store.delete(task.id);
      }
      const scanned = raw.prepare<[], { status: string; count: number }>("SELECT status, COUNT(*) AS count FROM tasks GROUP BY status").all();
      const counts = await store.countByStatus();
      for (const { status, count } of scanned) assert.equal(counts[status as keyof typeof counts], count, status);
      assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), 40 - tasks.filter((_, i) => i % 7 === 0).length);
      const inFromScan = raw.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM tasks WHERE site != 'aa' AND parent_id IS NULL").get()?.n;
      const outFromScan = raw
        .prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM tasks WHERE site = 'aa' AND parent_id IS NULL AND json_extract(processed_by, '$.site') = 'cc'")
        .get()?.n;
      const stolen = await store.countStolen("aa");
      assert.equal(stolen.in.bb ?? 0, inFromScan);
      assert.equal(stolen.out.cc ?? 0, outFromScan);
      const plan = raw.prepare("EXPLAIN QUERY PLAN SELECT status, count FROM status_counts").all() as { detail: string }[];
      assert.ok(plan.every((step) => !/\btasks\b/.test(step.detail)), "stats never read the tasks table");
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("migrates a version 1 file: counts its existing rows once, then keeps them", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    await store.createMany([makeTask(), makeTask(), makeTask({ status: TASK_STATUS.canceled })]);
    await store.close();
    // Back to version 1: no count tables, no triggers.
    const raw = new Database(file);
    raw.exec("DROP TRIGGER tasks_counted_insert; DROP TRIGGER tasks_counted_delete; DROP TRIGGER tasks_counted_update; DROP TABLE status_counts; DROP TABLE top_counts;");
    raw.pragma("user_version = 1");
    raw.close();
    const reopened = SqliteTaskStore.open(file);
    try {
      await reopened.create(makeTask());
      const counts = await reopened.countByStatus();
      assert.equal(counts.input, 3);
      assert.equal(counts.canceled, 1);
    } finally {
      await reopened.close();
    }
  });

  it("refuses a file from a newer schema version", async () => {
    const file = freshFile();
    await SqliteTaskStore.open(file).close();
    const raw = new Database(file);
    raw.pragma("user_version = 99");
    raw.close();
    assert.throws(() => SqliteTaskStore.open(file), rejectsWithCode(ERROR_CODE.Config, file));
  });

  it("reports a file that is not a database as STORE_UNAVAILABLE naming the file", async () => {
    const file = join(dir, "not-a-database.db");
    await writeFile(file, "this is not an SQLite file, just text that is long enough to have a header".repeat(20));
    assert.throws(() => SqliteTaskStore.open(file), rejectsWithCode(ERROR_CODE.StoreUnavailable, file));
  });

  it("wraps driver errors after close in STORE_UNAVAILABLE naming the operation and file", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    await store.close();
    await store.close(); // twice is harmless
    await assert.rejects(store.get(makeTask().id), rejectsWithCode(ERROR_CODE.StoreUnavailable, file));
    await assert.rejects(store.create(makeTask()), (err: unknown) => isDocqError(err) && err.message.includes("create failed") && err.cause !== undefined);
  });

  it("guards across two connections to one file: the second claim of a task misses", async () => {
    const file = freshFile();
    const one = SqliteTaskStore.open(file);
    const two = SqliteTaskStore.open(file);
    try {
      const task = makeTask();
      await one.create(task);
      const claim = (owner: string) => ({ status: TASK_STATUS.work, lease: { owner, expiresAt: 1 }, tries: 1 });
      assert.ok((await one.update(task.id, { status: TASK_STATUS.input, leaseOwner: null }, claim("one"))) !== null);
      assert.equal(await two.update(task.id, { status: TASK_STATUS.input, leaseOwner: null }, claim("two")), null);
      assert.equal((await two.get(task.id))?.lease?.owner, "one");
    } finally {
      await one.close();
      await two.close();
    }
  });

  it("keeps a write made by a process killed with SIGKILL before close", async () => {
    const file = freshFile();
    const task = makeTask({ params: { survived: true } });
    const storeUrl = pathToFileURL(join(import.meta.dirname, "sqlite-task-store.ts")).href;
    // The child writes, updates, says so, then hangs until killed: no close, no checkpoint.
    const script = `
      const { SqliteTaskStore } = await import(${JSON.stringify(storeUrl)});
      const store = SqliteTaskStore.open(${JSON.stringify(file)});
      const task = ${JSON.stringify(task)};
      await store.create(task);
      await store.update(task.id, { status: "input" }, { priority: 99 });
      process.stdout.write("written\\n");
      setInterval(() => {}, 60_000);
    `;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: join(import.meta.dirname, ".."),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("written")) resolve();
      });
      void exited.then(() => reject(new Error(`child exited before writing: ${stderr}`)));
    });
    child.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL");

    // The commits sit in the WAL (no checkpoint ran); opening replays them.
    assert.ok((await stat(`${file}-wal`)).size > 0, "the WAL holds the uncheckpointed commits");
    const store = SqliteTaskStore.open(file);
    try {
      assert.deepEqual(await store.get(task.id), { ...task, priority: 99 });
    } finally {
      await store.close();
    }
  });

  it("bulk-creates and reloads 100,000 tasks (timing printed, not asserted)", async (t) => {
    const store = SqliteTaskStore.open(freshFile());
    try {
      const now = Date.now();
      const tasks = Array.from({ length: 100_000 }, (_, i) =>
        makeTask({ priority: i % 101, submitTime: now + i, availableAt: now + i, params: { page: i } }),
      );
      let started = performance.now();
      await store.createMany(tasks);
      const createMs = performance.now() - started;

      started = performance.now();
      let loaded = 0;
      for await (const batch of store.loadNonFinal()) loaded += batch.length;
      const loadMs = performance.now() - started;

      assert.equal(loaded, tasks.length);
      t.diagnostic(`createMany 100k: ${createMs.toFixed(0)} ms; loadNonFinal 100k: ${loadMs.toFixed(0)} ms`);
    } finally {
      await store.close();
    }
  });
});
