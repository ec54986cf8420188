import { randomBytes } from "node:crypto";
import { redactUrl } from "../redact-url.js";
import {
  MongoBulkWriteError,
  MongoClient,
  MongoError,
  ObjectId,
  type ClientSession,
  type Collection,
  type Document,
  type Filter,
  type IndexDescription,
  type WriteError,
} from "mongodb";
import { ZERO_USAGE, type ApiKeyLimits, type ApiKeyRecord, type UsageCounts, type UsageRow } from "../../accounts/account-records.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../../model/errors.js";
import type { Schedule, ScheduleAdvance, ScheduleFireResult } from "../../schedules/schedule-model.js";
import { MongoSchedules, type ScheduleDoc } from "./mongo-schedules.js";
import {
  MAX_ATTEMPTS_KEPT,
  TASK_STATUS,
  TASK_STATUSES,
  isFinal,
  type AttemptOutcome,
  type AttemptRecord,
  type CallbackDelivery,
  type Lease,
  type ProcessedBy,
  type Task,
  type TaskParams,
  type TaskStatus,
} from "../../model/task-model.js";
import {
  REMOTE_OWNER_PREFIX,
  USAGE_COUNTERS,
  WORKER_OWNER_PREFIX,
  attemptPlace,
  errorTail,
  requireUsageDay,
  usageDelta,
  type AttemptPlace,
  type FinishedQuery,
  MINUTE_MS,
  minuteCountsOf,
  type MinuteCounts,
  type ReleaseRecord,
  type RetryResult,
  type RetryRow,
  type ReloadEntry,
  type StolenCounts,
  stepMiss,
  type CancelResult,
  type FailureRecord,
  type StepResult,
  type SuccessRecord,
  type TaskFilter,
  type TaskPage,
  type TaskStore,
} from "../task-store.js";
import type { LeaseClaim } from "../../model/claims.js";
import type { WorkflowDefinition } from "../../workflows/workflow-definition.js";
import { STORE_STEPS, type StoreStep } from "../../model/state-machine.js";

/*
 * The production TaskStore: one MongoDB collection (`tasks`), one document per task, through the
 * official driver (7.x).
 *
 * - Every transition is one `findOneAndUpdate` whose filter holds the guard (id, expected status,
 *   lease owner, attempt number): MongoDB matches and writes in one atomic step on the document,
 *   so a stale worker's update finds nothing and returns null.
 * - Writes wait for the configured write concern (default `majority`, journaled): a task
 *   acknowledged is on most members of the replica set and survives a failover.
 * - `split` and `createMany` are all or nothing. On a replica set (or behind mongos) each is one
 *   transaction. A standalone server has no transactions; there the children are inserted first,
 *   the parent's guarded update comes after, and the children are deleted again if the guard
 *   misses or any step fails. That ordering never loses or half-applies a split that was
 *   acknowledged, but a process killed between the two writes leaves children whose parent never
 *   moved to `wait`: run a replica set (a single-node one is enough) in production.
 *
 * Indexes (created at open, idempotently): see INDEXES, KEY_INDEXES and USAGE_INDEXES.
 *
 * Beside the tasks, two small collections hold the account records: `api_keys` (one document per
 * key, `_id` = key id, the sha256 of the secret under a unique index) and `usage` (one document per
 * user and UTC day, unique on both, added to with one upserting `$inc`).
 *
 * Document shape: the task's fields under their own names, `_id` = task id, plus `seq`, an ObjectId
 * made when the task is inserted (see nextSeq: strictly increasing within a process), so `seq`
 * orders tasks by creation: newest-first listing with a keyset cursor, children in creation order,
 * reload in batches. Across processes, tasks created within the same second order by process;
 * the order stays total and stable, so cursors never skip or repeat. `params` is kept as JSON text,
 * as in the SQLite store: MongoDB field names cannot hold every JSON key (`$` prefixes, NUL), and
 * the store never queries inside params.
 */

/** Batches for the queuer's reload; each is its own short query (no cursor kept open between batches). */
const DEFAULT_RELOAD_BATCH = 10_000;
/** Ids per renew statement: keeps the filter document far below MongoDB's 16 MB. */
const RENEW_CHUNK = 10_000;
/** Ids per delete when undoing a partial insert on a standalone server. */
const UNDO_CHUNK = 10_000;
const DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 10_000;
/** How long a write waits for its write concern (a majority) before failing instead of hanging. */
const WRITE_CONCERN_TIMEOUT_MS = 30_000;
const DUPLICATE_KEY = 11000;
const NON_FINAL_STATUSES: TaskStatus[] = TASK_STATUSES.filter((s) => !isFinal(s));
const FINAL_STATUSES: TaskStatus[] = TASK_STATUSES.filter((s) => isFinal(s));

/**
 * Each index serves named queries of this file; `_id` (the task id) serves get, delete, renew and
 * every step on one task.
 */
const INDEXES: IndexDescription[] = [
  // expired: {status: work, lease.expiresAt < now} oldest expiry first. Partial on status
  // work, so it holds only the leased tasks (a few thousand), however many tasks the store has.
  { name: "work_lease_expiry", key: { "lease.expiresAt": 1, seq: 1 }, partialFilterExpression: { status: TASK_STATUS.work } },
  // loadNonFinal: {status in the 4 non-final statuses, seq > after} by seq, a merge of 4 ranges
  // that never reads the final tasks (most of them, over time); list({status}) newest first; and
  // countByStatus, one index-only count per status.
  { name: "status_seq", key: { status: 1, seq: 1 } },
  // children(parentId) in creation order, and list({parentId}).
  { name: "parent_seq", key: { parentId: 1, seq: 1 } },
  // list({user}), list({job}) and list({name}), newest first.
  { name: "user_seq", key: { user: 1, seq: 1 } },
  { name: "job_seq", key: { job: 1, seq: 1 } },
  { name: "name_seq", key: { name: 1, seq: 1 } },
  // list({user, status}): a user key's own tasks of one status, without reading the user's others.
  { name: "user_status_seq", key: { user: 1, status: 1, seq: 1 } },
  // list({}) newest first and every list cursor; unique, so a cursor position is never ambiguous.
  { name: "seq", key: { seq: 1 }, unique: true },
  // countActive: {user, parentId: null, status in the non-final ones}, 4 short ranges of one user's
  // active top-level tasks (at most what maxQueued allows), never the user's finished tasks.
  { name: "user_active", key: { user: 1, parentId: 1, status: 1 } },
  // finished (retention and the bulk clean): {status, endTime < before} oldest end first.
  { name: "status_end", key: { status: 1, endTime: 1 } },
];

const KEY_INDEXES: IndexDescription[] = [
  // A secret maps to one key: createKey refuses a second key with the same hash.
  { name: "hash", key: { hash: 1 }, unique: true },
];

const USAGE_INDEXES: IndexDescription[] = [
  // addUsage's upsert target (unique, so two concurrent first adds of a day make one row: the
  // server retries the upsert that loses the race) and usage({user}) in day order.
  { name: "user_day", key: { user: 1, day: 1 }, unique: true },
  // usage() of every user: a day range in day, user order.
  { name: "day_user", key: { day: 1, user: 1 } },
];

/** One task as stored. */
export interface TaskDoc {
  _id: string;
  seq: ObjectId;
  site: string;
  user: string;
  name: string;
  job: string;
  /** JSON object, as text. */
  params: string;
  priority: number;
  status: TaskStatus;
  input: string | null;
  output: string | null;
  tries: number;
  maxTries: number;
  submitTime: number;
  availableAt: number;
  startTime: number | null;
  endTime: number | null;
  duration: number | null;
  lease: Lease | null;
  processedBy: ProcessedBy | null;
  error: string | null;
  parentId: string | null;
  depth: number;
  children: string[];
  childrenTotal: number;
  childrenCompleted: number;
  /** Missing in a document written before the field existed: reads as true (lendable). */
  offload?: boolean;
  /** These five are missing in a document written before they existed: read as empty. */
  attempts?: AttemptRecord[];
  progress?: number | null;
  progressMessage?: string | null;
  callbackUrl?: string | null;
  callback?: CallbackDelivery | null;
  /** Workflows (missing in a document written before them: null). The definition as JSON, as params are: its step params may hold any key. */
  workflow?: string | null;
  inputs?: string[] | null;
  timeoutMs?: number | null;
}

type ReloadDoc = Pick<
  TaskDoc,
  "_id" | "seq" | "priority" | "submitTime" | "availableAt" | "status" | "lease" | "offload" | "tries" | "maxTries"
>;
const RELOAD_PROJECTION = {
  _id: 1,
  seq: 1,
  priority: 1,
  submitTime: 1,
  availableAt: 1,
  status: 1,
  lease: 1,
  offload: 1,
  tries: 1,
  maxTries: 1,
} as const;

/** One API key as stored. */
export interface ApiKeyDoc {
  _id: string;
  /** Insertion order among keys made in the same millisecond (nextSeq, as for tasks). */
  seq: ObjectId;
  user: string;
  hash: string;
  limits: ApiKeyLimits;
  createdAt: number;
  revokedAt: number | null;
}

/** One user's usage of one day as stored (`_id` made by the server on the upsert). */
export interface UsageDoc extends UsageCounts {
  _id?: ObjectId;
  user: string;
  day: string;
}

/** This process's 5 bytes of an ObjectId, like the driver's own: tells apart seqs made in the same second by different processes. */
const PROCESS_TAG = BigInt(`0x${randomBytes(5).toString("hex")}`);
let lastSeq = 0n;

/**
 * The next `seq`: an ObjectId (seconds, process tag, counter) strictly greater than the previous
 * one of this process. The driver's own ObjectIds are not enough: their counter starts anywhere
 * and wraps, so two made in the same second across the wrap would order backwards, and with them
 * a parent's children, whose order is the order of the merge.
 */
function nextSeq(): ObjectId {
  const floor = (BigInt(Math.floor(Date.now() / 1000)) << 64n) | (PROCESS_TAG << 24n);
  lastSeq = floor > lastSeq ? floor : lastSeq + 1n;
  return ObjectId.createFromHexString(lastSeq.toString(16).padStart(24, "0"));
}

function taskToDoc(task: Task, seq: ObjectId = nextSeq()): TaskDoc {
  return {
    _id: task.id,
    seq,
    site: task.site,
    user: task.user,
    name: task.name,
    job: task.job,
    params: JSON.stringify(task.params),
    priority: task.priority,
    status: task.status,
    input: task.input,
    output: task.output,
    tries: task.tries,
    maxTries: task.maxTries,
    submitTime: task.submitTime,
    availableAt: task.availableAt,
    startTime: task.startTime,
    endTime: task.endTime,
    duration: task.duration,
    lease: task.lease === null ? null : { owner: task.lease.owner, expiresAt: task.lease.expiresAt },
    processedBy: task.processedBy === null ? null : { site: task.processedBy.site, node: task.processedBy.node },
    error: task.error,
    parentId: task.parentId,
    depth: task.depth,
    children: [...task.children],
    childrenTotal: task.childrenTotal,
    childrenCompleted: task.childrenCompleted,
    offload: task.offload !== false,
    attempts: (task.attempts ?? []).map((a) => ({ ...a })),
    progress: task.progress ?? null,
    progressMessage: task.progressMessage ?? null,
    callbackUrl: task.callbackUrl ?? null,
    callback: task.callback === null || task.callback === undefined ? null : { ...task.callback },
    workflow: task.workflow === null || task.workflow === undefined ? null : JSON.stringify(task.workflow),
    inputs: task.inputs === null || task.inputs === undefined ? null : [...task.inputs],
    timeoutMs: task.timeoutMs ?? null,
  };
}

function leaseOf(lease: Lease | null | undefined): Lease | null {
  return lease === null || lease === undefined ? null : { owner: lease.owner, expiresAt: lease.expiresAt };
}

function docToTask(doc: TaskDoc): Task {
  return {
    id: doc._id,
    site: doc.site,
    user: doc.user,
    name: doc.name,
    job: doc.job,
    params: JSON.parse(doc.params) as TaskParams,
    priority: doc.priority,
    status: doc.status,
    input: doc.input ?? null,
    output: doc.output ?? null,
    tries: doc.tries,
    maxTries: doc.maxTries,
    submitTime: doc.submitTime,
    availableAt: doc.availableAt,
    startTime: doc.startTime ?? null,
    endTime: doc.endTime ?? null,
    duration: doc.duration ?? null,
    lease: leaseOf(doc.lease),
    processedBy:
      doc.processedBy === null || doc.processedBy === undefined ? null : { site: doc.processedBy.site, node: doc.processedBy.node },
    error: doc.error ?? null,
    parentId: doc.parentId ?? null,
    depth: doc.depth,
    children: [...doc.children],
    childrenTotal: doc.childrenTotal,
    childrenCompleted: doc.childrenCompleted,
    offload: doc.offload !== false,
    attempts: (doc.attempts ?? []).map((a) => ({ ...a })),
    progress: doc.progress ?? null,
    progressMessage: doc.progressMessage ?? null,
    callbackUrl: doc.callbackUrl ?? null,
    callback: doc.callback === null || doc.callback === undefined ? null : { ...doc.callback },
    workflow: doc.workflow === null || doc.workflow === undefined ? null : (JSON.parse(doc.workflow) as WorkflowDefinition),
    inputs: doc.inputs === null || doc.inputs === undefined ? null : [...doc.inputs],
    timeoutMs: doc.timeoutMs ?? null,
  };
}

function docToReloadEntry(doc: ReloadDoc): ReloadEntry {
  return {
    id: doc._id,
    priority: doc.priority,
    submitTime: doc.submitTime,
    availableAt: doc.availableAt,
    status: doc.status,
    lease: leaseOf(doc.lease),
    offload: doc.offload !== false,
    tries: doc.tries,
    maxTries: doc.maxTries,
  };
}

/**
 * The limits without undefined fields: the driver would store an undefined as null (it does not
 * ignore undefined by default), which would read back as a limit of null.
 */
function definedLimits(limits: ApiKeyLimits): ApiKeyLimits {
  return Object.fromEntries(Object.entries(limits).filter(([, value]) => value !== undefined)) as ApiKeyLimits;
}

function docToApiKey(doc: ApiKeyDoc): ApiKeyRecord {
  return {
    id: doc._id,
    user: doc.user,
    hash: doc.hash,
    limits: definedLimits(doc.limits),
    createdAt: doc.createdAt,
    revokedAt: doc.revokedAt ?? null,
  };
}

function docToUsage(doc: UsageDoc): UsageRow {
  const row: UsageRow = { user: doc.user, day: doc.day, ...ZERO_USAGE };
  for (const counter of USAGE_COUNTERS) row[counter] = doc[counter] ?? 0;
  return row;
}

/** The guard `status in (...)` of a store step, from the table beside the state diagram. */
function statusIn(step: StoreStep): Filter<TaskDoc> {
  return { status: { $in: [...STORE_STEPS[step].from] } };
}

/** The guard of a step that holds a lease. */
function heldBy(step: StoreStep, claim: LeaseClaim): Filter<TaskDoc> {
  return { _id: claim.id, ...statusIn(step), "lease.owner": claim.owner, tries: claim.tries };
}

/** A retry's miss inside its transaction: thrown to abort it, caught outside. */
class RetryAborted extends Error {
  constructor(readonly miss: RetryResult & { ok: false }) {
    super(`retry of ${miss.id} missed: ${miss.why}`);
  }
}

/** `now − startTime` as an aggregation expression (null when the task never started). */
/** Values of a pipeline `$set` taken as they are: a string starting with `$` would otherwise name a field. */
function literalStrings(set: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(set).map(([k, v]) => [
      k,
      typeof v === "string" || (typeof v === "object" && v !== null && !("$cond" in v)) ? { $literal: v } : v,
    ]),
  );
}

/**
 * `attempts` with the attempt a step ends appended, the last MAX_ATTEMPTS_KEPT kept: an update
 * pipeline expression, reading the document before the stage (tries, startTime).
 */
function appendAttempt(place: PlaceExpressions, end: number, outcome: AttemptOutcome, error: string | null): Document {
  const attempt = {
    n: "$tries",
    site: place.site,
    node: place.node,
    start: { $ifNull: ["$startTime", null] },
    end: { $literal: end },
    outcome: { $literal: outcome },
    error: { $literal: errorTail(error) },
  };
  return { $slice: [{ $concatArrays: [{ $ifNull: ["$attempts", []] }, [attempt]] }, -MAX_ATTEMPTS_KEPT] };
}

/** An attempt's site and node as pipeline expressions. */
interface PlaceExpressions {
  site: unknown;
  node: unknown;
}

function literalPlace(place: AttemptPlace): PlaceExpressions {
  return { site: { $literal: place.site }, node: { $literal: place.node } };
}

/** attemptPlace from the document's lease owner, as pipeline expressions (for cancel, which has no claim). */
function placeFromLease(localSite: string | null): PlaceExpressions {
  const owner = { $ifNull: ["$lease.owner", ""] };
  const startsWith = (prefix: string) => ({ $eq: [{ $substrCP: [owner, 0, prefix.length] }, prefix] });
  const after = (prefix: string) => ({ $substrCP: [owner, prefix.length, 1000] });
  const remote = startsWith(REMOTE_OWNER_PREFIX);
  return {
    site: { $cond: [remote, after(REMOTE_OWNER_PREFIX), { $literal: localSite }] },
    node: { $cond: [remote, null, { $cond: [startsWith(WORKER_OWNER_PREFIX), after(WORKER_OWNER_PREFIX), "$lease.owner"] }] },
  };
}

const durationUntil = (now: number) => ({
  $cond: [{ $eq: [{ $ifNull: ["$startTime", null] }, null] }, null, { $subtract: [now, "$startTime"] }],
});

export interface MongoTaskStoreOptions {
  /** `mongodb://...` or `mongodb+srv://...`; credentials allowed (they never appear in messages). */
  url: string;
  database: string;
  /** `majority` or a number of members; writes are always journaled. */
  writeConcern: "majority" | number;
  /** The collection (default `tasks`): the tests use one per case. */
  collection?: string;
  /** The collection of API keys (default `api_keys`). */
  apiKeysCollection?: string;
  /** The collection of per-user daily usage (default `usage`). */
  usageCollection?: string;
  /** The collection of schedules (default `schedules`). */
  schedulesCollection?: string;
  /** Default 10 s, unless the URL sets serverSelectionTimeoutMS: how long an operation waits for a server before failing. */
  serverSelectionTimeoutMs?: number;
  /**
   * `false` uses the standalone ordering even where transactions exist (to test it). Default: transactions when
   * the deployment has them.
   */
  transactions?: boolean;
}

export class MongoTaskStore implements TaskStore {
  private constructor(
    private readonly client: MongoClient,
    private readonly tasks: Collection<TaskDoc>,
    private readonly keys: Collection<ApiKeyDoc>,
    private readonly usageDocs: Collection<UsageDoc>,
    /** Whether split and createMany run as transactions (replica set or mongos). */
    readonly transactions: boolean,
    /** `MongoDB mongodb://host:27017, database "docq"`, with no credentials: for messages. */
    readonly label: string,
    /** The schedules (common/schedules/), beside the tasks. */
    private readonly schedules: MongoSchedules,
  ) {}

  /**
   * Connects, learns whether the deployment has transactions, and creates the indexes. Fails with
   * CONFIG (bad URL, refused credentials, conflicting index) or STORE_UNAVAILABLE (no server within
   * the server selection timeout), the message naming the server (without credentials) and database.
   */
  static async open(opts: MongoTaskStoreOptions): Promise<MongoTaskStore> {
    const label = `MongoDB ${redactUrl(opts.url)}, database "${opts.database}"`;
    let client: MongoClient;
    try {
      // The constructor only parses: whatever it throws is a settings problem.
      client = new MongoClient(opts.url, {
        appName: "docq",
        writeConcern: { w: opts.writeConcern, journal: true, wtimeoutMS: WRITE_CONCERN_TIMEOUT_MS },
        ...(/[?&]serverSelectionTimeoutMS=/i.test(opts.url)
          ? {}
          : { serverSelectionTimeoutMS: opts.serverSelectionTimeoutMs ?? DEFAULT_SERVER_SELECTION_TIMEOUT_MS }),
      });
    } catch (err) {
      throw docqError(ERROR_CODE.Config, `${label}: invalid connection settings: ${scrub(errorMessage(err), opts.url)}`, { cause: err });
    }
    try {
      await client.connect();
      const db = client.db(opts.database);
      const hello = await db.admin().command({ hello: 1 });
      const hasTransactions = typeof hello.setName === "string" || hello.msg === "isdbgrid";
      const tasks = db.collection<TaskDoc>(opts.collection ?? "tasks");
      const keys = db.collection<ApiKeyDoc>(opts.apiKeysCollection ?? "api_keys");
      const usage = db.collection<UsageDoc>(opts.usageCollection ?? "usage");
      await tasks.createIndexes(INDEXES);
      await keys.createIndexes(KEY_INDEXES);
      await usage.createIndexes(USAGE_INDEXES);
      const schedules = new MongoSchedules(db.collection<ScheduleDoc>(opts.schedulesCollection ?? "schedules"));
      await schedules.createIndexes();
      return new MongoTaskStore(client, tasks, keys, usage, hasTransactions && opts.transactions !== false, label, schedules);
    } catch (err) {
      // Opening failed: that is the error to report; closing the half-open client is only tidying.
      await client.close().catch(() => undefined);
      throw openError(label, opts.url, err);
    }
  }

  async create(task: Task): Promise<void> {
    const doc = taskToDoc(task);
    await this.attempt("create", () => this.tasks.insertOne(doc), [doc]);
  }

  async createMany(tasks: readonly Task[]): Promise<void> {
    if (tasks.length === 0) return;
    refuseRepeatedIds(tasks);
    // Made in order, so seq follows the order of `tasks`.
    const docs = tasks.map((task) => taskToDoc(task));
    await this.attempt(
      "createMany",
      async () => {
        if (this.transactions) {
          await this.inTransaction(async (session) => {
            await this.tasks.insertMany(docs, { session, ordered: true });
          });
        } else {
          await this.insertOrUndo(docs);
        }
      },
      docs,
    );
  }

  async get(id: string): Promise<Task | null> {
    const doc = await this.attempt("get", () => this.tasks.findOne({ _id: id }));
    return doc === null ? null : docToTask(doc);
  }

  /** One findOneAndUpdate per id, as the old guarded claims were: each is atomic on its document. */
  async claim(ids: readonly string[], lease: Lease, now: number): Promise<Task[]> {
    const leased: Task[] = [];
    for (const id of new Set(ids)) {
      const doc = await this.attempt("claim", () =>
        this.tasks.findOneAndUpdate(
          { _id: id, ...statusIn("claim"), lease: null },
          {
            $set: {
              status: TASK_STATUS.work,
              lease: { owner: lease.owner, expiresAt: lease.expiresAt },
              startTime: now,
              endTime: null,
              duration: null,
              progress: null,
              progressMessage: null,
            },
            $inc: { tries: 1 },
          },
          { returnDocument: "after" },
        ),
      );
      if (doc !== null) leased.push(docToTask(doc));
    }
    return leased;
  }

  async succeed(claim: LeaseClaim, result: SuccessRecord, now: number): Promise<StepResult> {
    const set = {
      status: TASK_STATUS.output,
      output: result.output,
      processedBy: { site: result.processedBy.site, node: result.processedBy.node },
      lease: null,
      error: null,
      endTime: now,
      duration: durationUntil(now),
    };
    const attempts = appendAttempt(literalPlace(result.processedBy), now, "output", null);
    return this.step("succeed", claim.id, heldBy("succeed", claim), [{ $set: { ...literalStrings(set), attempts } }], claim);
  }

  async requeue(claim: LeaseClaim, failure: FailureRecord, availableAt: number, now: number): Promise<StepResult> {
    const set = {
      // A parent whose merge failed retries the merge: its children are done and must not run again.
      status: { $cond: [{ $gt: ["$childrenTotal", 0] }, TASK_STATUS.complete, TASK_STATUS.input] },
      error: { $literal: failure.error },
      lease: null,
      availableAt,
      ...(failure.processedBy === null ? {} : { processedBy: { $literal: failure.processedBy } }),
      attempts: appendAttempt(literalPlace(failure.ranAt), now, failure.leaseLost === true ? "lease_lost" : "retry", failure.error),
    };
    const filter = { ...heldBy("requeue", claim), $expr: { $lt: ["$tries", "$maxTries"] } };
    return this.step("requeue", claim.id, filter, [{ $set: set }], claim);
  }

  async giveUp(claim: LeaseClaim, failure: FailureRecord, now: number): Promise<StepResult> {
    const set = {
      status: TASK_STATUS.error,
      error: { $literal: failure.error },
      lease: null,
      endTime: now,
      duration: durationUntil(now),
      ...(failure.processedBy === null ? {} : { processedBy: { $literal: failure.processedBy } }),
      attempts: appendAttempt(literalPlace(failure.ranAt), now, failure.leaseLost === true ? "lease_lost" : "error", failure.error),
    };
    return this.step("giveUp", claim.id, heldBy("giveUp", claim), [{ $set: set }], claim);
  }

  async release(claim: LeaseClaim, release: ReleaseRecord, now: number): Promise<StepResult> {
    const set = {
      status: { $cond: [{ $gt: ["$childrenTotal", 0] }, TASK_STATUS.complete, TASK_STATUS.input] },
      // Not counted: the next claim runs the same try number again.
      tries: { $subtract: ["$tries", 1] },
      lease: null,
      availableAt: now,
      attempts: appendAttempt(literalPlace(release.ranAt), now, "released", release.reason),
    };
    return this.step("release", claim.id, heldBy("release", claim), [{ $set: set }], claim);
  }

  /**
   * One guarded update per row, in a transaction where the deployment has them (a miss aborts it).
   * On a standalone server the rows are written in order (the caller puts children before their
   * parent), so a miss halfway leaves retried children of a parent still failed: they run, and the
   * parent can be retried again.
   */
  async retry(rows: readonly RetryRow[], now: number): Promise<RetryResult> {
    const writeAll = async (session?: ClientSession): Promise<RetryResult> => {
      const tasks: Task[] = [];
      for (const row of rows) {
        const set = {
          status: row.status,
          tries: 0,
          error: null,
          endTime: null,
          duration: null,
          availableAt: now,
          childrenCompleted: row.childrenCompleted,
          progress: null,
          progressMessage: null,
        };
        const doc = await this.tasks.findOneAndUpdate(
          { _id: row.id, ...statusIn("retry") },
          { $set: set },
          { returnDocument: "after", ...(session === undefined ? {} : { session }) },
        );
        if (doc === null) {
          const current = await this.tasks.findOne({ _id: row.id }, session === undefined ? {} : { session });
          const task = current === null ? null : docToTask(current);
          const miss: RetryResult = { ok: false, id: row.id, why: stepMiss("retry", task), task };
          if (session !== undefined) throw new RetryAborted(miss);
          return miss;
        }
        tasks.push(docToTask(doc));
      }
      return { ok: true, tasks };
    };
    return this.attempt("retry", async () => {
      if (!this.transactions) return writeAll();
      try {
        return await this.inTransaction((session) => writeAll(session));
      } catch (err) {
        if (err instanceof RetryAborted) return err.miss;
        throw err;
      }
    });
  }

  async split(
    claim: LeaseClaim,
    processedBy: ProcessedBy,
    childIds: readonly string[],
    makeChildren: (parent: Task) => readonly Task[],
    now: number,
  ): Promise<StepResult> {
    const filter = heldBy("split", claim);
    const update = [
      {
        $set: {
          status: TASK_STATUS.wait,
          processedBy: { $literal: { site: processedBy.site, node: processedBy.node } },
          children: { $literal: [...childIds] },
          childrenTotal: childIds.length,
          childrenCompleted: 0,
          lease: null,
          attempts: appendAttempt(literalPlace(processedBy), now, "split", null),
        },
      },
    ];
    let inserting: TaskDoc[] = [];
    const build = (parent: Task): TaskDoc[] => {
      const children = makeChildren(parent);
      refuseRepeatedIds(children);
      inserting = children.map((child) => taskToDoc(child));
      return inserting;
    };
    const parent = await this.attempt(
      "split",
      async () => {
        if (this.transactions) {
          return this.inTransaction(async (session) => {
            const updated = await this.tasks.findOneAndUpdate(filter, update, { returnDocument: "after", session });
            // A guard that misses writes nothing; the empty transaction commits. A builder that throws aborts it.
            if (updated === null) return null;
            const docs = build(docToTask(updated));
            if (docs.length > 0) await this.tasks.insertMany(docs, { session, ordered: true });
            return updated;
          });
        }
        return this.splitWithoutTransaction(filter, update, build);
      },
      inserting,
    );
    if (parent !== null) return { ok: true, task: docToTask(parent) };
    return this.miss("split", claim.id, claim);
  }

  async childSucceeded(parentId: string, now: number): Promise<StepResult> {
    const reaches = { $gte: [{ $add: ["$childrenCompleted", 1] }, "$childrenTotal"] };
    const set = {
      childrenCompleted: { $add: ["$childrenCompleted", 1] },
      status: { $cond: [reaches, TASK_STATUS.complete, "$status"] },
      availableAt: { $cond: [reaches, now, "$availableAt"] },
    };
    const filter = { _id: parentId, ...statusIn("childSucceeded"), $expr: { $lt: ["$childrenCompleted", "$childrenTotal"] } };
    return this.step("childSucceeded", parentId, filter, [{ $set: set }]);
  }

  async recountChildren(parentId: string, completed: number, now: number): Promise<StepResult> {
    const reaches = { $gte: [completed, "$childrenTotal"] };
    const set = {
      childrenCompleted: completed,
      status: { $cond: [reaches, TASK_STATUS.complete, "$status"] },
      availableAt: { $cond: [reaches, now, "$availableAt"] },
    };
    return this.step("recountChildren", parentId, { _id: parentId, ...statusIn("recountChildren") }, [{ $set: set }]);
  }

  async failParent(parentId: string, error: string, now: number): Promise<StepResult> {
    const set = { status: TASK_STATUS.error, error: { $literal: error }, endTime: now };
    return this.step("failParent", parentId, { _id: parentId, ...statusIn("failParent") }, [{ $set: set }]);
  }

  async finishWorkflow(workflowId: string, output: string, now: number): Promise<StepResult> {
    const set = {
      status: TASK_STATUS.output,
      output: { $literal: output },
      error: null,
      endTime: now,
      childrenCompleted: "$childrenTotal",
    };
    return this.step("finishWorkflow", workflowId, { _id: workflowId, ...statusIn("finishWorkflow") }, [{ $set: set }]);
  }

  /** returnDocument "before": the lease it ended is news its holder needs; the row after is derived from it. */
  async cancel(id: string, reason: string, now: number, localSite?: string): Promise<CancelResult> {
    const place = placeFromLease(localSite ?? null);
    const set = {
      status: TASK_STATUS.canceled,
      error: { $literal: reason },
      endTime: now,
      duration: durationUntil(now),
      lease: null,
      // Only a task in work was running an attempt.
      attempts: { $cond: [{ $eq: ["$status", TASK_STATUS.work] }, appendAttempt(place, now, "canceled", reason), "$attempts"] },
    };
    const before = await this.attempt("cancel", () =>
      this.tasks.findOneAndUpdate({ _id: id, ...statusIn("cancel") }, [{ $set: set }], { returnDocument: "before" }),
    );
    if (before === null) return { ...(await this.miss("cancel", id)), previousLeaseOwner: null };
    const task = docToTask(before);
    const ranAt = attemptPlace(null, task.lease?.owner ?? null, localSite ?? null);
    const attempt: AttemptRecord = {
      n: task.tries,
      ...ranAt,
      start: task.startTime,
      end: now,
      outcome: "canceled",
      error: errorTail(reason),
    };
    const after: Task = {
      ...task,
      attempts: task.status === TASK_STATUS.work ? [...task.attempts, attempt].slice(-MAX_ATTEMPTS_KEPT) : task.attempts,
      status: TASK_STATUS.canceled,
      error: reason,
      endTime: now,
      duration: task.startTime === null ? null : now - task.startTime,
      lease: null,
    };
    return { ok: true, task: after, previousLeaseOwner: task.lease?.owner ?? null };
  }

  /**
   * One updateMany per chunk, then a read of which of those ids now hold this owner's lease with
   * the new expiry: the ids renewed (an id the sweep took meanwhile is, rightly, not among them).
   */
  async progress(claim: LeaseClaim, progress: number, message: string | null): Promise<StepResult> {
    // A plain update (no pipeline): the message is stored as it is, never read as a field path.
    const doc = await this.attempt("progress", () =>
      this.tasks.findOneAndUpdate(heldBy("progress", claim), { $set: { progress, progressMessage: message } }, { returnDocument: "after" }),
    );
    return doc === null ? this.miss("progress", claim.id, claim) : { ok: true, task: docToTask(doc) };
  }

  async renew(owner: string, ids: readonly string[], expiresAt: number): Promise<string[]> {
    const unique = [...new Set(ids)];
    const renewed: string[] = [];
    for (let i = 0; i < unique.length; i += RENEW_CHUNK) {
      const chunk = unique.slice(i, i + RENEW_CHUNK);
      const held: Filter<TaskDoc> = { _id: { $in: chunk }, status: TASK_STATUS.work, "lease.owner": owner };
      const docs = await this.attempt("renew", async () => {
        await this.tasks.updateMany(held, { $set: { "lease.expiresAt": expiresAt } });
        return this.tasks.find<{ _id: string }>({ ...held, "lease.expiresAt": expiresAt }, { projection: { _id: 1 } }).toArray();
      });
      renewed.push(...docs.map((doc) => doc._id));
    }
    return renewed;
  }

  async expired(now: number, limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    const docs = await this.attempt("expired", () =>
      this.tasks
        .find(
          { status: TASK_STATUS.work, "lease.expiresAt": { $lt: now } },
          { sort: { "lease.expiresAt": 1, seq: 1 }, limit, hint: "work_lease_expiry" },
        )
        .toArray(),
    );
    return docs.map(docToTask);
  }

  async list(filter: TaskFilter, page: { limit: number; cursor?: string | null }): Promise<TaskPage> {
    requirePositiveInteger(page.limit, "limit");
    const before = page.cursor === undefined || page.cursor === null ? null : decodeCursor(page.cursor);
    const query: Filter<TaskDoc> = {};
    if (filter.status !== undefined) query.status = filter.status;
    if (filter.user !== undefined) query.user = filter.user;
    if (filter.job !== undefined) query.job = filter.job;
    if (filter.name !== undefined) query.name = filter.name;
    if (filter.parentId !== undefined) query.parentId = filter.parentId;
    if (before !== null) query.seq = { $lt: before };
    // One more than asked tells whether another page exists, so the last page says null.
    const docs = await this.attempt("list", () => this.tasks.find(query, { sort: { seq: -1 }, limit: page.limit + 1 }).toArray());
    const hasMore = docs.length > page.limit;
    const pageDocs = hasMore ? docs.slice(0, page.limit) : docs;
    const last = pageDocs[pageDocs.length - 1];
    return { items: pageDocs.map(docToTask), nextCursor: hasMore && last !== undefined ? encodeCursor(last.seq) : null };
  }

  /** Keyset batches over seq through status_seq: each batch is one short query; tasks created meanwhile come in a later batch. */
  async *loadNonFinal(batchSize: number = DEFAULT_RELOAD_BATCH): AsyncGenerator<ReloadEntry[]> {
    requirePositiveInteger(batchSize, "batchSize");
    let after: ObjectId | null = null;
    for (;;) {
      const query: Filter<TaskDoc> = { status: { $in: NON_FINAL_STATUSES } };
      if (after !== null) query.seq = { $gt: after };
      const docs = await this.attempt("loadNonFinal", () =>
        this.tasks
          .find<ReloadDoc>(query, { projection: RELOAD_PROJECTION, sort: { seq: 1 }, limit: batchSize, hint: "status_seq" })
          .toArray(),
      );
      const last = docs[docs.length - 1];
      if (last === undefined) return;
      yield docs.map(docToReloadEntry);
      if (docs.length < batchSize) return;
      after = last.seq;
    }
  }

  async children(parentId: string): Promise<Task[]> {
    const docs = await this.attempt("children", () => this.tasks.find({ parentId }, { sort: { seq: 1 }, hint: "parent_seq" }).toArray());
    return docs.map(docToTask);
  }

  async delete(id: string): Promise<boolean> {
    const result = await this.attempt("delete", () => this.tasks.deleteOne({ _id: id }));
    return result.deletedCount > 0;
  }

  async finished(query: FinishedQuery, limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    const filter: Filter<TaskDoc> = { parentId: null, status: query.status, endTime: { $lt: query.endedBefore } };
    if (query.user !== undefined) filter.user = query.user;
    if (query.job !== undefined) filter.job = query.job;
    else if (query.exceptJobs !== undefined && query.exceptJobs.length > 0) filter.job = { $nin: [...query.exceptJobs] };
    if (query.job !== undefined && query.exceptJobs?.includes(query.job) === true) return [];
    const docs = await this.attempt("finished", () =>
      this.tasks.find(filter, { sort: { endTime: 1, seq: 1 }, limit, hint: "status_end" }).toArray(),
    );
    return docs.map(docToTask);
  }

  /**
   * The root's guard first (final), then its descendants found level by level and removed with it,
   * in one transaction where the deployment has them. On a standalone server the descendants go
   * first and the root last, so a crash halfway leaves a final root (removed by the next sweep).
   */
  async deleteFinishedTree(id: string): Promise<string[]> {
    const removeTree = async (session?: ClientSession): Promise<string[]> => {
      const opts = session === undefined ? {} : { session };
      const root = await this.tasks.findOne({ _id: id, status: { $nin: NON_FINAL_STATUSES } }, opts);
      if (root === null) return [];
      const descendants: string[] = [];
      for (let level = [id]; level.length > 0;) {
        const kids = await this.tasks.find<{ _id: string }>({ parentId: { $in: level } }, { ...opts, projection: { _id: 1 } }).toArray();
        level = kids.map((kid) => kid._id);
        descendants.push(...level);
      }
      if (descendants.length > 0) await this.tasks.deleteMany({ _id: { $in: descendants } }, opts);
      const gone = await this.tasks.deleteOne({ _id: id, status: { $nin: NON_FINAL_STATUSES } }, opts);
      return gone.deletedCount > 0 ? [...descendants, id] : descendants;
    };
    return this.attempt("deleteFinishedTree", () =>
      this.transactions ? this.inTransaction((session) => removeTree(session)) : removeTree(),
    );
  }

  async countByStatus(): Promise<Record<TaskStatus, number>> {
    const counts = await this.attempt("countByStatus", () =>
      Promise.all(TASK_STATUSES.map((status) => this.tasks.countDocuments({ status }, { hint: "status_seq" }))),
    );
    return Object.fromEntries(TASK_STATUSES.map((status, i) => [status, counts[i] ?? 0])) as Record<TaskStatus, number>;
  }

  /** One aggregation over the status_end index: endTime >= since of the final statuses, top-level ones kept, grouped by status and minute. */
  async finishedPerMinute(since: number): Promise<MinuteCounts[]> {
    if (!Number.isSafeInteger(since))
      throw docqError(ERROR_CODE.BadRequest, `since must be an integer time, got ${String(since)}`, { field: "since" });
    const minuteOf = { $subtract: ["$endTime", { $mod: ["$endTime", MINUTE_MS] }] };
    const groups = await this.attempt("finishedPerMinute", () =>
      this.tasks
        .aggregate<{ _id: { status: string; minute: number }; count: number }>(
          [
            { $match: { status: { $in: FINAL_STATUSES }, endTime: { $gte: since }, parentId: null } },
            { $group: { _id: { status: "$status", minute: minuteOf }, count: { $sum: 1 } } },
          ],
          { hint: "status_end" },
        )
        .toArray(),
    );
    return minuteCountsOf(groups.map((g) => ({ status: g._id.status, minute: g._id.minute, count: g.count })));
  }

  /**
   * Two aggregations over top-level tasks (`parentId: null`): `in`, tasks of other sites run here,
   * by origin site; `out`, this site's tasks run elsewhere, by the site that ran them. For stats:
   * they scan the collection, as the SQLite store's do its table.
   */
  async recordCallback(id: string, delivery: CallbackDelivery): Promise<Task | null> {
    const doc = await this.attempt("recordCallback", () =>
      this.tasks.findOneAndUpdate(
        { _id: id, status: { $in: FINAL_STATUSES } },
        { $set: { callback: { ...delivery } } },
        { returnDocument: "after" },
      ),
    );
    return doc === null ? null : docToTask(doc);
  }

  /** Read once at a queuer's start: no index of its own (it walks status_end over the final tasks). */
  async pendingCallbacks(limit: number): Promise<Task[]> {
    requirePositiveInteger(limit, "limit");
    const docs = await this.attempt("pendingCallbacks", () =>
      this.tasks
        .find(
          {
            status: { $in: FINAL_STATUSES },
            parentId: null,
            callbackUrl: { $type: "string" },
            // `callback: null` also matches a document without the field. A delivery tried before the
            // task's end is about an earlier end (the task was retried since).
            $or: [{ callback: null }, { "callback.state": "pending" }, { $expr: { $lt: ["$callback.lastTryAt", "$endTime"] } }],
          },
          { sort: { endTime: 1, seq: 1 }, limit },
        )
        .toArray(),
    );
    return docs.map(docToTask);
  }

  async countStolen(localSite: string): Promise<StolenCounts> {
    const group = { $group: { _id: "$key", count: { $sum: 1 } } };
    const [stolenIn, stolenOut] = await this.attempt("countStolen", () =>
      Promise.all([
        this.tasks
          .aggregate<{ _id: string; count: number }>([
            { $match: { site: { $ne: localSite }, parentId: null } },
            { $project: { key: "$site" } },
            group,
          ])
          .toArray(),
        this.tasks
          .aggregate<{ _id: string; count: number }>([
            { $match: { site: localSite, parentId: null, "processedBy.site": { $exists: true, $ne: localSite } } },
            { $project: { key: "$processedBy.site" } },
            group,
          ])
          .toArray(),
      ]),
    );
    return {
      in: Object.fromEntries(stolenIn.map((r) => [r._id, r.count])),
      out: Object.fromEntries(stolenOut.map((r) => [r._id, r.count])),
    };
  }

  async createKey(key: ApiKeyRecord): Promise<void> {
    const doc: ApiKeyDoc = {
      _id: key.id,
      seq: nextSeq(),
      user: key.user,
      hash: key.hash,
      limits: definedLimits(key.limits),
      createdAt: key.createdAt,
      revokedAt: key.revokedAt,
    };
    await this.attempt("createKey", async () => {
      try {
        await this.keys.insertOne(doc);
      } catch (err) {
        if (!(err instanceof MongoError && err.code === DUPLICATE_KEY)) throw err;
        const keyPattern: unknown = (err as MongoError & { keyPattern?: unknown }).keyPattern;
        const onHash = (typeof keyPattern === "object" && keyPattern !== null && "hash" in keyPattern) || /index: hash\b/.test(err.message);
        const field = onHash ? "hash" : "id";
        // Named by id only, and without the driver's error as cause (its message quotes the
        // duplicate value): the hash stays out of messages and logs.
        throw docqError(
          ERROR_CODE.BadRequest,
          `api key ${key.id}: ${field === "id" ? "a key with this id" : "a key with the same hash"} already exists`,
          {
            field,
            details: { id: key.id },
          },
        );
      }
    });
  }

  async listKeys(): Promise<ApiKeyRecord[]> {
    const docs = await this.attempt("listKeys", () => this.keys.find({}, { sort: { createdAt: 1, seq: 1 } }).toArray());
    return docs.map(docToApiKey);
  }

  /** One atomic step: an update pipeline sets revokedAt only where it is still null (or missing). */
  async revokeKey(id: string, now: number): Promise<ApiKeyRecord | null> {
    const doc = await this.attempt("revokeKey", () =>
      this.keys.findOneAndUpdate({ _id: id }, [{ $set: { revokedAt: { $ifNull: ["$revokedAt", now] } } }], { returnDocument: "after" }),
    );
    return doc === null ? null : docToApiKey(doc);
  }

  /** One upserting `$inc` of every counter (zeros included, so a new row holds all of them). */
  async addUsage(user: string, day: string, delta: Partial<UsageCounts>): Promise<void> {
    requireUsageDay(day, "day");
    const counts: Record<string, number> = { ...usageDelta(delta) };
    await this.attempt("addUsage", () => this.usageDocs.updateOne({ user, day }, { $inc: counts }, { upsert: true }));
  }

  async usage(query: { user?: string; from: string; to: string }): Promise<UsageRow[]> {
    requireUsageDay(query.from, "from");
    requireUsageDay(query.to, "to");
    const filter: Filter<UsageDoc> = { day: { $gte: query.from, $lte: query.to } };
    if (query.user !== undefined) filter.user = query.user;
    const docs = await this.attempt("usage", () =>
      this.usageDocs
        .find(filter, query.user === undefined ? { sort: { day: 1, user: 1 }, hint: "day_user" } : { sort: { day: 1 }, hint: "user_day" })
        .toArray(),
    );
    return docs.map(docToUsage);
  }

  async countActive(user: string): Promise<number> {
    return this.attempt("countActive", () =>
      this.tasks.countDocuments({ user, parentId: null, status: { $in: NON_FINAL_STATUSES } }, { hint: "user_active" }),
    );
  }

  async createSchedule(schedule: Schedule): Promise<void> {
    await this.attempt("createSchedule", () => this.schedules.create(schedule));
  }

  async getSchedule(id: string): Promise<Schedule | null> {
    return this.attempt("getSchedule", () => this.schedules.get(id));
  }

  async listSchedules(filter: { user?: string }): Promise<Schedule[]> {
    return this.attempt("listSchedules", () => this.schedules.list(filter));
  }

  async setSchedulePaused(id: string, paused: boolean, nextRunAt?: number | null): Promise<Schedule | null> {
    return this.attempt("setSchedulePaused", () => this.schedules.setPaused(id, paused, nextRunAt));
  }

  async deleteSchedule(id: string): Promise<boolean> {
    return this.attempt("deleteSchedule", () => this.schedules.delete(id));
  }

  async dueSchedules(now: number, limit: number): Promise<Schedule[]> {
    return this.attempt("dueSchedules", () => this.schedules.due(now, limit));
  }

  /**
   * The tick: the guarded advance and the tasks' inserts in one transaction where the deployment
   * has them; on a standalone server the tasks first, deleted again when the guard misses (a crash
   * between the two leaves the tick's task without the advance: the next fire of that tick finds
   * its id taken, TASK_EXISTS, and the firer then only advances).
   */
  async fireSchedule(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, tasks: readonly Task[]): Promise<ScheduleFireResult> {
    refuseRepeatedIds(tasks);
    const docs = tasks.map((task) => taskToDoc(task));
    return this.attempt(
      "fireSchedule",
      async (): Promise<ScheduleFireResult> => {
        let after: Schedule | null;
        if (this.transactions) {
          after = await this.inTransaction(async (session) => {
            const moved = await this.schedules.advance(id, expectedNextRunAt, advance, session);
            if (moved !== null && docs.length > 0) await this.tasks.insertMany(docs, { session, ordered: true });
            return moved;
          });
        } else {
          await this.insertOrUndo(docs);
          try {
            after = await this.schedules.advance(id, expectedNextRunAt, advance);
          } catch (err) {
            await this.undoInsert(docs).catch(() => undefined);
            throw err;
          }
          if (after === null) await this.undoInsert(docs);
        }
        return after === null ? this.schedules.miss(id, expectedNextRunAt) : { ok: true, schedule: after };
      },
      docs,
    );
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  // -------------------------------------------------------------------------

  /** One guarded findOneAndUpdate (an update pipeline); on a miss, a read of the document as it is now. */
  private async step(step: StoreStep, id: string, filter: Filter<TaskDoc>, pipeline: Document[], claim?: LeaseClaim): Promise<StepResult> {
    const doc = await this.attempt(step, () => this.tasks.findOneAndUpdate(filter, pipeline, { returnDocument: "after" }));
    return doc === null ? this.miss(step, id, claim) : { ok: true, task: docToTask(doc) };
  }

  /** A step's miss: the document as it is now, and why. Two operations on a standalone server or a replica set alike. */
  private async miss(step: StoreStep, id: string, claim?: LeaseClaim): Promise<StepResult & { ok: false }> {
    const task = await this.get(id);
    return { ok: false, why: stepMiss(step, task, claim), task };
  }

  /** `run` as one transaction, retried by the driver on transient errors (it must be idempotent: ours are). */
  private async inTransaction<T>(run: (session: ClientSession) => Promise<T>): Promise<T> {
    return this.client.withSession((session) =>
      session.withTransaction(() => run(session), { readConcern: { level: "snapshot" }, readPreference: "primary" }),
    );
  }

  /**
   * The standalone split: children first, then the parent's guarded update, the children deleted
   * again when the guard misses or a step fails. A first guarded read spares the inserts when the
   * guard already misses (a stale worker).
   */
  private async splitWithoutTransaction(
    filter: Filter<TaskDoc>,
    update: Document[],
    build: (parent: Task) => TaskDoc[],
  ): Promise<TaskDoc | null> {
    const current = await this.tasks.findOne(filter);
    if (current === null) return null;
    const docs = build(docToTask(current));
    await this.insertOrUndo(docs);
    let parent: TaskDoc | null;
    try {
      parent = await this.tasks.findOneAndUpdate(filter, update, { returnDocument: "after" });
    } catch (err) {
      // The write's error is the one to report; children an undo could not delete are children of a parent that never waited.
      await this.undoInsert(docs).catch(() => undefined);
      throw err;
    }
    if (parent === null) await this.undoInsert(docs);
    return parent;
  }

  /** An ordered insert; on failure the documents it did insert are deleted, so nothing stays. */
  private async insertOrUndo(docs: readonly TaskDoc[]): Promise<void> {
    if (docs.length === 0) return;
    try {
      await this.tasks.insertMany([...docs], { ordered: true });
    } catch (err) {
      // The write's error is the one to report; children an undo could not delete are children of a parent that never waited.
      await this.undoInsert(docs).catch(() => undefined);
      throw err;
    }
  }

  /** Deletes the documents of `docs` that this call inserted: same id *and* same seq, so a task that already had the id stays. */
  private async undoInsert(docs: readonly TaskDoc[]): Promise<void> {
    for (let i = 0; i < docs.length; i += UNDO_CHUNK) {
      const chunk = docs.slice(i, i + UNDO_CHUNK);
      await this.tasks.deleteMany({ _id: { $in: chunk.map((d) => d._id) }, seq: { $in: chunk.map((d) => d.seq) } });
    }
  }

  /**
   * Runs a driver call: DocqErrors pass through, a duplicate task id becomes TASK_EXISTS naming it,
   * anything else STORE_UNAVAILABLE naming the operation and server.
   */
  private async attempt<T>(operation: string, run: () => Promise<T>, inserting: readonly TaskDoc[] = []): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (isDocqError(err)) throw err;
      const duplicate = duplicateTaskId(err, inserting);
      if (duplicate !== undefined) {
        throw docqError(ERROR_CODE.TaskExists, `task ${duplicate} already exists`, { field: "id", cause: err, details: { id: duplicate } });
      }
      throw docqError(ERROR_CODE.StoreUnavailable, `task store ${this.label}: ${operation} failed: ${errorMessage(err)}`, { cause: err });
    }
  }
}

function refuseRepeatedIds(tasks: readonly Task[]): void {
  const seen = new Set<string>();
  for (const task of tasks) {
    if (seen.has(task.id))
      throw docqError(ERROR_CODE.TaskExists, `task ${task.id} already exists (twice in one batch)`, {
        field: "id",
        details: { id: task.id },
      });
    seen.add(task.id);
  }
}

/** The task id of a duplicate-key error on `_id` (not on another unique index), else undefined. */
function duplicateTaskId(err: unknown, inserting: readonly TaskDoc[]): string | undefined {
  if (err instanceof MongoBulkWriteError) {
    const writeErrors: readonly WriteError[] = Array.isArray(err.writeErrors)
      ? (err.writeErrors as readonly WriteError[])
      : [err.writeErrors as WriteError];
    const first = writeErrors.find((e) => e.code === DUPLICATE_KEY);
    if (first === undefined || !onIdIndex(first.errmsg ?? "")) return undefined;
    return inserting[first.index]?._id ?? idInMessage(first.errmsg ?? "") ?? inserting[0]?._id;
  }
  if (err instanceof MongoError && err.code === DUPLICATE_KEY && onIdIndex(err.message)) {
    const keyValue: unknown = (err as MongoError & { keyValue?: unknown }).keyValue;
    if (typeof keyValue === "object" && keyValue !== null && typeof (keyValue as { _id?: unknown })._id === "string")
      return (keyValue as { _id: string })._id;
    return idInMessage(err.message) ?? inserting[0]?._id;
  }
  return undefined;
}

/** `E11000 duplicate key error collection: docq.tasks index: _id_ dup key: { _id: "..." }` */
function onIdIndex(message: string): boolean {
  return !/index: seq\b/.test(message);
}

function idInMessage(message: string): string | undefined {
  return /dup key: \{ _id: "([^"]*)" \}/.exec(message)?.[1];
}

function openError(label: string, url: string, err: unknown): Error {
  if (isDocqError(err)) return err;
  const name = err instanceof Error ? err.name : "";
  const code = err instanceof MongoError ? err.code : undefined;
  const detail = scrub(errorMessage(err), url);
  if (name === "MongoParseError" || name === "MongoInvalidArgumentError" || name === "MongoAPIError") {
    return docqError(ERROR_CODE.Config, `${label}: invalid connection settings: ${detail}`, { cause: err });
  }
  // 18 AuthenticationFailed, 13 Unauthorized (no right to create indexes or read).
  if (code === 18 || code === 13) {
    return docqError(ERROR_CODE.Config, `${label}: the server refused the credentials of the URL (MONGO_URL): ${detail}`, { cause: err });
  }
  // 85 IndexOptionsConflict, 86 IndexKeySpecsConflict: an index of ours exists with other options.
  if (code === 85 || code === 86) {
    return docqError(ERROR_CODE.Config, `${label}: an existing index conflicts with docq's (drop it and restart): ${detail}`, {
      cause: err,
    });
  }
  return docqError(ERROR_CODE.StoreUnavailable, `${label}: cannot connect: ${detail}`, { cause: err });
}

/** A driver message could quote the URL: never let its password through. */
function scrub(message: string, url: string): string {
  const password = /^mongodb(?:\+srv)?:\/\/[^:@/?]*:([^@/?]+)@/.exec(url)?.[1];
  return password === undefined ? message : message.split(password).join("***");
}

/** The URL without credentials or options (options may hold a key file's password): scheme, hosts, nothing else. */

function requirePositiveInteger(value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw docqError(ERROR_CODE.BadRequest, `${field} must be a positive integer, got ${String(value)}`, { field });
  }
}

function encodeCursor(seq: ObjectId): string {
  return Buffer.from(seq.toHexString(), "utf8").toString("base64url");
}

function decodeCursor(cursor: string): ObjectId {
  const text = Buffer.from(cursor, "base64url").toString("utf8");
  if (!/^[0-9a-f]{24}$/.test(text)) {
    throw docqError(ERROR_CODE.BadRequest, `invalid list cursor "${cursor}": pass back a nextCursor from an earlier page`, {
      field: "cursor",
    });
  }
  return ObjectId.createFromHexString(text);
}

export { redactUrl };
