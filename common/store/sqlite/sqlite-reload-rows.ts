import { TASK_STATUS, type TaskStatus } from "../../model/task-model.js";
import type { ReloadEntry } from "../task-store.js";

/*
 * The reload's rows, read five values a row: seq, id, submit_time, available_at and one integer
 * packing priority, offload, status, tries and max_tries. A reload reads a million rows at start,
 * and every value better-sqlite3 hands over costs: the eleven columns read one by one took a
 * quarter more CPU (1M rows: 1.59 s against 1.27 s, at load 8). A row the integer cannot hold (a
 * task in work, with its lease, or counts too large) comes as a JSON array of those columns.
 */

/** Bits of the packed integer: priority 0-6, offload 7, status 8-9, tries 10-29, max_tries 30-49 (under 2^53: exact). */
const TRIES_SHIFT = 10;
const MAX_TRIES_FACTOR = 2 ** 30;
const COUNT_LIMIT = 2 ** 20;
/** The statuses a packed row can be, by their code. */
const PACKED_STATUSES = [TASK_STATUS.input, TASK_STATUS.wait, TASK_STATUS.complete] as const;

const packedStatusCode = `CASE status ${PACKED_STATUSES.map((status, code) => `WHEN '${status}' THEN ${code}`).join(" ")} END`;

/** The select list of a reload row, in ReloadTuple's order. */
export const RELOAD_SELECT =
  "seq, id, submit_time, available_at, CASE" +
  ` WHEN status IN (${PACKED_STATUSES.map((s) => `'${s}'`).join(", ")}) AND lease_owner IS NULL AND priority BETWEEN 0 AND 127 AND tries BETWEEN 0 AND ${COUNT_LIMIT - 1}` +
  ` AND max_tries BETWEEN 0 AND ${COUNT_LIMIT - 1}` +
  ` THEN priority | ((offload <> 0) << 7) | (${packedStatusCode} << 8) | (tries << ${TRIES_SHIFT}) | (max_tries << 30)` +
  " ELSE json_array(priority, offload, status, tries, max_tries, lease_owner, lease_expires_at) END AS packed";

/**
 * The reload rows a select of RELOAD_SELECT gives, as one JSON array of [seq, id, submit_time,
 * available_at, packed] arrays: a single value for better-sqlite3 to hand over instead of five a
 * row, and JSON.parse makes the arrays faster than it does (1M rows: about 1.7 s against 2.4 s).
 */
export function reloadRowsAsJson(select: string): string {
  return `SELECT json_group_array(json_array(seq, id, submit_time, available_at, packed)) FROM (${select})`;
}

/** The rows of a reloadRowsAsJson value, in seq order. */
export function parseJsonReloadRows(json: string): JsonReloadRow[] {
  const rows = JSON.parse(json) as JsonReloadRow[];
  // SQLite aggregates the rows in the order the subquery gives them, which it does not promise.
  for (let i = 1; i < rows.length; i++) {
    if (rows[i]![0] < rows[i - 1]![0]) return rows.sort((a, b) => a[0] - b[0]);
  }
  return rows;
}

/** A row of reloadRowsAsJson's array. */
export type JsonReloadRow = [seq: number, id: string, submitTime: number, availableAt: number, packed: number | string];

/** The columns of a row the integer cannot hold, as json_array wrote them. */
type UnpackedColumns = [
  priority: number,
  offload: number,
  status: TaskStatus,
  tries: number,
  maxTries: number,
  leaseOwner: string | null,
  leaseExpiresAt: number | null,
];

/** The entry of a reload row's values: `packed`, the packed integer or the JSON text of the columns it cannot hold. */
export function reloadEntryOf(id: string, submitTime: number, availableAt: number, packed: number | string): ReloadEntry {
  if (typeof packed === "number") {
    const low = packed % MAX_TRIES_FACTOR;
    return {
      id,
      priority: low & 127,
      submitTime,
      availableAt,
      status: PACKED_STATUSES[(low >> 8) & 3]!,
      lease: null,
      offload: (low & 128) !== 0,
      tries: low >>> TRIES_SHIFT,
      maxTries: (packed - low) / MAX_TRIES_FACTOR,
    };
  }
  const [priority, offload, status, tries, maxTries, leaseOwner, leaseExpiresAt] = JSON.parse(packed) as UnpackedColumns;
  return {
    id,
    priority,
    submitTime,
    availableAt,
    status,
    lease: leaseOwner === null || leaseExpiresAt === null ? null : { owner: leaseOwner, expiresAt: leaseExpiresAt },
    offload: offload !== 0,
    tries,
    maxTries,
  };
}
