import pg from "pg";
import { redactPostgresUrl } from "../redact-url.js";
import type { ApiKeyRecord, UsageCounts, UsageRow } from "../../accounts/account-records.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../../model/errors.js";
import type { LeaseClaim } from "../../model/claims.js";
import type { Schedule, ScheduleAdvance, ScheduleFireResult } from "../../schedules/schedule-model.js";
import { STORE_STEPS, type StoreStep } from "../../model/state-machine.js";
import {
  MAX_ATTEMPTS_KEPT,
  TASK_STATUS,
  TASK_STATUSES,
  type AttemptOutcome,
  type CallbackDelivery,
  type Lease,
  type ProcessedBy,
  type Task,
  type TaskStatus,
} from "../../model/task-model.js";
import {
  MINUTE_MS,
  USAGE_COUNTERS,
  attemptPlace,
  errorTail,
  minuteCountsOf,
  requireUsageDay,
  stepMiss,
  usageDelta,
  type AttemptPlace,
  type CancelResult,
  type FailureRecord,
  type FinishedQuery,
  type MinuteCounts,
  type ReleaseRecord,
  type ReloadEntry,
  type RetryResult,
  type RetryRow,
  type StepResult,
  type StolenCounts,
  type SuccessRecord,
  type TaskFilter,
  type TaskPage,
  type TaskStore,
} from "../task-store.js";
import {
  INSERT_TASKS,
  RELOAD_COLUMNS,
  USAGE_COLUMNS,
  insertValue,
  rowToApiKey,
  rowToReloadEntry,
  rowToTask,
  rowToUsage,
  type ApiKeyRow,
  type ReloadRow,
  type TaskRow,
  type UsageTableRow,
} from "./postgres-rows.js";
import { FINAL_CONDITION, NON_FINAL_CONDITION, migrate } from "./postgres-schema.js";
import { pgJson, pgJsonOrNull, pgValues } from "./postgres-text.js";
import { PostgresSchedules } from "./postgres-schedules.js";

/*
 * The TaskStore on PostgreSQL (the `pg` driver, a Pool), for a site on several machines. Every
 * method is one statement or one transaction. A one-row step is a single statement: its guarded
 * UPDATE in a CTE and, when the guard missed, the row read by the same statement (one round
 * trip; read again only when a racing write made that snapshot stale, see stepAnswer). Concurrent
 * writers are safe under READ COMMITTED: an UPDATE waits for a row another transaction holds and
 * then re-checks its guard against the row as committed, so of two claims of one task exactly one
 * wins. Transactions (split, cancel, retry, createMany, a schedule's tick) lock their rows with
 * FOR UPDATE or the UPDATE itself; none needs SERIALIZABLE.
 * A method resolves only when its commit is on disk (synchronous_commit, see open), so nothing
 * acknowledged is lost if the server dies.
 */

const DEFAULT_RELOAD_BATCH = 10_000;
/** Rows per INSERT on the bulk path (one JSON text each): bounds the size of one message. */
const INSERT_ROWS_PER_STATEMENT = 5_000;
const DEFAULT_POOL_SIZE = 10;
const CONNECT_TIMEOUT_MS = 10_000;
/** pg type OID of BIGINT (int8): parsed as a number (every BIGINT here is a time, a seq or a count, all below 2^53). */
const INT8_OID = 20;
/** PostgreSQL's SQLSTATE for a unique violation. */
const UNIQUE_VIOLATION = "23505";

export interface PostgresTaskStoreOptions {
  /** postgresql://user:password@host:port/database (from DOCQ_POSTGRES_URL). */
  url: string;
  /** The schema the tables live in (created when missing); default: the connection's search_path (public). */
  schema?: string;
  /** Connections in the pool. */
  poolSize?: number;
}

const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === INT8_OID && format !== "binary"
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

const sqlList = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(", ");
const statusIn = (step: StoreStep): string => `status IN (${sqlList(STORE_STEPS[step].from)})`;
/** The guard of a step that holds a lease: binds $1 id, $2 owner, $3 tries. */
const HELD_BY_CLAIM = (step: StoreStep): string => `id = $1 AND ${statusIn(step)} AND lease_owner = $2 AND tries = $3`;

/**
 * `attempts = ...` appending the attempt this step ends (tries and start_time of the row before),
 * keeping the last MAX_ATTEMPTS_KEPT. `$n` is the first of five parameters: site, node, end, outcome, error.
 */
const APPEND_ATTEMPT = (n: number): string =>
  `attempts = (CASE WHEN jsonb_array_length(attempts) >= ${MAX_ATTEMPTS_KEPT} THEN attempts - 0 ELSE attempts END)` +
  ` || jsonb_build_array(jsonb_build_object('n', tries, 'site', $${n}::text, 'node', $${n + 1}::text, 'start', start_time,` +
  ` 'end', $${n + 2}::bigint, 'outcome', $${n + 3}::text, 'error', $${n + 4}::text))`;
type AttemptParams = [string | null, string | null, number, AttemptOutcome, string | null];

function attemptParams(place: AttemptPlace, end: number, outcome: AttemptOutcome, error: string | null): AttemptParams {
  return [place.site, place.node, end, outcome, errorTail(error)];
}

/**
 * One statement: the step's guarded UPDATE and, when it wrote nothing, the row as it is (`$idParam`).
 * `written` tells which.
 */
const stepStatement = (update: string, idParam: number): string =>
  `WITH step AS (${update} RETURNING *) SELECT true AS written, step.* FROM step` +
  ` UNION ALL SELECT false AS written, tasks.* FROM tasks WHERE id = $${idParam} AND NOT EXISTS (SELECT 1 FROM step)`;

type StepRow = TaskRow & { written: boolean };

const CLEAR_LEASE = `lease_owner = NULL, lease_expires_at = NULL`;

/** The fixed statements, named so each connection prepares them once. */
const SQL = {
  get: `SELECT * FROM tasks WHERE id = $1`,
  claim:
    `UPDATE tasks SET status = '${TASK_STATUS.work}', tries = tries + 1, lease_owner = $1, lease_expires_at = $2, start_time = $3,` +
    ` end_time = NULL, duration = NULL, progress = NULL, progress_message = NULL` +
    ` WHERE id = ANY($4::text[]) AND ${statusIn("claim")} AND lease_owner IS NULL RETURNING *`,
  succeed: stepStatement(
    `UPDATE tasks SET status = '${TASK_STATUS.output}', output = $4, processed_by = $5::jsonb, ${CLEAR_LEASE}, error = NULL,` +
      ` end_time = $6::bigint, duration = $6::bigint - start_time, ${APPEND_ATTEMPT(7)} WHERE ${HELD_BY_CLAIM("succeed")}`,
    1,
  ),
  // A parent whose merge failed retries the merge: its children are done and must not run again.
  requeue: stepStatement(
    `UPDATE tasks SET status = CASE WHEN children_total > 0 THEN '${TASK_STATUS.complete}' ELSE '${TASK_STATUS.input}' END,` +
      ` error = $4, processed_by = COALESCE($5::jsonb, processed_by), available_at = $6, ${CLEAR_LEASE},` +
      ` ${APPEND_ATTEMPT(7)} WHERE ${HELD_BY_CLAIM("requeue")} AND tries < max_tries`,
    1,
  ),
  // Not counted: tries goes back, so the next claim runs the same try number again.
  release: stepStatement(
    `UPDATE tasks SET status = CASE WHEN children_total > 0 THEN '${TASK_STATUS.complete}' ELSE '${TASK_STATUS.input}' END,` +
      ` tries = tries - 1, available_at = $4, ${CLEAR_LEASE}, ${APPEND_ATTEMPT(5)} WHERE ${HELD_BY_CLAIM("release")}`,
    1,
  ),
  giveUp: stepStatement(
    `UPDATE tasks SET status = '${TASK_STATUS.error}', error = $4, processed_by = COALESCE($5::jsonb, processed_by), end_time = $6::bigint,` +
      ` duration = $6::bigint - start_time, ${CLEAR_LEASE}, ${APPEND_ATTEMPT(7)} WHERE ${HELD_BY_CLAIM("giveUp")}`,
    1,
  ),
  splitParent: stepStatement(
    `UPDATE tasks SET status = '${TASK_STATUS.wait}', processed_by = $4::jsonb, children = $5, children_total = $6, children_completed = 0,` +
      ` ${CLEAR_LEASE}, ${APPEND_ATTEMPT(7)} WHERE ${HELD_BY_CLAIM("split")}`,
    1,
  ),
  progress: stepStatement(`UPDATE tasks SET progress = $4, progress_message = $5 WHERE ${HELD_BY_CLAIM("progress")}`, 1),
  retry:
    `UPDATE tasks SET status = $2, tries = 0, error = NULL, end_time = NULL, duration = NULL, available_at = $3, children_completed = $4,` +
    ` progress = NULL, progress_message = NULL WHERE id = $1 AND ${statusIn("retry")} RETURNING *`,
  // SET expressions read the row before the statement: children_completed + 1 is the new count.
  childSucceeded: stepStatement(
    `UPDATE tasks SET children_completed = children_completed + 1,` +
      ` status = CASE WHEN children_completed + 1 >= children_total THEN '${TASK_STATUS.complete}' ELSE status END,` +
      ` available_at = CASE WHEN children_completed + 1 >= children_total THEN $2 ELSE available_at END` +
      ` WHERE id = $1 AND ${statusIn("childSucceeded")} AND children_completed < children_total`,
    1,
  ),
  recountChildren: stepStatement(
    `UPDATE tasks SET children_completed = $2, status = CASE WHEN $2 >= children_total THEN '${TASK_STATUS.complete}' ELSE status END,` +
      ` available_at = CASE WHEN $2 >= children_total THEN $3 ELSE available_at END WHERE id = $1 AND ${statusIn("recountChildren")}`,
    1,
  ),
  failParent: stepStatement(
    `UPDATE tasks SET status = '${TASK_STATUS.error}', error = $2, end_time = $3 WHERE id = $1 AND ${statusIn("failParent")}`,
    1,
  ),
  finishWorkflow: stepStatement(
    `UPDATE tasks SET status = '${TASK_STATUS.output}', output = $2, error = NULL, end_time = $3, children_completed = children_total` +
      ` WHERE id = $1 AND ${statusIn("finishWorkflow")}`,
    1,
  ),
  lockForCancel: `SELECT * FROM tasks WHERE id = $1 FOR UPDATE`,
  // Only a task in work was running an attempt: the others keep their attempts as they are.
  cancel:
    `UPDATE tasks SET status = '${TASK_STATUS.canceled}', error = $2, end_time = $3::bigint, duration = $3::bigint - start_time,` +
    ` ${CLEAR_LEASE}, attempts = CASE WHEN status = '${TASK_STATUS.work}'` +
    ` THEN ${APPEND_ATTEMPT(4).replace(/^attempts = /, "")} ELSE attempts END WHERE id = $1 AND ${statusIn("cancel")} RETURNING *`,
  renew: `UPDATE tasks SET lease_expires_at = $1 WHERE lease_owner = $2 AND status = '${TASK_STATUS.work}' AND id = ANY($3::text[]) RETURNING id`,
  expired: `SELECT * FROM tasks WHERE status = '${TASK_STATUS.work}' AND lease_expires_at < $1 ORDER BY lease_expires_at, seq LIMIT $2`,
  reloadBatch: `SELECT ${RELOAD_COLUMNS} FROM tasks WHERE ${NON_FINAL_CONDITION} AND seq > $1 ORDER BY seq LIMIT $2`,
  children: `SELECT * FROM tasks WHERE parent_id = $1 ORDER BY seq`,
  delete: `DELETE FROM tasks WHERE id = $1`,
  // One statement: the root's guard and its whole tree, so a task retried meanwhile stays with its children.
  deleteFinishedTree:
    `WITH RECURSIVE tree(id) AS (SELECT id FROM tasks WHERE id = $1 AND ${FINAL_CONDITION}` +
    ` UNION ALL SELECT tasks.id FROM tasks JOIN tree ON tasks.parent_id = tree.id)` +
    ` DELETE FROM tasks WHERE id IN (SELECT id FROM tree) RETURNING id`,
  countByStatus: `SELECT status, count(*) AS count FROM tasks GROUP BY status`,
  finishedPerMinute:
    `SELECT status, (end_time / ${MINUTE_MS}) * ${MINUTE_MS} AS minute, count(*) AS count FROM tasks` +
    ` WHERE parent_id IS NULL AND ${FINAL_CONDITION} AND end_time >= $1 GROUP BY status, minute`,
  recordCallback: `UPDATE tasks SET callback = $2::jsonb WHERE id = $1 AND ${FINAL_CONDITION} RETURNING *`,
  pendingCallbacks:
    `SELECT * FROM tasks WHERE parent_id IS NULL AND ${FINAL_CONDITION} AND callback_url IS NOT NULL` +
    ` AND (callback IS NULL OR callback->>'state' = 'pending' OR (callback->>'lastTryAt')::bigint < end_time)` +
    ` ORDER BY end_time, seq LIMIT $1`,
  topCounts: `SELECT site, COALESCE(processed_by->>'site', '') AS ran_site, count(*) AS count FROM tasks WHERE parent_id IS NULL GROUP BY 1, 2`,
  insertKey: `INSERT INTO api_keys (id, username, hash, limits, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)`,
  listKeys: `SELECT * FROM api_keys ORDER BY created_at, seq`,
  // COALESCE: a second revoke keeps the first time.
  revokeKey: `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *`,
  addUsage:
    `INSERT INTO usage (username, day, ${USAGE_COLUMNS.join(", ")}) VALUES ($1, $2, ${USAGE_COLUMNS.map((_, i) => `$${i + 3}`).join(", ")})` +
    ` ON CONFLICT (username, day) DO UPDATE SET ${USAGE_COLUMNS.map((c) => `${c} = usage.${c} + excluded.${c}`).join(", ")}`,
  usageOfUser: `SELECT * FROM usage WHERE username = $1 AND day BETWEEN $2 AND $3 ORDER BY day`,
  usageOfAll: `SELECT * FROM usage WHERE day BETWEEN $1 AND $2 ORDER BY day, username`,
  countActive: `SELECT count(*) AS count FROM tasks WHERE username = $1 AND parent_id IS NULL AND ${NON_FINAL_CONDITION}`,
} as const;
type StatementName = keyof typeof SQL;

const FILTER_COLUMNS: Record<keyof TaskFilter, string> = {
  status: "status",
  user: "username",
  job: "job",
  name: "name",
  parentId: "parent_id",
};

/** The URL without its user, password and query (which may hold a password too), for messages and logs. */

/** A transaction's or the pool's way to run a statement. */
type Queryable = Pick<pg.PoolClient, "query">;

export class PostgresTaskStore implements TaskStore {
  private readonly schedules: PostgresSchedules;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    /** The server and database (no password), for error messages. */
    readonly label: string,
  ) {
    this.schedules = new PostgresSchedules({
      query: (text, values) => this.pool.query(text, pgValues(values)),
      transaction: (run) => this.transaction(run),
      insertTasks: (client, tasks) => this.insertTasks(client, tasks),
    });
  }

  /** Connects, and brings the schema to this version (see postgres-schema.ts). */
  static async open(opts: PostgresTaskStoreOptions): Promise<PostgresTaskStore> {
    const label = `PostgreSQL ${redactPostgresUrl(opts.url)}${opts.schema === undefined ? "" : `, schema "${opts.schema}"`}`;
    let pool = PostgresTaskStore.pool(opts, label, false);
    try {
      // Nothing acknowledged may be lost: where the server (or the database, or the role) turns
      // synchronous_commit off, docq's own sessions turn it back on. Any other level is the DBA's
      // choice and stays (on, or stricter with synchronous standbys; local).
      const { rows } = await pool.query<{ level: string }>("SELECT current_setting('synchronous_commit') AS level");
      if (rows[0]?.level === "off") {
        await pool.end();
        pool = PostgresTaskStore.pool(opts, label, true);
      }
      await migrate(pool, label, opts.schema === undefined ? null : quoteIdent(opts.schema));
      return new PostgresTaskStore(pool, label);
    } catch (err) {
      await pool.end().catch(() => undefined);
      if (isDocqError(err)) throw err;
      throw docqError(ERROR_CODE.StoreUnavailable, `task store ${label}: open failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private static pool(opts: PostgresTaskStoreOptions, label: string, synchronousCommit: boolean): pg.Pool {
    const settings = [
      ...(opts.schema === undefined ? [] : [`-c search_path=${quoteIdent(opts.schema)}`]),
      ...(synchronousCommit ? ["-c synchronous_commit=on"] : []),
    ];
    let pool: pg.Pool;
    try {
      pool = new pg.Pool({
        connectionString: opts.url,
        max: opts.poolSize ?? DEFAULT_POOL_SIZE,
        types: TYPES,
        application_name: "docq",
        // A server that does not answer fails the call (STORE_UNAVAILABLE, a 503) instead of holding it.
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
        keepAlive: true,
        ...(settings.length === 0 ? {} : { options: settings.join(" ") }),
      });
    } catch (err) {
      throw docqError(ERROR_CODE.Config, `task store ${label}: bad settings: ${errorMessage(err)}`, { cause: err });
    }
    // An idle connection the server dropped (a restart) must not crash the process: the pool
    // discards it, and the next query opens a new one (or fails as STORE_UNAVAILABLE).
    pool.on("error", () => undefined);
    return pool;
  }

  /** The synchronous_commit level of this store's sessions (see open). */
  async synchronousCommit(): Promise<string> {
    const { rows } = await this.attempt("synchronousCommit", () =>
      this.pool.query<{ level: string }>("SELECT current_setting('synchronous_commit') AS level"),
    );
    return rows[0]?.level ?? "?";
  }

  async create(task: Task): Promise<void> {
    await this.attempt("create", () => this.insertTasks(this.pool, [task]));
  }

  async createMany(tasks: readonly Task[]): Promise<void> {
    if (tasks.length === 0) return;
    if (tasks.length <= INSERT_ROWS_PER_STATEMENT) {
      await this.attempt("createMany", () => this.insertTasks(this.pool, tasks));
      return;
    }
    await this.attempt("createMany", () => this.transaction((client) => this.insertTasks(client, tasks)));
  }

  async get(id: string): Promise<Task | null> {
    const rows = await this.rows<TaskRow>("get", [id]);
    return rows[0] === undefined ? null : rowToTask(rows[0]);
  }

  /** One statement for every id: a claim is all or nothing, and of two racing claims of a task one wins. */
  async claim(ids: readonly string[], lease: Lease, now: number): Promise<Task[]> {
    const unique = [...new Set(ids)];
    if (unique.length === 0) return [];
    return (await this.rows<TaskRow>("claim", [lease.owner, lease.expiresAt, now, unique])).map(rowToTask);
  }

  async succeed(claim: LeaseClaim, result: SuccessRecord, now: number): Promise<StepResult> {
    return this.step(
      "succeed",
      [...claimParams(claim), result.output, pgJson(result.processedBy), now, ...attemptParams(result.processedBy, now, "output", null)],
      claim,
    );
  }

  async requeue(claim: LeaseClaim, failure: FailureRecord, availableAt: number, now: number): Promise<StepResult> {
    return this.step(
      "requeue",
      [
        ...claimParams(claim),
        failure.error,
        pgJsonOrNull(failure.processedBy),
        availableAt,
        ...attemptParams(failure.ranAt, now, failure.leaseLost === true ? "lease_lost" : "retry", failure.error),
      ],
      claim,
    );
  }

  async giveUp(claim: LeaseClaim, failure: FailureRecord, now: number): Promise<StepResult> {
    return this.step(
      "giveUp",
      [
        ...claimParams(claim),
        failure.error,
        pgJsonOrNull(failure.processedBy),
        now,
        ...attemptParams(failure.ranAt, now, failure.leaseLost === true ? "lease_lost" : "error", failure.error),
      ],
      claim,
    );
  }

  async release(claim: LeaseClaim, release: ReleaseRecord, now: number): Promise<StepResult> {
    return this.step("release", [...claimParams(claim), now, ...attemptParams(release.ranAt, now, "released", release.reason)], claim);
  }

  async retry(rows: readonly RetryRow[], now: number): Promise<RetryResult> {
    if (rows.length === 0) return { ok: true, tasks: [] };
    return this.attempt("retry", () =>
      this.transaction(async (client): Promise<RetryResult> => {
        const tasks: Task[] = [];
        for (const row of rows) {
          const after = await this.rowsOn<TaskRow>(client, "retry", [row.id, row.status, now, row.childrenCompleted]);
          if (after[0] === undefined) {
            const current = await this.rowsOn<TaskRow>(client, "get", [row.id]);
            const task = current[0] === undefined ? null : rowToTask(current[0]);
            // Undo the rows already written: a retry is all or nothing.
            throw new RetryMiss({ ok: false, id: row.id, why: stepMiss("retry", task), task });
          }
          tasks.push(rowToTask(after[0]));
        }
        return { ok: true, tasks };
      }).catch((err: unknown) => {
        if (err instanceof RetryMiss) return err.miss;
        throw err;
      }),
    );
  }

  async split(
    claim: LeaseClaim,
    processedBy: ProcessedBy,
    childIds: readonly string[],
    makeChildren: (parent: Task) => readonly Task[],
    now: number,
  ): Promise<StepResult> {
    return this.attempt("split", () =>
      this.transaction(async (client): Promise<StepResult> => {
        const rows = await this.rowsOn<StepRow>(client, "splitParent", [
          ...claimParams(claim),
          pgJson(processedBy),
          JSON.stringify(childIds),
          childIds.length,
          ...attemptParams(processedBy, now, "split", null),
        ]);
        const answer = await stepAnswer("split", rows[0], async () => (await this.rowsOn<TaskRow>(client, "get", [claim.id]))[0], claim);
        if (!answer.ok) return answer;
        // Throwing here rolls the parent's write back with the transaction.
        await this.insertTasks(client, makeChildren(answer.task));
        return answer;
      }),
    );
  }

  async childSucceeded(parentId: string, now: number): Promise<StepResult> {
    return this.step("childSucceeded", [parentId, now]);
  }

  async recountChildren(parentId: string, completed: number, now: number): Promise<StepResult> {
    return this.step("recountChildren", [parentId, completed, now]);
  }

  async failParent(parentId: string, error: string, now: number): Promise<StepResult> {
    return this.step("failParent", [parentId, error, now]);
  }

  async finishWorkflow(workflowId: string, output: string, now: number): Promise<StepResult> {
    return this.step("finishWorkflow", [workflowId, output, now]);
  }

  /** A transaction: the row locked and read first (RETURNING sees only the row after, and the lease it ends is news its holder needs). */
  async cancel(id: string, reason: string, now: number, localSite?: string): Promise<CancelResult> {
    return this.attempt("cancel", () =>
      this.transaction(async (client): Promise<CancelResult> => {
        const before = (await this.rowsOn<TaskRow>(client, "lockForCancel", [id]))[0];
        const previousLeaseOwner = before?.lease_owner ?? null;
        if (before === undefined) return { ok: false, why: "missing", task: null, previousLeaseOwner };
        const place = attemptPlace(null, previousLeaseOwner, localSite ?? null);
        const after = (
          await this.rowsOn<TaskRow>(client, "cancel", [id, reason, now, ...attemptParams(place, now, "canceled", reason)])
        )[0];
        if (after !== undefined) return { ok: true, task: rowToTask(after), previousLeaseOwner };
        const task = rowToTask(before);
        return { ok: false, why: stepMiss("cancel", task), task, previousLeaseOwner };
      }),
    );
  }

  async progress(claim: LeaseClaim, progress: number, message: string | null): Promise<StepResult> {
    return this.step("progress", [...claimParams(claim), progress, message], claim);
  }

  async renew(owner: string, ids: readonly string[], expiresAt: number): Promise<string[]> {
    if (ids.length === 0) return [];
    const rows = await this.rows<{ id: string }>("renew", [expiresAt, owner, [...new Set(ids)]]);
    return rows.map((row) => row.id);
  }

  async expired(now: number, limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    return (await this.rows<TaskRow>("expired", [now, limit])).map(rowToTask);
  }

  async list(filter: TaskFilter, page: { limit: number; cursor?: string | null }): Promise<TaskPage> {
    requirePositiveInteger(page.limit, "limit");
    const beforeSeq = page.cursor === undefined || page.cursor === null ? null : decodeCursor(page.cursor);
    const conditions: string[] = [];
    const values: unknown[] = [];
    for (const key of Object.keys(FILTER_COLUMNS) as (keyof TaskFilter)[]) {
      const value = filter[key];
      if (value === undefined) continue;
      values.push(value);
      conditions.push(`${FILTER_COLUMNS[key]} = $${values.length}`);
    }
    if (beforeSeq !== null) {
      values.push(beforeSeq);
      conditions.push(`seq < $${values.length}`);
    }
    // One row more than asked tells whether another page exists, so the last page says null.
    values.push(page.limit + 1);
    const where = conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`;
    const { rows } = await this.attempt("list", () =>
      this.pool.query<TaskRow>(`SELECT * FROM tasks ${where} ORDER BY seq DESC LIMIT $${values.length}`, pgValues(values)),
    );
    const hasMore = rows.length > page.limit;
    const pageRows = hasMore ? rows.slice(0, page.limit) : rows;
    const last = pageRows[pageRows.length - 1];
    return { items: pageRows.map(rowToTask), nextCursor: hasMore && last !== undefined ? encodeCursor(last.seq) : null };
  }

  /**
   * Keyset pages over seq (the partial index of non-final tasks): each batch its own short query,
   * so no transaction or snapshot stays open through a reload of a million tasks, and only one
   * batch is in memory at a time. Tasks created meanwhile come in a later batch; none twice.
   */
  async *loadNonFinal(batchSize: number = DEFAULT_RELOAD_BATCH): AsyncGenerator<ReloadEntry[]> {
    requirePositiveInteger(batchSize, "batchSize");
    let afterSeq = 0;
    for (;;) {
      const rows = await this.rows<ReloadRow>("reloadBatch", [afterSeq, batchSize]);
      const last = rows[rows.length - 1];
      if (last === undefined) return;
      yield rows.map(rowToReloadEntry);
      if (rows.length < batchSize) return;
      afterSeq = last.seq;
    }
  }

  async children(parentId: string): Promise<Task[]> {
    return (await this.rows<TaskRow>("children", [parentId])).map(rowToTask);
  }

  async delete(id: string): Promise<boolean> {
    const result = await this.attempt("delete", () => this.pool.query({ name: "delete", text: SQL.delete, values: [id] }));
    return (result.rowCount ?? 0) > 0;
  }

  /** Through tasks_final_end; a few calls a minute, so not a named statement. */
  async finished(query: FinishedQuery, limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    const values: unknown[] = [query.status, query.endedBefore];
    const conditions = [`parent_id IS NULL`, FINAL_CONDITION, `status = $1`, `end_time < $2`];
    if (query.user !== undefined) {
      values.push(query.user);
      conditions.push(`username = $${values.length}`);
    }
    if (query.job !== undefined) {
      values.push(query.job);
      conditions.push(`job = $${values.length}`);
    }
    if ((query.exceptJobs ?? []).length > 0) {
      values.push([...(query.exceptJobs ?? [])]);
      conditions.push(`job <> ALL($${values.length}::text[])`);
    }
    values.push(limit);
    const { rows } = await this.attempt("finished", () =>
      this.pool.query<TaskRow>(
        `SELECT * FROM tasks WHERE ${conditions.join(" AND ")} ORDER BY end_time, seq LIMIT $${values.length}`,
        pgValues(values),
      ),
    );
    return rows.map(rowToTask);
  }

  async deleteFinishedTree(id: string): Promise<string[]> {
    return (await this.rows<{ id: string }>("deleteFinishedTree", [id])).map((row) => row.id);
  }

  /**
   * A count over tasks_status (an index-only scan once vacuumed). SQLite keeps trigger-made
   * counter rows instead; here they would be rows every step of every connection updates, and
   * every write would queue on their locks. Stats and metrics call this, not the hot path.
   */
  async countByStatus(): Promise<Record<TaskStatus, number>> {
    const rows = await this.rows<{ status: TaskStatus; count: number }>("countByStatus", []);
    const counts = Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>;
    for (const row of rows) counts[row.status] = row.count;
    return counts;
  }

  async finishedPerMinute(since: number): Promise<MinuteCounts[]> {
    if (!Number.isSafeInteger(since))
      throw docqError(ERROR_CODE.BadRequest, `since must be an integer time, got ${String(since)}`, { field: "since" });
    return minuteCountsOf(await this.rows<{ status: string; minute: number; count: number }>("finishedPerMinute", [since]));
  }

  async recordCallback(id: string, delivery: CallbackDelivery): Promise<Task | null> {
    const rows = await this.rows<TaskRow>("recordCallback", [id, pgJson(delivery)]);
    return rows[0] === undefined ? null : rowToTask(rows[0]);
  }

  /** Read once at a queuer's start: it walks tasks_final_end (every finished top-level task), no index of its own. */
  async pendingCallbacks(limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    return (await this.rows<TaskRow>("pendingCallbacks", [limit])).map(rowToTask);
  }

  /** For stats: groups every top-level task (a scan), as the MongoDB store does. */
  async countStolen(localSite: string): Promise<StolenCounts> {
    const rows = await this.rows<{ site: string; ran_site: string; count: number }>("topCounts", []);
    const stolen: StolenCounts = { in: {}, out: {} };
    for (const { site, ran_site: ranSite, count } of rows) {
      if (site !== localSite) stolen.in[site] = (stolen.in[site] ?? 0) + count;
      else if (ranSite !== "" && ranSite !== localSite) stolen.out[ranSite] = (stolen.out[ranSite] ?? 0) + count;
    }
    return stolen;
  }

  async createKey(key: ApiKeyRecord): Promise<void> {
    try {
      await this.pool.query({
        name: "insertKey",
        text: SQL.insertKey,
        values: pgValues([key.id, key.user, key.hash, JSON.stringify(key.limits), key.createdAt, key.revokedAt]),
      });
    } catch (err) {
      if (!isUniqueViolation(err)) throw this.unavailable("createKey", err);
      // Named by id only: the hash stays out of messages and logs.
      const field = (err as pg.DatabaseError).constraint === "api_keys_hash" ? "hash" : "id";
      throw docqError(
        ERROR_CODE.BadRequest,
        `api key ${key.id}: ${field === "id" ? "a key with this id" : "a key with the same hash"} already exists`,
        { field, cause: err, details: { id: key.id } },
      );
    }
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    return (await this.rows<ApiKeyRow>("listKeys", [])).map(rowToApiKey);
  }

  async revokeKey(id: string, now: number): Promise<ApiKeyRecord | null> {
    const rows = await this.rows<ApiKeyRow>("revokeKey", [id, now]);
    return rows[0] === undefined ? null : rowToApiKey(rows[0]);
  }

  async addUsage(user: string, day: string, delta: Partial<UsageCounts>): Promise<void> {
    requireUsageDay(day, "day");
    const counts = usageDelta(delta);
    await this.rows("addUsage", [user, day, ...USAGE_COUNTERS.map((counter) => counts[counter])]);
  }

  async usage(query: { user?: string; from: string; to: string }): Promise<UsageRow[]> {
    requireUsageDay(query.from, "from");
    requireUsageDay(query.to, "to");
    const { user, from, to } = query;
    const rows =
      user === undefined
        ? await this.rows<UsageTableRow>("usageOfAll", [from, to])
        : await this.rows<UsageTableRow>("usageOfUser", [user, from, to]);
    return rows.map(rowToUsage);
  }

  /** Through tasks_user_active: reads this user's active top-level tasks only. */
  async countActive(user: string): Promise<number> {
    const rows = await this.rows<{ count: number }>("countActive", [user]);
    return rows[0]?.count ?? 0;
  }

  async createSchedule(schedule: Schedule): Promise<void> {
    await this.attempt("createSchedule", () => this.schedules.createSchedule(schedule));
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
    requirePositiveInteger(limit, "limit");
    return this.attempt("dueSchedules", () => this.schedules.dueSchedules(now, limit));
  }

  async fireSchedule(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, tasks: readonly Task[]): Promise<ScheduleFireResult> {
    return this.attempt("fireSchedule", () => this.schedules.fireSchedule(id, expectedNextRunAt, advance, tasks));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }

  /** Inserts `tasks` on `on` (the pool, or a transaction's client); a taken id becomes TASK_EXISTS naming it. */
  private async insertTasks(on: Queryable, tasks: readonly Task[]): Promise<void> {
    for (let start = 0; start < tasks.length; start += INSERT_ROWS_PER_STATEMENT) {
      const chunk = tasks.slice(start, start + INSERT_ROWS_PER_STATEMENT);
      try {
        await on.query({ name: "insertTasks", text: INSERT_TASKS, values: [insertValue(chunk)] });
      } catch (err) {
        const id = isUniqueViolation(err) ? /\(id\)=\((.*)\) already exists/.exec((err as pg.DatabaseError).detail ?? "")?.[1] : undefined;
        if (id === undefined) throw err;
        throw docqError(ERROR_CODE.TaskExists, `task ${id} already exists`, { field: "id", cause: err, details: { id } });
      }
    }
  }

  /** A one-row step: its statement (stepStatement), answered as the row says. */
  private async step(step: StoreStep & StatementName, values: unknown[], claim?: LeaseClaim): Promise<StepResult> {
    const rows = await this.rows<StepRow>(step, values);
    const id = values[0] as string;
    return stepAnswer(step, rows[0], async () => (await this.rows<TaskRow>("get", [id]))[0], claim);
  }

  /** A fixed statement on the pool, by name. */
  private async rows<Row extends pg.QueryResultRow>(name: StatementName, values: unknown[]): Promise<Row[]> {
    return this.attempt(name, () => this.rowsOn<Row>(this.pool, name, values));
  }

  private async rowsOn<Row extends pg.QueryResultRow>(on: Queryable, name: StatementName, values: unknown[]): Promise<Row[]> {
    const result = await on.query<Row>({ name, text: SQL[name], values: pgValues(values) });
    return result.rows;
  }

  /** BEGIN, `run`, COMMIT on one connection; ROLLBACK when `run` throws (and the connection dropped if even that fails). */
  private async transaction<T>(run: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      const result = await run(client);
      await client.query("COMMIT");
      return result;
    } catch (err) {
      await client.query("ROLLBACK").catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw err;
    } finally {
      client.release(broken);
    }
  }

  /** Runs a driver call; DocqErrors pass through, anything else becomes STORE_UNAVAILABLE naming the operation and server. */
  private async attempt<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (isDocqError(err)) throw err;
      throw this.unavailable(operation, err);
    }
  }

  private unavailable(operation: string, err: unknown): Error {
    return docqError(ERROR_CODE.StoreUnavailable, `task store ${this.label}: ${operation} failed: ${errorMessage(err)}`, { cause: err });
  }
}

/** A miss inside a retry's transaction: thrown to roll back the rows already written, caught outside it. */
class RetryMiss extends Error {
  constructor(readonly miss: RetryResult & { ok: false }) {
    super(`retry of ${miss.id} missed: ${miss.why}`);
  }
}

/**
 * A step statement's answer. A miss shows the row of the statement's snapshot, which predates a
 * write the step waited for (a racing step that won): when that row looks as if the step should
 * have written (its status is one the step starts from), it is read again, as committed now.
 */
async function stepAnswer(
  step: StoreStep,
  row: StepRow | undefined,
  readNow: () => Promise<TaskRow | undefined>,
  claim?: LeaseClaim,
): Promise<StepResult> {
  if (row === undefined) return { ok: false, why: "missing", task: null };
  if (row.written) return { ok: true, task: rowToTask(row) };
  const current = (STORE_STEPS[step].from as readonly TaskStatus[]).includes(row.status) ? await readNow() : row;
  const task = current === undefined ? null : rowToTask(current);
  return { ok: false, why: stepMiss(step, task, claim), task };
}

function claimParams(claim: LeaseClaim): [string, string, number] {
  return [claim.id, claim.owner, claim.tries];
}

function isUniqueViolation(err: unknown): boolean {
  return err instanceof Error && (err as pg.DatabaseError).code === UNIQUE_VIOLATION;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
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

function requirePositiveInteger(value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw docqError(ERROR_CODE.BadRequest, `${field} must be a positive integer, got ${String(value)}`, { field });
  }
}

export { redactPostgresUrl };
