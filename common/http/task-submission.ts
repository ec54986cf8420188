import { finished, Transform, type Readable, type TransformCallback } from "node:stream";
import busboy from "busboy";
import { z } from "zod";
import type { BlobStore } from "../blobs/blob-store.js";
import { headBytes, readHead } from "./body-head.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { badRequestOf } from "../model/zod-issues.js";
import { CallbackUrlSchema } from "../webhooks/callback-url.js";
import { JOB_NAME_PATTERN, MAX_PRIORITY, MIN_PRIORITY, TASK_ID_PATTERN, TASK_STATUSES } from "../model/task-model.js";

/** Query strings and form fields arrive as strings; numbers are converted here, once. */
const IntField = (min: number, max: number) => {
  const message = `must be an integer ${min}..${max}`;
  return z
    .unknown()
    .transform((raw, ctx): number => {
      const value = typeof raw === "string" && /^\s*[+-]?\d+\s*$/.test(raw) ? Number(raw) : raw;
      if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
        ctx.addIssue({ code: "custom", message });
        return z.NEVER;
      }
      return value;
    })
    .meta({ type: "integer", minimum: min, maximum: max });
};

/**
 * Keys that JavaScript treats as an object's prototype chain: JSON.parse keeps `__proto__` as a
 * plain key, but the first copy by assignment (a schema's parse, a merge) turns it into the
 * object's prototype and drops it, and `constructor.prototype` is the other way to reach it.
 */
const FORBIDDEN_KEYS: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);

/** The path of the first forbidden key in a JSON value, at any depth; null when there is none. Iterative: the depth is the client's. */
function forbiddenKeyPath(value: unknown): string | null {
  const stack: Array<[value: unknown, at: string]> = [[value, "params"]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [node, at] = next;
    if (typeof node !== "object" || node === null) continue;
    if (Array.isArray(node)) {
      node.forEach((item, i) => stack.push([item, `${at}[${i}]`]));
      continue;
    }
    for (const key of Object.keys(node)) {
      if (FORBIDDEN_KEYS.has(key)) return `${at}.${key}`;
      stack.push([(node as Record<string, unknown>)[key], `${at}.${key}`]);
    }
  }
  return null;
}

/** A JSON object, given as an object (in-cluster callers) or as JSON text (query strings, forms). */
const ParamsField = z
  .unknown()
  .transform((raw, ctx): Record<string, unknown> => {
    let value = raw;
    if (typeof raw === "string") {
      try {
        value = JSON.parse(raw);
      } catch {
        ctx.addIssue({ code: "custom", message: "is not valid JSON" });
        return z.NEVER;
      }
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      ctx.addIssue({ code: "custom", message: "must be a JSON object" });
      return z.NEVER;
    }
    const forbidden = forbiddenKeyPath(value);
    if (forbidden !== null) {
      ctx.addIssue({
        code: "custom",
        message: `must not hold the key "${forbidden.slice(forbidden.lastIndexOf(".") + 1)}" (at ${forbidden}): __proto__, constructor and prototype are refused`,
      });
      return z.NEVER;
    }
    return value as Record<string, unknown>;
  })
  .meta({ type: "string", description: "a JSON object (the job's params)", examples: ["{}"] });

/** The furthest ahead a task may be delayed: a year. */
export const MAX_DELAY_MS = 365 * 24 * 3_600_000;

/** The latest moment a JavaScript Date holds. */
const MAX_DATE_MS = 8.64e15;

/** A moment: ms since the epoch (a number, or digits), or ISO 8601 text with a date; answered as ms since the epoch. */
export const RunAtField = z
  .unknown()
  .transform((raw, ctx): number => {
    const value = typeof raw === "string" && /^\s*\d+\s*$/.test(raw) ? Number(raw) : raw;
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 && value <= MAX_DATE_MS) return value;
    if (typeof value === "string" && /^\d{4}-\d{2}-\d{2}/.test(value.trim())) {
      const ms = Date.parse(value.trim());
      if (!Number.isNaN(ms)) return ms;
    }
    ctx.addIssue({ code: "custom", message: "must be a moment: ISO 8601 (2026-05-01T09:00:00Z) or ms since the epoch" });
    return z.NEVER;
  })
  .meta({ type: "string", description: "ISO 8601 (2026-05-01T09:00:00Z) or ms since the epoch" });

export const CreateTaskFieldsSchema = z.object({
  job: z
    .string({ error: "is required: the name of a job in scripts-job/" })
    .regex(JOB_NAME_PATTERN, `must match ${String(JOB_NAME_PATTERN)}`),
  priority: IntField(MIN_PRIORITY, MAX_PRIORITY).default(50),
  name: z.string().max(500, "is longer than 500 characters").default(""),
  user: z.string().max(200, "is longer than 200 characters").default("anonymous"),
  params: ParamsField.default({}),
  maxTries: IntField(1, 1000).optional(),
  callbackUrl: CallbackUrlSchema.optional(),
  runAt: RunAtField.optional(),
  delayMs: IntField(0, MAX_DELAY_MS).optional(),
});
export type CreateTaskFields = z.infer<typeof CreateTaskFieldsSchema>;

/** BAD_REQUEST listing the issues, its field the first bad one. */
/** Validates the fields of a create request; BAD_REQUEST names the first bad field. */
export function parseCreateTaskFields(raw: Record<string, unknown>): CreateTaskFields {
  const result = CreateTaskFieldsSchema.safeParse(raw);
  if (result.success) return result.data;
  throw badRequestOf(result.error.issues);
}

/**
 * When a task may first run (ms since the epoch), from its `runAt` or `delayMs`; undefined: at once.
 * A runAt in the past runs at once; both given, or more than a year ahead, is refused naming the field.
 */
export function availableAtOf(fields: { runAt?: number | undefined; delayMs?: number | undefined }, now: number): number | undefined {
  const { runAt, delayMs } = fields;
  if (runAt !== undefined && delayMs !== undefined) {
    throw docqError(ERROR_CODE.BadRequest, "runAt and delayMs: give one of them, not both", { field: "delayMs" });
  }
  const at = runAt ?? (delayMs === undefined ? undefined : now + delayMs);
  if (at === undefined || at <= now) return undefined;
  if (at - now > MAX_DELAY_MS) {
    throw docqError(ERROR_CODE.BadRequest, `runAt: ${new Date(at).toISOString()} is more than a year ahead`, { field: "runAt" });
  }
  return at;
}

/** Over HTTP a field is text given once: the query parser (qs) makes `f[]=x`, `f=a&f=b` and `f[k]=v` arrays and objects. */
const OnceAsText = z.string({ error: "must be given once, as text (not repeated, not f[]= or f[key]=)" }).optional();

const HttpCreateFieldsSchema = z.object(
  Object.fromEntries(Object.keys(CreateTaskFieldsSchema.shape).map((key) => [key, OnceAsText])) as Record<
    keyof CreateTaskFields,
    typeof OnceAsText
  >,
);

/**
 * The fields of a create request made over HTTP: the query string's, overridden by the form's.
 * Each must be text, or it would be coerced (`priority[]=7` is the number 7 to Number()) or dropped.
 */
export function parseCreateTaskRequest(query: Record<string, unknown>, form: Record<string, string> = {}): CreateTaskFields {
  checkQueryText(query);
  return parseCreateTaskFields({ ...query, ...form });
}

function checkQueryText(query: Record<string, unknown>): void {
  const text = HttpCreateFieldsSchema.safeParse(query);
  if (!text.success) throw badRequestOf(text.error.issues);
}

const SharedFieldsSchema = CreateTaskFieldsSchema.partial({ job: true });

/**
 * The fields a batch's tasks share when its `tasks` field gives each its own entry: checked as a
 * create request's, except that `job` may be left to the entries.
 */
export function checkSharedTaskFields(query: Record<string, unknown>, form: Record<string, string>): void {
  checkQueryText(query);
  const result = SharedFieldsSchema.safeParse({ ...query, ...form });
  if (!result.success) throw badRequestOf(result.error.issues);
}

const LIMIT_MESSAGE = "must be an integer 1..1000";
/** A list filter: text given once (an empty one is dropped before, meaning no filter, as it always has). */
const FilterText = z.string({ error: "must be given once, as text (not repeated, not f[]= or f[key]=)" });

/**
 * The query of `GET /api/tasks`: every filter is an exact match on an indexed field (name too: a
 * prefix would read every task whose name starts so before the newest could be answered). A value
 * that no task can hold (a status not in the list, a malformed job or task id) is a 400, not an empty page.
 */
export const ListTasksQuerySchema = z.object({
  status: z.enum(TASK_STATUSES, { error: `must be one of ${TASK_STATUSES.join(", ")}` }).optional(),
  job: FilterText.regex(JOB_NAME_PATTERN, `must be a job name, matching ${String(JOB_NAME_PATTERN)}`).optional(),
  user: FilterText.max(200, "is longer than 200 characters").optional(),
  name: FilterText.max(500, "is longer than 500 characters").meta({ description: "the task's name, exactly" }).optional(),
  parentId: FilterText.regex(TASK_ID_PATTERN, "is not a task id (<site>-<ulid>)")
    .meta({ description: "the parts of this split task or the steps of this workflow" })
    .optional(),
  cursor: FilterText.max(200, "is longer than 200 characters").meta({ description: "a nextCursor from an earlier page" }).optional(),
  limit: z
    .string({ error: LIMIT_MESSAGE })
    .regex(/^\d+$/, LIMIT_MESSAGE)
    .meta({ description: "tasks per page, 1..1000 (default 100)" })
    .transform(Number)
    .pipe(z.number().min(1, LIMIT_MESSAGE).max(1000, LIMIT_MESSAGE))
    .optional(),
});
export type ListTasksQuery = z.infer<typeof ListTasksQuerySchema>;

/** The query of `GET /api/tasks`, checked: BAD_REQUEST names the first bad field. Only the filters that are set are answered. */
export function parseListTasksQuery(raw: Record<string, unknown>): ListTasksQuery {
  const given = Object.fromEntries(Object.entries(raw).filter(([key, value]) => value !== "" || key === "limit"));
  const result = ListTasksQuerySchema.safeParse(given);
  if (!result.success) throw badRequestOf(result.error.issues);
  return Object.fromEntries(Object.entries(result.data).filter(([, value]) => value !== undefined)) as ListTasksQuery;
}

export function assertTaskId(id: unknown): string {
  if (typeof id !== "string" || !TASK_ID_PATTERN.test(id)) {
    throw docqError(ERROR_CODE.BadRequest, `malformed task id ${JSON.stringify(id)}: expected <site>-<ulid>`, { field: "id" });
  }
  return id;
}

export interface UploadRequest {
  body: Readable;
  contentType: string | undefined;
  contentLength: string | undefined;
  maxBytes: number;
}

function tooLarge(maxBytes: number): Error {
  return docqError(ERROR_CODE.PayloadTooLarge, `body is larger than the limit of ${maxBytes} bytes (maxBodyBytes)`, { field: "body" });
}

function missingBody(): Error {
  return docqError(ERROR_CODE.BadRequest, 'missing body: send the document as the request body (or as the form field "file")', {
    field: "body",
  });
}

/** Passes bytes through, failing the stream as soon as it exceeds the limit. */
class ByteLimit extends Transform {
  bytes = 0;
  constructor(private readonly maxBytes: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) done(tooLarge(this.maxBytes));
    else done(null, chunk);
  }
}

export function isMultipart(contentType: string | undefined): boolean {
  return contentType !== undefined && /^multipart\/form-data\b/i.test(contentType);
}

/**
 * Calls `onGone` when `body` stops without ending: a client gone, a malformed chunk, a Content-Length
 * that lies. Node emits the request's 'error' only to the listeners it has at that moment, and a
 * body sent in the same packet as the headers fails before the action has started: finished()
 * also reports a stream that failed before it was asked.
 */
function onBodyGone(body: Readable, onGone: (err: Error) => void): void {
  finished(body, { writable: false }, (err) => {
    if (err) onGone(err);
  });
}

/** A raw body up to this size is held in memory and written with the blob store's putNew. */
const SMALL_BODY_BYTES = 1024 * 1024;

/**
 * Stores a request's raw body under `key`. Refuses a declared length over the limit before
 * reading anything, and an undeclared one as soon as it passes the limit.
 */
export async function storeRawBody(req: UploadRequest, blobs: BlobStore, key: string): Promise<number> {
  const declared = req.contentLength === undefined ? null : Number(req.contentLength);
  if (declared !== null && declared > req.maxBytes) throw tooLarge(req.maxBytes);
  if (declared === 0) throw missingBody();
  try {
    // A small body (most documents) is read whole and written at once: no temp file, no rename. One
    // declared larger streams from its first byte, a partial upload to the temp folder as ever.
    const head =
      declared !== null && declared > SMALL_BODY_BYTES
        ? { chunks: [], size: 0, ended: false }
        : await readHead(req.body, Math.min(req.maxBytes, SMALL_BODY_BYTES));
    if (head.ended) {
      if (head.size === 0) throw missingBody();
      return (await blobs.putNew(key, headBytes(head))).size;
    }
    const limit = new ByteLimit(req.maxBytes);
    // With a small limit the error can come before the store reads: it sees it then, it must not crash us now.
    limit.on("error", () => undefined);
    // pipe() alone never ends `limit` for a body that stops without 'end': the store would wait forever.
    onBodyGone(req.body, (err) => limit.destroy(err));
    for (const chunk of head.chunks) limit.write(chunk);
    const { size } = await blobs.put(key, req.body.pipe(limit));
    return size;
  } catch (err) {
    if (isDocqError(err)) throw err;
    throw docqError(ERROR_CODE.BadRequest, `upload interrupted: ${errorMessage(err)}`, { field: "body", cause: err });
  }
}

/** The most fields a form may hold besides its file; more is refused, not cut. */
export const MAX_FORM_FIELDS = 100;
/** The largest form field accepted (params is the big one); a longer one is refused, not truncated. */
export const MAX_FORM_FIELD_BYTES = 1024 * 1024;

function badFormField(name: string, problem: string): Error {
  return docqError(ERROR_CODE.BadRequest, `${name}: ${problem}`, { field: name });
}

/**
 * Reads a multipart form: the document from the field `file` stored under `key`, the other
 * fields returned. Fields may come before or after the file. Whatever busboy would cut or drop
 * silently (a field over MAX_FORM_FIELD_BYTES, more than MAX_FORM_FIELDS fields, a second file,
 * a file in another field, a field given twice) is refused with BAD_REQUEST naming it; on any
 * failure nothing is left under `key`.
 */
export async function storeMultipartBody(
  req: UploadRequest,
  blobs: BlobStore,
  key: string,
): Promise<{ fields: Record<string, string>; size: number }> {
  const declared = req.contentLength === undefined ? null : Number(req.contentLength);
  if (declared !== null && declared > req.maxBytes + 64 * 1024) throw tooLarge(req.maxBytes);
  const fields: Record<string, string> = {};
  let stored: Promise<number> | null = null;
  let form: busboy.Busboy;
  try {
    form = busboy({
      headers: { "content-type": req.contentType ?? "" },
      // One byte over each limit, so that a value of exactly the limit is whole and a longer one is seen as cut.
      limits: { files: 1, fileSize: req.maxBytes + 1, fields: MAX_FORM_FIELDS, fieldSize: MAX_FORM_FIELD_BYTES + 1 },
    });
  } catch (err) {
    throw docqError(ERROR_CODE.BadRequest, `malformed multipart form: ${errorMessage(err)}`, { field: "body", cause: err });
  }
  const parsed = new Promise<void>((resolve, reject) => {
    let failed = false;
    /** Refuses the form: stops reading it, and the part being stored fails too, so the store keeps nothing. */
    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      reject(err);
      // Read no more of the request (this pauses it)...
      req.body.unpipe(form);
      // ...and stop the parser, not from inside its own event: busboy goes on using its state once the listener returns.
      process.nextTick(() => {
        form.destroy(err instanceof Error ? err : new Error(String(err)));
      });
    };
    form.on("field", (name, value, info) => {
      if (info.nameTruncated) fail(badFormField(name, "the name of this form field is too long"));
      else if (info.valueTruncated) fail(badFormField(name, `is longer than ${MAX_FORM_FIELD_BYTES} bytes, the limit of a form field`));
      else if (Object.hasOwn(fields, name)) fail(badFormField(name, "is given twice in the form"));
      else fields[name] = value;
    });
    form.on("fieldsLimit", () =>
      fail(docqError(ERROR_CODE.BadRequest, `the form has more than ${MAX_FORM_FIELDS} fields besides the file`, { field: "body" })),
    );
    form.on("filesLimit", () =>
      fail(badFormField("file", "the form holds more than one file: send the document alone, in the field file")),
    );
    form.on("file", (name, file) => {
      // busboy can fail the part (a form cut short) before the store reads it.
      file.on("error", () => undefined);
      if (name !== "file") {
        file.resume();
        fail(badFormField(name, "is a file: the document goes in the field file, and no other field may be a file"));
        return;
      }
      // Past the limit busboy stops passing data and ends the part; the form is refused at once.
      let truncated = false;
      file.on("limit", () => {
        truncated = true;
        fail(tooLarge(req.maxBytes));
      });
      stored = blobs.put(key, file).then(({ size }) => {
        if (truncated) throw tooLarge(req.maxBytes);
        return size;
      });
      // Awaited (and its error reported) below; this only keeps a failure before then from being unhandled.
      stored.catch(() => undefined);
    });
    form.on("close", resolve);
    form.on("error", (err: unknown) =>
      fail(docqError(ERROR_CODE.BadRequest, `malformed multipart form: ${errorMessage(err)}`, { field: "body", cause: err })),
    );
    // The client went away, or the request broke off: stop the parser so the stored part ends too.
    onBodyGone(req.body, fail);
  });
  req.body.pipe(form);
  try {
    await parsed;
    if (stored === null) throw missingBody();
    const size = await (stored as Promise<number>);
    if (size === 0) throw missingBody();
    return { fields, size };
  } catch (err) {
    // Let a store still writing finish (or fail) first, so the delete leaves nothing behind.
    await (stored as Promise<number> | null)?.catch(() => undefined);
    // The upload's own error is the one the client must see; a blob left behind is the blob GC's to remove.
    await blobs.delete(key).catch(() => undefined);
    if (isDocqError(err)) throw err;
    throw docqError(ERROR_CODE.BadRequest, `upload interrupted: ${errorMessage(err)}`, { field: "body", cause: err });
  }
}
