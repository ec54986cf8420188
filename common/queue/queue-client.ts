import type { AttemptResult, ChildSpec, LeaseClaim, PulledTask, WorkerLoad } from "../model/claims.js";
import type { ProcessedBy } from "../model/task-model.js";

/** The queue as a worker reaches it: direct calls in tests, broker calls in services. */
export interface WorkerQueue {
  pull(owner: string, max: number): Promise<PulledTask[]>;
  /** Renews the leases of `ids`; answers the ids no longer held. Also tells the queue the worker's load. */
  heartbeat(owner: string, ids: string[], load: WorkerLoad): Promise<string[]>;
  succeed(claim: LeaseClaim, result: AttemptResult): Promise<boolean>;
  fail(claim: LeaseClaim, error: string, opts: { retryable: boolean; processedBy?: ProcessedBy }): Promise<boolean>;
  split(claim: LeaseClaim, children: ChildSpec[], processedBy: ProcessedBy): Promise<boolean>;
}
