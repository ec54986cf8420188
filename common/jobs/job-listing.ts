import { z } from "zod";
import type { WorkflowStep } from "../workflows/workflow-definition.js";
import type { JobCatalogEntry, JobDefinition } from "./job-registry.js";

/*
 * GET /api/jobs: what a caller may submit to. A job the registry refuses is listed with its reason,
 * the same text a submission to it is refused with, so a broken job.yaml is seen before it is used.
 */

/** What a job is: a workflow (a job made of jobs), or a script that splits, stays warm, or runs once per task. */
export type JobKind = "workflow" | "split" | "warm" | "script";

export type JobListing =
  | {
      name: string;
      kind: Exclude<JobKind, "workflow">;
      split: boolean;
      warm: boolean;
      timeoutMs: number;
      maxTries: number | null;
      /** The params job.yaml declares (their names), null when it declares none (any params are taken). */
      params: string[] | null;
    }
  | {
      name: string;
      kind: "workflow";
      /** In the order written, each with its upstream steps in the order the flow writes them. */
      steps: Array<WorkflowStep & { upstreams: string[] }>;
      /** The flow lines as job.yaml writes them. */
      flow: readonly string[];
      /** The step whose output is the workflow's. */
      final: string;
    }
  | { name: string; error: string };

export function jobKind(job: JobDefinition): JobKind {
  if (job.workflow !== undefined) return "workflow";
  if (job.split) return "split";
  return job.warm ? "warm" : "script";
}

export function jobListing(entry: JobCatalogEntry): JobListing {
  if ("error" in entry) return { name: entry.name, error: entry.error };
  const { job } = entry;
  if (job.workflow !== undefined) {
    const { steps, upstreams, final } = job.workflow;
    return {
      name: job.name,
      kind: "workflow",
      steps: steps.map((step) => ({ ...step, upstreams: upstreams[step.name] ?? [] })),
      flow: job.workflowFlow ?? [],
      final,
    };
  }
  return {
    name: job.name,
    kind: jobKind(job) as Exclude<JobKind, "workflow">,
    split: job.split,
    warm: job.warm,
    timeoutMs: job.timeoutMs,
    maxTries: job.maxTries,
    params: paramNames(job),
  };
}

function paramNames(job: JobDefinition): string[] | null {
  return job.paramsSchema instanceof z.ZodObject ? Object.keys(job.paramsSchema.shape) : null;
}
