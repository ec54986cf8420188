import { z } from "zod";
import type { ApiKeyRecord, UsageRow } from "../accounts/account-records.js";
import { USAGE_DAY_PATTERN } from "../accounts/account-records.js";
import type { KeyRing, KnownKey } from "../accounts/key-ring.js";
import type { CancelReport, DeleteReport, PulledTask } from "../model/claims.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { formatZodIssues } from "../model/zod-issues.js";
import {
  JOB_NAME_PATTERN,
  ParamsSchema,
  ProcessedBySchema,
  TASK_ID_PATTERN,
  TASK_STATUSES,
  type Task,
  type TaskStatus,
} from "../model/task-model.js";
import type { MinuteCounts, TaskPage } from "../store/task-store.js";
import { PROGRESS_MESSAGE_MAX_CHARS } from "../jobs/script-answer.js";
import { SCHEDULE_ID_PATTERN, ScheduleSchema } from "../schedules/schedule-model.js";
import type { ScheduleView } from "../schedules/schedule-view.js";

/*
 * The queuer's protocol, written once: the name of each action, the message it takes (checked with
 * zod: in cluster mode messages cross process boundaries) and the answer it gives. The queuer
 * registers its actions from this table; workers, the stealer, the controller and the tests reach
 * it through the typed client in queue-client.ts.
 */

/** The Moleculer service that answers these actions. */
export const QUEUER_SERVICE = "queuer";

export const QUEUER_ACTIONS = {
  submit: "submit",
  /** The batch submit: many tasks in one store write, all or none; answers their ids in order. */
  submitMany: "submitMany",
  /** Answers PulledTask[]: a task leased for its merge carries its inputs, so a merge costs no second call. */
  pull: "pull",
  heartbeat: "heartbeat",
  succeed: "succeed",
  fail: "fail",
  split: "split",
  /** The running attempt's progress, under its claim (a worker sends it throttled, fire and forget). */
  progress: "progress",
  lend: "lend",
  /** Lease renewal for a remote holder (a thief site), which has no slots to report. */
  renew: "renew",
  backlog: "backlog",
  /** Answers a CancelReport; the queuer drops the documents in its `drop`. */
  cancel: "cancel",
  /** DELETE as one queue step: answers a DeleteReport; the queuer drops the documents in its `drop`. */
  delete: "delete",
  /** A graceful stop hands back a running attempt, not counted as a try. */
  release: "release",
  /** A user's retry of a task in error or canceled (its failed parts with it): answers `{id, status}`. */
  retry: "retry",
  /** Removes finished top-level tasks with their trees and documents (the bulk clean; retention's code path). */
  purge: "purge",
  get: "get",
  list: "list",
  stats: "stats",
  /** Top-level tasks ended per minute since a time, by final status (the dashboard's throughput chart). */
  finishedPerMinute: "finishedPerMinute",
  createKey: "createKey",
  listKeys: "listKeys",
  revokeKey: "revokeKey",
  authenticate: "authenticate",
  usage: "usage",
  addUsage: "addUsage",
  /** Schedules (common/schedules/): kept in the store, fired by this queuer while it holds the lock. */
  createSchedule: "createSchedule",
  getSchedule: "getSchedule",
  listSchedules: "listSchedules",
  /** `paused: false` resumes from the next tick after now (ticks while paused are not made up). */
  pauseSchedule: "pauseSchedule",
  /** Removes the schedule and its document (the tasks it made stay). */
  deleteSchedule: "deleteSchedule",
} as const;

export type QueuerAction = keyof typeof QUEUER_ACTIONS;

/** Every action, in the table's order. */
export const QUEUER_ACTION_NAMES = Object.keys(QUEUER_ACTIONS) as QueuerAction[];

/** The broker's name of an action: `queuer.<action>`. */
export function queuerActionName(action: QueuerAction): string {
  return `${QUEUER_SERVICE}.${QUEUER_ACTIONS[action]}`;
}

const Owner = z.string().min(1).max(200);
const Id = z.string().min(1).max(200);
/** A lease claim: the task's `tries` when the lease was granted is the attempt number. */
const Claim = { id: Id, owner: Owner, tries: z.int().min(1) };
const ById = z.strictObject({ id: Id });
const NoParams = z.strictObject({});
const User = z.string().min(1).max(200);

const Quota = z.strictObject({
  maxQueued: z.int().min(1).optional(),
  maxPerDay: z.int().min(1).optional(),
  maxBytesPerDay: z.int().min(1).optional(),
});
const Day = z.string().regex(USAGE_DAY_PATTERN, "expected a day YYYY-MM-DD");

/** The most tasks one submitMany carries (the HTTP batch route's limit of files per request). */
export const MAX_SUBMIT_MANY = 1000;

const SubmitMessage = z.strictObject({
  id: z.string().regex(TASK_ID_PATTERN),
  site: z.string().min(1),
  user: z.string(),
  name: z.string(),
  job: z.string().regex(JOB_NAME_PATTERN),
  params: ParamsSchema,
  priority: z.int().min(0).max(100),
  maxTries: z.int().min(1),
  input: z.string().nullable(),
  /** false: never lent to another site (the key's `offload`). */
  offload: z.boolean().optional(),
  /** Bytes of the stored input, for the user's usage and maxBytesPerDay. */
  inputBytes: z.int().min(0).optional(),
  /** The submitting key's limits, checked atomically with the insert. */
  quota: Quota.optional(),
  /** Where the record is POSTed when the task ends (checked by the controller: http or https). */
  callbackUrl: z.string().min(1).max(2048).nullable().optional(),
  /** When it may first run (ms since the epoch): a delayed task (runAt/delayMs, checked by the controller). */
  availableAt: z.int().min(0).optional(),
});

export const QueuerMessages = {
  submit: SubmitMessage,
  submitMany: z.strictObject({
    tasks: z
      .array(SubmitMessage.omit({ quota: true }))
      .min(1)
      .max(MAX_SUBMIT_MANY),
    /** The submitting key's limits, counting every task of the batch (all of one user). */
    quota: Quota.optional(),
  }),
  pull: z.strictObject({ owner: Owner, max: z.int().min(1).max(10_000) }),
  heartbeat: z.strictObject({ owner: Owner, ids: z.array(Id), slots: z.int().min(0), busy: z.int().min(0) }),
  succeed: z.strictObject({ ...Claim, output: z.string().min(1), processedBy: ProcessedBySchema }),
  fail: z.strictObject({ ...Claim, error: z.string(), retryable: z.boolean(), processedBy: ProcessedBySchema.optional() }),
  split: z.strictObject({
    ...Claim,
    children: z.array(z.strictObject({ input: z.string().min(1), params: ParamsSchema.optional() })).min(1),
    processedBy: ProcessedBySchema,
  }),
  progress: z.strictObject({
    ...Claim,
    progress: z.number().min(0).max(1),
    message: z.string().max(PROGRESS_MESSAGE_MAX_CHARS).nullable(),
  }),
  lend: z.strictObject({
    thief: z.string().min(1),
    max: z.int().min(1).max(1000),
    minPriority: z.int().min(0).max(100),
    /** The thief's link and holdings: with them only the steals that pay are made, each user within its share. */
    weighing: z
      .strictObject({
        link: z.strictObject({ rttMs: z.number().min(0), bytesPerMs: z.number().positive() }),
        heldByUser: z.record(z.string(), z.int().min(0)),
      })
      .optional(),
  }),
  renew: z.strictObject({ owner: Owner, ids: z.array(Id) }),
  backlog: NoParams,
  cancel: ById,
  delete: ById,
  release: z.strictObject({ ...Claim, reason: z.string().max(2000) }),
  retry: ById,
  purge: z.strictObject({
    status: z.enum(["output", "error", "canceled"]),
    /** Only tasks that ended before this (ms since the epoch). */
    endedBefore: z.int(),
    /** Only this user's tasks (a user key's bulk clean). */
    user: User.optional(),
  }),
  get: ById,
  list: z.strictObject({
    status: z.enum(TASK_STATUSES).optional(),
    user: z.string().optional(),
    job: z.string().optional(),
    name: z.string().optional(),
    parentId: z.string().optional(),
    cursor: z.string().optional(),
    limit: z.int().min(1).max(1000).optional(),
  }),
  stats: NoParams,
  finishedPerMinute: z.strictObject({ since: z.int().min(0) }),
  createKey: z.strictObject({
    user: User,
    limits: z.strictObject({
      maxPriority: z.int().min(0).max(100).optional(),
      maxQueued: z.int().min(1).optional(),
      maxPerDay: z.int().min(1).optional(),
      maxBytesPerDay: z.int().min(1).optional(),
      offload: z.boolean(),
    }),
  }),
  listKeys: NoParams,
  revokeKey: ById,
  authenticate: z.strictObject({ hash: z.string().regex(/^[0-9a-f]{64}$/) }),
  usage: z.strictObject({ user: User.optional(), from: Day, to: Day }),
  addUsage: z.strictObject({ user: User, bytesOut: z.int().min(0) }),
  createSchedule: ScheduleSchema,
  getSchedule: z.strictObject({ id: z.string().regex(SCHEDULE_ID_PATTERN) }),
  listSchedules: z.strictObject({ user: User.optional() }),
  pauseSchedule: z.strictObject({ id: z.string().regex(SCHEDULE_ID_PATTERN), paused: z.boolean() }),
  deleteSchedule: z.strictObject({ id: z.string().regex(SCHEDULE_ID_PATTERN) }),
} as const satisfies Record<QueuerAction, z.ZodType>;

export type QueuerMessage<A extends QueuerAction> = z.infer<(typeof QueuerMessages)[A]>;

/** What this site would lend now, and how many of its slots are idle. */
export interface QueuerBacklog {
  queued: number;
  highestPriority: number | null;
  idleSlots: number;
  /** This site's own tasks ready now, proxies of stolen tasks left out. */
  readyHome: number;
  /** The slots of the live workers. */
  slots: number;
  /** Of those, the slots running this site's own tasks (as of the workers' last heartbeats). */
  busyHome: number;
}

export interface QueuerStats {
  site: string;
  byStatus: Record<TaskStatus, number>;
  queue: { ready: number; delayed: number; highestPriority: number | null };
  queuedByPriority: Record<number, number>;
  workers: { owner: string; slots: number; busy: number }[];
  slots: number;
  /** Per other site: tasks stolen in (run here for it) and out (this site's, run there). */
  stealing: Record<string, { stolenIn: number; stolenOut: number }>;
}

/** The answer of each action. */
export interface QueuerAnswers {
  submit: Task;
  /** The ids of the tasks made, in the order of the message's tasks. */
  submitMany: { ids: string[] };
  pull: PulledTask[];
  /** The ids whose leases the owner no longer holds. */
  heartbeat: string[];
  /** Whether the claim still held: false means the report was refused (a stale attempt). */
  succeed: boolean;
  fail: boolean;
  split: boolean;
  /** Whether the claim still held (false: a stale attempt, nothing written). */
  progress: boolean;
  lend: Task[];
  renew: string[];
  backlog: QueuerBacklog;
  cancel: CancelReport;
  delete: DeleteReport;
  /** Whether the claim still held: false means nothing was released (a stale attempt). */
  release: boolean;
  retry: { id: string; status: TaskStatus };
  /** Top-level tasks removed; `more`: the call stopped at its limit with more left (call again). */
  purge: { deleted: number; more: boolean };
  get: Task;
  list: TaskPage;
  stats: QueuerStats;
  finishedPerMinute: MinuteCounts[];
  createKey: Awaited<ReturnType<KeyRing["create"]>>;
  listKeys: Omit<ApiKeyRecord, "hash">[];
  revokeKey: Omit<ApiKeyRecord, "hash">;
  authenticate: KnownKey | null;
  usage: UsageRow[];
  addUsage: boolean;
  createSchedule: ScheduleView;
  getSchedule: ScheduleView;
  listSchedules: ScheduleView[];
  pauseSchedule: ScheduleView;
  deleteSchedule: { id: string; deleted: true };
}

export type QueuerAnswer<A extends QueuerAction> = QueuerAnswers[A];

/** Parses a message or throws BAD_REQUEST naming the field. */
export function parseMessage<A extends QueuerAction>(action: A, raw: unknown): QueuerMessage<A> {
  const result = QueuerMessages[action].safeParse(raw);
  if (result.success) return result.data as QueuerMessage<A>;
  const field = result.error.issues[0]?.path[0];
  throw docqError(ERROR_CODE.BadRequest, `bad ${action} message: ${formatZodIssues(result.error.issues)}`, {
    ...(field === undefined ? {} : { field: String(field) }),
  });
}
