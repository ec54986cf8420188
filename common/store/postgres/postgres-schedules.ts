import type pg from "pg";
import type { Task } from "../../model/task-model.js";
import {
  advanced,
  fireMiss,
  ScheduleSchema,
  type Schedule,
  type ScheduleAdvance,
  type ScheduleFireResult,
} from "../../schedules/schedule-model.js";

/*
 * The schedules of the PostgreSQL store: the record as JSON text, with the columns the queries and
 * the tick's guard read beside it, written together. The tick and a pause lock the schedule's row
 * (FOR UPDATE) before reading it, so two queuers never both take one tick.
 */

/** What the schedules need of their store: a query on the pool, a transaction, and the store's task insert. */
export interface PostgresSchedulesHost {
  query(text: string, values: unknown[]): Promise<pg.QueryResult>;
  transaction<T>(run: (client: pg.PoolClient) => Promise<T>): Promise<T>;
  insertTasks(client: pg.PoolClient, tasks: readonly Task[]): Promise<void>;
}

interface ScheduleRow {
  record: string;
}

function rowToSchedule(row: ScheduleRow): Schedule {
  return ScheduleSchema.parse(JSON.parse(row.record));
}

const WRITE = "UPDATE schedules SET paused = $2, next_run_at = $3, record = $4 WHERE id = $1";
const LOCK = "SELECT record FROM schedules WHERE id = $1 FOR UPDATE";

export class PostgresSchedules {
  constructor(private readonly host: PostgresSchedulesHost) {}

  async createSchedule(schedule: Schedule): Promise<void> {
    const record = JSON.stringify(ScheduleSchema.parse(schedule));
    await this.host.query("INSERT INTO schedules (id, username, paused, next_run_at, record) VALUES ($1, $2, $3, $4, $5)", [
      schedule.id,
      schedule.user,
      schedule.paused,
      schedule.nextRunAt,
      record,
    ]);
  }

  async getSchedule(id: string): Promise<Schedule | null> {
    const { rows } = await this.host.query("SELECT record FROM schedules WHERE id = $1", [id]);
    return rows[0] === undefined ? null : rowToSchedule(rows[0] as ScheduleRow);
  }

  async listSchedules(filter: { user?: string }): Promise<Schedule[]> {
    const { rows } =
      filter.user === undefined
        ? await this.host.query("SELECT record FROM schedules ORDER BY seq", [])
        : await this.host.query("SELECT record FROM schedules WHERE username = $1 ORDER BY seq", [filter.user]);
    return (rows as ScheduleRow[]).map(rowToSchedule);
  }

  async setSchedulePaused(id: string, paused: boolean, nextRunAt?: number | null): Promise<Schedule | null> {
    return this.host.transaction(async (client) => {
      const { rows } = await client.query<ScheduleRow>(LOCK, [id]);
      if (rows[0] === undefined) return null;
      const after = { ...rowToSchedule(rows[0]), paused, ...(nextRunAt === undefined ? {} : { nextRunAt }) };
      await write(client, after);
      return after;
    });
  }

  async deleteSchedule(id: string): Promise<boolean> {
    const result = await this.host.query("DELETE FROM schedules WHERE id = $1", [id]);
    return (result.rowCount ?? 0) > 0;
  }

  async dueSchedules(now: number, limit: number): Promise<Schedule[]> {
    const { rows } = await this.host.query(
      "SELECT record FROM schedules WHERE NOT paused AND next_run_at IS NOT NULL AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2",
      [now, limit],
    );
    return (rows as ScheduleRow[]).map(rowToSchedule);
  }

  async fireSchedule(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, tasks: readonly Task[]): Promise<ScheduleFireResult> {
    return this.host.transaction(async (client): Promise<ScheduleFireResult> => {
      const { rows } = await client.query<ScheduleRow>(LOCK, [id]);
      const schedule = rows[0] === undefined ? null : rowToSchedule(rows[0]);
      const why = fireMiss(schedule, expectedNextRunAt);
      if (why !== null || schedule === null) return { ok: false, why: why ?? "missing", schedule };
      const after = advanced(schedule, advance);
      await write(client, after);
      if (tasks.length > 0) await this.host.insertTasks(client, tasks);
      return { ok: true, schedule: after };
    });
  }
}

async function write(client: pg.PoolClient, schedule: Schedule): Promise<void> {
  await client.query(WRITE, [schedule.id, schedule.paused, schedule.nextRunAt, JSON.stringify(schedule)]);
}
