import { DocqError, ERROR_CODE, type ErrorCode } from "../model/errors.js";
import { isTransient } from "../model/transient-retry.js";

export interface HttpErrorBody {
  error: string;
  field?: string;
  [detail: string]: unknown;
}

const KNOWN_CODES = new Set<string>(Object.values(ERROR_CODE));
const STATUS_OF: Record<ErrorCode, number> = Object.fromEntries(
  Object.values(ERROR_CODE).map((code) => [code, new DocqError(code, "").httpStatus]),
) as Record<ErrorCode, number>;

function record(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

/**
 * The HTTP answer for an error thrown anywhere behind the API. A DocqError keeps its code across
 * a broker hop only as fields (Moleculer rebuilds errors from name, message, code and data), so
 * both the instance and its serialized shape are recognised. Anything unknown is a 500.
 */
export function httpErrorOf(err: unknown): { status: number; body: HttpErrorBody; internal: boolean } {
  const e = record(err);
  const message = typeof e.message === "string" ? e.message : String(err);
  const code = e.code;
  if (typeof code === "string" && KNOWN_CODES.has(code)) {
    const data = { ...record(e.details), ...record(e.data) };
    const field = typeof e.field === "string" ? e.field : typeof data.field === "string" ? data.field : undefined;
    delete data.field;
    const status = STATUS_OF[code as ErrorCode];
    return {
      status,
      body: { ...data, error: message, ...(field === undefined ? {} : { field }) },
      internal: status >= 500 && status !== 503,
    };
  }
  // The queuer restarting or the broker reconnecting: the client may retry shortly.
  if (isTransient(err)) {
    return { status: 503, body: { error: `service unavailable, retry shortly: ${message}` }, internal: false };
  }
  // Moleculer's own client errors (route not found, validation, payload) carry a 4xx code.
  if (typeof code === "number" && code >= 400 && code < 500) {
    // The JSON body parser's refusals (bad JSON, over the size limit) keep its type: they concern the body.
    const aboutBody = typeof e.type === "string" && e.type.startsWith("entity.");
    return { status: code === 422 ? 400 : code, body: { error: message, ...(aboutBody ? { field: "body" } : {}) }, internal: false };
  }
  return { status: 500, body: { error: `internal error: ${message}` }, internal: true };
}

/**
 * How an error answer is logged: a client's mistake (4xx) at info, one line, no stack (it is the
 * client's to fix, and it is not rare); a 503 (the queuer restarting, a store reconnecting: the
 * client retries) at warn, one line; any other 5xx at error with its stack (a bug or an outage).
 */
export function httpErrorLogLevel(status: number): { level: "info" | "warn" | "error"; stack: boolean } {
  if (status < 500) return { level: "info", stack: false };
  if (status === 503) return { level: "warn", stack: false };
  return { level: "error", stack: true };
}
