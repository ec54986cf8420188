import { z } from "zod";
import { USAGE_DAY_PATTERN } from "../accounts/account-records.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { formatZodIssues } from "../model/zod-issues.js";
import { JOB_NAME_PATTERN, ParamsSchema, ProcessedBySchema, TASK_ID_PATTERN, TASK_STATUSES } from "../model/task-model.js";

/**
 * The messages services send the queuer. In cluster mode they cross process boundaries, so the
 * queuer checks each one before acting on it.
 */
const Owner = z.string().min(1).max(200);
const Id = z.string().min(1).max(200);
const Claim = { id: Id, owner: Owner, attempt: z.int().min(1) };

const Quota = z.strictObject({ maxQueued: z.int().min(1).optional(), maxPerDay: z.int().min(1).optional(), maxBytesPerDay: z.int().min(1).optional() });
const Day = z.string().regex(USAGE_DAY_PATTERN, "expected a day YYYY-MM-DD");

export const QueueMessages = {
  submit: z.strictObject({
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
  }),
  pull: z.strictObject({ owner: Owner, max: z.int().min(1).max(10_000) }),
  heartbeat: z.strictObject({ owner: Owner, ids: z.array(Id), slots: z.int().min(0), busy: z.int().min(0) }),
  complete: z.strictObject({ ...Claim, output: z.string().min(1), processedBy: ProcessedBySchema }),
  fail: z.strictObject({ ...Claim, error: z.string(), retryable: z.boolean(), processedBy: ProcessedBySchema.optional() }),
  split: z.strictObject({
    ...Claim,
    children: z.array(z.strictObject({ input: z.string().min(1), params: ParamsSchema.optional() })).min(1),
    processedBy: ProcessedBySchema,
  }),
  lend: z.strictObject({ thief: z.string().min(1), max: z.int().min(1).max(1000), minPriority: z.int().min(0).max(100) }),
  renew: z.strictObject({ owner: Owner, ids: z.array(Id) }),
  byId: z.strictObject({ id: Id }),
  createKey: z.strictObject({
    user: z.string().min(1).max(200),
    limits: z.strictObject({
      maxPriority: z.int().min(0).max(100).optional(),
      maxQueued: z.int().min(1).optional(),
      maxPerDay: z.int().min(1).optional(),
      maxBytesPerDay: z.int().min(1).optional(),
      offload: z.boolean(),
    }),
  }),
  authenticate: z.strictObject({ hash: z.string().regex(/^[0-9a-f]{64}$/) }),
  usage: z.strictObject({ user: z.string().min(1).max(200).optional(), from: Day, to: Day }),
  addUsage: z.strictObject({ user: z.string().min(1).max(200), bytesOut: z.int().min(0) }),
  list: z.strictObject({
    status: z.enum(TASK_STATUSES).optional(),
    user: z.string().optional(),
    job: z.string().optional(),
    parentId: z.string().optional(),
    cursor: z.string().optional(),
    limit: z.int().min(1).max(1000).optional(),
  }),
} as const;

export type QueueMessage<K extends keyof typeof QueueMessages> = z.infer<(typeof QueueMessages)[K]>;

/** Parses a message or throws BAD_REQUEST naming the field. */
export function parseMessage<K extends keyof typeof QueueMessages>(kind: K, raw: unknown): QueueMessage<K> {
  const result = QueueMessages[kind].safeParse(raw);
  if (result.success) return result.data as QueueMessage<K>;
  const field = result.error.issues[0]?.path[0];
  throw docqError(ERROR_CODE.BadRequest, `bad ${kind} message: ${formatZodIssues(result.error.issues)}`, {
    ...(field === undefined ? {} : { field: String(field) }),
  });
}
