import { z } from "zod";
import type { ApiKeyRecord, UsageRow } from "../../accounts/account-records.js";
import { ATTEMPT_OUTCOMES, TASK_ID_PATTERN, TASK_STATUSES, TaskSchema, type Task, type TaskStatus } from "../../model/task-model.js";
import type { QueuerStats } from "../../queue/protocol.js";
import { ScheduleSchema } from "../../schedules/schedule-model.js";
import type { ScheduleView } from "../../schedules/schedule-view.js";
import { WorkflowDefinitionSchema, WorkflowStepSchema } from "../../workflows/workflow-definition.js";
import type { JobListing } from "../../jobs/job-listing.js";
import type { TaskPage } from "../../store/task-store.js";

/*
 * What the API answers, as zod schemas (those with a meta `id` are the document's components/schemas): the OpenAPI document is generated from them, and the
 * compile-time checks at the end hold each to the TypeScript type the code answers with, so a field
 * added to a Task (or a stats answer) without its schema here fails `tsc`, not a reader of the docs.
 */

/** Every error answer: `error` says what failed and why, `field` names the request's field at fault; details beside (status, retryAfter). */
export const ErrorBodySchema = z
  .object({
    error: z.string(),
    field: z.string().optional(),
  })
  .catchall(z.unknown())
  .meta({ id: "Error", description: "what failed and why; `field` names the request's field at fault" });

/** A Task as GET /api/tasks/:id serializes it: the stored record, every field (`workflow` checked as a workflow definition). */
export const TaskViewSchema = TaskSchema.extend({
  workflow: WorkflowDefinitionSchema.nullable(),
}).meta({ id: "Task", description: "a task's record, as stored" });

export const TaskPageSchema = z
  .object({
    items: z.array(TaskViewSchema),
    nextCursor: z.string().nullable().meta({ description: "pass back as ?cursor= for the next page; null on the last page" }),
  })
  .meta({ id: "TaskPage" });

/** `{id, status}`: what POST /api/tasks (201) and POST /api/tasks/:id/retry answer. */
export const TaskStatusSchema = z.object({ id: z.string().regex(TASK_ID_PATTERN), status: z.enum(TASK_STATUSES) });

export const DeletedTaskSchema = z.object({
  id: z.string(),
  status: z
    .enum(["deleted", ...TASK_STATUSES])
    .meta({ description: "deleted: a final task's record is gone; else the status after the cancel" }),
});

export const CleanResultSchema = z.object({
  deleted: z.int().min(0),
  more: z.boolean().meta({ description: "true: stopped at its limit with more left, call again" }),
});

export const StatsSchema = z
  .object({
    site: z.string(),
    byStatus: z.record(z.enum(TASK_STATUSES), z.int()),
    queue: z.object({ ready: z.int(), delayed: z.int(), highestPriority: z.int().nullable() }),
    queuedByPriority: z.record(z.string(), z.int()).meta({ description: "queued tasks per priority (the keys are priorities)" }),
    workers: z.array(z.object({ owner: z.string(), slots: z.int(), busy: z.int() })),
    slots: z.int(),
    stealing: z.record(z.string(), z.object({ stolenIn: z.int(), stolenOut: z.int() })),
  })
  .meta({ id: "Stats" });

export const HealthSchema = z.object({
  status: z.string().meta({ description: "ok, or why not ready" }),
  site: z.string(),
  node: z.string(),
  services: z.array(z.string()),
  auth: z.boolean().meta({ description: "whether the other routes ask for a key (Authorization: Bearer)" }),
});

export const WhoamiSchema = z.object({
  admin: z.boolean().meta({ description: "the admin key (or no authentication): sees and may do everything" }),
  user: z.string().nullable().meta({ description: "a user key's user; null for the admin" }),
});

const KeyLimitsSchema = z.object({
  maxPriority: z.int().optional(),
  maxQueued: z.int().optional(),
  maxPerDay: z.int().optional(),
  maxBytesPerDay: z.int().optional(),
  offload: z.boolean(),
});

export const KeySchema = z
  .object({ id: z.string(), user: z.string(), limits: KeyLimitsSchema, createdAt: z.int(), revokedAt: z.int().nullable() })
  .meta({ id: "Key", description: "an API key without its secret" });

export const CreatedKeySchema = z.object({
  id: z.string(),
  key: z.string().meta({ description: "the secret: shown in this answer only" }),
  user: z.string(),
  limits: KeyLimitsSchema,
  createdAt: z.int(),
});

export const UsageRowSchema = z
  .object({
    user: z.string(),
    day: z.string().meta({ description: "YYYY-MM-DD, UTC" }),
    submitted: z.int(),
    output: z.int(),
    error: z.int(),
    canceled: z.int(),
    runMs: z.int(),
    bytesIn: z.int(),
    bytesOut: z.int(),
    ranElsewhere: z.int(),
  })
  .meta({ id: "UsageRow" });

export const ScheduleViewSchema = ScheduleSchema.extend({
  state: z.enum(["active", "paused", "ended"]),
  nextRuns: z.array(z.string()).meta({ description: "the next run times, ISO 8601 UTC" }),
  lastTasks: z.array(z.object({ id: z.string(), status: z.enum([...TASK_STATUSES, "gone"]) })),
}).meta({ id: "Schedule" });

export const DeletedScheduleSchema = z.object({ id: z.string(), deleted: z.literal(true) });

export const JobListingSchema = z
  .union([
    z.object({
      name: z.string(),
      kind: z.enum(["split", "warm", "script"]),
      description: z.string().nullable().meta({ description: "job.yaml's description" }),
      split: z.boolean(),
      warm: z.boolean(),
      timeoutMs: z.int(),
      maxTries: z.int().nullable(),
      params: z.array(z.string()).nullable().meta({ description: "the params job.yaml declares; null: any params are taken" }),
      paramsSchema: z
        .record(z.string(), z.unknown())
        .nullable()
        .meta({ description: "the params with their types and bounds, as JSON Schema (what a submission's params are checked with)" }),
      maxRequests: z.int().nullable().meta({ description: "a warm job's process is recycled after this many tasks" }),
      maxRssMb: z.int().nullable().meta({ description: "a warm job's process is recycled above this memory" }),
      concurrency: z.int().meta({ description: "requests one warm process of the job holds at once (1 for a one-shot job)" }),
      inline: z.boolean().meta({ description: "a warm job whose small documents travel inside its request and answer lines (base64)" }),
      retention: z
        .object({
          outputMs: z.int().nullable().optional(),
          errorMs: z.int().nullable().optional(),
          canceledMs: z.int().nullable().optional(),
        })
        .meta({ description: "this job's own retention per final status (ms, null: kept); one left out keeps the site's" }),
    }),
    z.object({
      name: z.string(),
      kind: z.literal("workflow"),
      description: z.string().nullable(),
      steps: z.array(WorkflowStepSchema.extend({ upstreams: z.array(z.string()) })),
      flow: z.array(z.string()).readonly(),
      final: z.string(),
    }),
    z.object({ name: z.string(), error: z.string().meta({ description: "why a submission to it is refused" }) }),
  ])
  .meta({ id: "Job" });

export const JobListSchema = z.object({ jobs: z.array(JobListingSchema) });

/** The attempts' outcomes, for readers of the schema (the Task's `attempts[].outcome`). */
export const ATTEMPT_OUTCOME_NAMES = ATTEMPT_OUTCOMES;

// ---------------------------------------------------------------------------
// Compile-time: each schema answers exactly what the code answers with.
// ---------------------------------------------------------------------------

/** true when A and B are each assignable to the other. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

/** Fails to compile when a schema and the type the code answers with differ. */
export const SCHEMAS_MATCH_ANSWERS: [
  Same<z.output<typeof TaskViewSchema>, Task>,
  Same<z.output<typeof TaskPageSchema>, TaskPage>,
  Same<z.output<typeof StatsSchema>, Omit<QueuerStats, "queuedByPriority"> & { queuedByPriority: Record<string, number> }>,
  Same<z.output<typeof KeySchema>, Omit<ApiKeyRecord, "hash">>,
  Same<z.output<typeof UsageRowSchema>, UsageRow>,
  Same<z.output<typeof ScheduleViewSchema>, ScheduleView>,
  Same<z.output<typeof JobListingSchema>, JobListing>,
  Same<z.output<typeof TaskStatusSchema>, { id: string; status: TaskStatus }>,
] = [true, true, true, true, true, true, true, true];
