import { z } from "zod";
import { JOB_NAME_PATTERN, MAX_PRIORITY, MIN_PRIORITY, ParamsSchema } from "../model/task-model.js";

/*
 * A workflow: a job made of jobs (job.yaml `workflow:`), as the registry hands it to the queue once
 * checked (no cycle, known jobs and steps, exactly one final step). The queue keeps a snapshot of it
 * in the workflow task's record, so editing job.yaml never changes a workflow already running.
 */

export const STEP_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export const WorkflowStepSchema = z.strictObject({
  name: z.string().regex(STEP_NAME_PATTERN),
  job: z.string().regex(JOB_NAME_PATTERN),
  priority: z.int().min(MIN_PRIORITY).max(MAX_PRIORITY).optional(),
  params: ParamsSchema.optional(),
  maxTries: z.int().min(1).optional(),
  timeoutMs: z.int().min(1).optional(),
});
export type WorkflowStep = z.infer<typeof WorkflowStepSchema>;

export const WorkflowDefinitionSchema = z.strictObject({
  /** In the order job.yaml writes them. */
  steps: z.array(WorkflowStepSchema).min(1),
  /** Per step, its upstream steps in the order the flow writes them; [] for a step that gets the document. */
  upstreams: z.record(z.string(), z.array(z.string())),
  /** The one step with no downstream: its output is the workflow's. */
  final: z.string(),
});
export type WorkflowDefinition = z.infer<typeof WorkflowDefinitionSchema>;
