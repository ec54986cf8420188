import { z } from "zod";
import type { JobRetention } from "../queue/retention.js";
import type { WorkflowStep } from "../workflows/workflow-definition.js";
import type { JobCatalogEntry, JobDefinition } from "./job-registry.js";

/*
 * GET /api/jobs: what a caller may submit to, with what its job.yaml says. A job the registry
 * refuses is listed with its reason, the same text a submission to it is refused with, so a broken
 * job.yaml is seen before it is used.
 */

/** A JSON Schema (draft 2020-12) of a job's params, as zod writes it from job.yaml's `params`. */
export type ParamsJsonSchema = Record<string, unknown>;

/** What a job is: a workflow (a job made of jobs), or a script that splits, stays warm, or runs once per task. */
export type JobKind = "workflow" | "split" | "warm" | "script";

export type JobListing =
  | {
      name: string;
      kind: Exclude<JobKind, "workflow">;
      /** job.yaml `description`, null when it has none. */
      description: string | null;
      split: boolean;
      warm: boolean;
      timeoutMs: number;
      maxTries: number | null;
      /** The params job.yaml declares (their names), null when it declares none (any params are taken). */
      params: string[] | null;
      /** The same params with their types and bounds as a JSON Schema (what a submission's params are checked with); null: any params. */
      paramsSchema: ParamsJsonSchema | null;
      /** A warm job's recycling limits (null: none, or not warm). */
      maxRequests: number | null;
      maxRssMb: number | null;
      /** Requests one warm process of the job holds at once (1 for a one-shot job). */
      concurrency: number;
      /** A warm job whose small documents travel inside its request and answer lines (job.yaml `inline: true`). */
      inline: boolean;
      /** This job's own retention windows per final status (ms, null = kept); a status left out keeps the site's. */
      retention: JobRetention;
    }
  | {
      name: string;
      kind: "workflow";
      description: string | null;
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
      description: job.description ?? null,
      steps: steps.map((step) => ({ ...step, upstreams: upstreams[step.name] ?? [] })),
      flow: job.workflowFlow ?? [],
      final,
    };
  }
  return {
    name: job.name,
    kind: jobKind(job) as Exclude<JobKind, "workflow">,
    description: job.description ?? null,
    split: job.split,
    warm: job.warm,
    timeoutMs: job.timeoutMs,
    maxTries: job.maxTries,
    params: paramNames(job),
    paramsSchema: job.paramsSchema === null ? null : paramsJsonSchema(job.paramsSchema),
    maxRequests: job.maxRequests,
    maxRssMb: job.maxRssMb,
    concurrency: job.concurrency,
    inline: job.inline === true,
    retention: job.retention ?? {},
  };
}

function paramNames(job: JobDefinition): string[] | null {
  return job.paramsSchema instanceof z.ZodObject ? Object.keys(job.paramsSchema.shape) : null;
}

/** The schema job.yaml's params were made into, as JSON Schema (without `$schema`: it is one part of an answer). */
function paramsJsonSchema(schema: z.ZodType): ParamsJsonSchema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", unrepresentable: "any" });
  return rest;
}
