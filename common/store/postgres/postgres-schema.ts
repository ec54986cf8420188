import type pg from "pg";
import { docqError, ERROR_CODE } from "../../model/errors.js";
import { TASK_STATUS, TASK_STATUSES, isFinal } from "../../model/task-model.js";
import { USAGE_COLUMNS } from "./postgres-rows.js";

/*
 * The PostgreSQL schema, as numbered migrations. Each runs in its own transaction, recorded in
 * `schema_migrations`; the transaction first takes an advisory lock, so two processes starting at
 * once migrate one after the other and the second finds the work done.
 */

const sqlList = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(", ");

export const NON_FINAL_STATUSES = TASK_STATUSES.filter((s) => !isFinal(s));
export const FINAL_STATUSES = TASK_STATUSES.filter(isFinal);
/** Shared by the partial indexes and the queries that must use them: the planner matches them term by term. */
export const NON_FINAL_CONDITION = `status IN (${sqlList(NON_FINAL_STATUSES)})`;
export const FINAL_CONDITION = `status IN (${sqlList(FINAL_STATUSES)})`;

/** The advisory lock key migrations hold (any constant: it only has to differ from other locks on the database). */
const MIGRATION_LOCK_KEY = 0x646f6371_01; // "docq", 1

/** Version 1: every table of the store as the SQLite adapter's version 4 holds it. */
const VERSION_1 = `
CREATE TABLE tasks (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order: children in creation order, stable list cursors
  id TEXT NOT NULL,
  site TEXT NOT NULL,
  username TEXT NOT NULL,
  name TEXT NOT NULL,
  job TEXT NOT NULL,
  params TEXT NOT NULL, -- JSON kept as written (jsonb would reorder keys)
  priority INTEGER NOT NULL,
  status TEXT NOT NULL CHECK (status IN (${sqlList(TASK_STATUSES)})),
  input TEXT,
  output TEXT,
  tries INTEGER NOT NULL,
  max_tries INTEGER NOT NULL,
  submit_time BIGINT NOT NULL,
  available_at BIGINT NOT NULL,
  start_time BIGINT,
  end_time BIGINT,
  duration BIGINT,
  lease_owner TEXT,
  lease_expires_at BIGINT,
  processed_by JSONB,
  error TEXT,
  parent_id TEXT,
  depth INTEGER NOT NULL,
  children TEXT NOT NULL,
  children_total INTEGER NOT NULL,
  children_completed INTEGER NOT NULL,
  offload BOOLEAN NOT NULL DEFAULT TRUE,
  attempts JSONB NOT NULL DEFAULT '[]', -- JSONB: the steps append to it in SQL
  progress DOUBLE PRECISION,
  progress_message TEXT,
  callback_url TEXT,
  callback JSONB,
  workflow TEXT,
  inputs TEXT,
  timeout_ms BIGINT,
  CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);
-- get, every step, claim and renew (id = ANY).
CREATE UNIQUE INDEX tasks_id ON tasks (id);
-- expired: only tasks in work hold a lease that can expire.
CREATE INDEX tasks_work_lease ON tasks (lease_expires_at, seq) WHERE status = '${TASK_STATUS.work}';
-- loadNonFinal: keyset over seq reading only the non-final tasks.
CREATE INDEX tasks_non_final ON tasks (seq) WHERE ${NON_FINAL_CONDITION};
-- children(), list({parentId}) and deleteFinishedTree's walk down the tree; most tasks have no parent.
CREATE INDEX tasks_parent ON tasks (parent_id, seq) WHERE parent_id IS NOT NULL;
-- list() filters, newest first; countByStatus reads tasks_status alone.
CREATE INDEX tasks_status ON tasks (status, seq);
CREATE INDEX tasks_user ON tasks (username, seq);
CREATE INDEX tasks_job ON tasks (job, seq);
CREATE INDEX tasks_name ON tasks (name, seq);
-- list({user, status}): a user key's own tasks of one status, without reading the user's others.
CREATE INDEX tasks_user_status ON tasks (username, status, seq);
-- finished (retention), finishedPerMinute and pendingCallbacks: final top-level tasks by end.
CREATE INDEX tasks_final_end ON tasks (status, end_time, seq) WHERE parent_id IS NULL AND ${FINAL_CONDITION};
-- countActive: a user's top-level tasks that are not final (what maxQueued limits).
CREATE INDEX tasks_user_active ON tasks (username) WHERE parent_id IS NULL AND ${NON_FINAL_CONDITION};

CREATE TABLE api_keys (
  seq BIGINT GENERATED ALWAYS AS IDENTITY,
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL,
  hash TEXT NOT NULL CONSTRAINT api_keys_hash UNIQUE,
  limits TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT
);

CREATE TABLE usage (
  username TEXT NOT NULL,
  day TEXT NOT NULL,
  ${USAGE_COLUMNS.map((c) => `${c} BIGINT NOT NULL DEFAULT 0`).join(",\n  ")},
  PRIMARY KEY (username, day)
);
-- usage() of every user: a day range in day, user order (one user's range reads the primary key).
CREATE INDEX usage_day ON usage (day, username);

CREATE TABLE schedules (
  seq BIGINT GENERATED ALWAYS AS IDENTITY,
  id TEXT PRIMARY KEY,
  username TEXT NOT NULL,
  paused BOOLEAN NOT NULL,
  next_run_at BIGINT,
  record TEXT NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused AND next_run_at IS NOT NULL;
CREATE INDEX schedules_user ON schedules (username, seq);
`;

/** Index i holds version i + 1. Append a new version; never edit one that has shipped. */
const MIGRATIONS: readonly string[] = [VERSION_1];
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Brings the schema (of the connection's search_path) to SCHEMA_VERSION, one transaction per
 * version; `schema` (quoted), when given, is made first if missing, under the same lock (two
 * `CREATE SCHEMA IF NOT EXISTS` at once collide).
 */
export async function migrate(pool: pg.Pool, label: string, schema: string | null): Promise<void> {
  // Most starts find the schema current: one read says so, without a transaction or the lock.
  const current = await pool
    .query<{ version: number | null }>("SELECT max(version) AS version FROM schema_migrations")
    .then(({ rows }) => rows[0]?.version ?? 0)
    .catch(() => 0);
  if (current === SCHEMA_VERSION) return;
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    for (;;) {
      await client.query("BEGIN");
      try {
        await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
        if (schema !== null) await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
        await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)");
        const { rows } = await client.query<{ version: number | null }>("SELECT max(version) AS version FROM schema_migrations");
        const version = rows[0]?.version ?? 0;
        if (version > SCHEMA_VERSION) {
          throw docqError(
            ERROR_CODE.Config,
            `task store ${label}: schema version ${version} is newer than this docq understands (${SCHEMA_VERSION}); upgrade docq`,
          );
        }
        if (version === SCHEMA_VERSION) {
          await client.query("COMMIT");
          return;
        }
        await client.query(MIGRATIONS[version]!);
        await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", [version + 1, Date.now()]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK").catch((rollbackError: Error) => {
          broken = rollbackError;
        });
        throw err;
      }
    }
  } finally {
    client.release(broken);
  }
}
