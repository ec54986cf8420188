import { Transform, type Readable, type TransformCallback } from "node:stream";
import busboy from "busboy";
import { z } from "zod";
import type { BlobStore } from "./blob-store.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "./errors.js";
import { formatZodIssues } from "./job-registry.js";
import { JOB_NAME_PATTERN, MAX_PRIORITY, MIN_PRIORITY, TASK_ID_PATTERN } from "./task-model.js";

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
    });
};

/** A JSON object, given as an object (in-cluster callers) or as JSON text (query strings, forms). */
const ParamsField = z.unknown().transform((raw, ctx): Record<string, unknown> => {
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
  return value as Record<string, unknown>;
});

export const CreateTaskFieldsSchema = z.object({
  job: z.string({ error: "is required: the name of a job in scripts-job/" }).regex(JOB_NAME_PATTERN, `must match ${String(JOB_NAME_PATTERN)}`),
  priority: IntField(MIN_PRIORITY, MAX_PRIORITY).default(50),
  name: z.string().max(500, "is longer than 500 characters").default(""),
  user: z.string().max(200, "is longer than 200 characters").default("anonymous"),
  params: ParamsField.default({}),
  maxTries: IntField(1, 1000).optional(),
});
export type CreateTaskFields = z.infer<typeof CreateTaskFieldsSchema>;

/** Validates the fields of a create request; BAD_REQUEST names the first bad field. */
export function parseCreateTaskFields(raw: Record<string, unknown>): CreateTaskFields {
  const result = CreateTaskFieldsSchema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue?.path[0] === undefined ? undefined : String(issue.path[0]);
  throw docqError(ERROR_CODE.BadRequest, formatZodIssues(result.error.issues), field === undefined ? {} : { field });
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
  return docqError(ERROR_CODE.BadRequest, "missing body: send the document as the request body (or as the form field \"file\")", { field: "body" });
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
 * Stores a request's raw body under `key`. Refuses a declared length over the limit before
 * reading anything, and an undeclared one as soon as it passes the limit.
 */
export async function storeRawBody(req: UploadRequest, blobs: BlobStore, key: string): Promise<number> {
  const declared = req.contentLength === undefined ? null : Number(req.contentLength);
  if (declared !== null && declared > req.maxBytes) throw tooLarge(req.maxBytes);
  if (declared === 0) throw missingBody();
  const limit = new ByteLimit(req.maxBytes);
  // With a small limit the error can come before the store reads: it sees it then, it must not crash us now.
  limit.on("error", () => undefined);
  req.body.on("error", (err) => limit.destroy(err));
  try {
    const { size } = await blobs.put(key, req.body.pipe(limit));
    if (size === 0) {
      await blobs.delete(key);
      throw missingBody();
    }
    return size;
  } catch (err) {
    if (isDocqError(err)) throw err;
    throw docqError(ERROR_CODE.BadRequest, `upload interrupted: ${errorMessage(err)}`, { field: "body", cause: err });
  }
}

/**
 * Reads a multipart form: the document from the field `file` stored under `key`, the other
 * fields returned. Fields may come before or after the file.
 */
export async function storeMultipartBody(req: UploadRequest, blobs: BlobStore, key: string): Promise<{ fields: Record<string, string>; size: number }> {
  const declared = req.contentLength === undefined ? null : Number(req.contentLength);
  if (declared !== null && declared > req.maxBytes + 64 * 1024) throw tooLarge(req.maxBytes);
  const fields: Record<string, string> = {};
  let stored: Promise<number> | null = null;
  let form: busboy.Busboy;
  try {
    form = busboy({ headers: { "content-type": req.contentType ?? "" }, limits: { files: 1, fileSize: req.maxBytes + 1, fields: 100, fieldSize: 1024 * 1024 } });
  } catch (err) {
    throw docqError(ERROR_CODE.BadRequest, `malformed multipart form: ${errorMessage(err)}`, { field: "body", cause: err });
  }
  const parsed = new Promise<void>((resolve, reject) => {
    form.on("field", (name, value) => {
      fields[name] = value;
    });
    form.on("file", (name, file) => {
      if (name !== "file" || stored !== null) {
        file.resume();
        return;
      }
      // busboy can fail the part (a form cut short) before the store reads it.
      file.on("error", () => undefined);
      // Past the limit busboy stops passing data and ends the part: the store sees a short file,
      // refused below. (Destroying the part instead would leave busboy waiting for it forever.)
      let truncated = false;
      file.on("limit", () => {
        truncated = true;
      });
      stored = blobs.put(key, file).then(({ size }) => {
        if (truncated) throw tooLarge(req.maxBytes);
        return size;
      });
      stored.catch(() => undefined);
    });
    form.on("close", resolve);
    form.on("error", (err: unknown) => reject(docqError(ERROR_CODE.BadRequest, `malformed multipart form: ${errorMessage(err)}`, { field: "body", cause: err })));
    req.body.on("error", (err) => {
      // The client went away: stop the parser so the stored part ends too.
      form.destroy(err);
      reject(err);
    });
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
    await blobs.delete(key).catch(() => undefined);
    if (isDocqError(err)) throw err;
    throw docqError(ERROR_CODE.BadRequest, `upload interrupted: ${errorMessage(err)}`, { field: "body", cause: err });
  }
}
