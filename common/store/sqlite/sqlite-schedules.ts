import type Database from "better-sqlite3";
import type { Task } from "../../model/task-model.js";
import {
  advanced,
  fireMiss,
  ScheduleSchema,
  type Schedule,
  type ScheduleAdvance,
  type ScheduleFireResult,
} from "../../schedules/schedule-model.js";

/**
 * The schedules table (part of schema v4): the record as JSON, with the columns the queries and
 * the tick's guard read beside it, written together.
 */
export const SCHEDULES_TABLE = `
CREATE TABLE schedules (
  id TEXT PRIMARY KEY,
  user TEXT NOT NULL,
  paused INTEGER NOT NULL,
  next_run_at INTEGER,
  record TEXT NOT NULL
) STRICT;
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE paused = 0 AND next_run_at IS NOT NULL;
`;

interface ScheduleRow {
  record: string;
}

function rowToSchedule(row: ScheduleRow): Schedule {
  return ScheduleSchema.parse(JSON.parse(row.record));
}

/** The schedules of a SQLite task store (synchronous, as better-sqlite3: the store wraps each call); `insertTasks` inserts tasks as the store does (inside the caller's transaction). */
export class SqliteSchedules {
  private readonly insert: Database.Statement<[string, string, number, number | null, string]>;
  private readonly write: Database.Statement<[number, number | null, string, string]>;
  private readonly get: Database.Statement<[string], ScheduleRow>;
  private readonly all: Database.Statement<[], ScheduleRow>;
  private readonly ofUser: Database.Statement<[string], ScheduleRow>;
  private readonly remove: Database.Statement<[string]>;
  private readonly due: Database.Statement<[number, number], ScheduleRow>;
  private readonly fire: (id: string, expected: number, advance: ScheduleAdvance, tasks: readonly Task[]) => ScheduleFireResult;
  private readonly pause: (id: string, paused: boolean, nextRunAt: number | null | undefined) => Schedule | null;

  constructor(db: Database.Database, insertTasks: (tasks: readonly Task[]) => void) {
    this.insert = db.prepare("INSERT INTO schedules (id, user, paused, next_run_at, record) VALUES (?, ?, ?, ?, ?)");
    this.write = db.prepare("UPDATE schedules SET paused = ?, next_run_at = ?, record = ? WHERE id = ?");
    this.get = db.prepare("SELECT record FROM schedules WHERE id = ?");
    this.all = db.prepare("SELECT record FROM schedules ORDER BY rowid");
    this.ofUser = db.prepare("SELECT record FROM schedules WHERE user = ? ORDER BY rowid");
    this.remove = db.prepare("DELETE FROM schedules WHERE id = ?");
    this.due = db.prepare(
      "SELECT record FROM schedules WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= ? ORDER BY next_run_at LIMIT ?",
    );
    const store = (schedule: Schedule): void => {
      this.write.run(schedule.paused ? 1 : 0, schedule.nextRunAt, JSON.stringify(schedule), schedule.id);
    };
    const read = (id: string): Schedule | null => {
      const row = this.get.get(id);
      return row === undefined ? null : rowToSchedule(row);
    };
    // IMMEDIATE: the write lock is taken before the read, so two processes on one file never both see the tick free.
    const fire = db.transaction((id: string, expected: number, advance: ScheduleAdvance, tasks: readonly Task[]): ScheduleFireResult => {
      const schedule = read(id);
      const why = fireMiss(schedule, expected);
      if (why !== null) return { ok: false, why, schedule };
      const after = advanced(schedule!, advance);
      store(after);
      if (tasks.length > 0) insertTasks(tasks);
      return { ok: true, schedule: after };
    });
    this.fire = (id, expected, advance, tasks) => fire.immediate(id, expected, advance, tasks);
    const pause = db.transaction((id: string, paused: boolean, nextRunAt: number | null | undefined): Schedule | null => {
      const schedule = read(id);
      if (schedule === null) return null;
      const after = { ...schedule, paused, ...(nextRunAt === undefined ? {} : { nextRunAt }) };
      store(after);
      return after;
    });
    this.pause = (id, paused, nextRunAt) => pause.immediate(id, paused, nextRunAt);
  }

  createSchedule(schedule: Schedule): void {
    this.insert.run(
      schedule.id,
      schedule.user,
      schedule.paused ? 1 : 0,
      schedule.nextRunAt,
      JSON.stringify(ScheduleSchema.parse(schedule)),
    );
  }

  getSchedule(id: string): Schedule | null {
    const row = this.get.get(id);
    return row === undefined ? null : rowToSchedule(row);
  }

  listSchedules(filter: { user?: string }): Schedule[] {
    return (filter.user === undefined ? this.all.all() : this.ofUser.all(filter.user)).map(rowToSchedule);
  }

  setSchedulePaused(id: string, paused: boolean, nextRunAt?: number | null): Schedule | null {
    return this.pause(id, paused, nextRunAt);
  }

  deleteSchedule(id: string): boolean {
    return this.remove.run(id).changes > 0;
  }

  dueSchedules(now: number, limit: number): Schedule[] {
    return this.due.all(now, limit).map(rowToSchedule);
  }

  fireSchedule(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, tasks: readonly Task[]): ScheduleFireResult {
    return this.fire(id, expectedNextRunAt, advance, tasks);
  }
}
