import { Transform, finished, type TransformCallback } from "node:stream";
import busboy from "busboy";
import type { BlobStore } from "../blobs/blob-store.js";
import { dropTaskDocuments, type TaskDocumentsLog } from "../blobs/task-documents.js";
import { headBytes, readHead } from "./body-head.js";
import { docqError, DocqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { MAX_SUBMIT_MANY } from "../queue/protocol.js";
import { blobKeys } from "../queue/new-task.js";
import { parseBatchOverrides, taskFieldsOf, type TaskOverride } from "./batch-fields.js";
import {
  MAX_FORM_FIELD_BYTES,
  MAX_FORM_FIELDS,
  checkSharedTaskFields,
  CreateTaskFieldsSchema,
  parseCreateTaskRequest,
  type CreateTaskFields,
  type UploadRequest,
} from "./task-submission.js";

/**
 * `POST /api/tasks/batch`: a multipart form whose fields apply to every task (before the files,
 * they are checked before any document is stored; after, at the form's end), one `file` part per
 * task, and optionally a `tasks` field (a JSON array, one object per file in order) overriding
 * fields per task. Limits: at most MAX_BATCH_FILES files, and the documents
 * together at most `maxBytes` (maxBodyBytes, the limit of one document).
 */
export const MAX_BATCH_FILES = MAX_SUBMIT_MANY;

/** One stored document of a batch, in file order, with what `prepare` made of its fields. */
export interface BatchFile<T> {
  id: string;
  input: string;
  size: number;
  prepared: T;
}

export interface BatchFormOptions<T> {
  /** The request's query string: fields given there apply to every task, the form's override them. */
  query: Record<string, unknown>;
  /** A new task id for the next file (the documents are stored under it). */
  newId(): string;
  /**
   * Checks a task's fields before its document is stored (job, params, the key's rights) and makes
   * what the caller needs of them; a refusal names its field, renamed here to the task's position.
   * `givenUser`: the user named in the request, if any (a user key may only name itself).
   */
  prepare(fields: CreateTaskFields, index: number, givenUser: unknown): Promise<T> | T;
  /** Where a failure to drop a refused batch's documents is said (the blob GC retries them). */
  log: TaskDocumentsLog;
}

/** What applies to each file: the shared fields, or one entry of `tasks` per file over them. */
type BatchPlan = { fields: CreateTaskFields; overrides: null } | { fields: null; overrides: TaskOverride[] };

function tooLargeBatch(maxBytes: number, index: number): Error {
  return docqError(
    ERROR_CODE.PayloadTooLarge,
    `file[${index}]: the batch's documents together pass the limit of ${maxBytes} bytes (maxBodyBytes): send fewer files per request`,
    { field: `file[${index}]`, details: { maxBytes } },
  );
}

function tooManyFiles(index: number): Error {
  return docqError(
    ERROR_CODE.PayloadTooLarge,
    `file[${index}]: a batch holds at most ${MAX_BATCH_FILES} files: send the rest in another request`,
    {
      field: `file[${index}]`,
      details: { maxFiles: MAX_BATCH_FILES },
    },
  );
}

function badField(field: string, problem: string): Error {
  return docqError(ERROR_CODE.BadRequest, `${field}: ${problem}`, { field });
}

/** A refusal of the task at `index`, its field named by position: `tasks[3].priority` when the task's own entry set it. */
function atPosition(err: unknown, index: number, override: TaskOverride | undefined): unknown {
  if (!(err instanceof DocqError) || err.field === undefined || err.field.startsWith("file[") || err.field.startsWith("tasks")) return err;
  const own = override !== undefined && Object.hasOwn(override, err.field);
  const field = own ? `tasks[${index}].${err.field}` : err.field;
  // "priority: must be ..." becomes "tasks[3].priority: must be ..."; a message not led by its field gets it.
  const named = err.message.startsWith(`${err.field}:`) ? err.message.slice(err.field.length + 1).trimStart() : err.message;
  const message = own ? `${field}: ${named}` : `file[${index}]: ${err.message}`;
  return new DocqError(err.code, message, {
    field,
    cause: err,
    ...(err.details === undefined ? {} : { details: err.details }),
  });
}

/** A file's fields as checked when it arrived; null: they lacked a field that may still come (checked at the form's end). */
type Early<T> = { prepared: T } | null;

/**
 * A refusal for a field nobody has given (in the query, the shared fields or the task's entry):
 * a missing field, which a field later in the form may still give.
 */
function notGivenYet(
  err: unknown,
  query: Record<string, unknown>,
  shared: Record<string, string>,
  override: TaskOverride | undefined,
): boolean {
  if (!(err instanceof DocqError) || err.field === undefined) return false;
  // A task entry's refusal (tasks[3].job) is of a value given; so is one of the form itself (body, file[3]).
  const { field } = err;
  if (!Object.hasOwn(CreateTaskFieldsSchema.shape, field)) return false;
  const givenIn = (values: object | undefined): boolean =>
    values !== undefined && Object.hasOwn(values, field) && (values as Record<string, unknown>)[field] !== undefined;
  return !givenIn(query) && !givenIn(shared) && !givenIn(override);
}

/**
 * Documents of one batch stored at once. Each is read into a buffer of up to BUFFERED_BYTES (a
 * document no larger is then written whole with putNew; a larger one streams on with put) while its
 * store opens its file, so the parser goes on to the next part instead of waiting for each file's
 * open, write, rename in turn (sequential puts cost about 2 ms per document here, against a
 * 20,000 tasks/s goal). A part reserves BUFFERED_BYTES of BYTES_IN_FLIGHT before it is read, and
 * once read whole keeps only its size until stored: at most 32 MiB is held in memory, and a batch of
 * small documents is stored many at a time (the small ones share a commit per turn of the event
 * loop: 32 at a time cost a thousand 1 KB documents 31 commits, about 8 % of the request).
 */
const BUFFERED_BYTES = 1024 * 1024;
const BYTES_IN_FLIGHT = 32 * BUFFERED_BYTES;

/** A budget of bytes: a reservation waits, in order, until the bytes released make room for it. */
class ByteBudget {
  private free: number;
  private readonly waiting: Array<{ bytes: number; resolve: () => void }> = [];
  constructor(size: number) {
    this.free = size;
  }
  reserve(bytes: number): Promise<void> {
    if (this.waiting.length === 0 && this.free >= bytes) {
      this.free -= bytes;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ bytes, resolve }));
  }
  release(bytes: number): void {
    this.free += bytes;
    for (let next = this.waiting[0]; next !== undefined && this.free >= next.bytes; next = this.waiting[0]) {
      this.waiting.shift();
      this.free -= next.bytes;
      next.resolve();
    }
  }
}

/** Counts the bytes of every document of the batch, failing the one that passes the limit; buffers up to BUFFERED_BYTES. */
class BatchBytes extends Transform {
  constructor(
    private readonly budget: { used: number; max: number },
    private readonly index: number,
  ) {
    super({ highWaterMark: BUFFERED_BYTES });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.budget.used += chunk.length;
    if (this.budget.used > this.budget.max) done(tooLargeBatch(this.budget.max, this.index));
    else done(null, chunk);
  }
}

/**
 * Reads a batch form, storing each document under a new task id as it arrives. All or none: on any
 * failure (a bad field, a bad task entry, a file over the limits, a client gone) every document
 * stored for it is removed before this rejects, the error naming the position (`file[7]`,
 * `tasks[3].priority`).
 */
export async function storeBatchForm<T>(req: UploadRequest, blobs: BlobStore, opts: BatchFormOptions<T>): Promise<BatchFile<T>[]> {
  const declared = req.contentLength === undefined ? null : Number(req.contentLength);
  // A form's headers and fields take room besides the documents: MAX_BATCH_FILES parts of a few hundred bytes each.
  if (declared !== null && declared > req.maxBytes + 1024 * MAX_BATCH_FILES + MAX_FORM_FIELD_BYTES * 2) {
    throw docqError(
      ERROR_CODE.PayloadTooLarge,
      `body is larger than the limit of ${req.maxBytes} bytes (maxBodyBytes) for a batch's documents`,
      {
        field: "body",
      },
    );
  }
  let form: busboy.Busboy;
  try {
    form = busboy({
      headers: { "content-type": req.contentType ?? "" },
      limits: { files: MAX_BATCH_FILES, fileSize: req.maxBytes + 1, fields: MAX_FORM_FIELDS, fieldSize: MAX_FORM_FIELD_BYTES + 1 },
    });
  } catch (err) {
    throw docqError(ERROR_CODE.BadRequest, `malformed multipart form: ${errorMessage(err)}`, { field: "body", cause: err });
  }
  const shared: Record<string, string> = {};
  const files: Array<{ id: string; input: string; stored: Promise<{ size: number; early: Early<T> }> }> = [];
  const budget = { used: 0, max: req.maxBytes };
  const inFlight = new ByteBudget(BYTES_IN_FLIGHT);
  /** What applies to each file, made of the fields given so far; made again when another field comes. */
  let plan: BatchPlan | null = null;
  /** A field came after a file: the files before it were checked without it, and are checked again at the form's end. */
  let late = false;
  const planOf = (): BatchPlan => {
    if (plan !== null) return plan;
    const { tasks, ...rest } = shared;
    if (tasks === undefined) {
      plan = { fields: parseCreateTaskRequest(opts.query, rest), overrides: null };
    } else {
      checkSharedTaskFields(opts.query, rest);
      plan = { fields: null, overrides: parseBatchOverrides(tasks) };
    }
    return plan;
  };
  const givenUser = (): unknown => shared.user ?? opts.query.user;
  /** The task at `index`'s fields under `batch`, prepared; a refusal named by position. */
  const prepareAt = async (batch: BatchPlan, index: number): Promise<T> => {
    const override = batch.overrides?.[index];
    try {
      return await opts.prepare(batch.fields ?? taskFieldsOf(opts.query, shared, override ?? {}), index, givenUser());
    } catch (err) {
      throw atPosition(err, index, override);
    }
  };
  /**
   * A file's fields checked as it arrives, so a bad request stops before its documents are stored.
   * A refusal for a field not given yet (no job so far) waits for the form's end: a field after
   * the files may still give it. A field given can not be given again, so its refusal is final.
   */
  const earlyPrepare = async (index: number): Promise<Early<T>> => {
    let batch: BatchPlan;
    try {
      batch = planOf();
    } catch (err) {
      if (notGivenYet(err, opts.query, shared, undefined)) return null;
      throw err;
    }
    if (batch.overrides !== null && index >= batch.overrides.length) {
      throw badField(`file[${index}]`, `tasks has ${batch.overrides.length} entries, one per file, but this is file ${index + 1}`);
    }
    try {
      return { prepared: await prepareAt(batch, index) };
    } catch (err) {
      if (notGivenYet(err, opts.query, shared, batch.overrides?.[index])) return null;
      throw err;
    }
  };

  const parsed = new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      reject(err);
      req.body.unpipe(form);
      process.nextTick(() => form.destroy(err instanceof Error ? err : new Error(String(err))));
    };
    form.on("field", (name, value, info) => {
      if (info.nameTruncated) fail(badField(name, "the name of this form field is too long"));
      else if (info.valueTruncated) fail(badField(name, `is longer than ${MAX_FORM_FIELD_BYTES} bytes, the limit of a form field`));
      else if (Object.hasOwn(shared, name)) fail(badField(name, "is given twice in the form"));
      else {
        shared[name] = value;
        plan = null;
        if (files.length > 0) late = true;
      }
    });
    form.on("fieldsLimit", () =>
      fail(docqError(ERROR_CODE.BadRequest, `the form has more than ${MAX_FORM_FIELDS} fields besides the files`, { field: "body" })),
    );
    form.on("filesLimit", () => fail(tooManyFiles(MAX_BATCH_FILES)));
    form.on("file", (name, file) => {
      file.on("error", () => undefined);
      const index = files.length;
      if (name !== "file") {
        file.resume();
        fail(badField(name, "is a file: each document goes in a part named file"));
        return;
      }
      const id = opts.newId();
      const input = blobKeys.input(id);
      let truncated = false;
      file.on("limit", () => {
        truncated = true;
        fail(tooLargeBatch(req.maxBytes, index));
      });
      const stored = earlyPrepare(index).then(
        async (early) => {
          // Until there is room the part is not read: the parser waits, and the memory held stays bounded.
          await inFlight.reserve(BUFFERED_BYTES);
          let held = BUFFERED_BYTES;
          try {
            const head = await readHead(file, BUFFERED_BYTES);
            let size: number;
            if (head.ended) {
              // Read whole (no larger than BUFFERED_BYTES): it holds its own bytes until stored, no more.
              inFlight.release(held - head.size);
              held = head.size;
              budget.used += head.size;
              if (budget.used > budget.max || truncated) throw tooLargeBatch(req.maxBytes, index);
              if (head.size === 0) throw badField(`file[${index}]`, "is empty: each file is a task's document");
              // The task that refers to it is recorded only after every document is written (see putNew).
              ({ size } = await blobs.putNew(input, headBytes(head)));
            } else {
              const counted = new BatchBytes(budget, index);
              counted.on("error", () => undefined);
              for (const chunk of head.chunks) counted.write(chunk);
              finished(file, { writable: false }, (err) => {
                if (err) counted.destroy(err);
              });
              ({ size } = await blobs.put(input, file.pipe(counted)));
              if (truncated) throw tooLargeBatch(req.maxBytes, index);
            }
            return { size, early };
          } finally {
            inFlight.release(held);
          }
        },
        (err: unknown) => {
          file.resume();
          throw err;
        },
      );
      stored.catch(fail);
      files.push({ id, input, stored });
    });
    form.on("close", resolve);
    form.on("error", (err: unknown) =>
      fail(docqError(ERROR_CODE.BadRequest, `malformed multipart form: ${errorMessage(err)}`, { field: "body", cause: err })),
    );
    finished(req.body, { writable: false }, (err) => {
      if (err) fail(err);
    });
  });
  req.body.pipe(form);
  try {
    await parsed;
    if (files.length === 0) throw badField("file", "the batch holds no file: send one part named file per task");
    // Every field is in: a refusal now is final, named as given (priority, tasks, tasks[3].job).
    const batch = planOf();
    const { overrides } = batch;
    if (overrides !== null && overrides.length !== files.length) {
      throw badField("tasks", `has ${overrides.length} entries but the batch holds ${files.length} files: give one entry per file`);
    }
    const done = await Promise.all(files.map((f) => f.stored));
    const prepared = await Promise.all(done.map(({ early }, i) => (early !== null && !late ? early.prepared : prepareAt(batch, i))));
    return files.map((f, i) => ({ id: f.id, input: f.input, size: done[i]!.size, prepared: prepared[i]! }));
  } catch (err) {
    // Let every store still writing end first, so the drop leaves nothing behind.
    await Promise.allSettled(files.map((f) => f.stored));
    await dropTaskDocuments(
      blobs,
      files.map((f) => blobKeys.folder(f.id)),
      opts.log,
    );
    if (isDocqError(err)) throw err;
    throw docqError(ERROR_CODE.BadRequest, `upload interrupted: ${errorMessage(err)}`, { field: "body", cause: err });
  }
}
