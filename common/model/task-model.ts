import { z } from "zod";

/** The statuses of the seed system, kept by name; one source for code and SQL. */
export const TASK_STATUS = Object.freeze({
  input: "input",
  work: "work",
  output: "output",
  error: "error",
  wait: "wait",
  complete: "complete",
  canceled: "canceled",
} as const);

export type TaskStatus = (typeof TASK_STATUS)[keyof typeof TASK_STATUS];
export const TASK_STATUSES = Object.values(TASK_STATUS) as [TaskStatus, ...TaskStatus[]];
const FINAL_STATUSES: ReadonlySet<TaskStatus> = new Set([TASK_STATUS.output, TASK_STATUS.error, TASK_STATUS.canceled]);
/** Statuses in which a task sits in the priority index waiting for a worker. */
export const QUEUED_STATUSES: ReadonlySet<TaskStatus> = new Set([TASK_STATUS.input, TASK_STATUS.complete]);

export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 100;
export const JOB_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]*$/;
/** `<site>-<ulid>`: the origin site is readable in the id, the ulid keeps it unique and sortable. */
export const TASK_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}-[0-9A-HJKMNP-TV-Z]{26}$/;
export const SITE_PATTERN = /^[a-z0-9][a-z0-9_]{0,62}$/;

export const ParamsSchema = z.record(z.string(), z.unknown());
export type TaskParams = z.infer<typeof ParamsSchema>;

const LeaseSchema = z.object({
  owner: z.string(),
  expiresAt: z.number().int(),
});
export type Lease = z.infer<typeof LeaseSchema>;

export const ProcessedBySchema = z.object({ site: z.string(), node: z.string() });
export type ProcessedBy = z.infer<typeof ProcessedBySchema>;

export const TaskSchema = z.object({
  id: z.string().regex(TASK_ID_PATTERN),
  site: z.string(),
  user: z.string(),
  name: z.string(),
  job: z.string().regex(JOB_NAME_PATTERN),
  params: ParamsSchema,
  priority: z.number().int().min(MIN_PRIORITY).max(MAX_PRIORITY),
  status: z.enum(TASK_STATUSES),
  input: z.string().nullable(),
  output: z.string().nullable(),
  tries: z.number().int().min(0),
  maxTries: z.number().int().min(1),
  submitTime: z.number().int(),
  /** When a queued task may next be pulled (retry backoff); equals submitTime for a fresh task. */
  availableAt: z.number().int(),
  startTime: z.number().int().nullable(),
  endTime: z.number().int().nullable(),
  duration: z.number().int().nullable(),
  lease: LeaseSchema.nullable(),
  processedBy: ProcessedBySchema.nullable(),
  error: z.string().nullable(),
  parentId: z.string().nullable(),
  /** Depth in a split tree: 0 for a submitted task, parent's depth + 1 for a child. */
  depth: z.number().int().min(0),
  children: z.array(z.string()),
  childrenTotal: z.number().int().min(0),
  childrenCompleted: z.number().int().min(0),
  /**
   * Whether another site may run this task (the stealer lends it): false = never lent to another
   * site, it runs here or not at all (as when the submitter's API key has offload false). Default true; a stored
   * task from before the field existed reads as true.
   */
  offload: z.boolean().default(true),
});
export type Task = z.infer<typeof TaskSchema>;

/** What the priority index needs of a task: small enough to hold a million of them. */
export interface QueueEntry {
  id: string;
  priority: number;
  submitTime: number;
  availableAt: number;
  /** A plain queued task, not a parent queued for its merge, whose offload is not false: another site may run it. */
  lendable: boolean;
}

export function isFinal(status: TaskStatus): boolean {
  return FINAL_STATUSES.has(status);
}

/** `offload` missing (an entry made before the field existed) counts as true, like a stored task without it. */
export function toQueueEntry(
  task: Pick<Task, "id" | "priority" | "submitTime" | "availableAt" | "status"> & Partial<Pick<Task, "offload">>,
): QueueEntry {
  return {
    id: task.id,
    priority: task.priority,
    submitTime: task.submitTime,
    availableAt: task.availableAt,
    lendable: task.status === TASK_STATUS.input && task.offload !== false,
  };
}
