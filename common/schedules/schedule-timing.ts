import { Cron } from "croner";
import { docqError, ERROR_CODE } from "../model/errors.js";
import type { Schedule } from "./schedule-model.js";

/** `every`: a whole number and a unit, seconds to days. */
const EVERY_PATTERN = /^\s*(\d+)\s*(s|m|h|d)\s*$/;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** The shortest interval: one second (the firer looks a few times a second). */
export const MIN_EVERY_MS = 1000;
/** The longest: a year. */
export const MAX_EVERY_MS = 366 * 86_400_000;

/** `"90s"`, `"5m"`, `"1h"`, `"1d"` in ms; BAD_REQUEST naming `every` otherwise. */
export function parseEvery(text: string): number {
  const match = EVERY_PATTERN.exec(text);
  if (match === null) {
    throw docqError(
      ERROR_CODE.BadRequest,
      `every: ${JSON.stringify(text)} is not an interval: write a number and s, m, h or d (90s, 5m, 1h, 1d)`,
      {
        field: "every",
      },
    );
  }
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!;
  if (ms < MIN_EVERY_MS || ms > MAX_EVERY_MS) {
    throw docqError(ERROR_CODE.BadRequest, `every: ${text} is outside 1s..366d`, { field: "every" });
  }
  return ms;
}

/** Refuses a time zone the runtime does not know (BAD_REQUEST naming `timezone`). */
export function checkTimezone(timezone: string): string {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: timezone });
    return timezone;
  } catch {
    throw docqError(ERROR_CODE.BadRequest, `timezone: ${JSON.stringify(timezone)} is not an IANA time zone (e.g. Europe/Paris)`, {
      field: "timezone",
    });
  }
}

const CRON_FIELDS = ["minute", "hour", "day of month", "month", "day of week"] as const;

/**
 * A five-field cron expression (minute hour day-of-month month day-of-week), checked by croner;
 * BAD_REQUEST naming `cron` and, where croner says it, the field that is wrong.
 */
export function parseCron(expression: string, timezone: string | null): Cron {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== CRON_FIELDS.length || parts[0] === "") {
    throw docqError(
      ERROR_CODE.BadRequest,
      `cron: ${JSON.stringify(expression)} has ${parts[0] === "" ? 0 : parts.length} field(s): write five (${CRON_FIELDS.join(", ")})`,
      { field: "cron" },
    );
  }
  if (timezone !== null) checkTimezone(timezone);
  try {
    return new Cron(expression.trim(), { paused: true, ...(timezone === null ? { timezone: "UTC" } : { timezone }) });
  } catch (err) {
    const why = err instanceof Error ? err.message.replace(/^CronPattern:\s*/, "") : String(err);
    const position = cronErrorPosition(why);
    const where = position === null ? "" : ` (field ${position + 1}, the ${CRON_FIELDS[position]}: ${JSON.stringify(parts[position])})`;
    throw docqError(ERROR_CODE.BadRequest, `cron: ${JSON.stringify(expression)}: ${why}${where}`, { field: "cron" });
  }
}

/** croner's names of the five fields, in their order, as its messages write them. */
const CRONER_FIELD_NAMES = ["minute", "hour", "day", "month", "dayOfWeek"] as const;

/** Which of the five fields (0-based) croner's message blames: `entry N` or `for <name>:`; null when it names none. */
function cronErrorPosition(message: string): number | null {
  const entry = /configuration entry (\d+)/.exec(message);
  if (entry !== null) {
    const index = Number(entry[1]) - 1;
    return index >= 0 && index < CRON_FIELDS.length ? index : null;
  }
  const named = /for (\w+):/.exec(message);
  const index = named === null ? -1 : CRONER_FIELD_NAMES.indexOf(named[1] as (typeof CRONER_FIELD_NAMES)[number]);
  return index < 0 ? null : index;
}

/** How a schedule's ticks fall: what the next tick after a moment is. */
export type ScheduleRule = Pick<Schedule, "everyMs" | "cron" | "timezone" | "startAt" | "endAt" | "createdAt">;

/**
 * The first tick strictly after `after`, within [startAt, endAt]; null when there is none. `every`
 * ticks fall at startAt + k·every (startAt given) or createdAt + k·every, k ≥ 1 (not given).
 */
export function tickAfter(rule: ScheduleRule, after: number): number | null {
  let tick: number | null;
  if (rule.everyMs !== null) {
    const anchor = rule.startAt ?? rule.createdAt;
    const first = rule.startAt === null ? anchor + rule.everyMs : anchor;
    tick = after < first ? first : anchor + (Math.floor((after - anchor) / rule.everyMs) + 1) * rule.everyMs;
  } else if (rule.cron !== null) {
    const from = rule.startAt !== null && rule.startAt - 1 > after ? rule.startAt - 1 : after;
    tick = parseCron(rule.cron, rule.timezone).nextRun(new Date(from))?.getTime() ?? null;
  } else {
    tick = null;
  }
  if (tick === null || (rule.endAt !== null && tick > rule.endAt)) return null;
  return tick;
}

/** The next `count` ticks from `nextRunAt` (itself included). */
export function upcomingRuns(rule: ScheduleRule, nextRunAt: number | null, count: number, runsLeft: number | null = null): number[] {
  const runs: number[] = [];
  const limit = runsLeft === null ? count : Math.min(count, runsLeft);
  for (let tick = nextRunAt; tick !== null && runs.length < limit; tick = tickAfter(rule, tick)) runs.push(tick);
  return runs;
}

/**
 * A due tick counts as missed (the catch-up rule applies) only when it is more than this late and a
 * later tick is due too: a busy queuer a little late runs every tick; one that was down does not.
 */
export const MISSED_AFTER_MS = 2000;

/** What the firer does with a schedule whose nextRunAt is due at `now`. */
export interface FirePlan {
  /** The tick whose task is made now (it names the task), or null: the missed ticks are skipped. */
  runTick: number | null;
  /** The schedule's next tick after this; null: it has ended. */
  nextRunAt: number | null;
  /** Ticks passed over without a task (catchUp none, or the ones `one` ran for). */
  missed: number;
}

/** Missed ticks are counted (for the log) up to this many. */
const MISSED_COUNTED_MAX = 10_000;

export function planFire(schedule: Schedule, now: number): FirePlan {
  const due = schedule.nextRunAt;
  if (due === null || due > now) throw new Error(`schedule ${schedule.id} is not due at ${now}`);
  const following = tickAfter(schedule, due);
  const late = now - due > MISSED_AFTER_MS && following !== null && following <= now;
  if (!late) return { runTick: due, nextRunAt: ended(schedule, 1) ? null : following, missed: 0 };
  let missed = 0;
  for (let tick: number | null = following; tick !== null && tick <= now && missed < MISSED_COUNTED_MAX; tick = tickAfter(schedule, tick))
    missed++;
  const next = tickAfter(schedule, now);
  if (schedule.catchUp === "none") return { runTick: null, nextRunAt: next, missed: missed + 1 };
  return { runTick: due, nextRunAt: ended(schedule, 1) ? null : next, missed };
}

/** Whether `made` more tasks reach the schedule's maxRuns. */
function ended(schedule: Schedule, made: number): boolean {
  return schedule.maxRuns !== null && schedule.runCount + made >= schedule.maxRuns;
}
