import { z } from "zod";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { formatZodIssues } from "../model/zod-issues.js";
import {
  JOB_NAME_PATTERN,
  MAX_PRIORITY,
  MIN_PRIORITY,
  ParamsSchema,
  ProcessedBySchema,
  SITE_PATTERN,
  TASK_ID_PATTERN,
  type Task,
} from "../model/task-model.js";

/**
 * What stealers of different sites say to each other over the global NATS. Every message from
 * another site is parsed with these schemas before anything acts on it.
 */
const Site = z.string().regex(SITE_PATTERN);
const TaskId = z.string().regex(TASK_ID_PATTERN);
/** A plate (a group of sites) is named like a site. */
const Plate = z.string().regex(SITE_PATTERN);
/** The plates a site steals from and lends to beyond its own: none, any, or these. */
export const CrossPlateSchema = z.union([z.boolean(), z.array(Plate).max(100)]);

const BacklogSchema = z.strictObject({
  site: Site,
  /** Queued tasks this site would lend (ready now, its own). */
  queued: z.int().min(0),
  highestPriority: z.int().min(MIN_PRIORITY).max(MAX_PRIORITY).nullable(),
  idleSlots: z.int().min(0),
  /** The site's slots (live workers'). */
  slots: z.int().min(0),
  plate: Plate,
  crossPlate: CrossPlateSchema,
  at: z.int(),
});
export type Backlog = z.infer<typeof BacklogSchema>;

/** A task as lent: what the thief needs to run it as a local proxy, and the attempt (`tries`) it reports under. */
const LentTaskSchema = z.strictObject({
  id: TaskId,
  site: Site,
  user: z.string(),
  name: z.string(),
  job: z.string().regex(JOB_NAME_PATTERN),
  params: ParamsSchema,
  priority: z.int().min(MIN_PRIORITY).max(MAX_PRIORITY),
  tries: z.int().min(1),
  depth: z.int().min(0),
  hasInput: z.boolean(),
});
export type LentTask = z.infer<typeof LentTaskSchema>;

const StealMessages = {
  backlog: BacklogSchema,
  offerRequest: z.strictObject({
    thief: Site,
    plate: Plate,
    max: z.int().min(1).max(1000),
    minPriority: z.int().min(MIN_PRIORITY).max(MAX_PRIORITY),
    /** The thief's link to the victim as it measured it: the victim lends only the tasks whose move pays. */
    link: z.strictObject({ rttMs: z.number().min(0).max(3_600_000), bytesPerMs: z.number().positive() }),
    /** The victim's tasks the thief holds now, per user: each user's fair share counts them. */
    heldByUser: z.record(z.string().max(200), z.int().min(0)),
  }),
  offerAnswer: z.strictObject({ tasks: z.array(LentTaskSchema) }),
  input: z.strictObject({ id: TaskId, thief: Site }),
  /** A thief times a transfer of `bytes` from the victim: the link's throughput before any steal. */
  probe: z.strictObject({
    thief: Site,
    bytes: z
      .int()
      .min(1)
      .max(4 * 1024 * 1024),
  }),
  heartbeat: z.strictObject({ thief: Site, ids: z.array(TaskId) }),
  heartbeatAnswer: z.array(TaskId),
  complete: z.strictObject({ id: TaskId, thief: Site, tries: z.int().min(1), processedBy: ProcessedBySchema }),
  fail: z.strictObject({
    id: TaskId,
    thief: Site,
    tries: z.int().min(1),
    error: z.string().max(64 * 1024),
    processedBy: ProcessedBySchema.optional(),
  }),
  /** The task's own site canceled it (`ownerSite`: the site whose task it is, not a lease owner). */
  cancel: z.strictObject({ id: TaskId, ownerSite: Site }),
  accepted: z.boolean(),
} as const;

export type StealMessage<K extends keyof typeof StealMessages> = z.infer<(typeof StealMessages)[K]>;

/** Parses a message from another site or throws BAD_REQUEST saying what is wrong with it. */
export function parseStealMessage<K extends keyof typeof StealMessages>(kind: K, raw: unknown): StealMessage<K> {
  const result = StealMessages[kind].safeParse(raw);
  if (result.success) return result.data as StealMessage<K>;
  throw docqError(ERROR_CODE.BadRequest, `bad ${kind} message from another site: ${formatZodIssues(result.error.issues)}`);
}

export function toLentTask(task: Task): LentTask {
  return {
    id: task.id,
    site: task.site,
    user: task.user,
    name: task.name,
    job: task.job,
    params: task.params,
    priority: task.priority,
    tries: task.tries,
    depth: task.depth,
    hasInput: task.input !== null,
  };
}
