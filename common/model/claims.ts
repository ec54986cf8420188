import type { ProcessedBy, Task, TaskStatus } from "./task-model.js";

/*
 * What the queue and its callers (workers, the stealer, the controller) say to each other about
 * one task: the shapes shared by the queue, its protocol and its clients.
 */

/**
 * What a worker proves it holds when it reports: the lease owner and the task's `tries` when the
 * lease was granted (the attempt number), so a stale attempt can never report over a newer one.
 */
export interface LeaseClaim {
  id: string;
  owner: string;
  tries: number;
}

/** A child as a splitting attempt describes it: its input already stored under `input`. */
export interface ChildSpec {
  input: string;
  params?: Record<string, unknown>;
}

/**
 * A task a pull leased. `mergeInputs` is there exactly when it was leased for its merge (its
 * children are all output): their output keys, in the order they were created.
 */
export type PulledTask = Task & { mergeInputs?: string[] };

/** What a cancel did: the task after, every task it canceled, and the blob prefixes no longer needed. */
export interface CancelReport {
  task: Task;
  canceledIds: string[];
  /** Blob prefixes (task folders) whose documents nobody needs any more: the caller's to drop. */
  drop: string[];
}

/**
 * What a DELETE did, as one queue step: a live task is canceled with its descendants, a final one
 * is removed with its descendants. `status` is "deleted" for a removed record, else the status after.
 */
export interface DeleteReport {
  id: string;
  status: "deleted" | TaskStatus;
  /** Every task canceled or removed. */
  ids: string[];
  drop: string[];
}

/** A worker's slots as it reports them with each heartbeat. */
export interface WorkerLoad {
  slots: number;
  busy: number;
}

/** What a worker reports for a successful attempt. */
export interface AttemptResult {
  output: string;
  processedBy: ProcessedBy;
}
