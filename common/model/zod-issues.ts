import type { z } from "zod";
import { docqError, ERROR_CODE } from "./errors.js";

/** One line per issue, `path: message`, for error messages that must name the offending key. */
export function formatZodIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues.map((i) => (i.path.length > 0 ? `${i.path.map(String).join(".")}: ${i.message}` : i.message)).join("; ");
}

/** BAD_REQUEST for input that failed a schema: every issue in the message, the first one's field named. */
export function badRequestOf(issues: readonly z.core.$ZodIssue[]): Error {
  const first = issues[0]?.path[0];
  return docqError(ERROR_CODE.BadRequest, formatZodIssues(issues), first === undefined ? {} : { field: String(first) });
}
