import { z } from "zod";
import { JOB_NAME_PATTERN, ParamsSchema } from "../model/task-model.js";

/*
 * A schedule: a document and the fields of a task, made into a task at each tick of `every` or
 * `cron`. Kept in the task store; fired by the active queuer only (schedule-firer.ts), each tick
 * guarded by a compare-and-set on `nextRunAt` in the store.
 */

/** `sched-<ulid>`: its own table, so it never meets a task id. */
export const SCHEDULE_ID_PATTERN = /^sched-[0-9A-HJKMNP-TV-Z]{26}$/;

/** What to do with the ticks missed while no queuer ran: `none` skips them, `one` runs once for them all. */
export const CATCH_UP = ["none", "one"] as const;
export type CatchUp = (typeof CATCH_UP)[number];

/** How many of its last tasks a schedule remembers (GET /api/schedules/:id). */
export const LAST_TASKS_KEPT = 10;

export const ScheduleSchema = z.strictObject({
  id: z.string().regex(SCHEDULE_ID_PATTERN),
  site: z.string().min(1),
  user: z.string(),
  name: z.string(),
  job: z.string().regex(JOB_NAME_PATTERN),
  params: ParamsSchema,
  priority: z.int().min(0).max(100),
  maxTries: z.int().min(1),
  /** The blob key of the document each tick's task gets a copy of (scheduleInputKey). */
  input: z.string().min(1),
  inputBytes: z.int().min(0),
  /** false: its tasks are never lent to another site (the creating key's `offload`). */
  offload: z.boolean(),
  /** The interval in ms (from `every`), or null for a cron schedule. */
  everyMs: z.int().min(1).nullable(),
  cron: z.string().nullable(),
  /** The IANA time zone of `cron` (null: UTC). */
  timezone: z.string().nullable(),
  startAt: z.int().nullable(),
  endAt: z.int().nullable(),
  maxRuns: z.int().min(1).nullable(),
  catchUp: z.enum(CATCH_UP),
  paused: z.boolean(),
  /** The next tick (ms since the epoch); null once the schedule has ended (endAt passed, maxRuns made). */
  nextRunAt: z.int().nullable(),
  /** Tasks it made. */
  runCount: z.int().min(0),
  /** Its last tasks' ids, oldest first (at most LAST_TASKS_KEPT). */
  lastTaskIds: z.array(z.string()),
  createdAt: z.int(),
});
export type Schedule = z.infer<typeof ScheduleSchema>;

/** Where a schedule's document lives: a folder of its own, outside every task's, so no task's delete removes it. */
export const SCHEDULE_BLOB_ROOT = "schedules";
export const scheduleBlobKeys = {
  folder: (scheduleId: string): string => `${SCHEDULE_BLOB_ROOT}/${scheduleId}/`,
  input: (scheduleId: string): string => `${SCHEDULE_BLOB_ROOT}/${scheduleId}/input`,
};

/** What moves a schedule on at a tick: its next run, and the task the tick made (null: a tick skipped). */
export interface ScheduleAdvance {
  nextRunAt: number | null;
  taskId: string | null;
}

/** Why a fire wrote nothing: the schedule is gone, paused, or its tick was already taken (nextRunAt moved). */
export type ScheduleFireMiss = "missing" | "paused" | "moved";
export type ScheduleFireResult = { ok: true; schedule: Schedule } | { ok: false; why: ScheduleFireMiss; schedule: Schedule | null };

/** The schedule after a tick: next run, run count and last tasks as `advance` says. */
export function advanced(schedule: Schedule, advance: ScheduleAdvance): Schedule {
  if (advance.taskId === null) return { ...schedule, nextRunAt: advance.nextRunAt };
  return {
    ...schedule,
    nextRunAt: advance.nextRunAt,
    runCount: schedule.runCount + 1,
    lastTaskIds: [...schedule.lastTaskIds, advance.taskId].slice(-LAST_TASKS_KEPT),
  };
}

/** Whether a fire of `schedule` expecting the tick `expectedNextRunAt` may write; else why not. */
export function fireMiss(schedule: Schedule | null, expectedNextRunAt: number): ScheduleFireMiss | null {
  if (schedule === null) return "missing";
  if (schedule.paused) return "paused";
  if (schedule.nextRunAt !== expectedNextRunAt) return "moved";
  return null;
}
