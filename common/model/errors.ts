/** Error codes shared by every module, so callers (and the REST layer) can map them without string matching. */
export const ERROR_CODE = Object.freeze({
  BadRequest: "BAD_REQUEST",
  TaskNotFound: "TASK_NOT_FOUND",
  TaskExists: "TASK_EXISTS",
  TaskNotInState: "TASK_NOT_IN_STATE",
  LeaseLost: "LEASE_LOST",
  JobNotFound: "JOB_NOT_FOUND",
  BlobNotFound: "BLOB_NOT_FOUND",
  PayloadTooLarge: "PAYLOAD_TOO_LARGE",
  StoreUnavailable: "STORE_UNAVAILABLE",
  /** The site's queuer cannot be reached now (restarting, or the site's NATS is down): retry shortly. */
  QueueUnavailable: "QUEUE_UNAVAILABLE",
  /** No API key, or one docq does not know (revoked, mistyped). */
  Unauthorized: "UNAUTHORIZED",
  /** A known key without the right to do this. */
  Forbidden: "FORBIDDEN",
  /** A key's limit is reached: retry later (details.retryAfter, in seconds). */
  QuotaExceeded: "QUOTA_EXCEEDED",
  KeyNotFound: "KEY_NOT_FOUND",
  ScheduleNotFound: "SCHEDULE_NOT_FOUND",
  Config: "CONFIG",
} as const);
export type ErrorCode = (typeof ERROR_CODE)[keyof typeof ERROR_CODE];

const HTTP_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  TASK_NOT_FOUND: 404,
  TASK_EXISTS: 409,
  TASK_NOT_IN_STATE: 409,
  LEASE_LOST: 409,
  JOB_NOT_FOUND: 400,
  BLOB_NOT_FOUND: 404,
  PAYLOAD_TOO_LARGE: 413,
  STORE_UNAVAILABLE: 503,
  QUEUE_UNAVAILABLE: 503,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  QUOTA_EXCEEDED: 429,
  KEY_NOT_FOUND: 404,
  SCHEDULE_NOT_FOUND: 404,
  CONFIG: 500,
};

export class DocqError extends Error {
  readonly code: ErrorCode;
  readonly field: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message: string, opts: { field?: string; cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "DocqError";
    this.code = code;
    this.field = opts.field;
    this.details = opts.details;
  }
  /** What Moleculer carries across a broker hop besides name, message and code. */
  get data(): Record<string, unknown> {
    return { ...this.details, ...(this.field === undefined ? {} : { field: this.field }) };
  }
  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }
}

export function docqError(
  code: ErrorCode,
  message: string,
  opts?: { field?: string; cause?: unknown; details?: Record<string, unknown> },
): DocqError {
  return new DocqError(code, message, opts);
}

export function isDocqError(err: unknown, code?: ErrorCode): err is DocqError {
  return err instanceof DocqError && (code === undefined || err.code === code);
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
