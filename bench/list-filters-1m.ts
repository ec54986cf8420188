import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { TASK_STATUS, type Task, type TaskStatus } from "../common/model/task-model.js";
import { SqliteTaskStore } from "../common/store/sqlite/sqlite-task-store.js";
import type { TaskFilter } from "../common/store/task-store.js";
import { makeTask } from "../common/store/task-store.contract.js";

/*
 * Not part of CI nor of `npm run bench`: a check that GET /api/tasks stays fast with a million tasks.
 * Fills a SQLite store with TASKS tasks (100 users, 10 jobs, 50,000 names, statuses spread, one
 * task in ten a child of one of 1,000 parents), then times, per filter, the first page and a page
 * 50 pages deep (by its cursor, limit 50), and prints SQLite's plan for the query each uses.
 *
 *   node --import tsx bench/list-filters-1m.ts [TASKS]
 */

const TASKS = Number(process.argv[2] ?? 1_000_000);
const BATCH = 10_000;
const LIMIT = 50;
const DEEP_PAGES = 50;
const REPEATS = 5;
const STATUSES: TaskStatus[] = [TASK_STATUS.output, TASK_STATUS.output, TASK_STATUS.output, TASK_STATUS.error, TASK_STATUS.input];
const ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

function idOf(n: number): string {
  let text = "";
  for (let rest = n, i = 0; i < 26; i++, rest = Math.floor(rest / 32)) text = ULID_CHARS[rest % 32]! + text;
  return `bench-${text}`;
}

function taskOf(n: number, now: number): Task {
  const parent = n % 10 === 9 ? idOf(n % 1000) : null;
  return makeTask({
    id: idOf(n),
    site: "bench",
    user: `user${n % 100}`,
    name: `doc-${n % 50_000}.pdf`,
    job: `job${n % 10}`,
    status: STATUSES[n % STATUSES.length]!,
    submitTime: now,
    availableAt: now,
    parentId: parent,
    depth: parent === null ? 0 : 1,
  });
}

const FILTERS: [label: string, filter: TaskFilter][] = [
  ["none", {}],
  ["status=error (20%)", { status: TASK_STATUS.error }],
  ["user=user7 (1%)", { user: "user7" }],
  ["job=job3 (10%)", { job: "job3" }],
  ["name=doc-123.pdf (20 tasks)", { name: "doc-123.pdf" }],
  ["parentId (1 in 1000 parents)", { parentId: idOf(9 % 1000) }],
  ["status=output + user=user7 (all of user7's)", { status: TASK_STATUS.output, user: "user7" }],
  ["status=input + user=user7 (none; tasks_user_status)", { status: TASK_STATUS.input, user: "user7" }],
  // No index has both: SQLite walks one filter's index and checks the other on each row, all 100,000 of job3's.
  ["status=input + job=job3 (none: the worst case)", { status: TASK_STATUS.input, job: "job3" }],
  ["job=job3 + status=error + name=doc-123.pdf", { job: "job3", status: TASK_STATUS.error, name: "doc-123.pdf" }],
];

const COLUMN: Record<keyof TaskFilter, string> = { status: "status", user: "user", job: "job", name: "name", parentId: "parent_id" };

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "docq-list-1m-"));
  const file = join(dir, "tasks.db");
  const store = SqliteTaskStore.open(file);
  try {
    const fillStart = performance.now();
    const now = Date.now();
    for (let start = 0; start < TASKS; start += BATCH) {
      const batch: Task[] = [];
      for (let n = start; n < Math.min(TASKS, start + BATCH); n++) batch.push(taskOf(n, now));
      await store.createMany(batch);
    }
    console.log(`filled ${TASKS} tasks in ${((performance.now() - fillStart) / 1000).toFixed(1)} s`);
    const raw = new Database(file, { readonly: true });
    console.log("| filter | rows matching | first page ms | page 50 deep ms | plan |");
    console.log("|---|---|---|---|---|");
    for (const [label, filter] of FILTERS) {
      const firstTimes: number[] = [];
      const deepTimes: number[] = [];
      let cursor: string | null = null;
      // Walk to the deep page once to get its cursor (each step is itself a cursor page).
      for (let page = 0; page < DEEP_PAGES && (page === 0 || cursor !== null); page++) {
        cursor = (await store.list(filter, { limit: LIMIT, cursor })).nextCursor;
      }
      for (let i = 0; i < REPEATS; i++) {
        let t = performance.now();
        await store.list(filter, { limit: LIMIT });
        firstTimes.push(performance.now() - t);
        t = performance.now();
        await store.list(filter, { limit: LIMIT, cursor });
        deepTimes.push(performance.now() - t);
      }
      const columns = (Object.keys(filter) as (keyof TaskFilter)[]).map((key) => COLUMN[key]);
      const where = [...columns.map((c) => `${c} = ?`), "seq < ?"].join(" AND ");
      const values = [...Object.values(filter), Number.MAX_SAFE_INTEGER];
      const plan = raw
        .prepare(`EXPLAIN QUERY PLAN SELECT * FROM tasks WHERE ${where} ORDER BY seq DESC LIMIT ?`)
        .all(...values, LIMIT + 1) as { detail: string }[];
      const count = (raw.prepare(`SELECT count(*) AS n FROM tasks WHERE ${where}`).get(...values) as { n: number }).n;
      console.log(
        `| ${label} | ${count} | ${median(firstTimes).toFixed(2)} | ${cursor === null ? "(fewer pages)" : median(deepTimes).toFixed(2)} | ${plan.map((p) => p.detail).join("; ")} |`,
      );
    }
    raw.close();
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
