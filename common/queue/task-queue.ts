import { EventEmitter } from "node:events";
import { usageDay, type ApiKeyLimits, type UsageCounts } from "../accounts/account-records.js";
import { docqError, ERROR_CODE, errorMessage } from "../model/errors.js";
import type { AttemptResult, CancelReport, ChildSpec, DeleteReport, LeaseClaim, PulledTask } from "../model/claims.js";
import { blobKeys, newTask, newTaskId, type NewTaskSpec } from "./new-task.js";
import { PriorityIndex } from "./priority-index.js";
import {
  TASK_STATUS as S,
  QUEUED_STATUSES,
  isFinal,
  toQueueEntry,
  type AttemptRecord,
  type ProcessedBy,
  type QueueEntry,
  type Task,
  type TaskStatus,
} from "../model/task-model.js";
import {
  attemptPlace,
  REMOTE_OWNER_PREFIX,
  type ClaimOptions,
  type FailureRecord,
  type RetryRow,
  type StepResult,
  type TaskStore,
} from "../store/task-store.js";
import { STORE_STEPS } from "../model/state-machine.js";
import type { WorkflowDefinition } from "../workflows/workflow-definition.js";
import { WorkflowSteps } from "../workflows/workflow-steps.js";
import { isBlockedStep } from "../workflows/workflow-run.js";
import { MovingAverages, planLend, UNKNOWN_INPUT_BYTES, type LinkFigures } from "../stealing/steal-cost.js";

/** What a victim weighs a steal by (see common/stealing/steal-cost.ts): the thief's link and holdings, its own slots. */
export interface LendWeighing {
  link: LinkFigures;
  heldByUser: Readonly<Record<string, number>>;
  ownerSlots: number;
  ownerBusy: number;
}

/** A job's run time assumed before any of its runs ended here. */
const RUN_MS_PRIOR = 1000;
/** The most queued entries one lend weighs. */
const MAX_LEND_WINDOW = 32_768;

export interface TaskQueueOptions {
  store: TaskStore;
  /** This site: only its own tasks are lent to other sites. */
  site: string;
  leaseMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /**
   * True when the workers live and die with this process (embedded mode): a task found in `work`
   * at start-up was then held by a process that is gone, so it is requeued at once instead of
   * after its lease runs out.
   */
  requeueWorkOnReload: boolean;
  /** How deep splits may nest: a split whose children would be deeper fails. */
  maxSplitDepth: number;
  /**
   * The checked definition of a job that is a workflow, null for any other job: a submission of a
   * workflow job is expanded into its steps here, in the queue, whoever submits (the API, a schedule).
   */
  workflowOf?: (job: string) => Promise<WorkflowDefinition | null>;
  now?: () => number;
}

/** The typed events of the queue, `noun:verb`. */
export interface TaskQueueEvents {
  /** Work became available (a submit, a retry whose backoff elapsed, a requeue). */
  "task:queued": [];
  /** A task was canceled while leased: its holder must stop running it. */
  "task:canceled": [{ id: string; leaseOwner: string }];
  /** A task reached a final status. */
  "task:done": [Task];
  /**
   * A task's status (or its reported progress) changed: the record after the step. Said for every
   * step that wrote one, in the order written: the event stream and the metrics read it.
   */
  "task:changed": [Task];
  /** An attempt ended (the record after the step, and the attempt as recorded): the metrics and the log read it. */
  "attempt:ended": [{ task: Task; attempt: AttemptRecord }];
  /** A pull found nothing ready: `idleSlots` slots asked in vain (the stealer's cue). */
  "queue:empty": [{ idleSlots: number }];
  /** A usage figure could not be written (the store failed): for the log. */
  "usage:lost": [{ user: string; delta: Partial<UsageCounts>; error: string }];
}

/** The limits of the submitting key that a submit checks (maxPriority is checked by the caller). */
export type SubmitQuota = Pick<ApiKeyLimits, "maxQueued" | "maxPerDay" | "maxBytesPerDay">;

/** The statuses a user's retry starts from. */
const RETRYABLE: ReadonlySet<TaskStatus> = new Set(STORE_STEPS.retry.from);

/** The longest single wait of the wake timer (setTimeout cannot wait more than 2^31 − 1 ms). */
const MAX_WAKE_WAIT_MS = 3_600_000;

/** A user over maxQueued may retry once some of their tasks finish. */
const QUEUED_RETRY_AFTER_S = 10;
/** The least room a reload leaves in the index beyond the tasks it brings (see reload). */
const RESERVE_SLACK_MIN = 1024;

function secondsToNextDay(now: number): number {
  const day = 86_400_000;
  return Math.max(1, Math.ceil((Math.floor(now / day) * day + day - now) / 1000));
}

/** The lease owner of a task lent to another site. */
export function remoteOwner(site: string): string {
  return `${REMOTE_OWNER_PREFIX}${site}`;
}

export interface ReloadReport {
  queued: number;
  working: number;
  requeued: number;
  /** Parents waiting for children whose count was checked against the children's records. */
  waiting: number;
  ms: number;
}

/** Exponential backoff after the `tries`-th failed attempt: base, 2·base, 4·base, ..., capped. */
export function retryDelayMs(tries: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, tries - 1));
}

/** Whether `task`'s recorded result came from this very attempt (same try, same node). */
function sameAttempt(task: Task, claim: LeaseClaim, processedBy: ProcessedBy): boolean {
  return task.tries === claim.tries && task.processedBy?.node === processedBy.node;
}

/** Whether a missed split's row shows that this very attempt split it (a retried report whose first try got through). */
function splitBy(task: Task | null, claim: LeaseClaim, processedBy: ProcessedBy): boolean {
  return task !== null && task.childrenTotal > 0 && task.status !== S.work && sameAttempt(task, claim, processedBy);
}

/** The claim a task in work holds: what the sweep and reload requeue it under. */
function claimOf(task: Pick<Task, "id" | "lease" | "tries">): LeaseClaim {
  return { id: task.id, owner: task.lease?.owner ?? "", tries: task.tries };
}

/**
 * A site's queue: the durable task store plus the in-memory priority index over its queued tasks.
 * Every transition is one guarded step of the store (TaskStore), written before the index or any
 * caller sees it, so a crash at any point leaves the store right and a reload rebuilds the index.
 */
export class TaskQueue extends EventEmitter<TaskQueueEvents> {
  private readonly index: PriorityIndex;
  private readonly store: TaskStore;
  /** Per job, the moving averages of run time (of runs that ended here) and input size (at submit): a steal weighs them. */
  private readonly runTimes = new MovingAverages();
  private readonly inputSizes = new MovingAverages();
  private readonly opts: Required<Omit<TaskQueueOptions, "store" | "workflowOf">>;
  private readonly workflowOf: (job: string) => Promise<WorkflowDefinition | null>;
  /** The workflow engine: creates steps as they become runnable and ends workflows. */
  private readonly workflows: WorkflowSteps;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeAt = Infinity;
  /** Per user, the end of their last quota-checked submit: the next one waits for it. */
  private readonly userSteps = new Map<string, Promise<void>>();

  constructor(opts: TaskQueueOptions) {
    super();
    this.store = opts.store;
    const { workflowOf, ...rest } = opts;
    this.opts = { now: Date.now, ...rest };
    const homePrefix = `${opts.site}-`;
    this.index = new PriorityIndex({ isHome: (id) => id.startsWith(homePrefix) });
    this.workflowOf = workflowOf ?? (() => Promise.resolve(null));
    this.workflows = new WorkflowSteps({
      store: this.store,
      now: () => this.opts.now(),
      queued: (step) => {
        this.index.add(toQueueEntry(step), this.opts.now());
        this.emit("task:changed", step);
        this.announce(step.availableAt);
      },
      ended: (task) => this.ended(task),
      cancel: async (id, reason) => {
        await this.cancelOne(id, reason, null);
      },
    });
  }

  /** Rebuilds the index from the store. Call once, before serving. */
  async reload(): Promise<ReloadReport> {
    const started = performance.now();
    const now = this.opts.now();
    const report: ReloadReport = { queued: 0, working: 0, requeued: 0, waiting: 0, ms: 0 };
    const orphans: LeaseClaim[] = [];
    const waiting: string[] = [];
    const working: { id: string; owner: string }[] = [];
    // The store gives each task once: into an empty index, to which nothing else adds meanwhile
    // (a submit between two batches of a remote store), no entry needs its id looked up first.
    const othersAdded = this.index.size === 0 ? this.index.addCount : NaN;
    if (this.index.size === 0) {
      // The store's counts say how many entries come: room for them all at once (a million: 0.2 s
      // less of copies), and for the tasks in work, which a restart queues again, and some more:
      // filled to the brim, the first submit after start would double every column (+50 MB).
      const counts = await this.store.countByStatus();
      let coming = counts[S.work];
      for (const status of QUEUED_STATUSES) coming += counts[status];
      this.index.reserve(coming + Math.max(RESERVE_SLACK_MIN, Math.ceil(coming / 8)));
    }
    for await (const batch of this.store.loadNonFinal()) {
      for (const entry of batch) {
        if (QUEUED_STATUSES.has(entry.status)) {
          if (this.index.addCount === othersAdded) this.index.addAbsent(toQueueEntry(entry), now);
          else this.index.add(toQueueEntry(entry), now);
          report.queued++;
        } else if (entry.status === S.work) {
          if (this.opts.requeueWorkOnReload) orphans.push(claimOf(entry));
          else if (entry.lease !== null) working.push({ id: entry.id, owner: entry.lease.owner });
        } else if (entry.status === S.wait) {
          waiting.push(entry.id);
        }
      }
    }
    this.index.settle();
    for (const claim of orphans) {
      const requeued = await this.failAttempt(claim, "the process running it stopped (docq restarted)", true, { leaseLost: true });
      if (requeued) report.requeued++;
    }
    // Workers outlive a queuer restart: give each a full lease to re-attach with its next heartbeat,
    // instead of sweeping leases that lapsed only because nobody could renew them meanwhile.
    const byOwner = new Map<string, string[]>();
    for (const { id, owner } of working) {
      const ids = byOwner.get(owner);
      if (ids === undefined) byOwner.set(owner, [id]);
      else ids.push(id);
    }
    for (const [owner, ids] of byOwner) report.working += (await this.store.renew(owner, ids, now + this.opts.leaseMs)).length;
    // A crash between a child's completion and its parent's count leaves the count behind: recount.
    for (const id of waiting) {
      await this.reconcileParent(id);
      report.waiting++;
    }
    report.ms = Math.round(performance.now() - started);
    this.scheduleWake();
    return report;
  }

  stop(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
  }

  /**
   * Stores a new task and queues it. Durable when it resolves. With a `quota`, its limits are
   * checked and the task inserted as one step per user (QUOTA_EXCEEDED when one is reached), so
   * concurrent submissions of a user can never overshoot them.
   */
  async submit(spec: NewTaskSpec, opts: { quota?: SubmitQuota; inputBytes?: number } = {}): Promise<Task> {
    const { quota } = opts;
    const limited =
      quota !== undefined && (quota.maxQueued !== undefined || quota.maxPerDay !== undefined || quota.maxBytesPerDay !== undefined);
    if (!limited) return this.insert(spec, opts.inputBytes);
    return this.perUser(spec.user, async () => {
      await this.checkQuota(spec.user, quota, opts.inputBytes ?? 0);
      return this.insert(spec, opts.inputBytes);
    });
  }

  /**
   * Stores many new tasks as one store write (all or none) and queues them: the batch submit. With
   * a `quota`, every spec must be of one user, whose limits count every task of the batch
   * (`inputBytes`: the batch's total). `sizes`: each spec's input size, in the order of `specs`
   * (a steal weighs moving it). Answers the top-level tasks in the order of `specs`.
   */
  async submitMany(
    specs: readonly NewTaskSpec[],
    opts: { quota?: SubmitQuota; inputBytes?: number; sizes?: readonly (number | undefined)[] } = {},
  ): Promise<Task[]> {
    if (specs.length === 0) return [];
    const { quota } = opts;
    const limited =
      quota !== undefined && (quota.maxQueued !== undefined || quota.maxPerDay !== undefined || quota.maxBytesPerDay !== undefined);
    if (!limited) return this.insertMany(specs, opts.inputBytes ?? 0, opts.sizes);
    const user = specs[0]!.user;
    if (specs.some((spec) => spec.user !== user)) {
      throw docqError(ERROR_CODE.BadRequest, "a batch checked against a key's quota must be of one user", { field: "user" });
    }
    return this.perUser(user, async () => {
      await this.checkQuota(user, quota, opts.inputBytes ?? 0, specs.length);
      return this.insertMany(specs, opts.inputBytes ?? 0, opts.sizes);
    });
  }

  private async insertMany(specs: readonly NewTaskSpec[], inputBytes: number, sizes?: readonly (number | undefined)[]): Promise<Task[]> {
    const now = this.opts.now();
    const workflows = new Map<string, Promise<WorkflowDefinition | null>>();
    const tops: Task[] = [];
    const rows: Task[] = [];
    /** What enters the index: a workflow's root steps, any other task itself. */
    const queued: Task[] = [];
    /** Each plain task's input size, entered with it into the index. */
    const sizeOf = new Map<string, number>();
    for (const [i, spec] of specs.entries()) {
      const isTop = spec.parentId === null || spec.parentId === undefined;
      let workflow: Promise<WorkflowDefinition | null> | null = null;
      if (isTop) {
        workflow = workflows.get(spec.job) ?? this.workflowOf(spec.job);
        workflows.set(spec.job, workflow);
      }
      const definition = workflow === null ? null : await workflow;
      if (definition === null) {
        const task = newTask(spec, now);
        const size = sizes?.[i];
        if (size !== undefined) sizeOf.set(task.id, size);
        tops.push(task);
        rows.push(task);
        queued.push(task);
      } else {
        const { workflow: top, roots } = this.workflows.expand(spec, definition, now);
        tops.push(top);
        rows.push(top, ...roots);
        queued.push(...roots);
      }
    }
    await this.store.createMany(rows);
    for (const task of rows) {
      if (task.status === S.input) this.index.add(this.sizedEntry(task, sizeOf.get(task.id)), task.submitTime);
      this.emit("task:changed", task);
    }
    if (queued.length > 0) this.announce(queued.reduce((earliest, task) => Math.min(earliest, task.availableAt), Infinity));
    const submittedBy = new Map<string, number>();
    for (const task of tops) if (task.parentId === null) submittedBy.set(task.user, (submittedBy.get(task.user) ?? 0) + 1);
    // The batch's bytes go to its one user (a quota-checked batch has one); a mixed one's to its first.
    let bytesLeft = inputBytes;
    for (const [user, submitted] of submittedBy) {
      await this.recordUsage(user, now, { submitted, bytesIn: bytesLeft });
      bytesLeft = 0;
    }
    return tops;
  }

  /** `inputBytes`: the size of its input document, when known (unknown counts 0 bytes of usage). */
  private async insert(spec: NewTaskSpec, inputBytes: number | undefined): Promise<Task> {
    const workflow = spec.parentId === null || spec.parentId === undefined ? await this.workflowOf(spec.job) : null;
    if (workflow !== null) return this.insertWorkflow(spec, workflow, inputBytes ?? 0);
    const task = newTask(spec, this.opts.now());
    await this.store.create(task);
    // Its size enters the index with it: a lend weighing it at once sees it (not after submit answers).
    this.index.add(this.sizedEntry(task, inputBytes), task.submitTime);
    this.emit("task:changed", task);
    // A delayed task (runAt/delayMs) wakes the workers when it is due.
    this.announce(task.availableAt);
    if (task.parentId === null) await this.recordUsage(task.user, task.submitTime, { submitted: 1, bytesIn: inputBytes ?? 0 });
    return task;
  }

  /** A new task's index entry with its input's size (when known), which also feeds its job's average. */
  private sizedEntry(task: Task, inputBytes: number | undefined): QueueEntry {
    const entry = toQueueEntry(task);
    if (inputBytes === undefined) return entry;
    this.inputSizes.add(task.job, inputBytes);
    entry.inputBytes = inputBytes;
    return entry;
  }

  /** A workflow with its root steps, in one store write; its other steps are created as they become runnable. */
  private async insertWorkflow(spec: NewTaskSpec, definition: WorkflowDefinition, inputBytes: number): Promise<Task> {
    const { workflow, roots } = this.workflows.expand(spec, definition, this.opts.now());
    await this.store.createMany([workflow, ...roots]);
    this.emit("task:changed", workflow);
    for (const root of roots) {
      this.index.add(toQueueEntry(root), root.submitTime);
      this.emit("task:changed", root);
    }
    this.announce(workflow.availableAt);
    await this.recordUsage(workflow.user, workflow.submitTime, { submitted: 1, bytesIn: inputBytes });
    return workflow;
  }

  /** Runs `step` after every earlier step of the same user has finished. */
  private perUser<T>(user: string, step: () => Promise<T>): Promise<T> {
    const before = this.userSteps.get(user) ?? Promise.resolve();
    const result = before.then(step);
    const done = result.then(
      () => undefined,
      () => undefined,
    );
    this.userSteps.set(user, done);
    void done.then(() => {
      if (this.userSteps.get(user) === done) this.userSteps.delete(user);
    });
    return result;
  }

  /** Refuses (QUOTA_EXCEEDED) a submit of `count` tasks of `inputBytes` in all that would pass a limit of `quota`. */
  private async checkQuota(user: string, quota: SubmitQuota, inputBytes: number, count = 1): Promise<void> {
    const now = this.opts.now();
    /** How a limit is said: a single task is refused at the limit, a batch when it would pass it. */
    const reached = (limit: number): string =>
      count === 1 ? `, the most their key allows (${limit})` : `; ${count} more would pass their key's limit of ${limit}`;
    if (quota.maxQueued !== undefined) {
      const active = await this.store.countActive(user);
      if (active + count > quota.maxQueued) {
        throw docqError(ERROR_CODE.QuotaExceeded, `maxQueued: ${user} has ${active} tasks not yet finished${reached(quota.maxQueued)}`, {
          field: "maxQueued",
          details: { retryAfter: QUEUED_RETRY_AFTER_S, limit: "maxQueued" },
        });
      }
    }
    if (quota.maxPerDay === undefined && quota.maxBytesPerDay === undefined) return;
    const today = usageDay(now);
    const [usage] = await this.store.usage({ user, from: today, to: today });
    const untilTomorrow = secondsToNextDay(now);
    if (quota.maxPerDay !== undefined && (usage?.submitted ?? 0) + count > quota.maxPerDay) {
      throw docqError(
        ERROR_CODE.QuotaExceeded,
        `maxPerDay: ${user} submitted ${usage?.submitted ?? 0} tasks today (UTC)${reached(quota.maxPerDay)}`,
        {
          field: "maxPerDay",
          details: { retryAfter: untilTomorrow, limit: "maxPerDay" },
        },
      );
    }
    if (quota.maxBytesPerDay !== undefined && (usage?.bytesIn ?? 0) + inputBytes > quota.maxBytesPerDay) {
      throw docqError(
        ERROR_CODE.QuotaExceeded,
        `maxBytesPerDay: ${user} submitted ${usage?.bytesIn ?? 0} bytes today (UTC); ${inputBytes} more would pass their key's limit of ${quota.maxBytesPerDay}`,
        { field: "maxBytesPerDay", details: { retryAfter: untilTomorrow, limit: "maxBytesPerDay" } },
      );
    }
  }

  /** Adds to a user's usage of the day of `at`; a failure costs a usage figure, never a task. */
  async recordUsage(user: string, at: number, delta: Partial<UsageCounts>): Promise<void> {
    try {
      await this.store.addUsage(user, usageDay(at), delta);
    } catch (err) {
      this.emit("usage:lost", { user, delta, error: errorMessage(err) });
    }
  }

  /** Usage of a task that ended here, its own site's: run time of every task, outcomes of submitted ones. */
  private async recordEnd(task: Task): Promise<void> {
    if (task.site !== this.opts.site) return;
    const delta: Partial<UsageCounts> = {};
    if (task.duration !== null && task.status !== S.canceled) delta.runMs = task.duration;
    if (task.parentId === null) {
      if (task.status === S.output || task.status === S.error || task.status === S.canceled) delta[task.status] = 1;
      if (task.status === S.output && task.processedBy !== null && task.processedBy.site !== this.opts.site) delta.ranElsewhere = 1;
    }
    if (Object.keys(delta).length > 0) await this.recordUsage(task.user, task.endTime ?? this.opts.now(), delta);
  }

  /** A task reached a final status: said, and counted in its user's usage. */
  private async ended(task: Task): Promise<void> {
    this.emit("task:changed", task);
    this.emit("task:done", task);
    await this.recordEnd(task);
  }

  /**
   * Leases up to `max` of the best queued tasks to `owner`, in one store step: a task canceled
   * meanwhile is skipped, never run. A task leased for its merge carries its children's output keys
   * (`mergeInputs`); one whose parts are missing is failed for good here and not handed out.
   * `sameProcess`: the owner runs in this process (see ClaimOptions), so the claim may be answered
   * before it is durable.
   */
  async pull(owner: string, max: number, opts: ClaimOptions = {}): Promise<PulledTask[]> {
    const leased = await this.claim(owner, this.index.take(max, this.opts.now()), opts);
    const pulled: PulledTask[] = [];
    for (const task of leased) {
      // A workflow step with several upstreams merges their outputs.
      if (task.inputs !== null && task.childrenTotal === 0) {
        pulled.push({ ...task, mergeInputs: task.inputs });
        continue;
      }
      if (task.childrenTotal === 0) {
        pulled.push(task);
        continue;
      }
      const mergeInputs = await this.mergeInputsOf(task);
      if (mergeInputs !== null) pulled.push({ ...task, mergeInputs });
    }
    if (pulled.length < max && this.index.peek(this.opts.now()) === undefined) this.emit("queue:empty", { idleSlots: max - pulled.length });
    return pulled;
  }

  /**
   * The output keys of a parent's children, in creation order: the inputs of its merge. A merge of
   * fewer parts than the split made would be a wrong output: then the parent fails for good (null).
   */
  private async mergeInputsOf(parent: Task): Promise<string[] | null> {
    const children = await this.store.children(parent.id);
    const byId = new Set(children.map((c) => c.id));
    const missing = parent.children.filter((childId) => !byId.has(childId));
    let why: string | undefined;
    if (missing.length > 0 || children.length !== parent.childrenTotal) {
      why = `cannot merge ${parent.id}: ${children.length} of its ${parent.childrenTotal} parts exist (missing: ${missing.join(", ") || "?"})`;
    } else {
      const unfinished = children.find((child) => child.status !== S.output || child.output === null);
      if (unfinished !== undefined) why = `cannot merge ${parent.id}: child ${unfinished.id} is ${unfinished.status}, not output`;
    }
    if (why === undefined) return children.map((child) => child.output ?? "");
    await this.failAttempt(claimOf(parent), why, false);
    return null;
  }

  /**
   * Leases up to `max` of this site's best plain queued tasks at or above `minPriority` to another
   * site (lease owner `site:<thief>`, renewed by its heartbeats): the victim side of stealing.
   * Highest priority first, as for local workers, so priority order holds across sites.
   */
  async lend(thiefSite: string, max: number, minPriority: number, weighing?: LendWeighing): Promise<Task[]> {
    const ownPrefix = `${this.opts.site}-`;
    if (weighing === undefined) {
      const entries = this.index.take(max, this.opts.now(), (e) => e.lendable && e.priority >= minPriority && e.id.startsWith(ownPrefix));
      return this.claim(remoteOwner(thiefSite), entries);
    }
    // Weighed over the best entries, in the order this site's own slots would start them; a
    // window of only unlendable tasks (offload false, merges) is widened to look past them.
    let window = Math.min(1000, Math.max(64, 8 * max));
    let entries = this.takeToLend(window, max, minPriority, ownPrefix, weighing);
    while (entries.length === 0 && window < Math.min(MAX_LEND_WINDOW, this.index.size)) {
      window *= 8;
      entries = this.takeToLend(window, max, minPriority, ownPrefix, weighing);
    }
    return this.claim(remoteOwner(thiefSite), entries);
  }

  private takeToLend(window: number, max: number, minPriority: number, ownPrefix: string, weighing: LendWeighing): QueueEntry[] {
    return this.index.takeChosen(window, this.opts.now(), (best) =>
      planLend(best, {
        max,
        minPriority,
        homePrefix: ownPrefix,
        ownerSlots: weighing.ownerSlots,
        ownerBusy: weighing.ownerBusy,
        runMs: (job) => this.runTimes.get(job, RUN_MS_PRIOR),
        // Unknown (queued again after a restart, a retry or a lapse): its job's average size, else
        // the average of all, else a size large enough that only a fast link moves it: never free.
        inputBytes: (entry) => entry.inputBytes ?? this.inputSizes.get(entry.job, UNKNOWN_INPUT_BYTES),
        link: weighing.link,
        heldByUser: weighing.heldByUser,
      }),
    );
  }

  /** This site's own tasks ready now (not proxies of stolen ones): what it would lend, or runs before stealing. */
  readyHome(): number {
    return this.index.readyHome(this.opts.now());
  }

  /** One store step for all `entries`, answered in their order: a task canceled meanwhile is skipped. */
  private async claim(owner: string, entries: readonly QueueEntry[], opts: ClaimOptions = {}): Promise<Task[]> {
    if (entries.length === 0) return [];
    const now = this.opts.now();
    const leased = await this.store.claim(
      entries.map((e) => e.id),
      { owner, expiresAt: now + this.opts.leaseMs },
      now,
      opts,
    );
    const byId = new Map(leased.map((task) => [task.id, task]));
    const answered = entries.flatMap((entry) => byId.get(entry.id) ?? []);
    for (const task of answered) this.emit("task:changed", task);
    return answered;
  }

  /** Renews `owner`'s leases; answers the ids it no longer holds (requeued or canceled), which it must stop. */
  async heartbeat(owner: string, ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const renewed = new Set(await this.store.renew(owner, ids, this.opts.now() + this.opts.leaseMs));
    return ids.filter((id) => !renewed.has(id));
  }

  /**
   * A worker's success: the task is output. False when the claim is stale (lease expired and moved
   * on, or canceled); a retried report whose first try got through is answered true again.
   */
  async succeed(claim: LeaseClaim, result: AttemptResult): Promise<boolean> {
    const now = this.opts.now();
    const done = await this.store.succeed(claim, result, now);
    if (!done.ok) {
      const after = done.task;
      return after !== null && after.status === S.output && after.output === result.output && sameAttempt(after, claim, result.processedBy);
    }
    if (done.task.duration !== null) this.runTimes.add(done.task.job, done.task.duration);
    // The usage and a parent's count are asked in the same turn: one commit for both, not one each.
    const recorded = this.ended(done.task);
    this.attemptEnded(done.task);
    await Promise.all([recorded, done.task.parentId === null ? null : this.childSucceeded(done.task.parentId, done.task.depth)]);
    return true;
  }

  /**
   * A worker's split: the parent waits, its children are queued, each inheriting user, name, job,
   * priority and maxTries. One store transaction, so the children exist exactly when the parent
   * waits for them. False when the claim is stale.
   */
  async split(claim: LeaseClaim, children: readonly ChildSpec[], processedBy: ProcessedBy): Promise<boolean> {
    const now = this.opts.now();
    const site = claim.id.slice(0, claim.id.lastIndexOf("-"));
    const ids = children.map(() => newTaskId(site));
    let kids: Task[] = [];
    let refused: string | undefined;
    const makeChildren = (parent: Task): Task[] => {
      const depth = parent.depth + 1;
      if (depth > this.opts.maxSplitDepth) {
        refused = `split refused: the children would be at depth ${depth}, deeper than queue.maxSplitDepth (${this.opts.maxSplitDepth})`;
        // Thrown inside the split's transaction, so the parent's write is undone with it.
        throw docqError(ERROR_CODE.BadRequest, refused);
      }
      kids = children.map((child, i) =>
        newTask(
          {
            id: ids[i] ?? newTaskId(parent.site),
            site: parent.site,
            user: parent.user,
            name: parent.name,
            job: parent.job,
            params: child.params ?? parent.params,
            priority: parent.priority,
            maxTries: parent.maxTries,
            input: child.input,
            parentId: parent.id,
            depth,
            offload: parent.offload,
            // A workflow step's own time limit holds for its parts too.
            timeoutMs: parent.timeoutMs,
          },
          now,
        ),
      );
      return kids;
    };
    let waiting: StepResult;
    try {
      waiting = await this.store.split(claim, processedBy, ids, makeChildren, now);
    } catch (err) {
      if (refused === undefined) throw err;
      return this.failAttempt(claim, refused, false, { processedBy });
    }
    // As for succeed: a retried split that already went through is accepted, not split twice.
    if (!waiting.ok) return splitBy(waiting.task, claim, processedBy);
    this.emit("task:changed", waiting.task);
    this.attemptEnded(waiting.task);
    for (const kid of kids) {
      this.index.add(toQueueEntry(kid), now);
      this.emit("task:changed", kid);
    }
    this.emit("task:queued");
    return true;
  }

  /**
   * A worker's failure: requeued after a backoff while tries remain, else `error`. `retryable: false`
   * (a bad request the script can never satisfy) ends it at once. False when the claim is stale.
   */
  async fail(claim: LeaseClaim, error: string, opts: { retryable: boolean; processedBy?: ProcessedBy }): Promise<boolean> {
    return this.failAttempt(claim, error, opts.retryable, opts.processedBy === undefined ? {} : { processedBy: opts.processedBy });
  }

  /**
   * A worker hands back an attempt it stopped (a graceful shutdown): the task is queued again at
   * once and the try is not counted (a merge goes back to complete). False when the claim is stale.
   */
  async release(claim: LeaseClaim, reason: string, processedBy?: ProcessedBy): Promise<boolean> {
    const now = this.opts.now();
    const ranAt = attemptPlace(processedBy ?? null, claim.owner, this.opts.site);
    const released = await this.store.release(claim, { reason, ranAt }, now);
    if (!released.ok) return false;
    this.emit("task:changed", released.task);
    this.attemptEnded(released.task);
    this.index.add(toQueueEntry(released.task), now);
    this.emit("task:queued");
    return true;
  }

  /**
   * The running attempt's progress (0..1) and message, recorded under its claim and then said
   * (task:changed). False when the claim is stale: the attempt lost its lease, or the task ended.
   */
  async progress(claim: LeaseClaim, progress: number, message: string | null): Promise<boolean> {
    const result = await this.store.progress(claim, progress, message);
    if (!result.ok) return false;
    this.emit("task:changed", result.task);
    return true;
  }

  /** Requeues tasks whose holder stopped heartbeating; each such attempt counts as a try. */
  async sweepExpiredLeases(): Promise<number> {
    let swept = 0;
    for (;;) {
      const expired = await this.store.expired(this.opts.now(), 500);
      for (const task of expired) {
        const owner = task.lease?.owner ?? "?";
        const why = `lease expired: ${owner} stopped renewing it for ${this.opts.leaseMs} ms`;
        if (await this.failAttempt(claimOf(task), why, true, { leaseLost: true })) swept++;
      }
      if (expired.length < 500) return swept;
    }
  }

  /**
   * A user's retry of a task in error or canceled: it is queued again with a fresh try count (its
   * attempts kept). A parent retries its failed (error or canceled) children, recursively, not the
   * ones that are output: it waits for them, or is queued for its merge when they are all output.
   * Every row in one store step. `check` sees the tasks that will run from their input before
   * anything is written, and may refuse (the queuer checks that their documents still exist).
   * TASK_NOT_FOUND, or TASK_NOT_IN_STATE for a task in another status or a part of a split (retry
   * its parent). Answers the task after.
   */
  async retry(id: string, check?: (willRun: readonly Task[]) => Promise<void>): Promise<Task> {
    const task = await this.store.get(id);
    if (task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
    if (!RETRYABLE.has(task.status)) {
      throw docqError(ERROR_CODE.TaskNotInState, `task ${id} is ${task.status}: only a task in error or canceled can be retried`, {
        details: { status: task.status },
      });
    }
    if (task.parentId !== null) {
      const parent = await this.store.get(task.parentId);
      const parentStatus = parent?.status ?? "deleted";
      throw docqError(
        ERROR_CODE.TaskNotInState,
        `task ${id} is a part of task ${task.parentId} (${parentStatus}): retry the parent, which runs its failed parts again`,
        { details: { status: task.status, parentId: task.parentId, parentStatus } },
      );
    }
    const rows: RetryRow[] = [];
    const willRun: Task[] = [];
    const unblock: string[] = [];
    await this.planRetry(task, rows, willRun, unblock);
    await check?.(willRun);
    // A workflow's steps canceled only because an upstream failed never ran: their records go, and
    // they are created again once their upstreams are output. Removed before the retry's write, so
    // a crash in between leaves the workflow in error, retryable again, never waiting on them.
    for (const stepId of unblock) {
      this.index.remove(stepId);
      await this.store.delete(stepId);
    }
    const now = this.opts.now();
    const retried = await this.store.retry(rows, now);
    if (!retried.ok) {
      const status = retried.task?.status ?? "deleted";
      throw docqError(ERROR_CODE.TaskNotInState, `task ${retried.id} is ${status} now: it changed while ${id} was being retried`, {
        details: { status },
      });
    }
    for (const row of retried.tasks) {
      this.emit("task:changed", row);
      if (QUEUED_STATUSES.has(row.status)) this.index.add(toQueueEntry(row), now);
    }
    this.emit("task:queued");
    // The status the retry left it in: a worker may pull it before the caller hears back.
    const own = retried.tasks.find((row) => row.id === id) ?? task;
    if (task.workflow === null) return own;
    await this.workflows.advance(id);
    return (await this.store.get(id)) ?? own;
  }

  /** The rows of a retry of `task`, children before their parent (see MongoTaskStore.retry), and the tasks that run from their input. */
  private async planRetry(task: Task, rows: RetryRow[], willRun: Task[], unblock: string[]): Promise<void> {
    if (task.workflow !== null) {
      // Only its failed and canceled steps run again, the ones output are kept; the steps blocked
      // by them are re-created (by advance) when their upstreams are output again.
      let output = 0;
      for (const step of await this.store.children(task.id)) {
        if (step.status === S.output) output++;
        else if (isBlockedStep(step)) unblock.push(step.id);
        else if (RETRYABLE.has(step.status)) await this.planRetry(step, rows, willRun, unblock);
      }
      rows.push({ id: task.id, status: S.wait, childrenCompleted: output });
      return;
    }
    if (task.childrenTotal === 0) {
      rows.push({ id: task.id, status: S.input, childrenCompleted: 0 });
      willRun.push(task);
      return;
    }
    const children = await this.store.children(task.id);
    if (children.length < task.childrenTotal) {
      throw docqError(
        ERROR_CODE.TaskNotInState,
        `task ${task.id} cannot be retried: ${task.childrenTotal - children.length} of its ${task.childrenTotal} parts are gone`,
        { details: { status: task.status } },
      );
    }
    let output = 0;
    for (const child of children) {
      if (child.status === S.output) output++;
      else if (RETRYABLE.has(child.status)) await this.planRetry(child, rows, willRun, unblock);
      // A child still live (it was running when its parent failed) reports to its waiting parent as before.
    }
    rows.push({ id: task.id, status: output >= task.childrenTotal ? S.complete : S.wait, childrenCompleted: output });
  }

  /**
   * Removes a finished task with its whole tree (retention, the bulk clean); answers the ids removed,
   * none when it is not final (a task retried meanwhile stays). The caller drops their documents.
   */
  async removeFinished(id: string): Promise<string[]> {
    const removed = await this.store.deleteFinishedTree(id);
    for (const gone of removed) this.index.remove(gone);
    return removed;
  }

  /**
   * Cancels a non-final task and all its descendants: `canceled`, out of the index, holders told
   * to stop. A canceled child fails its waiting parent. Throws TASK_NOT_IN_STATE when already final.
   * `drop`: the folders of every task canceled, whose documents nobody needs any more.
   */
  async cancel(id: string): Promise<CancelReport> {
    const dropped: string[] = [];
    const result = await this.cancelOne(id, "canceled", dropped);
    if (!result.ok) {
      if (result.task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
      throw docqError(ERROR_CODE.TaskNotInState, `task ${id} is already ${result.task.status}`, {
        details: { status: result.task.status },
      });
    }
    const canceledIds = await this.cancelTree(result.task, dropped);
    return { task: result.task, canceledIds, drop: dropped };
  }

  /**
   * After `task` itself was canceled: its descendants are canceled and its waiting parent fails.
   * Answers the ids of the task and its descendants.
   */
  private async cancelTree(task: Task, dropped: string[]): Promise<string[]> {
    const ids = [task.id, ...(await this.cancelDescendants(task.id, dropped))];
    // Its parent's other parts keep their documents: a retry of the parent runs them again.
    if (task.parentId !== null) await this.failParent(task.parentId, `child ${task.id} was canceled`);
    return ids;
  }

  /**
   * DELETE of a task, as one queue step: a live task is canceled with its descendants; a final one
   * is removed with its descendants. A final child whose parent is live is refused
   * (TASK_NOT_IN_STATE): its output is a part of the parent's merge. `drop`: the folders of every task
   * canceled or removed.
   */
  async delete(id: string): Promise<DeleteReport> {
    const dropped: string[] = [];
    const result = await this.cancelOne(id, "canceled", dropped);
    if (result.ok) {
      const ids = await this.cancelTree(result.task, dropped);
      return { id, status: result.task.status, ids, drop: dropped };
    }
    const task = result.task;
    if (task === null) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
    // Not cancelable, so final (the cancel's row says so): remove it with its descendants.
    if (task.parentId !== null) {
      const parent = await this.store.get(task.parentId);
      if (parent !== null && !isFinal(parent.status)) {
        throw docqError(
          ERROR_CODE.TaskNotInState,
          `task ${id} is a part of task ${parent.id}, which is ${parent.status}: its output is needed for the merge; delete (or cancel) the parent instead`,
          { details: { status: task.status, parentId: parent.id, parentStatus: parent.status } },
        );
      }
    }
    const removed: string[] = [];
    const removeTree = async (taskId: string): Promise<void> => {
      for (const child of await this.store.children(taskId)) {
        // Removed right after: its folder is in `drop` as a removed task's.
        if (!isFinal(child.status)) await this.cancelOne(child.id, `parent ${id} deleted`, null);
        await removeTree(child.id);
      }
      this.index.remove(taskId);
      if (await this.store.delete(taskId)) removed.push(taskId);
    };
    await removeTree(id);
    return { id, status: "deleted", ids: removed, drop: removed.map((gone) => blobKeys.folder(gone)) };
  }

  /**
   * Cancels one task if it is cancelable; a miss answers the row as it is (null when missing).
   * The folder of a task it canceled goes into `dropped` (a user's cancel: nobody needs its
   * documents any more); null for a cascade, whose tasks keep theirs so a retried parent can run
   * them again (retention removes them with their tree).
   */
  private async cancelOne(id: string, reason: string, dropped: string[] | null): Promise<StepResult> {
    const result = await this.store.cancel(id, reason, this.opts.now(), this.opts.site);
    if (!result.ok) return result;
    dropped?.push(blobKeys.folder(id));
    this.index.remove(id);
    if (result.previousLeaseOwner !== null) this.emit("task:canceled", { id, leaseOwner: result.previousLeaseOwner });
    await this.ended(result.task);
    if (result.previousLeaseOwner !== null) this.attemptEnded(result.task);
    return result;
  }

  /** Cancels every non-final descendant of `id`; answers their ids. `dropped` as for cancelOne. */
  private async cancelDescendants(id: string, dropped: string[] | null): Promise<string[]> {
    const canceled: string[] = [];
    for (const child of await this.store.children(id)) {
      if (!isFinal(child.status) && (await this.cancelOne(child.id, `parent ${id} ended`, dropped)).ok) canceled.push(child.id);
      canceled.push(...(await this.cancelDescendants(child.id, dropped)));
    }
    return canceled;
  }

  /**
   * A child is output: its parent counts it, and the statement that counts the last queues the merge.
   * A split's part (depth > 0) never has a workflow for parent (a workflow's steps are at its own
   * depth): its parent is not read to tell, a read that cost each of a thousand parts a flush of the
   * waiting writes and the parse of the parent's list of children.
   */
  private async childSucceeded(parentId: string, childDepth: number): Promise<void> {
    if (childDepth === 0 && (await this.workflows.stepEnded(parentId, "output"))) return;
    const parent = await this.store.childSucceeded(parentId, this.opts.now());
    if (parent.ok) this.queuedForMerge(parent.task);
  }

  /** A parent that a step moved to complete goes into the index. */
  private queuedForMerge(parent: Task): void {
    if (parent.status !== S.complete) return;
    this.emit("task:changed", parent);
    this.index.add(toQueueEntry(parent), parent.availableAt);
    this.emit("task:queued");
  }

  /**
   * A child ended without output: its waiting parent fails and its other descendants are canceled,
   * keeping their documents (a retry of the parent runs them again).
   */
  private async failParent(parentId: string, reason: string): Promise<void> {
    // A workflow is not failed by its first failed step: the steps that do not depend on it finish first.
    if (await this.workflows.stepEnded(parentId, "failed")) return;
    const parent = await this.store.failParent(parentId, reason, this.opts.now());
    if (!parent.ok) return;
    await this.ended(parent.task);
    await this.cancelDescendants(parentId, null);
    if (parent.task.parentId !== null) await this.failParent(parent.task.parentId, `child ${parentId} failed: ${reason}`);
  }

  /** Brings a waiting parent's count in line with its children's records, and moves it on if they are all over. */
  private async reconcileParent(id: string): Promise<void> {
    const parent = await this.store.get(id);
    if (parent === null || parent.status !== S.wait) return;
    // A workflow whose step ended just before a crash: its downstream steps are created, or it ends.
    if (parent.workflow !== null) return this.workflows.advance(id);
    const children = await this.store.children(id);
    const failed = children.find((c) => c.status === S.error || c.status === S.canceled);
    if (failed !== undefined) {
      await this.failParent(id, `child ${failed.id} ended ${failed.status}: ${failed.error ?? ""}`);
      return;
    }
    if (children.length < parent.childrenTotal) {
      // A part whose record is gone can never complete: waiting for it would wait forever.
      await this.failParent(id, `${parent.childrenTotal - children.length} of its ${parent.childrenTotal} parts are missing`);
      return;
    }
    const done = children.filter((c) => c.status === S.output).length;
    if (done === parent.childrenCompleted && done < parent.childrenTotal) return;
    const recounted = await this.store.recountChildren(id, done, this.opts.now());
    if (recounted.ok) this.queuedForMerge(recounted.task);
  }

  /** Live entries of the index per priority, highest first. */
  countsByPriority(): Record<number, number> {
    return this.index.countsByPriority();
  }

  /** Counts of the queue in memory, cheap enough for every stats call. */
  queueCounts(): { ready: number; delayed: number; highestPriority: number | null } {
    return this.index.counts(this.opts.now());
  }

  /**
   * Ends the attempt `claim` holds: back to the queue after a backoff while tries remain and the
   * failure is retryable, else error for good (and its waiting parent fails). False when the claim is stale.
   */
  private async failAttempt(
    claim: LeaseClaim,
    error: string,
    retryable: boolean,
    how: { processedBy?: ProcessedBy; leaseLost?: boolean } = {},
  ): Promise<boolean> {
    const now = this.opts.now();
    const processedBy = how.processedBy ?? null;
    const failure: FailureRecord = {
      error,
      processedBy,
      ranAt: attemptPlace(processedBy, claim.owner, this.opts.site),
      ...(how.leaseLost === true ? { leaseLost: true } : {}),
    };
    if (retryable) {
      const availableAt = now + retryDelayMs(claim.tries, this.opts.backoffBaseMs, this.opts.backoffMaxMs);
      const requeued = await this.store.requeue(claim, failure, availableAt, now);
      if (requeued.ok) {
        this.emit("task:changed", requeued.task);
        this.attemptEnded(requeued.task);
        this.index.add(toQueueEntry(requeued.task), now);
        this.announce(requeued.task.availableAt);
        return true;
      }
      // Held by this claim but with no try left: it ends in error below. Any other miss: stale.
      if (requeued.why !== "not-in-state" || requeued.task?.status !== S.work) return false;
    }
    const ended = await this.store.giveUp(claim, failure, now);
    if (!ended.ok) return false;
    await this.ended(ended.task);
    this.attemptEnded(ended.task);
    if (ended.task.parentId !== null) await this.failParent(ended.task.parentId, `child ${ended.task.id} failed: ${error}`);
    return true;
  }

  /** Says the attempt a step just recorded (the last of the task's attempts): the metrics and the log read it. */
  private attemptEnded(task: Task): void {
    const attempt = task.attempts[task.attempts.length - 1];
    if (attempt !== undefined) this.emit("attempt:ended", { task, attempt });
  }

  /**
   * Tells the workers of a task (re)queued for `availableAt`: now when it is due, else when it is
   * (the wake timer). Checked after the timer is set: a task whose short backoff or delay passed
   * while its write was committed (a loaded machine) is already promoted by then, so no timer
   * would name it, and the workers would hear of it only at their next poll.
   */
  private announce(availableAt: number): void {
    this.scheduleWake();
    if (availableAt <= this.opts.now()) this.emit("task:queued");
  }

  /** Announces work again when the earliest backoff elapses, so idle workers need not poll. */
  private scheduleWake(): void {
    const next = this.index.nextAvailableAt(this.opts.now());
    if (next === null || next >= this.wakeAt) return;
    clearTimeout(this.wakeTimer);
    this.wakeAt = next;
    this.wakeTimer = setTimeout(
      () => {
        this.wakeAt = Infinity;
        this.wakeTimer = undefined;
        // A timer can fire a millisecond before the clock reaches its time (libuv counts from its
        // cached loop time): announce only once the task is due, else wait the rest.
        if (this.opts.now() >= next) this.emit("task:queued");
        this.scheduleWake();
      },
      // A timer longer than about 24.8 days fires at once: a far delay wakes hourly and checks again.
      Math.min(MAX_WAKE_WAIT_MS, Math.max(0, next - this.opts.now())),
    );
  }
}
