import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { ERROR_CODE, isDocqError, type ErrorCode } from "../../model/errors.js";
import { SqliteTaskStore } from "./sqlite-task-store.js";
import { isFinal, TASK_STATUS, type Task } from "../../model/task-model.js";
import type { ReloadEntry } from "../task-store.js";
import { makeTask, NOWHERE, reloadFields, taskStoreContract } from "../task-store.contract.js";

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

/** The statuses a top-level task counts as active in (user_active): those not final. */
const ACTIVE_STATUSES = Object.values(TASK_STATUS)
  .filter((status) => !isFinal(status))
  .map((status) => `'${status}'`)
  .join(", ");

/** Takes a version 6 file back to version 5: new rows were counted by triggers, as these (version 5's own). */
const UNDO_VERSION_6 = `
CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO status_counts (status, count) VALUES (NEW.status, 1) ON CONFLICT (status) DO UPDATE SET count = count + (1);
  INSERT INTO top_counts (site, ran_site, count) SELECT NEW.site, COALESCE(json_extract(NEW.processed_by, '$.site'), ''), 1 WHERE NEW.parent_id IS NULL
    ON CONFLICT (site, ran_site) DO UPDATE SET count = count + (1);
END;
CREATE TRIGGER tasks_active_insert AFTER INSERT ON tasks WHEN (NEW.parent_id IS NULL AND NEW.status IN (${ACTIVE_STATUSES})) BEGIN
  INSERT INTO user_active (user, count) VALUES (NEW.user, 1) ON CONFLICT (user) DO UPDATE SET count = count + 1;
END;
`;

/** Takes a version 6 file back to version 4 (the name index goes). */
const UNDO_VERSION_5 = `${UNDO_VERSION_6} DROP INDEX tasks_name; DROP INDEX tasks_user_status;`;

/** Takes a version 5 file back to version 3 (the tasks keep their rows, attempts, progress and callback go). */
const UNDO_VERSION_4 = `${UNDO_VERSION_5}
  DROP INDEX tasks_final_end; DROP TABLE schedules;
  ALTER TABLE tasks DROP COLUMN attempts; ALTER TABLE tasks DROP COLUMN progress; ALTER TABLE tasks DROP COLUMN progress_message;
  ALTER TABLE tasks DROP COLUMN callback_url; ALTER TABLE tasks DROP COLUMN callback;
  ALTER TABLE tasks DROP COLUMN workflow; ALTER TABLE tasks DROP COLUMN inputs; ALTER TABLE tasks DROP COLUMN timeout_ms;
`;

/** Takes a version 3 file back to version 2 (the tasks keep their rows, offload goes). */
const UNDO_VERSION_3 = `${UNDO_VERSION_4}
  DROP TRIGGER tasks_active_insert; DROP TRIGGER tasks_active_delete; DROP TRIGGER tasks_active_update;
  DROP TABLE user_active; DROP TABLE usage; DROP TABLE api_keys;
  ALTER TABLE tasks DROP COLUMN offload;
`;

async function collectEntries(store: SqliteTaskStore): Promise<ReloadEntry[]> {
  const entries: ReloadEntry[] = [];
  for await (const batch of store.loadNonFinal()) entries.push(...batch);
  return entries;
}

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
  /** A new file holding `tasks`, taken back to schema `version` by `undo` (SQL run on it after the store closed). */
  const fileAtVersion = async (tasks: readonly Task[], version: number, undo: string): Promise<string> => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    await store.createMany(tasks);
    await store.close();
    const raw = new Database(file);
    raw.exec(undo);
    raw.pragma(`user_version = ${version}`);
    raw.close();
    return file;
  };

  it("sees everything again after close and reopen", async () => {
    const file = freshFile();
    const parent = makeTask({ status: TASK_STATUS.work, tries: 1, lease: { owner: "w", expiresAt: 10 } });
    const children = [makeTask({ parentId: parent.id, depth: 1 }), makeTask({ parentId: parent.id, depth: 1 })];
    const others = Array.from({ length: 30 }, (_, i) => makeTask({ params: { i } }));

    const first = SqliteTaskStore.open(file);
    await first.createMany(others);
    await first.create(parent);
    const waiting = await first.split(
      { id: parent.id, owner: "w", tries: 1 },
      { site: "s", node: "n" },
      children.map((c) => c.id),
      () => children,
      5,
    );
    assert.ok(waiting.ok);
    const counted = (await first.childSucceeded(parent.id, 5)).task;
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
      assert.equal(raw.pragma("user_version", { simple: true }), 6);
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("groups the writes asked in one turn into one commit: each caller gets its own answer, a failing one leaves the others stored", async () => {
    const store = SqliteTaskStore.open(freshFile());
    try {
      const first = makeTask();
      await store.create(first);
      const fresh = Array.from({ length: 20 }, () => makeTask());
      const lease = { owner: "w", expiresAt: 1_000 };
      // All asked in the same turn: 20 creates, a duplicate, a claim of the first and a usage increment.
      const answers = await Promise.allSettled([
        ...fresh.map((task) => store.create(task)),
        store.create(first),
        store.claim([first.id], lease, 5),
        store.addUsage("u", "2026-12-02", { submitted: 2 }),
      ]);
      assert.deepEqual(
        answers.map((a) => a.status),
        [...fresh.map(() => "fulfilled"), "rejected", "fulfilled", "fulfilled"],
      );
      const duplicate = answers[fresh.length];
      assert.ok(duplicate?.status === "rejected" && isDocqError(duplicate.reason, ERROR_CODE.TaskExists), "the duplicate is TASK_EXISTS");
      const claimed = answers[fresh.length + 1];
      assert.ok(claimed?.status === "fulfilled" && (claimed.value as { id: string }[])[0]?.id === first.id, "the claim answers its task");
      assert.equal((await store.countByStatus()).input, 20);
      assert.equal((await store.get(first.id))?.status, TASK_STATUS.work);
      // A read asked in the same turn as writes sees them: it runs the waiting group first.
      const more = makeTask();
      const created = store.create(more);
      assert.equal((await store.get(more.id))?.id, more.id);
      await created;
      assert.equal((await store.usage({ user: "u", from: "2026-12-02", to: "2026-12-02" }))[0]?.submitted, 2);
    } finally {
      await store.close();
    }
  });

  it("answers a claim once it is in the file, unless its runner is in the store's own process (sameProcess): then at once", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const raw = new Database(file, { readonly: true });
    const statusInFile = (id: string): string | undefined =>
      raw.prepare<[string], { status: string }>("SELECT status FROM tasks WHERE id = ?").get(id)?.status;
    try {
      const [elsewhere, here] = [makeTask(), makeTask()];
      await store.createMany([elsewhere, here]);
      // A worker of another process: its run would outlive a crash of this one, so its claim must survive it too.
      assert.equal((await store.claim([elsewhere.id], { owner: "worker@other", expiresAt: 9 }, 1)).length, 1);
      assert.equal(statusInFile(elsewhere.id), TASK_STATUS.work, "a claim for a runner elsewhere is committed when answered");
      // A worker of this process: a crash losing the claim stops its run too, so the claim shares a later commit.
      assert.equal((await store.claim([here.id], { owner: "worker@here", expiresAt: 9 }, 1, { sameProcess: true })).length, 1);
      assert.equal(statusInFile(here.id), TASK_STATUS.input, "answered before its group's commit");
      await store.countByStatus();
      assert.equal(statusInFile(here.id), TASK_STATUS.work, "committed with the group");
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("counts a child that is not the last with one page to the WAL, and reads a long list of child ids back as a copy each time", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    try {
      const parent = makeTask({ status: TASK_STATUS.work, tries: 1, lease: { owner: "w", expiresAt: 10_000 }, startTime: 1 });
      /** The parent (created anew) split into 300 new parts: their ids. */
      const createAndSplit = async (): Promise<string[]> => {
        await store.create(parent);
        const parts = Array.from({ length: 300 }, () => makeTask().id);
        const split = await store.split(
          { id: parent.id, owner: "w", tries: 1 },
          { site: "test", node: "n" },
          parts,
          (p) => parts.map((id) => makeTask({ id, parentId: p.id, depth: 1 })),
          2,
        );
        assert.ok(split.ok, "split");
        return parts;
      };
      const ids = await createAndSplit();
      const walBytes = async (): Promise<number> => (await stat(`${file}-wal`)).size;
      const before = await walBytes();
      const counts = 20;
      for (let i = 0; i < counts; i++) {
        const counted = await store.childSucceeded(parent.id, 3);
        assert.ok(counted.ok, "counted");
        assert.deepEqual(counted.task.children, ids, "a count answers the parent with its list (read back without it)");
        counted.task.children.pop();
      }
      // A page is 4096 bytes and a frame's header 24; the status's index entries were rewritten too before (4 pages).
      const pagesPerCount = ((await walBytes()) - before) / counts / 4096;
      assert.ok(pagesPerCount < 1.5, `pages written per count: ${pagesPerCount}`);
      const first = await store.get(parent.id);
      const second = await store.get(parent.id);
      assert.deepEqual(first?.children, ids);
      assert.equal(first?.childrenCompleted, counts);
      first?.children.push("changed by a caller");
      assert.deepEqual(second?.children, ids, "another read's list is its own");
      assert.deepEqual((await store.get(parent.id))?.children, ids, "a later read's list too");
      // The same id again, another task split into as many other parts: its counts answer its own list.
      assert.ok(await store.delete(parent.id));
      const others = await createAndSplit();
      const counted = await store.childSucceeded(parent.id, 3);
      assert.ok(counted.ok && counted.task.childrenCompleted === 1);
      assert.deepEqual(counted.task.children, others);
    } finally {
      await store.close();
    }
  });

  it("commits with synchronous NORMAL for durability process (the default), FULL for power", async () => {
    for (const [opts, expected] of [
      [{}, "NORMAL"],
      [{ durability: "process" }, "NORMAL"],
      [{ durability: "power" }, "FULL"],
    ] as const) {
      const store = SqliteTaskStore.open(freshFile(), opts);
      try {
        assert.equal(store.synchronous, expected, JSON.stringify(opts));
      } finally {
        await store.close();
      }
    }
  });

  it("keeps its stats counts in step with the rows through inserts, transitions and deletes, without a scan", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const raw = new Database(file, { readonly: true });
    try {
      const tasks = Array.from({ length: 40 }, (_, i) =>
        makeTask({ site: i % 3 === 0 ? "bb" : "aa", ...(i % 5 === 0 ? { parentId: "aa-parent" } : {}) }),
      );
      await store.createMany(tasks.slice(0, 30));
      for (const task of tasks.slice(30)) await store.create(task);
      for (const [i, task] of tasks.entries()) {
        if (i % 2 === 0) await store.claim([task.id], { owner: "w", expiresAt: 9 }, 1);
        if (i % 4 === 0)
          await store.succeed(
            { id: task.id, owner: "w", tries: 1 },
            { output: "o", processedBy: { site: i % 8 === 0 ? "cc" : "aa", node: "n" } },
            2,
          );
        if (i % 7 === 0) await store.delete(task.id);
      }
      // Read first: it commits the store's open group (a claim is answered before its commit), which the raw connection then sees.
      const counts = await store.countByStatus();
      const scanned = raw
        .prepare<[], { status: string; count: number }>("SELECT status, COUNT(*) AS count FROM tasks GROUP BY status")
        .all();
      for (const { status, count } of scanned) assert.equal(counts[status as keyof typeof counts], count, status);
      assert.equal(
        Object.values(counts).reduce((a, b) => a + b, 0),
        40 - tasks.filter((_, i) => i % 7 === 0).length,
      );
      const inFromScan = raw
        .prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM tasks WHERE site != 'aa' AND parent_id IS NULL")
        .get()?.n;
      const outFromScan = raw
        .prepare<[], { n: number }>(
          "SELECT COUNT(*) AS n FROM tasks WHERE site = 'aa' AND parent_id IS NULL AND json_extract(processed_by, '$.site') = 'cc'",
        )
        .get()?.n;
      const stolen = await store.countStolen("aa");
      assert.equal(stolen.in.bb ?? 0, inFromScan);
      assert.equal(stolen.out.cc ?? 0, outFromScan);
      const plan = raw.prepare("EXPLAIN QUERY PLAN SELECT status, count FROM status_counts").all() as { detail: string }[];
      assert.ok(
        plan.every((step) => !/\btasks\b/.test(step.detail)),
        "stats never read the tasks table",
      );
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("counts the single creates of one group once, as it commits: a create refused in it (a taken id) is not counted", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const raw = new Database(file, { readonly: true });
    try {
      const tasks = Array.from({ length: 12 }, (_, i) =>
        makeTask({ user: i % 2 === 0 ? "alice" : "bob", site: i % 3 === 0 ? "bb" : "aa", ...(i % 4 === 0 ? { parentId: "p" } : {}) }),
      );
      // Asked in one turn: one group, one commit.
      const asked = [...tasks.map((task) => store.create(task)), store.create({ ...tasks[0]!, name: "the same id again" })];
      const settled = await Promise.allSettled(asked);
      assert.equal(settled.filter((s) => s.status === "fulfilled").length, 12);
      assert.match(String((settled[12] as PromiseRejectedResult).reason), new RegExp(`task ${tasks[0]!.id} already exists`));
      const counts = await store.countByStatus();
      assert.equal(counts.input, 12);
      assert.equal(raw.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM tasks").get()?.n, 12);
      // Top-level tasks only (no parent): alice's are i = 2, 6, 10; bob's are every odd i.
      assert.equal(await store.countActive("alice"), 3);
      assert.equal(await store.countActive("bob"), 6);
      const stolen = await store.countStolen("aa");
      assert.equal(stolen.in.bb ?? 0, tasks.filter((t) => t.site === "bb" && t.parentId === null).length);
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("drops a group's sums with its rows when its commit fails: counts and usage stay those of what is stored", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const other = new Database(file);
    try {
      await store.create(makeTask({ user: "alice" }));
      await store.addUsage("alice", "2024-03-01", { submitted: 1 });
      // What a full disk would do to the group's sums alone: refuse mallory's usage row.
      other.exec(
        "CREATE TRIGGER refuse_mallory BEFORE INSERT ON usage WHEN NEW.user = 'mallory' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
      );
      const lost = makeTask({ user: "alice" });
      const asked = await Promise.allSettled([
        store.create(lost),
        store.addUsage("alice", "2024-03-01", { submitted: 1 }),
        store.addUsage("mallory", "2024-03-01", { submitted: 1 }),
      ]);
      assert.deepEqual(
        asked.map((a) => a.status),
        ["rejected", "rejected", "rejected"],
        "one group, one failed commit",
      );
      assert.match(String((asked[0] as PromiseRejectedResult).reason), /refused/);
      await store.create(makeTask({ user: "alice" }));
      await store.addUsage("alice", "2024-03-01", { submitted: 1 });
      assert.equal(await store.get(lost.id), null);
      assert.equal((await store.countByStatus()).input, 2);
      assert.equal(await store.countActive("alice"), 2);
      assert.deepEqual(
        (await store.usage({ from: "2024-03-01", to: "2024-03-01" })).map((row) => [row.user, row.submitted]),
        [["alice", 2]],
      );
    } finally {
      other.close();
      await store.close();
    }
  });

  it("migrates a version 1 file: counts its existing rows once, then keeps them", async () => {
    // Back to version 1: no count tables, no triggers, none of version 3.
    const file = await fileAtVersion(
      [makeTask(), makeTask(), makeTask({ status: TASK_STATUS.canceled })],
      1,
      `${UNDO_VERSION_3} DROP TRIGGER tasks_counted_insert; DROP TRIGGER tasks_counted_delete; DROP TRIGGER tasks_counted_update;` +
        " DROP TABLE status_counts; DROP TABLE top_counts;",
    );
    const reopened = SqliteTaskStore.open(file);
    try {
      await reopened.create(makeTask());
      const counts = await reopened.countByStatus();
      assert.equal(counts.input, 3);
      assert.equal(counts.canceled, 1);
      assert.equal(await reopened.countActive("alice"), 3);
    } finally {
      await reopened.close();
    }
  });

  it("migrates a version 4 file: the name filter gets its index, and lists newest first through it", async () => {
    const tasks = [makeTask({ name: "a.pdf" }), makeTask({ name: "b.pdf" }), makeTask({ name: "a.pdf" })];
    const file = await fileAtVersion(tasks, 4, UNDO_VERSION_5);
    const reopened = SqliteTaskStore.open(file);
    try {
      const page = await reopened.list({ name: "a.pdf" }, { limit: 10 });
      assert.deepEqual(
        page.items.map((t) => t.id),
        [tasks[2]!.id, tasks[0]!.id],
      );
    } finally {
      await reopened.close();
    }
    const check = new Database(file, { readonly: true });
    try {
      assert.equal(check.pragma("user_version", { simple: true }), 6);
      const plan = check
        .prepare("EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE name = ? AND seq < ? ORDER BY seq DESC LIMIT 10")
        .all("a.pdf", 9);
      assert.match(JSON.stringify(plan), /USING INDEX tasks_name/);
      const byUserAndStatus = check
        .prepare("EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE status = ? AND user = ? AND seq < ? ORDER BY seq DESC LIMIT 10")
        .all("input", "alice", 9);
      assert.match(JSON.stringify(byUserAndStatus), /USING INDEX tasks_user_status/);
    } finally {
      check.close();
    }
  });

  it("migrates a version 3 file: every task reads with no attempts, progress or callback, and new ones keep theirs", async () => {
    const tasks = [makeTask(), makeTask({ status: TASK_STATUS.output, endTime: 5 })];
    const file = await fileAtVersion(tasks, 3, UNDO_VERSION_4);
    const reopened = SqliteTaskStore.open(file);
    try {
      for (const task of tasks) assert.deepEqual(await reopened.get(task.id), task);
      const kept = makeTask({
        attempts: [{ n: 1, site: "test", node: "w1", start: 1, end: 2, outcome: "retry", error: "boom" }],
        progress: 0.5,
        progressMessage: "page 1 of 2",
        callbackUrl: "http://127.0.0.1:9/hook",
        callback: { state: "pending", tries: 0, lastStatus: null, lastError: null, lastTryAt: null, deliveredAt: null },
      });
      await reopened.create(kept);
      assert.deepEqual(await reopened.get(kept.id), kept);
    } finally {
      await reopened.close();
    }
  });

  it("migrates a version 2 file: every task lendable, active counts taken once, account tables empty and working", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const parent = makeTask({ status: TASK_STATUS.wait });
    const tasks = [
      makeTask(),
      makeTask({ status: TASK_STATUS.work, tries: 1, lease: { owner: "w", expiresAt: 9 } }),
      parent,
      makeTask({ status: TASK_STATUS.output }),
      makeTask({ parentId: parent.id, depth: 1 }),
      makeTask({ user: "bob", status: TASK_STATUS.complete }),
      makeTask({ user: "bob", status: TASK_STATUS.canceled }),
    ];
    await store.createMany(tasks);
    await store.close();
    // Back to version 2: the tasks as that version wrote them (no offload column), no account tables.
    const raw = new Database(file);
    raw.exec(UNDO_VERSION_3);
    raw.pragma("user_version = 2");
    assert.equal(
      (raw.prepare("SELECT * FROM tasks LIMIT 1").get() as Record<string, unknown>).offload,
      undefined,
      "version 2 has no offload column",
    );
    raw.close();

    const reopened = SqliteTaskStore.open(file);
    try {
      for (const task of tasks) assert.deepEqual(await reopened.get(task.id), { ...task, offload: true });
      assert.ok((await collectEntries(reopened)).every((entry) => entry.offload));
      assert.equal(await reopened.countActive("alice"), 3, "queued, working and waiting top-level tasks; not the output or the child");
      assert.equal(await reopened.countActive("bob"), 1);
      // The triggers run from here on.
      await reopened.create(makeTask({ offload: false }));
      await reopened.cancel(parent.id, "stop", 1);
      assert.equal(await reopened.countActive("alice"), 3);
      assert.deepEqual(await reopened.listKeys(), []);
      await reopened.createKey({
        id: "k1",
        user: "alice",
        hash: "a".repeat(64),
        limits: { offload: false },
        createdAt: 1,
        revokedAt: null,
      });
      await reopened.addUsage("alice", "2024-01-01", { submitted: 2 });
      assert.equal((await reopened.listKeys()).length, 1);
      assert.equal((await reopened.usage({ from: "2024-01-01", to: "2024-01-01" }))[0]?.submitted, 2);
    } finally {
      await reopened.close();
    }
    const check = new Database(file, { readonly: true });
    try {
      assert.equal(check.pragma("user_version", { simple: true }), 6);
    } finally {
      check.close();
    }
  });

  it("migrates a version 5 file: its insert triggers go, and every count stays equal to a scan of the rows (none counted twice)", async () => {
    const ran = { site: "far", node: "n" };
    const file = await fileAtVersion(
      [makeTask(), makeTask({ user: "bob", status: TASK_STATUS.output, processedBy: ran })],
      5,
      UNDO_VERSION_6,
    );
    const reopened = SqliteTaskStore.open(file);
    const check = new Database(file, { readonly: true });
    try {
      const triggers = check.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name").pluck().all();
      assert.deepEqual(triggers, ["tasks_active_delete", "tasks_active_update", "tasks_counted_delete", "tasks_counted_update"]);
      const parent = makeTask();
      await reopened.createMany([
        parent,
        makeTask({ parentId: parent.id, depth: 1 }),
        makeTask({ user: "bob", status: TASK_STATUS.error, processedBy: ran }),
        makeTask({ user: "bob", status: TASK_STATUS.wait, processedBy: ran }),
        makeTask({ site: "other" }),
      ]);
      await reopened.create(makeTask({ user: "bob" }));
      await reopened.create(makeTask({ parentId: parent.id, depth: 1, status: TASK_STATUS.output, processedBy: ran }));
      const byStatus = check.prepare<[], { status: string; n: number }>("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status").all();
      const counts = await reopened.countByStatus();
      for (const { status, n } of byStatus) assert.equal(counts[status as keyof typeof counts], n, status);
      assert.equal(
        Object.values(counts).reduce((sum, n) => sum + n, 0),
        byStatus.reduce((sum, row) => sum + row.n, 0),
      );
      const tops = (sql: string) => check.prepare<[], { site: string; ran_site: string; n: number }>(sql).all();
      assert.deepEqual(
        tops("SELECT site, ran_site, count AS n FROM top_counts WHERE count <> 0 ORDER BY site, ran_site"),
        tops(
          "SELECT site, COALESCE(json_extract(processed_by, '$.site'), '') AS ran_site, COUNT(*) AS n FROM tasks WHERE parent_id IS NULL GROUP BY 1, 2 ORDER BY 1, 2",
        ),
      );
      assert.equal(await reopened.countActive("alice"), 3, "queued top-level tasks of alice: not the children");
      assert.equal(await reopened.countActive("bob"), 2, "bob's waiting and queued tasks: not the output or the error");
    } finally {
      check.close();
      await reopened.close();
    }
  });

  it("inserts a row and its counts together: a count refused after the row's insert leaves neither", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const other = new Database(file);
    try {
      await store.create(makeTask());
      // What a full disk would do to the counts' write alone: refuse the first row of a status.
      other.exec(
        `CREATE TRIGGER refuse_canceled BEFORE INSERT ON status_counts WHEN NEW.status = '${TASK_STATUS.canceled}' BEGIN SELECT RAISE(ABORT, 'refused'); END;`,
      );
      const refused = makeTask({ status: TASK_STATUS.canceled });
      await assert.rejects(store.create(refused), /refused/);
      await assert.rejects(store.createMany([makeTask(), makeTask({ status: TASK_STATUS.canceled })]), /refused/);
      const after = makeTask();
      await store.create(after);
      assert.equal(await store.get(refused.id), null);
      assert.deepEqual(other.prepare<[], { status: string; n: number }>("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status").all(), [
        { status: TASK_STATUS.input, n: 2 },
      ]);
      const counts = await store.countByStatus();
      assert.equal(counts.input, 2);
      assert.equal(counts.canceled, 0);
      assert.equal(await store.countActive("alice"), 2);
    } finally {
      other.close();
      await store.close();
    }
  });

  it("keeps user_active in step with a scan through inserts, transitions, splits, patches and deletes, and counts without reading tasks", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const raw = new Database(file, { readonly: true });
    try {
      const users = ["ann", "ben", "cat"];
      const tasks = Array.from({ length: 60 }, (_, i) =>
        makeTask({
          user: users[i % 3],
          ...(i % 6 === 0 ? { parentId: "test-parent", depth: 1 } : {}),
          ...(i % 10 === 0 ? { status: TASK_STATUS.error } : {}),
        }),
      );
      await store.createMany(tasks.slice(0, 45));
      for (const task of tasks.slice(45)) await store.create(task);
      for (const [i, task] of tasks.entries()) {
        if (i % 2 === 0) await store.claim([task.id], { owner: "w", expiresAt: 9 }, 1);
        if (i % 4 === 0)
          await store.succeed({ id: task.id, owner: "w", tries: 1 }, { output: "o", processedBy: { site: "s", node: "n" } }, 2);
        if (i % 5 === 0) await store.cancel(task.id, "stop", 2);
        if (i % 9 === 0)
          await store.requeue({ id: task.id, owner: "w", tries: 1 }, { error: "e", processedBy: null, ranAt: NOWHERE }, 3, 3);
        if (i % 11 === 0) await store.split({ id: task.id, owner: "w", tries: 1 }, { site: "s", node: "n" }, [], () => [], 5_000);
        if (i % 7 === 0) await store.delete(task.id);
      }
      const scanned = new Map(
        raw
          .prepare<[], { user: string; n: number }>(
            "SELECT user, COUNT(*) AS n FROM tasks WHERE parent_id IS NULL AND status IN ('input', 'work', 'wait', 'complete') GROUP BY user",
          )
          .all()
          .map((r) => [r.user, r.n]),
      );
      for (const user of users) assert.equal(await store.countActive(user), scanned.get(user) ?? 0, user);
      const plan = raw.prepare("EXPLAIN QUERY PLAN SELECT count FROM user_active WHERE user = 'ann'").all() as { detail: string }[];
      assert.ok(
        plan.every((step) => !/\btasks\b/.test(step.detail)),
        "countActive never reads the tasks table",
      );
    } finally {
      raw.close();
      await store.close();
    }
  });

  it("reads usage through the usage table's keys, never a scan", async () => {
    const file = freshFile();
    const store = SqliteTaskStore.open(file);
    const raw = new Database(file, { readonly: true });
    try {
      const plan = (sql: string) =>
        (raw.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((step) => step.detail).join("; ");
      assert.match(
        plan("SELECT * FROM usage WHERE user = 'a' AND day BETWEEN '2024-01-01' AND '2024-01-31' ORDER BY day"),
        /SEARCH usage USING PRIMARY KEY/,
      );
      const all = plan("SELECT * FROM usage INDEXED BY usage_day WHERE day BETWEEN '2024-01-01' AND '2024-01-31' ORDER BY day, user");
      assert.match(all, /SEARCH usage USING (COVERING )?INDEX usage_day/);
      assert.doesNotMatch(all, /TEMP B-TREE/, "no sort: the index gives day, user order");
    } finally {
      raw.close();
      await store.close();
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
    await assert.rejects(
      store.create(makeTask()),
      (err: unknown) => isDocqError(err) && err.message.includes("create failed") && err.cause !== undefined,
    );
  });

  it("guards across two connections to one file: the second claim of a task misses", async () => {
    const file = freshFile();
    const one = SqliteTaskStore.open(file);
    const two = SqliteTaskStore.open(file);
    try {
      const task = makeTask();
      await one.create(task);
      assert.equal((await one.claim([task.id], { owner: "one", expiresAt: 1 }, 1)).length, 1);
      assert.equal((await one.get(task.id))?.status, "work");
      assert.deepEqual(await two.claim([task.id], { owner: "two", expiresAt: 1 }, 1), []);
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
      await store.claim([task.id], { owner: "w", expiresAt: 9 }, 1);
      // Answered once committed, with the claim before it (a claim alone is answered before its commit).
      await store.progress({ id: task.id, owner: "w", tries: 1 }, 0.5, "half");
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
      assert.deepEqual(await store.get(task.id), {
        ...task,
        status: "work",
        tries: 1,
        lease: { owner: "w", expiresAt: 9 },
        startTime: 1,
        progress: 0.5,
        progressMessage: "half",
      });
    } finally {
      await store.close();
    }
  });

  it("reloads 100,000 tasks and more through reader threads, as one reader would: every state, order, what is created meanwhile", async (t) => {
    const store = SqliteTaskStore.open(freshFile());
    try {
      const now = Date.now();
      const statuses = [TASK_STATUS.input, TASK_STATUS.output, TASK_STATUS.wait, TASK_STATUS.complete, TASK_STATUS.input];
      const tasks = Array.from({ length: 130_000 }, (_, i) =>
        makeTask({
          // Some ids are not <site>-<ULID>, some rows do not fit the packed integer (a lease, counts too large).
          ...(i % 997 === 0 ? { id: `plain id ${i}` } : {}),
          priority: i % 101,
          status: i % 1_009 === 0 ? TASK_STATUS.work : statuses[i % statuses.length]!,
          ...(i % 1_009 === 0 ? { lease: { owner: `worker-${i}`, expiresAt: now + i } } : {}),
          ...(i % 1_013 === 0 ? { maxTries: 2 ** 40, tries: 2 ** 21 } : {}),
          offload: i % 3 === 0,
          submitTime: now + (i % 50),
          availableAt: now + i,
          params: { page: i },
        }),
      );
      let started = performance.now();
      await store.createMany(tasks);
      const createMs = performance.now() - started;

      started = performance.now();
      const entries: ReloadEntry[] = [];
      let createdMeanwhile: Task | undefined;
      for await (const batch of store.loadNonFinal()) {
        entries.push(...batch);
        if (createdMeanwhile === undefined) {
          createdMeanwhile = makeTask({ priority: 7 });
          await store.create(createdMeanwhile);
        }
      }
      const loadMs = performance.now() - started;

      const expected = [...tasks.filter((task) => !isFinal(task.status)), createdMeanwhile!].map(reloadFields);
      assert.ok(expected.length > 100_000, "enough non-final tasks for the reader threads");
      assert.equal(entries.length, expected.length);
      for (let i = 0; i < expected.length; i++) assert.deepEqual(entries[i], expected[i], `entry ${i}`);
      t.diagnostic(`createMany 130k: ${createMs.toFixed(0)} ms; loadNonFinal ${entries.length}: ${loadMs.toFixed(0)} ms`);
    } finally {
      await store.close();
    }
  });
});
