import { z } from "zod";
import { CreateKeySchema, KEY_ID_PATTERN } from "../../accounts/api-keys.js";
import { EventsQuerySchema } from "../../events/event-access.js";
import { TASK_ID_PATTERN } from "../../model/task-model.js";
import { SCHEDULE_ID_PATTERN } from "../../schedules/schedule-model.js";
import { PauseRequestSchema, ScheduleFieldsSchema } from "../../schedules/schedule-request.js";
import { UsageQuerySchema } from "../api-access.js";
import { CleanQuerySchema } from "../bulk-clean.js";
import { CreateTaskFieldsSchema, ListTasksQuerySchema } from "../task-submission.js";
import { DASHBOARD_API_ROUTES } from "../overview.js";
import type { ApiRoute } from "./api-route.js";
import {
  CleanResultSchema,
  CreatedKeySchema,
  DeletedScheduleSchema,
  DeletedTaskSchema,
  HealthSchema,
  WhoamiSchema,
  JobListSchema,
  KeySchema,
  ScheduleViewSchema,
  StatsSchema,
  TaskPageSchema,
  TaskStatusSchema,
  TaskViewSchema,
  UsageRowSchema,
} from "./response-schemas.js";

/*
 * Every route the controller serves, with the schemas it validates with and answers with. The
 * OpenAPI document is made from this table; openapi-document.test.ts checks that every alias of the
 * controller is here and every route here is served.
 */

const TaskIdParams = z.object({ id: z.string().regex(TASK_ID_PATTERN).meta({ description: "<site>-<ulid>" }) });
const ScheduleIdParams = z.object({ id: z.string().regex(SCHEDULE_ID_PATTERN) });
const KeyIdParams = z.object({ id: z.string().regex(KEY_ID_PATTERN) });

/** A task's fields as POST /api/tasks takes them (query string, or form fields beside `file`). */
const TaskFields = CreateTaskFieldsSchema;
/** A schedule's own fields (those refused on a schedule, runAt, delayMs, callbackUrl, left out). */
const ScheduleFields = ScheduleFieldsSchema.omit({ runAt: true, delayMs: true, callbackUrl: true });
const ScheduleTaskFields = CreateTaskFieldsSchema.omit({ runAt: true, delayMs: true, callbackUrl: true, user: true });

/** The answer of the batch submit: the tasks' ids in file order. */
const BatchCreatedSchema = z.object({ ids: z.array(z.string().regex(TASK_ID_PATTERN)) });

const badRequest = (why: string) => ({ 400: { description: `${why} (the field is named)` } });
const notFound = (what: string) => ({ 404: { description: `no such ${what} (a user key: or not its own)` } });
const userScoped = (what: string) => ({ 403: { description: `a user key asked for another user's ${what}` } });

export const API_ROUTES: readonly ApiRoute[] = [
  {
    method: "post",
    path: "/api/tasks",
    operationId: "createTask",
    tags: ["tasks"],
    summary: "Submit a document; answers once the task is durable",
    description:
      "The document is the body (any type), or the `file` of a multipart form whose other fields are the query's. " +
      "With `callbackUrl` the record is POSTed there when the task ends, signed with `X-Docq-Signature: sha256=<hex HMAC-SHA256 of the body>`.",
    access: "key",
    query: TaskFields,
    body: { document: true, form: TaskFields },
    responses: {
      201: {
        description: "accepted: durable, queued (or delayed)",
        json: TaskStatusSchema,
        headers: { Location: { description: "the task: /api/tasks/{id}", schema: { type: "string" } } },
      },
      ...badRequest("a field is missing or wrong, or the job is unknown"),
      403: { description: "a user key named another user, or a priority over its maxPriority" },
      413: { description: "the document is over maxBodyBytes" },
      429: {
        description: "a limit of the key is reached (maxQueued, maxPerDay, maxBytesPerDay)",
        headers: { "Retry-After": { description: "seconds", schema: { type: "integer" } } },
      },
    },
  },
  {
    method: "post",
    path: "/api/tasks/batch",
    operationId: "createTaskBatch",
    tags: ["tasks"],
    summary: "Submit many documents in one request, all or none; answers once every task is durable",
    description:
      "A multipart form: the fields apply to every task (given before the first file, they are checked before any document is stored), " +
      "and one part named `file` per task. " +
      "The optional field `tasks`, a JSON array with one object per file in order, sets a task's own job, priority, name, params, " +
      "maxTries, callbackUrl, runAt or delayMs. At most 1,000 files, and maxBodyBytes for the documents together. " +
      "A refusal names the position: `file[7]`, `tasks[3].priority`; nothing of a refused batch is kept.",
    access: "key",
    query: TaskFields,
    body: {
      form: TaskFields.extend({ tasks: z.string().optional().meta({ description: "JSON array, one object per file" }) }),
      files: true,
    },
    responses: {
      201: { description: "accepted: every task durable, queued (or delayed)", json: BatchCreatedSchema },
      ...badRequest("a field or a task's entry is missing or wrong, the job is unknown, or a file is empty"),
      403: { description: "a user key named another user, or a priority over its maxPriority" },
      413: { description: "more than 1,000 files, or the documents together over maxBodyBytes" },
      429: {
        description: "a limit of the key would be passed by the batch (maxQueued, maxPerDay, maxBytesPerDay)",
        headers: { "Retry-After": { description: "seconds", schema: { type: "integer" } } },
      },
    },
  },
  {
    method: "get",
    path: "/api/tasks",
    operationId: "listTasks",
    tags: ["tasks"],
    summary: "Tasks, newest first, a page at a time, by filters (each an exact match)",
    description:
      "Each filter is served by an index in the cursor's order: a page costs the same with a million tasks. A user key lists its own tasks.",
    access: "key",
    query: ListTasksQuerySchema,
    responses: { 200: { description: "a page", json: TaskPageSchema }, ...badRequest("a bad filter or cursor"), ...userScoped("tasks") },
  },
  {
    method: "delete",
    path: "/api/tasks",
    operationId: "cleanTasks",
    tags: ["tasks"],
    summary:
      "Bulk clean: remove the finished top-level tasks of one status that ended before olderThan, each with its tree and documents " +
      "(a user key: its own). At most 1000 a call: `more: true` says to call again",
    access: "key",
    query: CleanQuerySchema,
    responses: {
      200: { description: "how many top-level tasks were removed", json: CleanResultSchema },
      ...badRequest("status is missing or not final, or olderThan is malformed"),
      ...userScoped("tasks"),
    },
  },
  {
    method: "get",
    path: "/api/tasks/{id}",
    operationId: "statusTask",
    tags: ["tasks"],
    summary: "One task's record (the search by id)",
    access: "key",
    pathParams: TaskIdParams,
    responses: { 200: { description: "the task", json: TaskViewSchema }, ...badRequest("a malformed id"), ...notFound("task") },
  },
  {
    method: "delete",
    path: "/api/tasks/{id}",
    operationId: "deleteTask",
    tags: ["tasks"],
    summary: "Cancel a task (its descendants too), or delete the record and documents of one that is over",
    access: "key",
    pathParams: TaskIdParams,
    responses: {
      200: { description: "canceled or deleted", json: DeletedTaskSchema },
      ...badRequest("a malformed id"),
      ...notFound("task"),
    },
  },
  {
    method: "get",
    path: "/api/tasks/{id}/result",
    operationId: "resultTask",
    tags: ["tasks"],
    summary: "The output document of a task that is output",
    access: "key",
    pathParams: TaskIdParams,
    responses: {
      200: { description: "the output document", media: { "application/octet-stream": { type: "string", format: "binary" } } },
      ...badRequest("a malformed id"),
      ...notFound("task"),
      409: { description: "no result yet: `status` gives the task's status" },
    },
  },
  {
    method: "post",
    path: "/api/tasks/{id}/retry",
    operationId: "retryTask",
    tags: ["tasks"],
    summary:
      "Queue a task in error or canceled again with a fresh try count (its attempts kept); a split parent runs its failed parts again",
    access: "key",
    pathParams: TaskIdParams,
    responses: {
      200: {
        description: "queued again: the status after (input, wait, or complete for a parent whose merge runs again)",
        json: TaskStatusSchema,
      },
      ...badRequest("a malformed id"),
      ...notFound("task"),
      409: { description: "not in error or canceled, a part of a split (retry its parent), or its documents were removed" },
    },
  },
  {
    method: "get",
    path: "/api/events",
    operationId: "events",
    tags: ["tasks"],
    summary:
      "Server-Sent Events: every status change and progress of the tasks the caller may see (`event: task`, `id: <epoch>-<seq>`); " +
      "resumes after Last-Event-ID within the last 5 minutes; `event: gap` when events may be missing",
    access: "key",
    query: EventsQuerySchema,
    headers: z.object({ "Last-Event-ID": z.string().max(100).optional().meta({ description: "resume after this event" }) }),
    responses: {
      200: {
        description: 'a stream of `event: task` with data {"id","status","job","user","parentId","progress","message","time"}',
        media: { "text/event-stream": { type: "string" } },
      },
      ...badRequest("a malformed task id or field"),
    },
  },
  {
    method: "get",
    path: "/api/stats",
    operationId: "stats",
    tags: ["site"],
    summary: "Counts per status and priority, workers and their slots, stealing per site (admin)",
    access: "admin",
    responses: { 200: { description: "the site's figures", json: StatsSchema } },
  },
  {
    method: "get",
    path: "/api/health",
    operationId: "health",
    tags: ["site"],
    summary: "Ready when the site's queuer answers",
    access: "open",
    usesQueue: false,
    responses: { 200: { description: "ready", json: HealthSchema }, 503: { description: "no queuer yet", json: HealthSchema } },
  },
  {
    method: "get",
    path: "/api/whoami",
    operationId: "whoami",
    tags: ["keys"],
    summary: "Who the key is: the admin, or a user key's user (the dashboard shows what the key may see)",
    access: "key",
    usesQueue: false,
    responses: { 200: { description: "the caller", json: WhoamiSchema } },
  },
  {
    method: "get",
    path: "/api/jobs",
    operationId: "listJobs",
    tags: ["jobs"],
    summary: "Every job of the jobs folder with what its job.yaml says; a workflow's steps and flow; a refused job's reason",
    access: "key",
    responses: { 200: { description: "the jobs, by name", json: JobListSchema } },
  },
  {
    method: "get",
    path: "/api/usage",
    operationId: "usage",
    tags: ["keys"],
    summary: "Usage per user and UTC day, from..to inclusive (both default to today); admin: any user, a user key: its own",
    access: "key",
    query: UsageQuerySchema,
    responses: {
      200: { description: "rows by day, then user", json: z.array(UsageRowSchema) },
      ...badRequest("a bad day or range"),
      ...userScoped("usage"),
    },
  },
  {
    method: "post",
    path: "/api/keys",
    operationId: "createKey",
    tags: ["keys"],
    summary: "Make a user key (admin); the secret is in this answer only",
    access: "admin",
    body: { json: CreateKeySchema },
    responses: { 201: { description: "the key", json: CreatedKeySchema }, ...badRequest("a bad field") },
  },
  {
    method: "get",
    path: "/api/keys",
    operationId: "listKeys",
    tags: ["keys"],
    summary: "Every key, revoked ones included, without secrets (admin)",
    access: "admin",
    responses: { 200: { description: "the keys, oldest first", json: z.array(KeySchema) } },
  },
  {
    method: "delete",
    path: "/api/keys/{id}",
    operationId: "revokeKey",
    tags: ["keys"],
    summary: "Revoke a key (admin): refused from the next request on",
    access: "admin",
    pathParams: KeyIdParams,
    responses: {
      200: { description: "the key, revoked", json: KeySchema },
      ...badRequest("a malformed id"),
      404: { description: "no such key" },
    },
  },
  {
    method: "post",
    path: "/api/schedules",
    operationId: "createSchedule",
    tags: ["schedules"],
    summary: "Schedule a document: a task at every tick of `every` or `cron`; the body is the document, raw or multipart (field file)",
    access: "key",
    query: ScheduleTaskFields.extend(ScheduleFields.shape),
    body: { document: true, form: ScheduleTaskFields.extend(ScheduleFields.shape) },
    responses: {
      201: { description: "the schedule with its next runs", json: ScheduleViewSchema },
      ...badRequest("a field is missing or wrong (a bad cron: cron and which of its fields)"),
      403: { description: "a user key named another user, or a priority over its maxPriority" },
      413: { description: "the document is over maxBodyBytes" },
    },
  },
  {
    method: "get",
    path: "/api/schedules",
    operationId: "listSchedules",
    tags: ["schedules"],
    summary: "Every schedule (a user key: its own)",
    access: "key",
    responses: { 200: { description: "the schedules", json: z.array(ScheduleViewSchema) } },
  },
  {
    method: "get",
    path: "/api/schedules/{id}",
    operationId: "getSchedule",
    tags: ["schedules"],
    summary: "One schedule: its next runs and its last tasks with their statuses",
    access: "key",
    pathParams: ScheduleIdParams,
    responses: { 200: { description: "the schedule", json: ScheduleViewSchema }, ...badRequest("a malformed id"), ...notFound("schedule") },
  },
  {
    method: "patch",
    path: "/api/schedules/{id}",
    operationId: "pauseSchedule",
    tags: ["schedules"],
    summary: "Pause, or resume from the next tick after now",
    access: "key",
    pathParams: ScheduleIdParams,
    body: { json: PauseRequestSchema.omit({ id: true }) },
    responses: {
      200: { description: "the schedule", json: ScheduleViewSchema },
      ...badRequest("paused is not true or false"),
      ...notFound("schedule"),
    },
  },
  {
    method: "delete",
    path: "/api/schedules/{id}",
    operationId: "deleteSchedule",
    tags: ["schedules"],
    summary: "Remove the schedule and its document (the tasks it made stay)",
    access: "key",
    pathParams: ScheduleIdParams,
    responses: { 200: { description: "removed", json: DeletedScheduleSchema }, ...badRequest("a malformed id"), ...notFound("schedule") },
  },
  {
    method: "get",
    path: "/api/openapi.json",
    operationId: "openapi",
    tags: ["docs"],
    summary: "This document (open: it describes the API, it holds no data)",
    access: "open",
    usesQueue: false,
    responses: { 200: { description: "the OpenAPI document", media: { "application/json": { type: "object" } } } },
  },
  {
    method: "get",
    path: "/api/docs",
    operationId: "docsPage",
    tags: ["docs"],
    summary: "Swagger UI over this document, served from the app (no internet needed); open",
    access: "open",
    usesQueue: false,
    responses: { 200: { description: "the page", media: { "text/html": { type: "string" } } } },
  },
  {
    method: "get",
    path: "/api/docs/{asset}",
    operationId: "docsAsset",
    tags: ["docs"],
    summary: "The files of the Swagger UI page (from swagger-ui-dist); open",
    access: "open",
    usesQueue: false,
    pathParams: z.object({ asset: z.string() }),
    responses: {
      200: { description: "the file", media: { "application/javascript": { type: "string" }, "text/css": { type: "string" } } },
      404: { description: "not a file of the page" },
    },
  },
  {
    method: "get",
    path: "/metrics",
    operationId: "metrics",
    tags: ["site"],
    summary:
      "Prometheus metrics: the site's docq figures, then this process's (admin key or DOCQ_METRICS_KEY, or open with metrics.public)",
    access: "metrics",
    responses: { 200: { description: "Prometheus text format 0.0.4", media: { "text/plain": { type: "string" } } } },
  },
  // GET /api/overview and GET /api/tasks/{id}/input: the dashboard's (common/http/overview.ts).
  ...DASHBOARD_API_ROUTES,
];
