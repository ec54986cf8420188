import { z } from "zod";
import { USAGE_DAY_PATTERN, usageDay } from "../accounts/account-records.js";
import type { Caller } from "../accounts/api-keys.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { badRequestOf } from "../model/zod-issues.js";

/*
 * What a caller may ask of the API beyond being who they are: a user key submits as its own user
 * and below its priority cap, and reads its own usage.
 */

/** Refuses a submission naming another user, or above the key's priority cap (403 naming it). */
export function checkSubmission(caller: Caller, request: { givenUser: unknown; priority: number }): void {
  if (caller.kind !== "user") return;
  if (request.givenUser !== undefined && request.givenUser !== caller.user) {
    throw docqError(
      ERROR_CODE.Forbidden,
      `user: this key submits as ${JSON.stringify(caller.user)} only, not as ${JSON.stringify(request.givenUser)}`,
      { field: "user" },
    );
  }
  const cap = caller.limits.maxPriority;
  if (cap !== undefined && request.priority > cap) {
    throw docqError(ERROR_CODE.Forbidden, `priority: ${request.priority} is above this key's maxPriority of ${cap}`, {
      field: "priority",
      details: { maxPriority: cap },
    });
  }
}

const Day = z
  .string()
  .regex(USAGE_DAY_PATTERN, "expected a day YYYY-MM-DD")
  .refine((day) => !Number.isNaN(Date.parse(`${day}T00:00:00Z`)), "is not a date");
/** The longest range one usage query covers. */
const MAX_USAGE_DAYS = 366;

export const UsageQuerySchema = z.strictObject({
  user: z.string().min(1).max(200).optional(),
  from: Day.optional(),
  to: Day.optional(),
});

/** `GET /api/usage?user=&from=&to=`: days inclusive, UTC; both default to today. */
export function parseUsageQuery(raw: Record<string, unknown>, now: number): { user?: string; from: string; to: string } {
  const result = UsageQuerySchema.safeParse(raw);
  if (!result.success) throw badRequestOf(result.error.issues);
  const today = usageDay(now);
  const { user, from = result.data.to ?? today, to = result.data.from ?? today } = result.data;
  if (from > to) throw docqError(ERROR_CODE.BadRequest, `from (${from}) is after to (${to})`, { field: "from" });
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000 + 1;
  if (days > MAX_USAGE_DAYS)
    throw docqError(ERROR_CODE.BadRequest, `from..to spans ${days} days, more than ${MAX_USAGE_DAYS}`, { field: "from" });
  return { ...(user === undefined ? {} : { user }), from, to };
}
