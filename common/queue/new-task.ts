import { randomFillSync } from "node:crypto";
import { monotonicFactory } from "ulid";
import { TASK_STATUS, type Task, type TaskParams } from "../model/task-model.js";
import type { WorkflowDefinition } from "../workflows/workflow-definition.js";

/** Random bytes drawn from the OS a page at a time. */
const RANDOM_PAGE_BYTES = 4096;
const randomPage = new Uint8Array(RANDOM_PAGE_BYTES);
let randomAt = RANDOM_PAGE_BYTES;

/**
 * ulid's own PRNG asks crypto for one byte per character: 16 calls per id in each new millisecond,
 * a twentieth of a submit's CPU. The same randomness, taken from a page refilled when used up.
 */
function pagedRandom(): number {
  if (randomAt === RANDOM_PAGE_BYTES) {
    randomFillSync(randomPage);
    randomAt = 0;
  }
  return randomPage[randomAt++]! / 256;
}

/** Monotonic within a millisecond, so ids made in one burst still sort in submit order. */
const nextUlid = monotonicFactory(pagedRandom);

export function newTaskId(site: string): string {
  return `${site}-${nextUlid()}`;
}

/** What a submitter decides about a task; everything else starts at its initial value. */
export interface NewTaskSpec {
  id: string;
  site: string;
  user: string;
  name: string;
  job: string;
  params: TaskParams;
  priority: number;
  maxTries: number;
  input: string | null;
  parentId?: string | null;
  depth?: number;
  /** false: never lent to another site (default true). */
  offload?: boolean;
  /** Where the record is POSTed when the task ends (a top-level task's; children have none). */
  callbackUrl?: string | null;
  /** A workflow task: the snapshot of its definition. */
  workflow?: WorkflowDefinition | null;
  /** A workflow step with several upstreams: their output keys, in the order written (merge mode). */
  inputs?: string[] | null;
  /** A workflow step's own script timeout, in place of its job's. */
  timeoutMs?: number | null;
  /** When it may first run (ms since the epoch): a delayed task waits `input` until then; default: at once. */
  availableAt?: number;
}

export function newTask(spec: NewTaskSpec, now: number): Task {
  return {
    id: spec.id,
    site: spec.site,
    user: spec.user,
    name: spec.name,
    job: spec.job,
    params: spec.params,
    priority: spec.priority,
    status: TASK_STATUS.input,
    input: spec.input,
    output: null,
    tries: 0,
    maxTries: spec.maxTries,
    submitTime: now,
    availableAt: Math.max(now, spec.availableAt ?? now),
    startTime: null,
    endTime: null,
    duration: null,
    lease: null,
    processedBy: null,
    error: null,
    parentId: spec.parentId ?? null,
    depth: spec.depth ?? 0,
    children: [],
    childrenTotal: 0,
    childrenCompleted: 0,
    offload: spec.offload ?? true,
    attempts: [],
    progress: null,
    progressMessage: null,
    callbackUrl: spec.callbackUrl ?? null,
    callback: null,
    workflow: spec.workflow ?? null,
    inputs: spec.inputs ?? null,
    timeoutMs: spec.timeoutMs ?? null,
  };
}

/** Blob keys live under the task's id (a split part's output under its parent's), so deleting a tree's folders removes all its documents. */
export const blobKeys = {
  folder: (taskId: string): string => `${taskId}/`,
  input: (taskId: string): string => `${taskId}/input`,
  /**
   * Per attempt (`tries` when the lease was granted): a stale worker finishing late can never overwrite
   * the output of the attempt that won.
   */
  output: (taskId: string, tries: number): string => `${taskId}/output-${tries}`,
  /** A child's input, written by the splitting attempt under the parent: deleting the parent removes it. */
  splitFolder: (taskId: string, tries: number): string => `${taskId}/split-${tries}/`,
  splitPart: (taskId: string, tries: number, index: number): string => `${taskId}/split-${tries}/part-${index}`,
  /**
   * A split part's output, per attempt as `output`, beside the other parts' in its parent's folder:
   * a folder of its own per part cost a directory inode each (an ext4 mkdir here: 60-350 µs, most
   * of what storing a warm part's output cost). Deleting the parent removes it; the blob GC removes
   * an attempt's whose part no longer needs it.
   */
  partOutput: (parentId: string, partId: string, tries: number): string => `${parentId}/${PART_OUTPUT}${tries}-${partId}`,
};

/** The name of a part's output in its parent's folder: `part-output-<attempt>-<part's id>`. */
const PART_OUTPUT = "part-output-";
const PART_OUTPUT_NAME = /^part-output-(\d+)-([^/]+)$/;

/** The attempt and part of a name `partOutput` makes in a parent's folder (the text after `<parent>/`), or null. */
export function partOutputOf(name: string): { tries: number; partId: string } | null {
  const match = PART_OUTPUT_NAME.exec(name);
  return match === null ? null : { tries: Number(match[1]), partId: match[2]! };
}

/** Where an attempt of `task` stores its output: a split part beside its siblings', any other task in its own folder. */
export function outputKeyOf(task: { id: string; parentId: string | null; depth: number }, tries: number): string {
  return task.parentId !== null && task.depth > 0 ? blobKeys.partOutput(task.parentId, task.id, tries) : blobKeys.output(task.id, tries);
}
