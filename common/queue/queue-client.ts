import type { AttemptResult, CancelReport, ChildSpec, DeleteReport, LeaseClaim, PulledTask, WorkerLoad } from "../model/claims.js";
import type { ProcessedBy, Task } from "../model/task-model.js";
import type { TaskPage } from "../store/task-store.js";
import {
  queuerActionName,
  type QueuerAction,
  type QueuerAnswer,
  type QueuerBacklog,
  type QueuerMessage,
  type QueuerStats,
} from "./protocol.js";
import { dispatch, queuerHandlers, type QueuerActionDeps } from "./queuer-actions.js";

/** The queue as a worker reaches it: direct calls in tests, broker calls in services. */
export interface WorkerQueue {
  pull(owner: string, max: number): Promise<PulledTask[]>;
  /** Renews the leases of `ids`; answers the ids no longer held. Also tells the queue the worker's load. */
  heartbeat(owner: string, ids: string[], load: WorkerLoad): Promise<string[]>;
  succeed(claim: LeaseClaim, result: AttemptResult): Promise<boolean>;
  fail(claim: LeaseClaim, error: string, opts: { retryable: boolean; processedBy?: ProcessedBy }): Promise<boolean>;
  split(claim: LeaseClaim, children: ChildSpec[], processedBy: ProcessedBy): Promise<boolean>;
  /** Hands back an attempt stopped by a graceful shutdown: queued again at once, the try not counted; false when the claim is stale. */
  release(claim: LeaseClaim, reason: string): Promise<boolean>;
  /** The running attempt's progress (0..1) and message; false when the claim is stale. */
  progress(claim: LeaseClaim, progress: number, message: string | null): Promise<boolean>;
}

/**
 * The worker's per-task calls, whose messages it builds from its own typed state (its owner name,
 * the leases it holds, the output keys it wrote): in embedded mode they reach the queuer unchecked
 * (LocalQueuer). Split, fail and progress carry what a script said and stay checked.
 */
export const WORKER_OWN_MESSAGES: readonly QueuerAction[] = ["pull", "heartbeat", "succeed"];

/**
 * The controller's submits, built from a request it checked itself (the fields by zod at the HTTP
 * boundary, the params against the job's declaration, the callback URL) and from its own ids and
 * keys: in embedded mode they too reach the queuer unchecked (the check was 4 % of a batch's CPU).
 */
export const CONTROLLER_OWN_MESSAGES: readonly QueuerAction[] = ["submit", "submitMany"];

/** How a client reaches the queuer: one typed call per action (a broker call in services). */
export type QueuerCall = <A extends QueuerAction>(action: A, message: QueuerMessage<A>) => Promise<QueuerAnswer<A>>;

/** The whole queuer protocol as typed calls; a worker uses its WorkerQueue part, the stealer and the controller the rest. */
export interface QueuerClient extends WorkerQueue {
  submit(spec: QueuerMessage<"submit">): Promise<Task>;
  /** Many tasks, all or none (one store write): their ids in order. */
  submitMany(batch: QueuerMessage<"submitMany">): Promise<QueuerAnswer<"submitMany">>;
  lend(thiefSite: string, max: number, minPriority: number, weighing?: QueuerMessage<"lend">["weighing"]): Promise<Task[]>;
  /** Renews a remote holder's leases; answers the ids no longer held. */
  renew(owner: string, ids: string[]): Promise<string[]>;
  backlog(): Promise<QueuerBacklog>;
  /** Cancels a live task and its descendants; the queuer drops their documents. */
  cancel(id: string): Promise<CancelReport>;
  /** DELETE in one queue step; the queuer drops the documents of every task it ended or removed. */
  delete(id: string): Promise<DeleteReport>;
  /** Queues a task in error or canceled again (a parent with its failed parts); TASK_NOT_IN_STATE otherwise. */
  retry(id: string): Promise<QueuerAnswer<"retry">>;
  /** Removes finished top-level tasks (with trees and documents) that ended before `endedBefore`. */
  purge(query: QueuerMessage<"purge">): Promise<QueuerAnswer<"purge">>;
  /** The task, or TASK_NOT_FOUND. */
  get(id: string): Promise<Task>;
  list(query: QueuerMessage<"list">): Promise<TaskPage>;
  stats(): Promise<QueuerStats>;
  finishedPerMinute(since: number): Promise<QueuerAnswer<"finishedPerMinute">>;
  createKey(user: string, limits: QueuerMessage<"createKey">["limits"]): Promise<QueuerAnswer<"createKey">>;
  listKeys(): Promise<QueuerAnswer<"listKeys">>;
  revokeKey(id: string): Promise<QueuerAnswer<"revokeKey">>;
  authenticate(hash: string): Promise<QueuerAnswer<"authenticate">>;
  usage(query: QueuerMessage<"usage">): Promise<QueuerAnswer<"usage">>;
  addUsage(user: string, bytesOut: number): Promise<boolean>;
  createSchedule(schedule: QueuerMessage<"createSchedule">): Promise<QueuerAnswer<"createSchedule">>;
  getSchedule(id: string): Promise<QueuerAnswer<"getSchedule">>;
  listSchedules(query: QueuerMessage<"listSchedules">): Promise<QueuerAnswer<"listSchedules">>;
  pauseSchedule(id: string, paused: boolean): Promise<QueuerAnswer<"pauseSchedule">>;
  deleteSchedule(id: string): Promise<QueuerAnswer<"deleteSchedule">>;
}

/** The typed client over `call`: each method builds its action's message. */
export function queuerClient(call: QueuerCall): QueuerClient {
  return {
    submit: (spec) => call("submit", spec),
    submitMany: (batch) => call("submitMany", batch),
    pull: (owner, max) => call("pull", { owner, max }),
    heartbeat: (owner, ids, load) => call("heartbeat", { owner, ids, slots: load.slots, busy: load.busy }),
    succeed: (claim, result) => call("succeed", { ...claimOf(claim), output: result.output, processedBy: result.processedBy }),
    fail: (claim, error, opts) => {
      const processedBy = opts.processedBy === undefined ? {} : { processedBy: opts.processedBy };
      return call("fail", { ...claimOf(claim), error, retryable: opts.retryable, ...processedBy });
    },
    split: (claim, children, processedBy) => call("split", { ...claimOf(claim), children, processedBy }),
    release: (claim, reason) => call("release", { ...claimOf(claim), reason }),
    progress: (claim, progress, message) => call("progress", { ...claimOf(claim), progress, message }),
    lend: (thief, max, minPriority, weighing) => call("lend", { thief, max, minPriority, ...(weighing === undefined ? {} : { weighing }) }),
    renew: (owner, ids) => call("renew", { owner, ids }),
    backlog: () => call("backlog", {}),
    cancel: (id) => call("cancel", { id }),
    delete: (id) => call("delete", { id }),
    retry: (id) => call("retry", { id }),
    purge: (query) => call("purge", query),
    get: (id) => call("get", { id }),
    list: (query) => call("list", query),
    stats: () => call("stats", {}),
    finishedPerMinute: (since) => call("finishedPerMinute", { since }),
    createKey: (user, limits) => call("createKey", { user, limits }),
    listKeys: () => call("listKeys", {}),
    revokeKey: (id) => call("revokeKey", { id }),
    authenticate: (hash) => call("authenticate", { hash }),
    usage: (query) => call("usage", query),
    addUsage: (user, bytesOut) => call("addUsage", { user, bytesOut }),
    createSchedule: (schedule) => call("createSchedule", schedule),
    getSchedule: (id) => call("getSchedule", { id }),
    listSchedules: (query) => call("listSchedules", query),
    pauseSchedule: (id, paused) => call("pauseSchedule", { id, paused }),
    deleteSchedule: (id) => call("deleteSchedule", { id }),
  };
}

/** Only the claim's fields: a caller's object may carry more, which the strict message would refuse. */
function claimOf(claim: LeaseClaim): LeaseClaim {
  return { id: claim.id, owner: claim.owner, tries: claim.tries };
}

/** The client over a broker: `brokerCall` is e.g. `(name, params) => broker.call(name, params)`. */
export function brokerQueuerClient(brokerCall: (actionName: string, params: object) => Promise<unknown>): QueuerClient {
  return queuerClient(
    <A extends QueuerAction>(action: A, message: QueuerMessage<A>) =>
      brokerCall(queuerActionName(action), message) as Promise<QueuerAnswer<A>>,
  );
}

/**
 * The client straight over a TaskQueue, for tests: the same handlers as the queuer service, each
 * message checked as the service checks it, without a broker.
 */
export function directQueuerClient(deps: QueuerActionDeps): QueuerClient {
  const handlers = queuerHandlers(deps);
  return queuerClient((action, message) => dispatch(handlers, action, message));
}
