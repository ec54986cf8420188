import type { JobRegistry } from "../jobs/job-registry.js";
import { ERROR_CODE, isDocqError } from "../model/errors.js";
import type { WorkflowDefinition } from "./workflow-definition.js";

/**
 * The queue's `workflowOf` over a job registry: a workflow job's checked definition, null for a
 * script job. A job this registry does not know is null too (a plain task, run or refused by the
 * worker as before: the controller has already refused it for an API submission); a broken
 * workflow (a cycle, an unknown step) is refused with the registry's message.
 */
export function workflowLookup(registry: Pick<JobRegistry, "workflowOf">): (job: string) => Promise<WorkflowDefinition | null> {
  return async (job) => {
    try {
      return await registry.workflowOf(job);
    } catch (err) {
      if (isDocqError(err, ERROR_CODE.JobNotFound)) return null;
      throw err;
    }
  };
}
