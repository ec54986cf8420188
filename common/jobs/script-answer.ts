import { z } from "zod";
import { formatZodIssues } from "../model/zod-issues.js";
import { mayBeProgressLine } from "./launch/job-process.mjs";

/*
 * What a job script may print on stdout, one JSON object per line, one-shot or warm (a warm line
 * also carries its `requestId`, checked apart):
 *   - its answer (the last non-empty line of a one-shot run): `{"output": ...}`, `{"children": [...]}`,
 *     `{"outputBase64": ...}` (a warm inline request's answer; its children give `inputBase64` for `input`), or `{"error": "why"}` with an optional `"retry": false` (the task then fails at once, no retry);
 *   - progress before its answer: `{"progress": 0.4, "message": "page 4 of 10"}`.
 * Any other line is chatter and ignored.
 */

/** A progress message longer than this is cut (the record and every event carry it). */
export const PROGRESS_MESSAGE_MAX_CHARS = 500;
/** An error answer longer than this is cut: the task's error also carries the stderr tail. */
export const ANSWER_ERROR_MAX_CHARS = 4000;

/** The answer line of a job that worked. */
const AnswerSchema = z
  .object({
    output: z.string().min(1).optional(),
    children: z
      .array(
        z
          .object({
            input: z.string().min(1).optional(),
            // The part's bytes themselves, answering an inline request (job.yaml `inline: true`).
            inputBase64: z.base64({ error: "must be the part's bytes in base64" }).optional(),
            params: z.record(z.string(), z.unknown()).optional(),
          })
          .refine(
            (c) => (c.input === undefined) !== (c.inputBase64 === undefined),
            "a child needs exactly one of input (a file) or inputBase64 (its bytes, answering an inline request)",
          ),
      )
      .min(1, "is empty: a job that does not split answers an output")
      .optional(),
    // The output's bytes themselves, answering an inline request (job.yaml `inline: true`).
    outputBase64: z.base64({ error: "must be the output's bytes in base64" }).optional(),
  })
  .refine(
    (a) => [a.output, a.children, a.outputBase64].filter((given) => given !== undefined).length === 1,
    "the answer needs exactly one of output or children (or outputBase64, answering an inline request)",
  );

export type Answer = z.infer<typeof AnswerSchema>;

/** The answer line of a job that failed and says why; `retry: false` ends the task in error at once. */
const ErrorAnswerSchema = z.object({
  error: z.string({ error: "must be a string" }).transform((why) => why.slice(0, ANSWER_ERROR_MAX_CHARS)),
  retry: z.boolean({ error: "must be true or false" }).optional(),
});

/** A failure the script answered: `retry` false when it asked for no retry. */
export interface ErrorAnswer {
  error: string;
  retry: boolean;
}

/**
 * A progress line. The fraction is clamped into 0..1 (a script counting 11 of 10 pages is still
 * reporting, not broken); a message is cut at PROGRESS_MESSAGE_MAX_CHARS.
 */
const ProgressSchema = z.object({
  progress: z
    .number()
    .refine(Number.isFinite)
    .transform((p) => Math.min(1, Math.max(0, p))),
  message: z
    .string()
    .nullish()
    .transform((m) => (m === undefined || m === null ? null : m.slice(0, PROGRESS_MESSAGE_MAX_CHARS))),
});

export interface ProgressReport {
  progress: number;
  message: string | null;
}

/** `json` as a valid answer (output or children), an error answer, or what is wrong with it. */
export function checkAnswer(json: unknown): Answer | ErrorAnswer | string {
  if (typeof json === "object" && json !== null && !Array.isArray(json) && "error" in json) {
    const failed = ErrorAnswerSchema.safeParse(json);
    if (!failed.success) return formatZodIssues(failed.error.issues);
    return { error: failed.data.error, retry: failed.data.retry ?? true };
  }
  const result = AnswerSchema.safeParse(json);
  return result.success ? result.data : formatZodIssues(result.error.issues);
}

/** Whether a checked answer is the script's own failure. */
export function isErrorAnswer(answer: Answer | ErrorAnswer): answer is ErrorAnswer {
  return "error" in answer;
}

/** An answer line parsed and checked, or why there is none. */
export function parseAnswerLine(line: string): Answer | ErrorAnswer | string {
  if (line === "") return "stdout is empty";
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return `last line is not JSON: ${line.slice(0, 200)}`;
  }
  return checkAnswer(json);
}

/**
 * `json` (a parsed stdout line) as a progress report, or null when it is not one: no number in
 * `progress`, or it also holds an answer's key (an answer is never taken for progress).
 */
export function progressOf(json: unknown): ProgressReport | null {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return null;
  if ("output" in json || "children" in json || "outputBase64" in json || "error" in json) return null;
  const result = ProgressSchema.safeParse(json);
  return result.success ? result.data : null;
}

/** A raw stdout line as a progress report, or null. */
export function parseProgressLine(line: string): ProgressReport | null {
  if (!mayBeProgressLine(line)) return null;
  try {
    return progressOf(JSON.parse(line));
  } catch {
    return null;
  }
}
