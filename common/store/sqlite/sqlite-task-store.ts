import { mkdirSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { ApiKeyLimits, ApiKeyRecord, UsageCounts, UsageRow } from "../../accounts/account-records.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../../model/errors.js";
import type { LeaseClaim } from "../../model/claims.js";
import type { Schedule, ScheduleAdvance, ScheduleFireResult } from "../../schedules/schedule-model.js";
import { SCHEDULES_TABLE, SqliteSchedules } from "./sqlite-schedules.js";
import { attachWalCheckpointer, type WalCheckpointer } from "./wal-checkpointer.js";
import { GroupCommit } from "./group-commit.js";
import { RELOAD_SELECT, reloadRowsAsJson } from "./sqlite-reload-rows.js";
import { readNonFinal } from "./threaded-reload.js";
import { ChildIdLists } from "./child-id-lists.js";
import { GroupSums } from "./group-sums.js";
import { InsertedCounts } from "./inserted-counts.js";
import type { WorkflowDefinition } from "../../workflows/workflow-definition.js";
import { STORE_STEPS, type StoreStep } from "../../model/state-machine.js";
import {
  MAX_ATTEMPTS_KEPT,
  TASK_STATUS,
  TASK_STATUSES,
  isFinal,
  type AttemptOutcome,
  type AttemptRecord,
  type CallbackDelivery,
  type Lease,
  type ProcessedBy,
  type Task,
  type TaskParams,
  type TaskStatus,
} from "../../model/task-model.js";
import {
  USAGE_COUNTERS,
  attemptPlace,
  errorTail,
  requireUsageDay,
  stepMiss,
  stepResult,
  usageDelta,
  type AttemptPlace,
  type CancelResult,
  type ClaimOptions,
  type FailureRecord,
  type FinishedQuery,
  MINUTE_MS,
  minuteCountsOf,
  type MinuteCounts,
  type ReleaseRecord,
  type RetryResult,
  type RetryRow,
  type ReloadEntry,
  type StepResult,
  type StolenCounts,
  type SuccessRecord,
  type TaskFilter,
  type TaskPage,
  type TaskStore,
} from "../task-store.js";

/*
 * The embedded TaskStore: one SQLite file, one `tasks` table, and beside it the account records
 * (`api_keys`, `usage`) and the counts (`status_counts`, `top_counts`, `user_active`: new rows added by the insert, changes by triggers).
 *
 * better-sqlite3 is synchronous; the async methods run their statement on the
 * calling tick and settle with its result. A `createMany` of 100k tasks therefore
 * holds the event loop for a few hundred milliseconds, which the bulk path accepts
 * in exchange for one transaction.
 */

/** Bump with a migration in `migrate` whenever the table or its indexes change. */
const SCHEMA_VERSION = 6;
/** How long a statement waits for another connection's write lock before failing with SQLITE_BUSY. */
const BUSY_TIMEOUT_MS = 5_000;
/** The longest a group of hot writes stays open under a stream of them, uncommitted (group-commit.ts). */
const GROUP_WINDOW_MS = 2;
/**
 * Ids bound per renew statement. SQLite refuses more than SQLITE_MAX_VARIABLE_NUMBER
 * bound values (32766 in this build, 999 in older ones); staying under the old limit keeps
 * the statement portable and its IN list cheap to plan.
 */
const RENEW_CHUNK = 500;
/**
 * Sizes of the claim statement's IN list, each prepared once: a claim pads its ids with NULL up to
 * the smallest that fits, and a larger claim runs in chunks of the largest.
 */
const CLAIM_SIZES = [1, 8, 64, 500] as const;
const LARGEST_CLAIM = CLAIM_SIZES[CLAIM_SIZES.length - 1];
/**
 * Rows per reload read. Small, so a batch's rows die young: at 10,000 they outlived a scavenge and
 * were promoted, and a reload of 1M queued tasks left the queuer's heap 74 MB instead of 47 MB
 * (RSS 279 MB instead of 247 MB), no faster.
 */
const DEFAULT_RELOAD_BATCH = 1_000;
/**
 * Non-final tasks from which a reload reads in threads (threaded-reload.ts): starting a thread
 * costs 30-60 ms here, what a single reader spends on about 20,000 rows.
 */
const THREADED_RELOAD_MIN_TASKS = 100_000;
/** Reader threads at most, beside the event loop: past a few, the event loop filling the index is what a reload waits for. */
const RELOAD_THREADS_MAX = 4;
/**
 * Rows per multi-row INSERT on the bulk path: 50 × 27 = 1350 bound values, well under the
 * variable limit. One statement per 50 rows instead of per row cut createMany of 100k tasks
 * from about 1.07 s to 0.72 s here; 200 rows per statement gained little more.
 */
const INSERT_ROWS_PER_STATEMENT = 50;

// ---------------------------------------------------------------------------
// Row mapping: the only part of this file that knows the column names.
// ---------------------------------------------------------------------------

type SqlValue = string | number | null;

/** One row of `tasks` as SQLite returns it (`SELECT *`). */
interface TaskRow {
  /** Insertion order: children come back in creation order, list cursors stay stable. */
  seq: number;
  id: string;
  site: string;
  user: string;
  name: string;
  job: string;
  /** JSON object. */
  params: string;
  priority: number;
  status: TaskStatus;
  input: string | null;
  output: string | null;
  tries: number;
  max_tries: number;
  submit_time: number;
  available_at: number;
  start_time: number | null;
  end_time: number | null;
  duration: number | null;
  /** With lease_expires_at: the lease, both NULL when there is none (a CHECK keeps them paired). */
  lease_owner: string | null;
  lease_expires_at: number | null;
  /** JSON `{site, node}` or NULL. */
  processed_by: string | null;
  error: string | null;
  parent_id: string | null;
  depth: number;
  /** JSON array of child ids. */
  children: string;
  children_total: number;
  children_completed: number;
  /** 1: another site may run the task; 0: never lent. */
  offload: 0 | 1;
  /** JSON array of AttemptRecord, oldest first. */
  attempts: string;
  progress: number | null;
  progress_message: string | null;
  callback_url: string | null;
  /** JSON CallbackDelivery or NULL. */
  callback: string | null;
  /** A workflow task's definition (JSON WorkflowDefinition) or NULL. */
  workflow: string | null;
  /** A workflow step's input keys (JSON array) or NULL. */
  inputs: string | null;
  timeout_ms: number | null;
}

type TaskColumns = Omit<TaskRow, "seq">;
type TaskColumn = keyof TaskColumns;

/** A Record so the compiler refuses a column missing here. */
const COLUMN_PRESENT: Record<TaskColumn, true> = {
  id: true,
  site: true,
  user: true,
  name: true,
  job: true,
  params: true,
  priority: true,
  status: true,
  input: true,
  output: true,
  tries: true,
  max_tries: true,
  submit_time: true,
  available_at: true,
  start_time: true,
  end_time: true,
  duration: true,
  lease_owner: true,
  lease_expires_at: true,
  processed_by: true,
  error: true,
  parent_id: true,
  depth: true,
  children: true,
  children_total: true,
  children_completed: true,
  offload: true,
  attempts: true,
  progress: true,
  progress_message: true,
  callback_url: true,
  callback: true,
  workflow: true,
  inputs: true,
  timeout_ms: true,
};
const TASK_COLUMNS = Object.keys(COLUMN_PRESENT) as TaskColumn[];

const FILTER_COLUMNS: Record<keyof TaskFilter, TaskColumn> = {
  status: "status",
  user: "user",
  job: "job",
  name: "name",
  parentId: "parent_id",
};

function leaseOf(owner: string | null, expiresAt: number | null): Lease | null {
  return owner === null || expiresAt === null ? null : { owner, expiresAt };
}

/** A row as a Task, its `children` column given parsed (ChildIdLists). */
function rowToTask(row: Omit<TaskRow, "children">, children: string[]): Task {
  return {
    id: row.id,
    site: row.site,
    user: row.user,
    name: row.name,
    job: row.job,
    params: JSON.parse(row.params) as TaskParams,
    priority: row.priority,
    status: row.status,
    input: row.input,
    output: row.output,
    tries: row.tries,
    maxTries: row.max_tries,
    submitTime: row.submit_time,
    availableAt: row.available_at,
    startTime: row.start_time,
    endTime: row.end_time,
    duration: row.duration,
    lease: leaseOf(row.lease_owner, row.lease_expires_at),
    processedBy: row.processed_by === null ? null : (JSON.parse(row.processed_by) as ProcessedBy),
    error: row.error,
    parentId: row.parent_id,
    depth: row.depth,
    children,
    childrenTotal: row.children_total,
    childrenCompleted: row.children_completed,
    offload: row.offload !== 0,
    attempts: JSON.parse(row.attempts) as AttemptRecord[],
    progress: row.progress,
    progressMessage: row.progress_message,
    callbackUrl: row.callback_url,
    callback: row.callback === null ? null : (JSON.parse(row.callback) as CallbackDelivery),
    workflow: row.workflow === null ? null : (JSON.parse(row.workflow) as WorkflowDefinition),
    inputs: row.inputs === null ? null : (JSON.parse(row.inputs) as string[]),
    timeoutMs: row.timeout_ms,
  };
}

/** Where each column of a statement's rows sits in better-sqlite3's raw row (an array). */
type RowLayout = Readonly<Record<keyof TaskRow, number>>;

/** The positions of `tasks`' columns in a statement's rows; -1 for `children` when it is left out (childCounted). */
function rowLayoutOf(columns: readonly { name: string }[]): RowLayout {
  const position = new Map(columns.map((column, i) => [column.name, i]));
  const at = (name: keyof TaskRow): number => {
    const i = position.get(name);
    if (i !== undefined) return i;
    if (name === "children") return -1;
    throw new Error(`a task statement's rows have no column ${name}`);
  };
  const layout = { seq: at("seq") } as Record<keyof TaskRow, number>;
  for (const column of TASK_COLUMNS) layout[column] = at(column);
  return layout;
}

/**
 * A statement whose rows are rows of `tasks`, read as arrays (raw) and made objects here: an
 * object row from better-sqlite3 costs a property per column whose name it interns each time (7
 * against 3.5 µs for a row of these 36 columns here), this literal costs a fixed shape's stores.
 */
interface TaskRowStatement<Params extends unknown[], Row = TaskRow> {
  get(...params: Params): Row | undefined;
  all(...params: Params): Row[];
}

function taskRows<Params extends unknown[], Row extends Omit<TaskRow, "children"> = TaskRow>(
  statement: Database.Statement<Params, unknown>,
): TaskRowStatement<Params, Row> {
  statement.raw(true);
  const at = rowLayoutOf(statement.columns());
  const rowOf = (raw: unknown): Row => {
    const r = raw as SqlValue[];
    return {
      seq: r[at.seq],
      id: r[at.id],
      site: r[at.site],
      user: r[at.user],
      name: r[at.name],
      job: r[at.job],
      params: r[at.params],
      priority: r[at.priority],
      status: r[at.status],
      input: r[at.input],
      output: r[at.output],
      tries: r[at.tries],
      max_tries: r[at.max_tries],
      submit_time: r[at.submit_time],
      available_at: r[at.available_at],
      start_time: r[at.start_time],
      end_time: r[at.end_time],
      duration: r[at.duration],
      lease_owner: r[at.lease_owner],
      lease_expires_at: r[at.lease_expires_at],
      processed_by: r[at.processed_by],
      error: r[at.error],
      parent_id: r[at.parent_id],
      depth: r[at.depth],
      children: r[at.children],
      children_total: r[at.children_total],
      children_completed: r[at.children_completed],
      offload: r[at.offload],
      attempts: r[at.attempts],
      progress: r[at.progress],
      progress_message: r[at.progress_message],
      callback_url: r[at.callback_url],
      callback: r[at.callback],
      workflow: r[at.workflow],
      inputs: r[at.inputs],
      timeout_ms: r[at.timeout_ms],
    } as unknown as Row;
  };
  return {
    get: (...params) => {
      const raw = statement.get(...params);
      return raw === undefined ? undefined : rowOf(raw);
    },
    all: (...params) => statement.all(...params).map(rowOf),
  };
}

/** Written out field by field because createMany runs it 100k times. */
function taskToColumns(task: Task): TaskColumns {
  return {
    id: task.id,
    site: task.site,
    user: task.user,
    name: task.name,
    job: task.job,
    params: JSON.stringify(task.params),
    priority: task.priority,
    status: task.status,
    input: task.input,
    output: task.output,
    tries: task.tries,
    max_tries: task.maxTries,
    submit_time: task.submitTime,
    available_at: task.availableAt,
    start_time: task.startTime,
    end_time: task.endTime,
    duration: task.duration,
    lease_owner: task.lease?.owner ?? null,
    lease_expires_at: task.lease?.expiresAt ?? null,
    processed_by: task.processedBy === null ? null : JSON.stringify(task.processedBy),
    error: task.error,
    parent_id: task.parentId,
    depth: task.depth,
    children: JSON.stringify(task.children),
    children_total: task.childrenTotal,
    children_completed: task.childrenCompleted,
    offload: offloadColumn(task.offload),
    attempts: JSON.stringify(task.attempts ?? []),
    progress: task.progress ?? null,
    progress_message: task.progressMessage ?? null,
    callback_url: task.callbackUrl ?? null,
    callback: task.callback === null || task.callback === undefined ? null : JSON.stringify(task.callback),
    workflow: task.workflow === null || task.workflow === undefined ? null : JSON.stringify(task.workflow),
    inputs: task.inputs === null || task.inputs === undefined ? null : JSON.stringify(task.inputs),
    timeout_ms: task.timeoutMs ?? null,
  };
}

/** Only false keeps a task home: a Task built before the field existed (no offload) is lendable, as in the column's default. */
function offloadColumn(offload: boolean | undefined): 0 | 1 {
  return offload === false ? 0 : 1;
}

/** Positional values in TASK_COLUMNS order: named (@column) binding costs better-sqlite3 a property lookup per value. */
function taskToValues(task: Task): SqlValue[] {
  const columns = taskToColumns(task);
  return TASK_COLUMNS.map((column) => columns[column]);
}

/** Every combination of filter columns, in FILTER_COLUMNS order: one prepared list statement each. */
const FILTER_SHAPES: TaskColumn[][] = Object.values(FILTER_COLUMNS).reduce<TaskColumn[][]>(
  (shapes, column) => [...shapes, ...shapes.map((shape) => [...shape, column])],
  [[]],
);

function listKey(filterColumns: readonly TaskColumn[], withCursor: boolean): string {
  return `${filterColumns.join(",")}|${withCursor ? "C" : "-"}`;
}

function filterToConditions(filter: TaskFilter): { columns: TaskColumn[]; values: SqlValue[] } {
  const columns: TaskColumn[] = [];
  const values: SqlValue[] = [];
  for (const key of Object.keys(FILTER_COLUMNS) as (keyof TaskFilter)[]) {
    const value = filter[key];
    if (value === undefined) continue;
    columns.push(FILTER_COLUMNS[key]);
    values.push(value);
  }
  return { columns, values };
}

/** One row of `api_keys`. */
interface ApiKeyRow {
  id: string;
  user: string;
  hash: string;
  /** JSON object (ApiKeyLimits). */
  limits: string;
  created_at: number;
  revoked_at: number | null;
}

function rowToApiKey(row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id,
    user: row.user,
    hash: row.hash,
    limits: JSON.parse(row.limits) as ApiKeyLimits,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  };
}

/** One row of `usage`: the counters under their column names. */
interface UsageTableRow {
  user: string;
  day: string;
  submitted: number;
  output: number;
  error: number;
  canceled: number;
  run_ms: number;
  bytes_in: number;
  bytes_out: number;
  ran_elsewhere: number;
}

/** Each counter's column; a Record so the compiler refuses a counter missing here. */
const USAGE_COLUMN: Record<keyof UsageCounts, keyof UsageTableRow> = {
  submitted: "submitted",
  output: "output",
  error: "error",
  canceled: "canceled",
  runMs: "run_ms",
  bytesIn: "bytes_in",
  bytesOut: "bytes_out",
  ranElsewhere: "ran_elsewhere",
};
/** In USAGE_COUNTERS order, the order of addUsage's bound values. */
const USAGE_COLUMNS = USAGE_COUNTERS.map((counter) => USAGE_COLUMN[counter]);

function rowToUsage(row: UsageTableRow): UsageRow {
  return {
    user: row.user,
    day: row.day,
    submitted: row.submitted,
    output: row.output,
    error: row.error,
    canceled: row.canceled,
    runMs: row.run_ms,
    bytesIn: row.bytes_in,
    bytesOut: row.bytes_out,
    ranElsewhere: row.ran_elsewhere,
  };
}

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

const sqlList = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(", ");
/** Shared by the partial index and the query that must use it: SQLite matches them term by term. */
/** The guard `status IN (...)` of a store step, from the table beside the state diagram. */
const statusIn = (step: StoreStep): string => `status IN (${sqlList(STORE_STEPS[step].from)})`;
/** The guard of a step that holds a lease; binds id, owner, tries. */
const HELD_BY_CLAIM = (step: StoreStep): string => `id = ? AND ${statusIn(step)} AND lease_owner = ? AND tries = ?`;

function claimParams(claim: LeaseClaim): [string, string, number] {
  return [claim.id, claim.owner, claim.tries];
}

/**
 * `attempts = ...` appending the attempt this step ends, keeping the last MAX_ATTEMPTS_KEPT (the
 * oldest goes when full). Reads the row before the statement (tries, start_time); binds site, node,
 * end, outcome, error. A `$[#]` path removes nothing, so one bound object serves both cases.
 */
const APPEND_ATTEMPT =
  `attempts = json_remove(json_insert(attempts, '$[#]', json_object('n', tries, 'site', ?, 'node', ?, 'start', start_time,` +
  ` 'end', ?, 'outcome', ?, 'error', ?)), CASE WHEN json_array_length(attempts) >= ${MAX_ATTEMPTS_KEPT} THEN '$[0]' ELSE '$[#]' END)`;
type AttemptParams = [string | null, string | null, number, AttemptOutcome, string | null];

function attemptParams(place: AttemptPlace, end: number, outcome: AttemptOutcome, error: string | null): AttemptParams {
  return [place.site, place.node, end, outcome, errorTail(error)];
}

/** A miss inside a retry's transaction: thrown to undo the rows already written, caught outside it. */
class RetryMiss extends Error {
  constructor(readonly miss: RetryResult & { ok: false }) {
    super(`retry of ${miss.id} missed: ${miss.why}`);
  }
}

const NON_FINAL_CONDITION = `status IN (${sqlList(TASK_STATUSES.filter((s) => !isFinal(s)))})`;
/** The reload's statement (threaded-reload.ts): a batch of a range of seqs. */
const RELOAD_ROWS_SELECT = reloadRowsAsJson(
  `SELECT ${RELOAD_SELECT} FROM tasks INDEXED BY tasks_non_final WHERE ${NON_FINAL_CONDITION} AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
);

const SCHEMA_V1 = `
CREATE TABLE tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: a deleted newest seq is never reused, so cursors stay valid
  id TEXT NOT NULL,
  site TEXT NOT NULL,
  user TEXT NOT NULL,
  name TEXT NOT NULL,
  job TEXT NOT NULL,
  params TEXT NOT NULL,
  priority INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN (${sqlList(TASK_STATUSES)})),
  input TEXT,
  output TEXT,
  tries INTEGER NOT NULL,
  max_tries INTEGER NOT NULL,
  submit_time INTEGER NOT NULL,
  available_at INTEGER NOT NULL,
  start_time INTEGER,
  end_time INTEGER,
  duration INTEGER,
  lease_owner TEXT,
  lease_expires_at INTEGER,
  processed_by TEXT,
  error TEXT,
  parent_id TEXT,
  depth INTEGER NOT NULL,
  children TEXT NOT NULL,
  children_total INTEGER NOT NULL,
  children_completed INTEGER NOT NULL,
  CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
) STRICT;
-- Named (rather than a UNIQUE column) so renew can insist on it with INDEXED BY.
CREATE UNIQUE INDEX tasks_id ON tasks (id);
-- expired: only tasks in work hold a lease that can expire, so the index holds only those.
CREATE INDEX tasks_work_lease ON tasks (lease_expires_at) WHERE status = '${TASK_STATUS.work}';
-- loadNonFinal: keyset over seq reading only the non-final tasks; final ones (most, over time) stay out.
CREATE INDEX tasks_non_final ON tasks (seq) WHERE ${NON_FINAL_CONDITION};
-- children() and list({parentId}); most tasks have no parent.
CREATE INDEX tasks_parent ON tasks (parent_id, seq) WHERE parent_id IS NOT NULL;
-- list() filters, newest first.
CREATE INDEX tasks_status ON tasks (status, seq);
CREATE INDEX tasks_user ON tasks (user, seq);
CREATE INDEX tasks_job ON tasks (job, seq);
`;

/** A top-level task's row in `top_counts`: its origin site and the site that ran it ('' before any ran it). */
const RAN_SITE = (row: "NEW" | "OLD") => `COALESCE(json_extract(${row}.processed_by, '$.site'), '')`;
const bump = (row: "NEW" | "OLD", by: 1 | -1) => `
  INSERT INTO status_counts (status, count) VALUES (${row}.status, ${by})
    ON CONFLICT (status) DO UPDATE SET count = count + (${by});
  INSERT INTO top_counts (site, ran_site, count) SELECT ${row}.site, ${RAN_SITE(row)}, ${by} WHERE ${row}.parent_id IS NULL
    ON CONFLICT (site, ran_site) DO UPDATE SET count = count + (${by});`;

/**
 * Counts kept by triggers in the same statement as the change, so stats read a few small rows
 * instead of scanning a table of a million tasks (which blocked the event loop 45-130 ms a call).
 */
const SCHEMA_V2 = `
CREATE TABLE status_counts (status TEXT PRIMARY KEY, count INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE top_counts (site TEXT NOT NULL, ran_site TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (site, ran_site)) STRICT, WITHOUT ROWID;
INSERT INTO status_counts (status, count) SELECT status, COUNT(*) FROM tasks GROUP BY status;
INSERT INTO top_counts (site, ran_site, count)
  SELECT site, COALESCE(json_extract(processed_by, '$.site'), ''), COUNT(*) FROM tasks WHERE parent_id IS NULL GROUP BY 1, 2;
CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks BEGIN ${bump("NEW", 1)}
END;
CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks BEGIN ${bump("OLD", -1)}
END;
CREATE TRIGGER tasks_counted_update AFTER UPDATE OF status, processed_by ON tasks
  WHEN OLD.status IS NOT NEW.status OR OLD.processed_by IS NOT NEW.processed_by BEGIN ${bump("OLD", -1)} ${bump("NEW", 1)}
END;
`;

/** Whether a row counts in `user_active`: a top-level task that is not final (what an API key's maxQueued limits). */
const ACTIVE = (row: "NEW" | "OLD") =>
  `(${row}.parent_id IS NULL AND ${row}.status IN (${sqlList(TASK_STATUSES.filter((s) => !isFinal(s)))}))`;

/**
 * Version 3: the account records. `offload` per task (1: another site may run it; every task
 * before this version was lendable). `api_keys` holds the sha256 of each secret, never the secret;
 * `usage` one row of counters per user and UTC day, added to by upsert. `user_active` counts each
 * user's active top-level tasks, kept like status_counts by triggers that run only when a row's
 * part in the count changes (WHEN), so a child, a final task or a transition between two active
 * statuses (input to work) costs nothing more than the evaluation of the WHEN.
 */
const SCHEMA_V3 = `
ALTER TABLE tasks ADD COLUMN offload INTEGER NOT NULL DEFAULT 1;
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY NOT NULL,
  user TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  limits TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
) STRICT;
CREATE TABLE usage (
  user TEXT NOT NULL,
  day TEXT NOT NULL,
  ${USAGE_COLUMNS.map((c) => `${c} INTEGER NOT NULL DEFAULT 0`).join(",\n  ")},
  PRIMARY KEY (user, day)
) STRICT, WITHOUT ROWID;
-- usage() of every user: a day range in day, user order (one user's range reads the primary key).
CREATE INDEX usage_day ON usage (day, user);
CREATE TABLE user_active (user TEXT PRIMARY KEY, count INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT INTO user_active (user, count) SELECT user, COUNT(*) FROM tasks WHERE parent_id IS NULL AND ${NON_FINAL_CONDITION} GROUP BY user;
CREATE TRIGGER tasks_active_insert AFTER INSERT ON tasks WHEN ${ACTIVE("NEW")} BEGIN
  INSERT INTO user_active (user, count) VALUES (NEW.user, 1) ON CONFLICT (user) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER tasks_active_delete AFTER DELETE ON tasks WHEN ${ACTIVE("OLD")} BEGIN
  UPDATE user_active SET count = count - 1 WHERE user = OLD.user;
END;
-- user and parent_id too: either moves a task between counts (no step changes them today; the trigger stays exact if one does).
CREATE TRIGGER tasks_active_update AFTER UPDATE OF status, user, parent_id ON tasks
  WHEN ${ACTIVE("OLD")} IS NOT ${ACTIVE("NEW")} OR (OLD.user IS NOT NEW.user AND ${ACTIVE("OLD")}) BEGIN
  UPDATE user_active SET count = count - 1 WHERE user = OLD.user AND ${ACTIVE("OLD")};
  INSERT INTO user_active (user, count) SELECT NEW.user, 1 WHERE ${ACTIVE("NEW")} ON CONFLICT (user) DO UPDATE SET count = count + 1;
END;
`;

/**
 * Version 4: operations. Each task keeps its last attempts (JSON array), the latest progress its
 * script reported, and its webhook (`callback_url`, the delivery's state as JSON). Finished tasks
 * are found by end time for the retention sweep.
 */
const SCHEMA_V4 = `
ALTER TABLE tasks ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN progress REAL;
ALTER TABLE tasks ADD COLUMN progress_message TEXT;
ALTER TABLE tasks ADD COLUMN callback_url TEXT;
ALTER TABLE tasks ADD COLUMN callback TEXT;
ALTER TABLE tasks ADD COLUMN workflow TEXT;
ALTER TABLE tasks ADD COLUMN inputs TEXT;
ALTER TABLE tasks ADD COLUMN timeout_ms INTEGER;
CREATE INDEX tasks_final_end ON tasks (status, end_time) WHERE parent_id IS NULL AND NOT (${NON_FINAL_CONDITION});
${SCHEDULES_TABLE}
`;

/** Version 5: list({name}) newest first, like the other filters (the dashboard's search by name). */
const SCHEMA_V5 = `
CREATE INDEX tasks_name ON tasks (name, seq);
-- A user key's dashboard lists its own tasks of one status: with tasks_user alone a status the
-- user has none of reads every task of the user (10,000: 100 ms) before answering an empty page.
CREATE INDEX tasks_user_status ON tasks (user, status, seq);
`;

/**
 * Version 6: new rows are counted by the store's code, once per insert (inserted-counts.ts), no
 * longer by a trigger per row; updates and deletes still are.
 */
const SCHEMA_V6 = `
DROP TRIGGER tasks_counted_insert;
DROP TRIGGER tasks_active_insert;
`;

// ---------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------

type Statement<Params extends unknown[], Result> = Database.Statement<Params, Result>;

interface FixedStatements {
  insert: Statement<SqlValue[], unknown>;
  insertRows: Statement<SqlValue[], unknown>;
  exists: Statement<[string], number>;
  get: TaskRowStatement<[string]>;
  claims: Map<number, TaskRowStatement<SqlValue[]>>;
  succeed: TaskRowStatement<[string, string, number, number, ...AttemptParams, string, string, number]>;
  requeue: TaskRowStatement<[string, string | null, number, ...AttemptParams, string, string, number]>;
  giveUp: TaskRowStatement<[string, string | null, number, number, ...AttemptParams, string, string, number]>;
  release: TaskRowStatement<[number, ...AttemptParams, string, string, number]>;
  retry: TaskRowStatement<[string, number, number, string]>;
  splitParent: TaskRowStatement<[string, string, number, ...AttemptParams, string, string, number]>;
  childCounted: TaskRowStatement<[string], Omit<TaskRow, "children">>;
  childrenColumn: Statement<[string], string>;
  childSucceeded: TaskRowStatement<[number, string]>;
  recountChildren: TaskRowStatement<[number, number, number, number, string]>;
  failParent: TaskRowStatement<[string, number, string]>;
  finishWorkflow: TaskRowStatement<[string, number, string]>;
  cancel: TaskRowStatement<[string, number, number, ...AttemptParams, string]>;
  progress: TaskRowStatement<[number, string | null, string, string, number]>;
  renew: Statement<SqlValue[], string>;
  expired: TaskRowStatement<[number, number]>;
  reloadRows: Statement<[number, number, number], string>;
  nonFinalSeqMin: Statement<[], number | null>;
  nonFinalSeqMax: Statement<[], number | null>;
  children: TaskRowStatement<[string]>;
  delete: Statement<[string], unknown>;
  deleteFinishedTree: Statement<[string], string>;
  countByStatus: Statement<[], { status: TaskStatus; count: number }>;
  topCounts: Statement<[], { site: string; ran_site: string; count: number }>;
  insertKey: Statement<[string, string, string, string, number, number | null], unknown>;
  keyIdExists: Statement<[string], number>;
  listKeys: Statement<[], ApiKeyRow>;
  revokeKey: Statement<[number, string], ApiKeyRow>;
  addUsage: Statement<SqlValue[], unknown>;
  usageOfUser: Statement<[string, string, string], UsageTableRow>;
  usageOfAll: Statement<[string, string], UsageTableRow>;
  countActive: Statement<[string], number>;
}

export class SqliteTaskStore implements TaskStore {
  private readonly statements: FixedStatements;
  /** List queries, one per filter shape and cursor (listKey), all prepared in the constructor. */
  private readonly listStatements = new Map<string, TaskRowStatement<SqlValue[]>>();
  private readonly insertAll: (tasks: readonly Task[]) => void;
  /** Runs a step of several statements (a split, a cancel, a claim of many chunks) in one IMMEDIATE transaction. */
  private readonly step: <T>(run: () => T) => T;
  /** The hot writes, in one transaction and one commit per group (group-commit.ts). */
  private readonly writes: GroupCommit;
  private readonly renewAll: (owner: string, ids: readonly string[], expiresAt: number) => string[];
  /** The schedules table (common/schedules/): a tick's task is inserted as any other. */
  private readonly schedules: SqliteSchedules;
  /** Checkpoints the file's WAL off the event loop (none for an in-memory database). */
  private checkpointer: WalCheckpointer | undefined;
  /** The split parents' lists of children, parsed. */
  private readonly childLists = new ChildIdLists();
  /** Adds new rows to the counts tables (the triggers count updates and deletes). */
  private readonly insertedCounts: InsertedCounts;
  /** The counts of create()'s rows and the usage added in the open group of writes, written as it commits. */
  private readonly groupSums: GroupSums;

  private constructor(
    private readonly db: Database.Database,
    /** The file, for error messages. */
    readonly file: string,
  ) {
    // The hot queries name their index with INDEXED BY: without ANALYZE statistics the planner
    // prefers tasks_status for any `status = ...` term and then sorts, which turns a keyset read
    // of 10k rows into a sort of every queued task. INDEXED BY also fails loudly (at prepare)
    // if the index it names is lost.
    this.insertedCounts = new InsertedCounts(db);
    const rowPlaceholders = `(${TASK_COLUMNS.map(() => "?").join(", ")})`;
    this.statements = {
      insert: db.prepare<SqlValue[]>(`INSERT INTO tasks (${TASK_COLUMNS.join(", ")}) VALUES ${rowPlaceholders}`),
      insertRows: db.prepare<SqlValue[]>(
        `INSERT INTO tasks (${TASK_COLUMNS.join(", ")}) VALUES ${Array.from({ length: INSERT_ROWS_PER_STATEMENT }, () => rowPlaceholders).join(", ")}`,
      ),
      exists: db.prepare<[string], number>(`SELECT 1 FROM tasks WHERE id = ?`).pluck(),
      get: taskRows(db.prepare<[string]>(`SELECT * FROM tasks WHERE id = ?`)),
      claims: new Map(
        CLAIM_SIZES.map((size) => [
          size,
          taskRows(
            db.prepare<SqlValue[]>(
              `UPDATE tasks INDEXED BY tasks_id SET status = '${TASK_STATUS.work}', tries = tries + 1, lease_owner = ?, lease_expires_at = ?,` +
                ` start_time = ?, end_time = NULL, duration = NULL, progress = NULL, progress_message = NULL WHERE id IN (${Array.from({ length: size }, () => "?").join(", ")})` +
                ` AND ${statusIn("claim")} AND lease_owner IS NULL RETURNING *`,
            ),
          ),
        ]),
      ),
      succeed: taskRows(
        db.prepare(
          `UPDATE tasks SET status = '${TASK_STATUS.output}', output = ?, processed_by = ?, lease_owner = NULL, lease_expires_at = NULL, error = NULL,` +
            ` end_time = ?, duration = ? - start_time, ${APPEND_ATTEMPT} WHERE ${HELD_BY_CLAIM("succeed")} RETURNING *`,
        ),
      ),
      // A parent whose merge failed retries the merge: its children are done and must not run again.
      requeue: taskRows(
        db.prepare(
          `UPDATE tasks SET status = CASE WHEN children_total > 0 THEN '${TASK_STATUS.complete}' ELSE '${TASK_STATUS.input}' END,` +
            ` error = ?, processed_by = COALESCE(?, processed_by), available_at = ?, lease_owner = NULL, lease_expires_at = NULL,` +
            ` ${APPEND_ATTEMPT} WHERE ${HELD_BY_CLAIM("requeue")} AND tries < max_tries RETURNING *`,
        ),
      ),
      // Not counted: tries goes back, so the next claim runs the same try number again.
      release: taskRows(
        db.prepare(
          `UPDATE tasks SET status = CASE WHEN children_total > 0 THEN '${TASK_STATUS.complete}' ELSE '${TASK_STATUS.input}' END,` +
            ` tries = tries - 1, available_at = ?, lease_owner = NULL, lease_expires_at = NULL, ${APPEND_ATTEMPT}` +
            ` WHERE ${HELD_BY_CLAIM("release")} RETURNING *`,
        ),
      ),
      retry: taskRows(
        db.prepare(
          `UPDATE tasks SET status = ?, tries = 0, error = NULL, end_time = NULL, duration = NULL, available_at = ?, children_completed = ?,` +
            ` progress = NULL, progress_message = NULL WHERE id = ? AND ${statusIn("retry")} RETURNING *`,
        ),
      ),
      giveUp: taskRows(
        db.prepare(
          `UPDATE tasks SET status = '${TASK_STATUS.error}', error = ?, processed_by = COALESCE(?, processed_by), end_time = ?, duration = ? - start_time,` +
            ` lease_owner = NULL, lease_expires_at = NULL, ${APPEND_ATTEMPT} WHERE ${HELD_BY_CLAIM("giveUp")} RETURNING *`,
        ),
      ),
      splitParent: taskRows(
        db.prepare(
          `UPDATE tasks SET status = '${TASK_STATUS.wait}', processed_by = ?, children = ?, children_total = ?, children_completed = 0,` +
            ` lease_owner = NULL, lease_expires_at = NULL, ${APPEND_ATTEMPT} WHERE ${HELD_BY_CLAIM("split")} RETURNING *`,
        ),
      ),
      // A child that is not the last one: the count alone. Assigning status, even to the value it
      // has, rewrites the row's entries in every index on status (4 pages to the WAL per child instead of 1).
      // Read back without its list of children (ChildIdLists): 30 KB for a split of a thousand.
      childCounted: taskRows(
        db.prepare(
          `UPDATE tasks SET children_completed = children_completed + 1` +
            ` WHERE id = ? AND ${statusIn("childSucceeded")} AND children_completed + 1 < children_total` +
            ` RETURNING seq, ${TASK_COLUMNS.filter((column) => column !== "children").join(", ")}`,
        ),
      ),
      childrenColumn: db.prepare<[string], string>(`SELECT children FROM tasks WHERE id = ?`).pluck(),
      // SET expressions read the row before the statement: children_completed + 1 is the new count.
      childSucceeded: taskRows(
        db.prepare(
          `UPDATE tasks SET children_completed = children_completed + 1,` +
            ` status = CASE WHEN children_completed + 1 >= children_total THEN '${TASK_STATUS.complete}' ELSE status END,` +
            ` available_at = CASE WHEN children_completed + 1 >= children_total THEN ? ELSE available_at END` +
            ` WHERE id = ? AND ${statusIn("childSucceeded")} AND children_completed < children_total RETURNING *`,
        ),
      ),
      recountChildren: taskRows(
        db.prepare(
          `UPDATE tasks SET children_completed = ?, status = CASE WHEN ? >= children_total THEN '${TASK_STATUS.complete}' ELSE status END,` +
            ` available_at = CASE WHEN ? >= children_total THEN ? ELSE available_at END WHERE id = ? AND ${statusIn("recountChildren")} RETURNING *`,
        ),
      ),
      failParent: taskRows(
        db.prepare(
          `UPDATE tasks SET status = '${TASK_STATUS.error}', error = ?, end_time = ? WHERE id = ? AND ${statusIn("failParent")} RETURNING *`,
        ),
      ),
      finishWorkflow: taskRows(
        db.prepare(
          `UPDATE tasks SET status = '${TASK_STATUS.output}', output = ?, error = NULL, end_time = ?, children_completed = children_total` +
            ` WHERE id = ? AND ${statusIn("finishWorkflow")} RETURNING *`,
        ),
      ),
      // Only a task in work was running an attempt: the others keep their attempts as they are.
      cancel: taskRows(
        db.prepare(
          `UPDATE tasks SET status = '${TASK_STATUS.canceled}', error = ?, end_time = ?, duration = ? - start_time,` +
            ` lease_owner = NULL, lease_expires_at = NULL, attempts = CASE WHEN status = '${TASK_STATUS.work}'` +
            ` THEN ${APPEND_ATTEMPT.replace(/^attempts = /, "")} ELSE attempts END WHERE id = ? AND ${statusIn("cancel")} RETURNING *`,
        ),
      ),
      progress: taskRows(db.prepare(`UPDATE tasks SET progress = ?, progress_message = ? WHERE ${HELD_BY_CLAIM("progress")} RETURNING *`)),
      renew: db
        .prepare<SqlValue[], string>(
          `UPDATE tasks INDEXED BY tasks_id SET lease_expires_at = ? WHERE lease_owner = ? AND status = '${TASK_STATUS.work}'` +
            ` AND id IN (${Array.from({ length: RENEW_CHUNK }, () => "?").join(", ")}) RETURNING id`,
        )
        .pluck(),
      expired: taskRows(
        db.prepare<[number, number]>(
          `SELECT * FROM tasks INDEXED BY tasks_work_lease WHERE status = '${TASK_STATUS.work}' AND lease_expires_at < ? ORDER BY lease_expires_at, seq LIMIT ?`,
        ),
      ),
      reloadRows: db.prepare<[number, number, number], string>(RELOAD_ROWS_SELECT).pluck(),
      // Two statements: SQLite reads min() or max() alone off the index's end, both together by a scan.
      nonFinalSeqMin: db
        .prepare<[], number | null>(`SELECT min(seq) FROM tasks INDEXED BY tasks_non_final WHERE ${NON_FINAL_CONDITION}`)
        .pluck(),
      nonFinalSeqMax: db
        .prepare<[], number | null>(`SELECT max(seq) FROM tasks INDEXED BY tasks_non_final WHERE ${NON_FINAL_CONDITION}`)
        .pluck(),
      children: taskRows(db.prepare<[string]>(`SELECT * FROM tasks WHERE parent_id = ? ORDER BY seq`)),
      delete: db.prepare<[string]>(`DELETE FROM tasks WHERE id = ?`),
      // One statement: the root's guard and its whole tree, so a task retried meanwhile stays with its children.
      deleteFinishedTree: db
        .prepare<[string], string>(
          `WITH RECURSIVE tree(id) AS (SELECT id FROM tasks WHERE id = ? AND NOT (${NON_FINAL_CONDITION})` +
            ` UNION ALL SELECT tasks.id FROM tasks JOIN tree ON tasks.parent_id = tree.id)` +
            ` DELETE FROM tasks WHERE id IN (SELECT id FROM tree) RETURNING id`,
        )
        .pluck(),
      countByStatus: db.prepare<[], { status: TaskStatus; count: number }>(`SELECT status, count FROM status_counts`),
      topCounts: db.prepare<[], { site: string; ran_site: string; count: number }>(`SELECT site, ran_site, count FROM top_counts`),
      insertKey: db.prepare<[string, string, string, string, number, number | null]>(
        `INSERT INTO api_keys (id, user, hash, limits, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      keyIdExists: db.prepare<[string], number>(`SELECT 1 FROM api_keys WHERE id = ?`).pluck(),
      // rowid: insertion order among keys made in the same millisecond.
      listKeys: db.prepare<[], ApiKeyRow>(`SELECT * FROM api_keys ORDER BY created_at, rowid`),
      // COALESCE: a second revoke keeps the first time.
      revokeKey: db.prepare<[number, string], ApiKeyRow>(
        `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING *`,
      ),
      addUsage: db.prepare<SqlValue[]>(
        `INSERT INTO usage (user, day, ${USAGE_COLUMNS.join(", ")}) VALUES (?, ?, ${USAGE_COLUMNS.map(() => "?").join(", ")})` +
          ` ON CONFLICT (user, day) DO UPDATE SET ${USAGE_COLUMNS.map((c) => `${c} = ${c} + excluded.${c}`).join(", ")}`,
      ),
      usageOfUser: db.prepare<[string, string, string], UsageTableRow>(
        `SELECT * FROM usage WHERE user = ? AND day BETWEEN ? AND ? ORDER BY day`,
      ),
      usageOfAll: db.prepare<[string, string], UsageTableRow>(
        `SELECT * FROM usage INDEXED BY usage_day WHERE day BETWEEN ? AND ? ORDER BY day, user`,
      ),
      countActive: db.prepare<[string], number>(`SELECT count FROM user_active WHERE user = ?`).pluck(),
    };

    this.groupSums = new GroupSums(this.insertedCounts, this.statements.addUsage);

    // IMMEDIATE: take the write lock at BEGIN, so a second process waits on busy_timeout
    // up front instead of failing with SQLITE_BUSY when a read transaction tries to upgrade.
    const insertAll = db.transaction((tasks: readonly Task[]) => {
      let start = 0;
      for (; start + INSERT_ROWS_PER_STATEMENT <= tasks.length; start += INSERT_ROWS_PER_STATEMENT) {
        const rows = tasks.slice(start, start + INSERT_ROWS_PER_STATEMENT);
        const values: SqlValue[] = [];
        for (const task of rows) values.push(...taskToValues(task));
        try {
          this.statements.insertRows.run(...values);
        } catch (err) {
          throw this.explainInsertError(err, rows);
        }
      }
      for (; start < tasks.length; start++) this.insertRow(tasks[start] as Task);
      this.insertedCounts.add(tasks);
    });
    this.insertAll = (tasks) => insertAll.immediate(tasks);

    const step = db.transaction((run: () => unknown) => run());
    this.step = <T>(run: () => T): T => step.immediate(run) as T;
    // Nested in the group's transaction, a write's own transaction (claim, renew) is a savepoint (better-sqlite3).
    this.writes = new GroupCommit(db, {
      windowMs: GROUP_WINDOW_MS,
      explain: (operation, err) => this.wrapError(operation, err),
      onLost: (operations, err) =>
        process.stderr.write(
          `docq: task store ${file}: ${operations.join(", ")} answered before the commit could not be stored (${errorMessage(err)}):` +
            ` their tasks stay queued in the file and run after the next restart\n`,
        ),
      beforeCommit: () => this.groupSums.write(),
      afterRollback: () => this.groupSums.drop(),
    });
    for (const filter of FILTER_SHAPES) {
      for (const withCursor of [false, true]) {
        const conditions = filter.map((c) => `${c} = ?`);
        if (withCursor) conditions.push("seq < ?");
        const where = conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`;
        this.listStatements.set(
          listKey(filter, withCursor),
          taskRows(db.prepare<SqlValue[]>(`SELECT * FROM tasks ${where} ORDER BY seq DESC LIMIT ?`)),
        );
      }
    }

    const renewAll = db.transaction((owner: string, ids: readonly string[], expiresAt: number): string[] => {
      const renewed: string[] = [];
      for (let start = 0; start < ids.length; start += RENEW_CHUNK) {
        const chunk: SqlValue[] = ids.slice(start, start + RENEW_CHUNK);
        // Pad with NULL so one statement serves every chunk: `id IN (..., NULL)` never matches the NULL.
        while (chunk.length < RENEW_CHUNK) chunk.push(null);
        renewed.push(...this.statements.renew.all(expiresAt, owner, ...chunk));
      }
      return renewed;
    });
    this.renewAll = (...args) => renewAll.immediate(...args);
    this.schedules = new SqliteSchedules(db, (tasks) => this.insertAll(tasks));
  }

  /** Opens (creating it and its parent folders when missing) the store in `file`. */
  static open(file: string, opts: { durability?: "process" | "power" } = {}): SqliteTaskStore {
    const inMemory = file === ":memory:" || file === "";
    let db: Database.Database | undefined;
    try {
      if (!inMemory) mkdirSync(dirname(file), { recursive: true });
      db = new Database(file);
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const journalMode = db.pragma("journal_mode = WAL", { simple: true });
      if (!inMemory && journalMode !== "wal") {
        throw new Error(`journal_mode is ${String(journalMode)}, not wal (is the file on a network file system?)`);
      }
      // In WAL mode NORMAL fsyncs only at checkpoints, not on every commit. A commit is
      // still written to the WAL file before the statement returns, so it survives the
      // process being killed (the OS holds the pages); only an OS crash or power loss
      // can lose the last commits: durability "process" (the default) accepts that for
      // speed. FULL fsyncs the WAL at every commit, so a commit survives a power loss too.
      db.pragma(`synchronous = ${opts.durability === "power" ? "FULL" : "NORMAL"}`);
      migrate(db, file);
      const store = new SqliteTaskStore(db, file);
      if (!inMemory) store.checkpointer = attachWalCheckpointer(db, file, { synchronous: opts.durability === "power" ? "FULL" : "NORMAL" });
      return store;
    } catch (err) {
      db?.close();
      if (isDocqError(err)) throw err;
      throw docqError(ERROR_CODE.StoreUnavailable, `task store ${file}: open failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** SQLite's `synchronous` setting of this connection: NORMAL for durability "process", FULL for "power". */
  get synchronous(): "NORMAL" | "FULL" | "OTHER" {
    const level = this.db.pragma("synchronous", { simple: true });
    return level === 1 ? "NORMAL" : level === 2 ? "FULL" : "OTHER";
  }

  async create(task: Task): Promise<void> {
    // One statement, undone alone if it fails; the counts of the group's new rows are added once, as it commits (group-sums.ts).
    await this.grouped("create", () => {
      this.insertRow(task);
      this.groupSums.addCreated(task);
    });
  }

  async createMany(tasks: readonly Task[]): Promise<void> {
    if (tasks.length === 0) return;
    this.attempt("createMany", () => this.insertAll(tasks));
  }

  async get(id: string): Promise<Task | null> {
    const row = this.attempt("get", () => this.statements.get.get(id));
    return row === undefined ? null : this.taskOf(row);
  }

  async claim(ids: readonly string[], lease: Lease, now: number, opts: ClaimOptions = {}): Promise<Task[]> {
    const unique = [...new Set(ids)];
    if (unique.length === 0) return [];
    return opts.sameProcess === true
      ? this.writes.early("claim", () => this.claimWrite(unique, lease, now))
      : this.writes.durable("claim", () => this.claimWrite(unique, lease, now));
  }

  /** One statement up to the largest claim size; several chunks are one transaction, so a claim is all or nothing. */
  private claimWrite(ids: readonly string[], lease: Lease, now: number): Task[] {
    return ids.length > LARGEST_CLAIM ? this.step(() => this.claimChunks(ids, lease, now)) : this.claimChunks(ids, lease, now);
  }

  private claimChunks(ids: readonly string[], lease: Lease, now: number): Task[] {
    const leased: Task[] = [];
    for (let start = 0; start < ids.length; start += LARGEST_CLAIM) {
      const chunk: SqlValue[] = ids.slice(start, start + LARGEST_CLAIM);
      const size = CLAIM_SIZES.find((s) => s >= chunk.length) ?? LARGEST_CLAIM;
      // Padded with NULL so a few prepared statements serve every count: `id IN (..., NULL)` never matches the NULL.
      while (chunk.length < size) chunk.push(null);
      const statement = this.statements.claims.get(size);
      if (statement === undefined) throw new Error(`no claim statement for ${size} ids`);
      leased.push(...statement.all(lease.owner, lease.expiresAt, now, ...chunk).map(this.taskOf));
    }
    return leased;
  }

  async succeed(claim: LeaseClaim, result: SuccessRecord, now: number): Promise<StepResult> {
    const processedBy = JSON.stringify(result.processedBy);
    const attempt = attemptParams(result.processedBy, now, "output", null);
    return this.held("succeed", claim, () =>
      this.statements.succeed.get(result.output, processedBy, now, now, ...attempt, ...claimParams(claim)),
    );
  }

  async requeue(claim: LeaseClaim, failure: FailureRecord, availableAt: number, now: number): Promise<StepResult> {
    const processedBy = failure.processedBy === null ? null : JSON.stringify(failure.processedBy);
    const attempt = attemptParams(failure.ranAt, now, failure.leaseLost === true ? "lease_lost" : "retry", failure.error);
    return this.held("requeue", claim, () =>
      this.statements.requeue.get(failure.error, processedBy, availableAt, ...attempt, ...claimParams(claim)),
    );
  }

  async giveUp(claim: LeaseClaim, failure: FailureRecord, now: number): Promise<StepResult> {
    const processedBy = failure.processedBy === null ? null : JSON.stringify(failure.processedBy);
    const attempt = attemptParams(failure.ranAt, now, failure.leaseLost === true ? "lease_lost" : "error", failure.error);
    return this.held("giveUp", claim, () =>
      this.statements.giveUp.get(failure.error, processedBy, now, now, ...attempt, ...claimParams(claim)),
    );
  }

  async release(claim: LeaseClaim, release: ReleaseRecord, now: number): Promise<StepResult> {
    const attempt = attemptParams(release.ranAt, now, "released", release.reason);
    return this.held("release", claim, () => this.statements.release.get(now, ...attempt, ...claimParams(claim)));
  }

  async retry(rows: readonly RetryRow[], now: number): Promise<RetryResult> {
    if (rows.length === 0) return { ok: true, tasks: [] };
    return this.attempt("retry", () => {
      try {
        return this.step((): RetryResult => {
          const tasks: Task[] = [];
          for (const row of rows) {
            const after = this.statements.retry.get(row.status, now, row.childrenCompleted, row.id);
            if (after === undefined) {
              const current = this.statements.get.get(row.id);
              const task = current === undefined ? null : this.taskOf(current);
              throw new RetryMiss({ ok: false, id: row.id, why: stepMiss("retry", task), task });
            }
            tasks.push(this.taskOf(after));
          }
          return { ok: true, tasks };
        });
      } catch (err) {
        if (err instanceof RetryMiss) return err.miss;
        throw err;
      }
    });
  }

  async split(
    claim: LeaseClaim,
    processedBy: ProcessedBy,
    childIds: readonly string[],
    makeChildren: (parent: Task) => readonly Task[],
    now: number,
  ): Promise<StepResult> {
    return this.attempt("split", () =>
      this.step((): StepResult => {
        const row = this.statements.splitParent.get(
          JSON.stringify(processedBy),
          JSON.stringify(childIds),
          childIds.length,
          ...attemptParams(processedBy, now, "split", null),
          ...claimParams(claim),
        );
        const answer = this.answer("split", claim.id, row, claim);
        if (!answer.ok) return answer;
        // Throwing here rolls the parent's write back with the transaction. Many rows per INSERT, as
        // createMany: a split of a thousand parts is one of its hot paths.
        this.insertAll(makeChildren(answer.task));
        return answer;
      }),
    );
  }

  async childSucceeded(parentId: string, now: number): Promise<StepResult> {
    return this.grouped("childSucceeded", () => {
      const counted = this.statements.childCounted.get(parentId);
      if (counted !== undefined) {
        const children = this.childLists.byParent(
          parentId,
          counted.children_total,
          () => this.statements.childrenColumn.get(parentId) ?? null,
        );
        return this.answerTask("childSucceeded", parentId, rowToTask(counted, children));
      }
      // Not counted: the last child, or a miss (then this statement misses too).
      return this.answer("childSucceeded", parentId, this.statements.childSucceeded.get(now, parentId));
    });
  }

  async recountChildren(parentId: string, completed: number, now: number): Promise<StepResult> {
    return this.unheld("recountChildren", parentId, () =>
      this.statements.recountChildren.get(completed, completed, completed, now, parentId),
    );
  }

  async failParent(parentId: string, error: string, now: number): Promise<StepResult> {
    return this.unheld("failParent", parentId, () => this.statements.failParent.get(error, now, parentId));
  }

  async finishWorkflow(workflowId: string, output: string, now: number): Promise<StepResult> {
    return this.unheld("finishWorkflow", workflowId, () => this.statements.finishWorkflow.get(output, now, workflowId));
  }

  async cancel(id: string, reason: string, now: number, localSite?: string): Promise<CancelResult> {
    return this.attempt("cancel", () =>
      this.step((): CancelResult => {
        // Read first: RETURNING sees only the row after, and the lease the cancel ends is news its holder needs.
        const before = this.statements.get.get(id);
        const previousLeaseOwner = before?.lease_owner ?? null;
        const attempt = attemptParams(attemptPlace(null, previousLeaseOwner, localSite ?? null), now, "canceled", reason);
        const row = before === undefined ? undefined : this.statements.cancel.get(reason, now, now, ...attempt, id);
        const result = stepResult("cancel", row === undefined ? null : this.taskOf(row), () =>
          before === undefined ? null : this.taskOf(before),
        );
        return { ...result, previousLeaseOwner };
      }),
    );
  }

  async progress(claim: LeaseClaim, progress: number, message: string | null): Promise<StepResult> {
    return this.held("progress", claim, () => this.statements.progress.get(progress, message, ...claimParams(claim)));
  }

  async renew(owner: string, ids: readonly string[], expiresAt: number): Promise<string[]> {
    if (ids.length === 0) return [];
    // Deduplicated, or an id repeated across two chunks would be renewed and reported twice.
    const uniqueIds = [...new Set(ids)];
    return this.writes.early("renew", () => this.renewAll(owner, uniqueIds, expiresAt));
  }

  async expired(now: number, limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    return this.attempt("expired", () => this.statements.expired.all(now, limit)).map(this.taskOf);
  }

  async list(filter: TaskFilter, page: { limit: number; cursor?: string | null }): Promise<TaskPage> {
    requirePositiveInteger(page.limit, "limit");
    const beforeSeq = page.cursor === undefined || page.cursor === null ? null : decodeCursor(page.cursor);
    const { columns, values } = filterToConditions(filter);
    const rows = this.attempt("list", () => {
      const statement = this.listStatements.get(listKey(columns, beforeSeq !== null));
      if (statement === undefined) throw new Error(`no list statement for filter ${columns.join(", ")}`);
      const params: SqlValue[] = beforeSeq === null ? values : [...values, beforeSeq];
      // One row more than asked tells whether another page exists, so the last page says null.
      return statement.all(...params, page.limit + 1);
    });
    const hasMore = rows.length > page.limit;
    const pageRows = hasMore ? rows.slice(0, page.limit) : rows;
    const last = pageRows[pageRows.length - 1];
    return {
      items: pageRows.map(this.taskOf),
      nextCursor: hasMore && last !== undefined ? encodeCursor(last.seq) : null,
    };
  }

  /**
   * Keyset pagination by seq: each batch is its own short read, so writers are never held
   * behind the reload. Tasks created meanwhile appear in a later batch; none is read twice.
   */
  async *loadNonFinal(batchSize: number = DEFAULT_RELOAD_BATCH): AsyncGenerator<ReloadEntry[]> {
    requirePositiveInteger(batchSize, "batchSize");
    // Writes of the open group first: another connection (a reader thread) sees only what is committed.
    const span = this.attempt("loadNonFinal", () => this.reloadSpan());
    yield* readNonFinal({
      file: this.file,
      select: RELOAD_ROWS_SELECT,
      readHere: (afterSeq, upToSeq, limit) => this.attempt("loadNonFinal", () => this.statements.reloadRows.get(afterSeq, upToSeq, limit)!),
      batchSize,
      ...span,
    });
  }

  /**
   * The span of non-final seqs a reload reads in ranges, and by how many reader threads beside
   * the event loop: none for few tasks, one core, or an in-memory database (which no other
   * connection can open).
   */
  private reloadSpan(): { afterSeq: number; upToSeq: number; threads: number } {
    const span = { afterSeq: (this.statements.nonFinalSeqMin.get() ?? 0) - 1, upToSeq: this.statements.nonFinalSeqMax.get() ?? 0 };
    const cores = availableParallelism();
    if (cores < 2 || this.file === "" || this.file === ":memory:") return { ...span, threads: 0 };
    const counts = this.statements.countByStatus.all();
    const nonFinal = counts.reduce((sum, row) => (isFinal(row.status) ? sum : sum + row.count), 0);
    return { ...span, threads: nonFinal < THREADED_RELOAD_MIN_TASKS ? 0 : Math.min(cores, RELOAD_THREADS_MAX) };
  }

  async children(parentId: string): Promise<Task[]> {
    return this.attempt("children", () => this.statements.children.all(parentId)).map(this.taskOf);
  }

  async delete(id: string): Promise<boolean> {
    this.childLists.forgetAll();
    return this.attempt("delete", () => this.statements.delete.run(id).changes > 0);
  }

  /** Through tasks_final_end (status, end_time over the final top-level tasks); a few calls a minute, so prepared per call. */
  async finished(query: FinishedQuery, limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    const conditions = [`parent_id IS NULL`, `NOT (${NON_FINAL_CONDITION})`, `status = ?`, `end_time < ?`];
    const params: SqlValue[] = [query.status, query.endedBefore];
    if (query.user !== undefined) {
      conditions.push("user = ?");
      params.push(query.user);
    }
    if (query.job !== undefined) {
      conditions.push("job = ?");
      params.push(query.job);
    }
    const except = query.exceptJobs ?? [];
    if (except.length > 0) {
      conditions.push(`job NOT IN (${except.map(() => "?").join(", ")})`);
      params.push(...except);
    }
    const sql = `SELECT * FROM tasks INDEXED BY tasks_final_end WHERE ${conditions.join(" AND ")} ORDER BY end_time, seq LIMIT ?`;
    return this.attempt("finished", () => this.db.prepare<SqlValue[], TaskRow>(sql).all(...params, limit)).map(this.taskOf);
  }

  async deleteFinishedTree(id: string): Promise<string[]> {
    this.childLists.forgetAll();
    return this.attempt("deleteFinishedTree", () => this.statements.deleteFinishedTree.all(id));
  }

  async countByStatus(): Promise<Record<TaskStatus, number>> {
    const rows = this.attempt("countByStatus", () => this.statements.countByStatus.all());
    const counts = Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>;
    for (const row of rows) counts[row.status] = row.count;
    return counts;
  }

  /** One range of tasks_final_end per final status (end_time >= since), grouped by minute: a few calls a minute, so prepared per call. */
  async finishedPerMinute(since: number): Promise<MinuteCounts[]> {
    if (!Number.isSafeInteger(since))
      throw docqError(ERROR_CODE.BadRequest, `since must be an integer time, got ${String(since)}`, { field: "since" });
    const sql =
      `SELECT status, (end_time / ${MINUTE_MS}) * ${MINUTE_MS} AS minute, COUNT(*) AS count FROM tasks INDEXED BY tasks_final_end` +
      ` WHERE parent_id IS NULL AND NOT (${NON_FINAL_CONDITION}) AND status = ? AND end_time >= ? GROUP BY minute`;
    const rows = this.attempt("finishedPerMinute", () => {
      const statement = this.db.prepare<[string, number], { status: string; minute: number; count: number }>(sql);
      return TASK_STATUSES.filter(isFinal).flatMap((status) => statement.all(status, since));
    });
    return minuteCountsOf(rows);
  }

  async recordCallback(id: string, delivery: CallbackDelivery): Promise<Task | null> {
    const row = this.attempt("recordCallback", () =>
      this.db
        .prepare<[string, string], TaskRow>(`UPDATE tasks SET callback = ? WHERE id = ? AND NOT (${NON_FINAL_CONDITION}) RETURNING *`)
        .get(JSON.stringify(delivery), id),
    );
    return row === undefined ? null : this.taskOf(row);
  }

  /** Read once at a queuer's start: it walks tasks_final_end (every finished top-level task), no index of its own. */
  async pendingCallbacks(limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    const rows = this.attempt("pendingCallbacks", () =>
      this.db
        .prepare<[number], TaskRow>(
          `SELECT * FROM tasks WHERE parent_id IS NULL AND NOT (${NON_FINAL_CONDITION}) AND callback_url IS NOT NULL` +
            ` AND (callback IS NULL OR json_extract(callback, '$.state') = 'pending' OR json_extract(callback, '$.lastTryAt') < end_time)` +
            ` ORDER BY end_time, seq LIMIT ?`,
        )
        .all(limit),
    );
    return rows.map(this.taskOf);
  }

  async countStolen(localSite: string): Promise<StolenCounts> {
    const rows = this.attempt("countStolen", () => this.statements.topCounts.all());
    const stolen: StolenCounts = { in: {}, out: {} };
    for (const { site, ran_site: ranSite, count } of rows) {
      if (count <= 0) continue;
      if (site !== localSite) stolen.in[site] = (stolen.in[site] ?? 0) + count;
      else if (ranSite !== "" && ranSite !== localSite) stolen.out[ranSite] = (stolen.out[ranSite] ?? 0) + count;
    }
    return stolen;
  }

  async createKey(key: ApiKeyRecord): Promise<void> {
    this.attempt("createKey", () => {
      try {
        this.statements.insertKey.run(key.id, key.user, key.hash, JSON.stringify(key.limits), key.createdAt, key.revokedAt);
      } catch (err) {
        if (!(
          err instanceof Database.SqliteError &&
          (err.code === "SQLITE_CONSTRAINT_UNIQUE" || err.code === "SQLITE_CONSTRAINT_PRIMARYKEY")
        ))
          throw err;
        // Named by id only: the hash stays out of messages and logs.
        const field = this.statements.keyIdExists.get(key.id) !== undefined ? "id" : "hash";
        throw docqError(
          ERROR_CODE.BadRequest,
          `api key ${key.id}: ${field === "id" ? "a key with this id" : "a key with the same hash"} already exists`,
          {
            field,
            cause: err,
            details: { id: key.id },
          },
        );
      }
    });
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    return this.attempt("listKeys", () => this.statements.listKeys.all()).map(rowToApiKey);
  }

  async revokeKey(id: string, now: number): Promise<ApiKeyRecord | null> {
    const row = this.attempt("revokeKey", () => this.statements.revokeKey.get(now, id));
    return row === undefined ? null : rowToApiKey(row);
  }

  async addUsage(user: string, day: string, delta: Partial<UsageCounts>): Promise<void> {
    requireUsageDay(day, "day");
    const counts = usageDelta(delta);
    // Summed with the group's other usage of the user and day, written as the group commits (group-sums.ts).
    await this.grouped("addUsage", () => this.groupSums.addUsageOf(user, day, counts));
  }

  async usage(query: { user?: string; from: string; to: string }): Promise<UsageRow[]> {
    requireUsageDay(query.from, "from");
    requireUsageDay(query.to, "to");
    const { user, from, to } = query;
    const rows = this.attempt("usage", () =>
      user === undefined ? this.statements.usageOfAll.all(from, to) : this.statements.usageOfUser.all(user, from, to),
    );
    return rows.map(rowToUsage);
  }

  async countActive(user: string): Promise<number> {
    return this.attempt("countActive", () => this.statements.countActive.get(user)) ?? 0;
  }

  async createSchedule(schedule: Schedule): Promise<void> {
    this.attempt("createSchedule", () => this.schedules.createSchedule(schedule));
  }

  async getSchedule(id: string): Promise<Schedule | null> {
    return this.attempt("getSchedule", () => this.schedules.getSchedule(id));
  }

  async listSchedules(filter: { user?: string }): Promise<Schedule[]> {
    return this.attempt("listSchedules", () => this.schedules.listSchedules(filter));
  }

  async setSchedulePaused(id: string, paused: boolean, nextRunAt?: number | null): Promise<Schedule | null> {
    return this.attempt("setSchedulePaused", () => this.schedules.setSchedulePaused(id, paused, nextRunAt));
  }

  async deleteSchedule(id: string): Promise<boolean> {
    return this.attempt("deleteSchedule", () => this.schedules.deleteSchedule(id));
  }

  async dueSchedules(now: number, limit: number): Promise<Schedule[]> {
    return this.attempt("dueSchedules", () => this.schedules.dueSchedules(now, limit));
  }

  async fireSchedule(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, tasks: readonly Task[]): Promise<ScheduleFireResult> {
    return this.attempt("fireSchedule", () => this.schedules.fireSchedule(id, expectedNextRunAt, advance, tasks));
  }

  async close(): Promise<void> {
    if (!this.db.open) return;
    await this.checkpointer?.detach();
    this.attempt("close", () => this.db.close());
  }

  /**
   * Inserts one task's row alone, not counted: inside insertAll's transaction, which adds it to the
   * counts, or create()'s group, which adds it as it commits. A taken id becomes TASK_EXISTS naming it.
   */
  private insertRow(task: Task): void {
    try {
      this.statements.insert.run(...taskToValues(task));
    } catch (err) {
      throw this.explainInsertError(err, [task]);
    }
  }

  /**
   * A unique violation becomes TASK_EXISTS naming the id. SQLite does not say which row of a
   * multi-row INSERT collided; the failed statement has been undone, so the first id of `rows`
   * that already exists (or repeats within `rows`) is the one.
   */
  private explainInsertError(err: unknown, rows: readonly Task[]): unknown {
    if (!(err instanceof Database.SqliteError && err.code === "SQLITE_CONSTRAINT_UNIQUE")) return err;
    const seen = new Set<string>();
    const duplicate = rows.find((task) => {
      const taken = seen.has(task.id) || this.statements.exists.get(task.id) !== undefined;
      seen.add(task.id);
      return taken;
    });
    const id = duplicate?.id ?? rows[0]?.id ?? "?";
    return docqError(ERROR_CODE.TaskExists, `task ${id} already exists`, { field: "id", cause: err, details: { id } });
  }

  /*
   * A one-row step is its guarded statement alone, autocommitted: the guard makes the write safe
   * whatever else runs. On a miss the row is read right after to say why; better-sqlite3 is
   * synchronous and the queuer is the file's only writer, so nothing writes between the two (and
   * if something did, only the `why` would be stale, never the row).
   */

  /** A step that holds the claim's lease: its write, and on a miss the row as it is now. */
  private held(step: StoreStep, claim: LeaseClaim, write: () => TaskRow | undefined): Promise<StepResult> {
    return this.grouped(step, () => this.answer(step, claim.id, write(), claim));
  }

  /** A step on a parent: its write, and on a miss the row as it is now. */
  private unheld(step: StoreStep, id: string, write: () => TaskRow | undefined): Promise<StepResult> {
    return this.grouped(step, () => this.answer(step, id, write()));
  }

  private answer(step: StoreStep, id: string, row: TaskRow | undefined, claim?: LeaseClaim): StepResult {
    return this.answerTask(step, id, row === undefined ? null : this.taskOf(row), claim);
  }

  /** The step's answer: the task it wrote, or (null) why it did not apply, from the row as it is now. */
  private answerTask(step: StoreStep, id: string, written: Task | null, claim?: LeaseClaim): StepResult {
    const read = (): Task | null => {
      const now = this.statements.get.get(id);
      return now === undefined ? null : this.taskOf(now);
    };
    return stepResult(step, written, read, claim);
  }

  /** A whole row as a Task; a parent's long list of children is parsed once (ChildIdLists). */
  private readonly taskOf = (row: TaskRow): Task => rowToTask(row, this.childLists.fromColumn(row.id, row.children));

  /**
   * A write of the hot path (create, succeed and the other steps of a leased task, usage), run at
   * once in the open group of writes and answered once the group is committed (group-commit.ts):
   * an answered write is as durable as before. A claim and a renewal are answered before the
   * commit (writes.early). Each write is one statement or a transaction of its own (a savepoint in
   * the group's), so one that fails is undone alone and leaves the others as they are. Any other
   * call (attempt) commits the group first, so what runs after it sees every write asked before.
   */
  private grouped<T>(operation: string, run: () => T): Promise<T> {
    return this.writes.durable(operation, run);
  }

  /** Runs a driver call after the open group of writes is committed; DocqErrors pass through, anything else becomes STORE_UNAVAILABLE naming the operation and file. */
  private attempt<T>(operation: string, run: () => T): T {
    this.writes.commit();
    return this.wrap(operation, run);
  }

  private wrap<T>(operation: string, run: () => T): T {
    try {
      return run();
    } catch (err) {
      throw this.wrapError(operation, err);
    }
  }

  private wrapError(operation: string, err: unknown): unknown {
    if (isDocqError(err)) return err;
    return docqError(ERROR_CODE.StoreUnavailable, `task store ${this.file}: ${operation} failed: ${errorMessage(err)}`, { cause: err });
  }
}

/** Creates the schema in a new file, or checks that an existing one is a version this code knows. */
function migrate(db: Database.Database, file: string): void {
  const readVersion = (): number => {
    const version = db.pragma("user_version", { simple: true });
    if (typeof version !== "number" || version > SCHEMA_VERSION) {
      throw docqError(
        ERROR_CODE.Config,
        `task store ${file}: schema version ${String(version)} is newer than this docq understands (${SCHEMA_VERSION}); upgrade docq`,
      );
    }
    return version;
  };
  if (readVersion() === SCHEMA_VERSION) return;
  db.transaction(() => {
    // Read again under the write lock: another process may have migrated while we waited for it.
    const version = readVersion();
    // Version 0 is a new file; future versions add their steps here, each from the one before.
    if (version < 1) db.exec(SCHEMA_V1);
    if (version < 2) db.exec(SCHEMA_V2);
    if (version < 3) db.exec(SCHEMA_V3);
    if (version < 4) db.exec(SCHEMA_V4);
    if (version < 5) db.exec(SCHEMA_V5);
    if (version < 6) db.exec(SCHEMA_V6);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

function requirePositiveInteger(value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw docqError(ERROR_CODE.BadRequest, `${field} must be a positive integer, got ${String(value)}`, { field });
  }
}

function encodeCursor(seq: number): string {
  return Buffer.from(String(seq), "utf8").toString("base64url");
}

function decodeCursor(cursor: string): number {
  const text = Buffer.from(cursor, "base64url").toString("utf8");
  const seq = /^[1-9][0-9]{0,15}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(seq)) {
    throw docqError(ERROR_CODE.BadRequest, `invalid list cursor "${cursor}": pass back a nextCursor from an earlier page`, {
      field: "cursor",
    });
  }
  return seq;
}
