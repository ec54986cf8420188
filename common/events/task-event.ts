import { z } from "zod";
import { TASK_STATUSES, type Task } from "../model/task-model.js";

/*
 * What the event stream says of a task: a status change or a progress report, small enough to
 * broadcast on every change. The active queuer numbers them and broadcasts them in batches to the
 * site's controllers (Moleculer event TASK_EVENTS_BROADCAST), each of which keeps the recent ones
 * and serves them as Server-Sent Events (GET /api/events).
 */

/** The Moleculer event a batch of task events travels as, from the active queuer to every controller. */
export const TASK_EVENTS_BROADCAST = "docq.task.changed";

export const TaskEventSchema = z.strictObject({
  /** The task's id. */
  id: z.string().min(1).max(200),
  status: z.enum(TASK_STATUSES),
  job: z.string(),
  user: z.string(),
  parentId: z.string().nullable(),
  progress: z.number().min(0).max(1).nullable(),
  message: z.string().nullable(),
  /** When the queue wrote the change (ms since the epoch). */
  time: z.number(),
});
export type TaskEvent = z.infer<typeof TaskEventSchema>;

/** An event with its stream id, `<epoch>-<seq>`: the queuer's start (base 36) and its count since then. */
export const NumberedEventSchema = z.strictObject({ eventId: z.string().regex(/^[0-9a-z]+-\d+$/), event: TaskEventSchema });
export type NumberedEvent = z.infer<typeof NumberedEventSchema>;

/** One broadcast: the events written since the last one, in order. Checked by the controllers (it crosses processes). */
export const TaskEventBatchSchema = z.strictObject({ events: z.array(NumberedEventSchema) });
export type TaskEventBatch = z.infer<typeof TaskEventBatchSchema>;

/** The event of a task's record as a step left it. */
export function taskEventOf(task: Task, time: number): TaskEvent {
  return {
    id: task.id,
    status: task.status,
    job: task.job,
    user: task.user,
    parentId: task.parentId,
    progress: task.progress ?? null,
    message: task.progressMessage ?? null,
    time,
  };
}
