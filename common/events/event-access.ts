import { z } from "zod";
import type { Caller } from "../accounts/api-keys.js";
import { ownUser } from "../accounts/api-keys.js";
import { TASK_ID_PATTERN } from "../model/task-model.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { badRequestOf } from "../model/zod-issues.js";
import type { TaskEvent } from "./task-event.js";

/** What GET /api/events was asked: where to resume, and one task (with its children) or all. */
export interface EventsQuery {
  lastEventId: string | null;
  task: string | null;
}

export const EventsQuerySchema = z.strictObject({
  task: z.string().regex(TASK_ID_PATTERN, "is not a task id").optional(),
  lastEventId: z.string().max(100, "is longer than 100 characters").optional(),
});

/**
 * The query of GET /api/events: `?task=<id>` (optional) and where to resume, from the
 * `Last-Event-ID` header (what a browser's EventSource sends when it reconnects) or else
 * `?lastEventId=`. An empty id means none. A malformed field answers 400 naming it.
 */
export function parseEventsQuery(query: Record<string, unknown>, lastEventIdHeader: string | string[] | undefined): EventsQuery {
  const header = Array.isArray(lastEventIdHeader) ? lastEventIdHeader[0] : lastEventIdHeader;
  const result = EventsQuerySchema.safeParse({ ...query, ...(header === undefined ? {} : { lastEventId: header }) });
  if (!result.success) {
    const [first] = result.error.issues;
    // An unknown field has no path of its own: name it.
    if (first?.code === "unrecognized_keys")
      throw docqError(ERROR_CODE.BadRequest, `unknown field ${JSON.stringify(first.keys[0])}: expected task or lastEventId`, {
        field: String(first.keys[0]),
      });
    throw badRequestOf(result.error.issues);
  }
  const lastEventId = result.data.lastEventId?.trim() ?? "";
  return { lastEventId: lastEventId === "" ? null : lastEventId, task: result.data.task ?? null };
}

/**
 * Which events a caller may see, as on the rest of the API: a user key its own user's tasks only,
 * the admin (or anyone, with authentication off) every task. With `task`, only that task and its
 * direct children (a split's parts), which is what following one task needs.
 */
export function eventFilter(caller: Caller, query: Pick<EventsQuery, "task">): (event: TaskEvent) => boolean {
  const user = ownUser(caller);
  const task = query.task;
  return (event) => (user === null || event.user === user) && (task === null || event.id === task || event.parentId === task);
}
