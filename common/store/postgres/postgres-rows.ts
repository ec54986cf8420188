import type { ApiKeyLimits, ApiKeyRecord, UsageCounts, UsageRow } from "../../accounts/account-records.js";
import type { AttemptRecord, CallbackDelivery, Lease, ProcessedBy, Task, TaskParams, TaskStatus } from "../../model/task-model.js";
import type { WorkflowDefinition } from "../../workflows/workflow-definition.js";
import { USAGE_COUNTERS, type ReloadEntry } from "../task-store.js";
import { pgJson, pgJsonOrNull, pgText } from "./postgres-text.js";

/*
 * Row mapping of the PostgreSQL store: the only part of it that knows the column names. BIGINT
 * columns come back as numbers (the pool's type parser), JSONB ones as parsed values, the JSON
 * kept as TEXT (params, children, workflow, inputs) is parsed here.
 */

/** One row of `tasks` (`SELECT *`). */
export interface TaskRow {
  seq: number;
  id: string;
  site: string;
  username: string;
  name: string;
  job: string;
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
  lease_owner: string | null;
  lease_expires_at: number | null;
  processed_by: ProcessedBy | null;
  error: string | null;
  parent_id: string | null;
  depth: number;
  children: string;
  children_total: number;
  children_completed: number;
  offload: boolean;
  attempts: AttemptRecord[];
  progress: number | null;
  progress_message: string | null;
  callback_url: string | null;
  callback: CallbackDelivery | null;
  workflow: string | null;
  inputs: string | null;
  timeout_ms: number | null;
}

type TaskColumn = Exclude<keyof TaskRow, "seq">;

/** Each column's SQL type, for the unnest insert; a Record so the compiler refuses a column missing here. */
const COLUMN_TYPE: Record<TaskColumn, string> = {
  id: "text",
  site: "text",
  username: "text",
  name: "text",
  job: "text",
  params: "text",
  priority: "integer",
  status: "text",
  input: "text",
  output: "text",
  tries: "integer",
  max_tries: "integer",
  submit_time: "bigint",
  available_at: "bigint",
  start_time: "bigint",
  end_time: "bigint",
  duration: "bigint",
  lease_owner: "text",
  lease_expires_at: "bigint",
  processed_by: "jsonb",
  error: "text",
  parent_id: "text",
  depth: "integer",
  children: "text",
  children_total: "integer",
  children_completed: "integer",
  offload: "boolean",
  attempts: "jsonb",
  progress: "double precision",
  progress_message: "text",
  callback_url: "text",
  callback: "jsonb",
  workflow: "text",
  inputs: "text",
  timeout_ms: "bigint",
};
export const TASK_COLUMNS = Object.keys(COLUMN_TYPE) as TaskColumn[];

/**
 * Inserts the rows given as one JSON array of objects ($1, from insertValue): one statement and
 * one plan whatever the number of rows. One JSON text is the cheapest way to send them: the
 * driver's escaping of 35 arrays of values cost about four times the server's work, JSON.stringify
 * is native. JSONB columns travel as JSON text inside it (their strings already without U+0000).
 */
export const INSERT_TASKS =
  `INSERT INTO tasks (${TASK_COLUMNS.join(", ")}) SELECT ${TASK_COLUMNS.map((c) => (COLUMN_TYPE[c] === "jsonb" ? `${c}::jsonb` : c)).join(", ")}` +
  ` FROM json_to_recordset($1::json) AS row (${TASK_COLUMNS.map((c) => `${c} ${COLUMN_TYPE[c] === "jsonb" ? "text" : COLUMN_TYPE[c]}`).join(", ")})`;

type ColumnValue = string | number | boolean | null;

function json(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

/** One column's value of `task`, as the insert binds it. */
function columnValues(task: Task): Record<TaskColumn, ColumnValue> {
  return {
    id: task.id,
    site: task.site,
    username: task.user,
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
    processed_by: pgJsonOrNull(task.processedBy),
    error: task.error,
    parent_id: task.parentId,
    depth: task.depth,
    children: JSON.stringify(task.children),
    children_total: task.childrenTotal,
    children_completed: task.childrenCompleted,
    // Only false keeps a task home: a Task built before the field existed is lendable.
    offload: task.offload !== false,
    attempts: pgJson(task.attempts ?? []),
    progress: task.progress ?? null,
    progress_message: task.progressMessage ?? null,
    callback_url: task.callbackUrl ?? null,
    callback: pgJsonOrNull(task.callback),
    workflow: json(task.workflow),
    inputs: json(task.inputs),
    timeout_ms: task.timeoutMs ?? null,
  };
}

/** The value of INSERT_TASKS for `tasks`: a JSON array of their rows (strings without U+0000, see postgres-text.ts). */
export function insertValue(tasks: readonly Task[]): string {
  return JSON.stringify(tasks.map(columnValues), (_key, value: unknown) => (typeof value === "string" ? pgText(value) : value));
}

function leaseOf(owner: string | null, expiresAt: number | null): Lease | null {
  return owner === null || expiresAt === null ? null : { owner, expiresAt };
}

export function rowToTask(row: TaskRow): Task {
  return {
    id: row.id,
    site: row.site,
    user: row.username,
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
    processedBy: row.processed_by,
    error: row.error,
    parentId: row.parent_id,
    depth: row.depth,
    children: JSON.parse(row.children) as string[],
    childrenTotal: row.children_total,
    childrenCompleted: row.children_completed,
    offload: row.offload,
    attempts: row.attempts,
    progress: row.progress,
    progressMessage: row.progress_message,
    callbackUrl: row.callback_url,
    callback: row.callback,
    workflow: row.workflow === null ? null : (JSON.parse(row.workflow) as WorkflowDefinition),
    inputs: row.inputs === null ? null : (JSON.parse(row.inputs) as string[]),
    timeoutMs: row.timeout_ms,
  };
}

/** What loadNonFinal selects: the reload needs no more. */
export type ReloadRow = Pick<
  TaskRow,
  | "seq"
  | "id"
  | "priority"
  | "submit_time"
  | "available_at"
  | "status"
  | "lease_owner"
  | "lease_expires_at"
  | "offload"
  | "tries"
  | "max_tries"
>;
export const RELOAD_COLUMNS =
  "seq, id, priority, submit_time, available_at, status, lease_owner, lease_expires_at, offload, tries, max_tries";

export function rowToReloadEntry(row: ReloadRow): ReloadEntry {
  return {
    id: row.id,
    priority: row.priority,
    submitTime: row.submit_time,
    availableAt: row.available_at,
    status: row.status,
    lease: leaseOf(row.lease_owner, row.lease_expires_at),
    offload: row.offload,
    tries: row.tries,
    maxTries: row.max_tries,
  };
}

/** One row of `api_keys`. */
export interface ApiKeyRow {
  id: string;
  username: string;
  hash: string;
  limits: string;
  created_at: number;
  revoked_at: number | null;
}

export function rowToApiKey(row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id,
    user: row.username,
    hash: row.hash,
    limits: JSON.parse(row.limits) as ApiKeyLimits,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
  };
}

/** Each usage counter's column; a Record so the compiler refuses a counter missing here. */
const USAGE_COLUMN: Record<keyof UsageCounts, string> = {
  submitted: "submitted",
  output: "output",
  error: "error",
  canceled: "canceled",
  runMs: "run_ms",
  bytesIn: "bytes_in",
  bytesOut: "bytes_out",
  ranElsewhere: "ran_elsewhere",
};
/** In USAGE_COUNTERS order. */
export const USAGE_COLUMNS = USAGE_COUNTERS.map((counter) => USAGE_COLUMN[counter]);

export type UsageTableRow = { username: string; day: string } & Record<string, number | string>;

export function rowToUsage(row: UsageTableRow): UsageRow {
  const counts = Object.fromEntries(
    USAGE_COUNTERS.map((counter) => [counter, Number(row[USAGE_COLUMN[counter]])]),
  ) as unknown as UsageCounts;
  return { user: row.username, day: row.day, ...counts };
}
