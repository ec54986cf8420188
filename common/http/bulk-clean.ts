import { z } from "zod";
import { badRequestOf } from "../model/zod-issues.js";
import { FINISHED_STATUSES, type FinishedStatus } from "../queue/retention.js";

/*
 * `DELETE /api/tasks?status=&olderThan=`: the bulk clean of finished tasks of one final status.
 * `status` is required, so a bare DELETE on the collection can never empty it; without `olderThan`
 * every task of that status goes, whenever it ended.
 */

/** An ISO 8601 date, or date and time (`2026-12-01`, `2026-12-01T08:00:00Z`, with offset or fraction). */
const ISO_DATE = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

export const CleanQuerySchema = z.strictObject({
  status: z.enum(FINISHED_STATUSES, { error: `is required, one final status: ${FINISHED_STATUSES.join(", ")}` }),
  olderThan: z
    .string({ error: "must be an age in ms (e.g. 86400000) or an ISO date (e.g. 2026-12-01T00:00:00Z)" })
    .refine(
      (raw) => /^\d{1,15}$/.test(raw) || (ISO_DATE.test(raw) && !Number.isNaN(Date.parse(raw))),
      "must be an age in ms (e.g. 86400000) or an ISO date (e.g. 2026-12-01T00:00:00Z)",
    )
    .optional(),
  user: z.string().min(1).max(200).optional(),
});

export interface CleanQuery {
  status: FinishedStatus;
  /** Tasks that ended before this instant (ms since the epoch). */
  endedBefore: number;
  user?: string;
}

/** Parses the bulk clean's query at `now`: `olderThan` as an age in ms, or as the date before which tasks ended. */
export function parseCleanQuery(raw: Record<string, unknown>, now: number): CleanQuery {
  // Query values arrive as strings; a number here comes from a caller inside the cluster.
  const olderThan = typeof raw.olderThan === "number" ? String(raw.olderThan) : raw.olderThan;
  const result = CleanQuerySchema.safeParse({ ...raw, olderThan });
  if (!result.success) throw badRequestOf(result.error.issues);
  const { status, user } = result.data;
  const age = result.data.olderThan;
  // No olderThan: every task of the status that has ended (by now, this instant included).
  const endedBefore = age === undefined ? now + 1 : /^\d+$/.test(age) ? now - Number(age) : Date.parse(age);
  return { status, endedBefore, ...(user === undefined ? {} : { user }) };
}
