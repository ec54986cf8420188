import { z } from "zod";
// Type only: workflow-definition.ts imports this module's patterns, so a value import would be a cycle.
import type { WorkflowDefinition } from "../workflows/workflow-definition.js";

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

/** How an attempt ended. `released`: stopped by a graceful shutdown, queued again without counting a try. */
export const ATTEMPT_OUTCOMES = ["output", "split", "retry", "error", "canceled", "lease_lost", "released"] as const;
export type AttemptOutcome = (typeof ATTEMPT_OUTCOMES)[number];
/** The most attempts a task's record keeps (the oldest go first). */
export const MAX_ATTEMPTS_KEPT = 20;

/** One attempt at a task, kept in its record (`attempts`, oldest first). */
export const AttemptRecordSchema = z.object({
  /** The try number (the task's `tries` while it ran). */
  n: z.number().int().min(0),
  site: z.string().nullable(),
  node: z.string().nullable(),
  start: z.number().int().nullable(),
  end: z.number().int(),
  outcome: z.enum(ATTEMPT_OUTCOMES),
  /** The error's tail when it failed, else null. */
  error: z.string().nullable(),
});
export type AttemptRecord = z.infer<typeof AttemptRecordSchema>;

/** The delivery of a task's end to its `callbackUrl` (webhook). */
export const CallbackDeliverySchema = z.object({
  state: z.enum(["pending", "delivered", "failed"]),
  tries: z.number().int().min(0),
  /** The HTTP status of the last try, null when it got no answer. */
  lastStatus: z.number().int().nullable(),
  lastError: z.string().nullable(),
  /** When the last try was made, and when it was delivered (null until then). */
  lastTryAt: z.number().int().nullable(),
  deliveredAt: z.number().int().nullable(),
});
export type CallbackDelivery = z.infer<typeof CallbackDeliverySchema>;

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
  /** The last attempts, oldest first, at most MAX_ATTEMPTS_KEPT. */
  attempts: z.array(AttemptRecordSchema).default([]),
  /** The latest progress the script reported while running (0..1), and its message. */
  progress: z.number().min(0).max(1).nullable().default(null),
  progressMessage: z.string().nullable().default(null),
  /** Where the task's record is POSTed when it ends (http or https), and how that went. */
  callbackUrl: z.string().nullable().default(null),
  callback: CallbackDeliverySchema.nullable().default(null),
  /**
   * A workflow task's snapshot of its definition (checked with WorkflowDefinitionSchema where it is
   * made and where the queue reads it); null for any other task.
   */
  workflow: z
    .custom<WorkflowDefinition>((value) => typeof value === "object" && value !== null && !Array.isArray(value), "a workflow definition")
    .nullable()
    .default(null),
  /** A workflow step with several upstreams: their output keys in the order written, run in merge mode; else null. */
  inputs: z.array(z.string()).nullable().default(null),
  /** A per-task timeout of its script (a workflow step's `timeoutMs`) in place of its job's; null: the job's. */
  timeoutMs: z.number().int().min(1).nullable().default(null),
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
  /** Whose task and which job (absent in an entry rebuilt from the store's short reload rows): a steal weighs them. */
  user?: string;
  job?: string;
  /** The input document's size in bytes when known (at submit); a steal weighs moving it. */
  inputBytes?: number;
}

export function isFinal(status: TaskStatus): boolean {
  return FINAL_STATUSES.has(status);
}

/** `offload` missing (an entry made before the field existed) counts as true, like a stored task without it. */
export function toQueueEntry(
  task: Pick<Task, "id" | "priority" | "submitTime" | "availableAt" | "status"> & Partial<Pick<Task, "offload" | "user" | "job">>,
): QueueEntry {
  // A plain literal: a reload builds a million of these from rows that carry neither user nor job.
  const entry: QueueEntry = {
    id: task.id,
    priority: task.priority,
    submitTime: task.submitTime,
    availableAt: task.availableAt,
    lendable: task.status === TASK_STATUS.input && task.offload !== false,
  };
  if (task.user !== undefined) entry.user = task.user;
  if (task.job !== undefined) entry.job = task.job;
  return entry;
}
