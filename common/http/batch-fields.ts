import { z } from "zod";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { MAX_SUBMIT_MANY } from "../queue/protocol.js";
import { parseCreateTaskFields, type CreateTaskFields } from "./task-submission.js";

/**
 * The fields one entry of a batch's `tasks` array may set for its file; the others (user) are the
 * whole batch's. Values are checked as a single task's fields are, once merged over the shared ones.
 */
const OVERRIDABLE = ["job", "priority", "name", "params", "maxTries", "callbackUrl", "runAt", "delayMs"] as const;

const TaskOverrideSchema = z.strictObject(
  Object.fromEntries(OVERRIDABLE.map((key) => [key, z.unknown().optional()])) as Record<
    (typeof OVERRIDABLE)[number],
    z.ZodOptional<z.ZodUnknown>
  >,
);
export type TaskOverride = z.infer<typeof TaskOverrideSchema>;

const OverridesSchema = z
  .array(TaskOverrideSchema, { error: "must be a JSON array, one object per file in order" })
  .max(MAX_SUBMIT_MANY, `holds more than ${MAX_SUBMIT_MANY} entries, the most files a batch holds`);

/** The `tasks` field: a JSON array of per-file overrides. BAD_REQUEST names the entry and key (`tasks[3].priority`). */
export function parseBatchOverrides(text: string): TaskOverride[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw docqError(ERROR_CODE.BadRequest, "tasks: is not valid JSON (a JSON array, one object per file in order)", { field: "tasks" });
  }
  const result = OverridesSchema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const [index, key] = issue.path;
  const unknownKey = issue.code === "unrecognized_keys" ? issue.keys[0] : undefined;
  const name = key ?? unknownKey;
  const field = index === undefined ? "tasks" : name === undefined ? `tasks[${String(index)}]` : `tasks[${String(index)}].${String(name)}`;
  const message =
    unknownKey !== undefined
      ? unknownKey === "user"
        ? "the user is the whole batch's: give it once, as a field of the form"
        : `is not a field a task sets (${OVERRIDABLE.join(", ")})`
      : issue.code === "invalid_type" && index !== undefined
        ? "must be a JSON object"
        : issue.message;
  throw docqError(ERROR_CODE.BadRequest, `${field}: ${message}`, { field });
}

/**
 * One task's fields: the request's (query, then the form's shared fields) with its own entry of
 * `tasks` over them, checked as a single task's are. The refusal's field is the field's own name;
 * the caller names the position.
 */
export function taskFieldsOf(query: Record<string, unknown>, shared: Record<string, string>, override: TaskOverride): CreateTaskFields {
  const { tasks: _tasks, ...form } = shared;
  const own = Object.fromEntries(Object.entries(override).filter(([, value]) => value !== undefined));
  return parseCreateTaskFields({ ...query, ...form, ...own });
}
