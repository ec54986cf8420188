import { ulid } from "ulid";
import { z } from "zod";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { badRequestOf } from "../model/zod-issues.js";
import { RunAtField } from "../http/task-submission.js";
import { CATCH_UP, SCHEDULE_ID_PATTERN, type CatchUp, type Schedule } from "./schedule-model.js";
import { checkTimezone, parseCron, parseEvery, tickAfter } from "./schedule-timing.js";

/*
 * The schedule's own fields of `POST /api/schedules` (the task's fields are parsed as for a task:
 * parseCreateTaskRequest), from the query string or the form, each text given once.
 */

const Text = z.string({ error: "must be given once, as text" });

export const ScheduleFieldsSchema = z.object({
  every: Text.optional(),
  cron: Text.max(200, "is longer than 200 characters").optional(),
  timezone: Text.max(100, "is longer than 100 characters").optional(),
  startAt: RunAtField.optional(),
  endAt: RunAtField.optional(),
  maxRuns: z
    .unknown()
    .transform((raw, ctx): number => {
      const value = typeof raw === "string" && /^\s*\d+\s*$/.test(raw) ? Number(raw) : raw;
      if (typeof value === "number" && Number.isSafeInteger(value) && value >= 1) return value;
      ctx.addIssue({ code: "custom", message: "must be an integer of at least 1" });
      return z.NEVER;
    })
    .meta({ type: "integer", minimum: 1 })
    .optional(),
  catchUp: z.enum(CATCH_UP, { error: `must be one of ${CATCH_UP.join(", ")}` }).default("none"),
  // A schedule's tasks run at its ticks: a delay of its own has no meaning.
  runAt: z.undefined({ error: "is not a schedule's field: use startAt" }).optional(),
  delayMs: z.undefined({ error: "is not a schedule's field: use startAt" }).optional(),
  callbackUrl: z
    .undefined({ error: "is not a schedule's field: its tasks are followed with GET /api/schedules/:id or /api/events" })
    .optional(),
});

/** When and how often a schedule fires, checked. */
export interface ScheduleTiming {
  everyMs: number | null;
  cron: string | null;
  timezone: string | null;
  startAt: number | null;
  endAt: number | null;
  maxRuns: number | null;
  catchUp: CatchUp;
}

/** The schedule fields of a request; BAD_REQUEST names the first bad one (a bad cron: `cron` and the field of it). */
export function parseScheduleTiming(raw: Record<string, unknown>): ScheduleTiming {
  const result = ScheduleFieldsSchema.safeParse(raw);
  if (!result.success) throw badRequestOf(result.error.issues);
  const { every, cron, timezone, startAt, endAt, maxRuns, catchUp } = result.data;
  if ((every === undefined) === (cron === undefined)) {
    throw docqError(ERROR_CODE.BadRequest, "every or cron: give one of them (every: 90s, 5m, 1h, 1d; cron: five fields)", {
      field: every === undefined ? "every" : "cron",
    });
  }
  if (timezone !== undefined && cron === undefined) {
    throw docqError(ERROR_CODE.BadRequest, "timezone: only a cron schedule has a time zone", { field: "timezone" });
  }
  if (timezone !== undefined) checkTimezone(timezone);
  const everyMs = every === undefined ? null : parseEvery(every);
  if (cron !== undefined) parseCron(cron, timezone ?? null);
  if (startAt !== undefined && endAt !== undefined && endAt <= startAt) {
    throw docqError(ERROR_CODE.BadRequest, "endAt: must be after startAt", { field: "endAt" });
  }
  return {
    everyMs,
    cron: cron === undefined ? null : cron.trim(),
    timezone: timezone ?? null,
    startAt: startAt ?? null,
    endAt: endAt ?? null,
    maxRuns: maxRuns ?? null,
    catchUp,
  };
}

/** What a new schedule is made of besides its timing. */
export type ScheduleBasis = Pick<
  Schedule,
  "id" | "site" | "user" | "name" | "job" | "params" | "priority" | "maxTries" | "input" | "inputBytes" | "offload"
>;

/** A new schedule: its first tick after `now` (BAD_REQUEST naming endAt when it has none). */
export function newSchedule(basis: ScheduleBasis, timing: ScheduleTiming, now: number): Schedule {
  const schedule: Schedule = { ...basis, ...timing, paused: false, nextRunAt: null, runCount: 0, lastTaskIds: [], createdAt: now };
  const first = tickAfter(schedule, now);
  if (first === null)
    throw docqError(ERROR_CODE.BadRequest, "endAt: the schedule would never run (no tick before endAt)", { field: "endAt" });
  return { ...schedule, nextRunAt: first };
}

export function newScheduleId(): string {
  return `sched-${ulid()}`;
}

export function assertScheduleId(id: unknown): string {
  if (typeof id !== "string" || !SCHEDULE_ID_PATTERN.test(id)) {
    throw docqError(ERROR_CODE.BadRequest, `malformed schedule id ${JSON.stringify(id)}: expected sched-<ulid>`, { field: "id" });
  }
  return id;
}

export const PauseRequestSchema = z.strictObject({
  id: z.string(),
  paused: z.boolean({ error: "must be true or false (JSON)" }),
});

/** `PATCH /api/schedules/:id` with `{"paused": true|false}`; BAD_REQUEST names the field. */
export function parsePauseRequest(raw: Record<string, unknown>): { id: string; paused: boolean } {
  const result = PauseRequestSchema.safeParse(raw);
  if (!result.success) throw badRequestOf(result.error.issues);
  return { id: assertScheduleId(result.data.id), paused: result.data.paused };
}
