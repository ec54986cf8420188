import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import { Client as MinioClient } from "minio";
import type { BlobEntry, BlobStat, BlobStore } from "./blob-store.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { BLOB_KEY_CHARS, blobNotFound, checkBlobKey, checkExpectedSize, quoteKey, sizeMismatch } from "./blob-key.js";

/*
 * The production BlobStore: objects in an S3-compatible bucket (AWS S3, MinIO, ...) through the
 * `minio` client, key `a/b` stored as `<prefix>/a/b`.
 *
 * Uploads do not go through minio's `putObject` for streams, for three reasons found in its 8.0.7
 * source: it reads a whole object of up to its part size (64 MiB by default) into memory before
 * sending it; for a stream of unknown size or one above the part size it first lists the bucket's
 * incomplete multipart uploads and *resumes* one found for the same key, so two writers of one key
 * could mix their parts (and S3 servers without that listing, like s3rver, fail); and when the body
 * fails midway it does not settle. Instead `put` drives the S3 protocol itself:
 *
 * - It reads the body into a buffer of at most `partSizeBytes`. A body that ends before the buffer
 *   is full (every ordinary document) is sent as one PUT with its MD5.
 * - A body larger than one part becomes a multipart upload: initiate, then each part is sent as
 *   soon as it is full (with its MD5), then complete. The next part is read only after the last one
 *   was acknowledged, so memory per upload stays about one part whatever the document's size, and
 *   the size does not need to be known in advance (no spooling to disk).
 * - S3 makes an object visible only when its PUT or its completion succeeds, so a failed body, a
 *   wrong size or a failed request leaves no blob and keeps the previous one; a started multipart
 *   upload is aborted (best effort: give the bucket a lifecycle rule that removes incomplete uploads
 *   after a day, for the processes that die mid-upload).
 *
 * Requests that are safe to repeat (reads, deletes, and every PUT or part, whose bytes are in
 * memory) are tried again twice on a transient failure; what still fails is wrapped in
 * STORE_UNAVAILABLE naming the operation, endpoint and bucket. Nothing is cached between
 * requests, so the store works again as soon as the endpoint is back.
 * There is no `localPath`: workers download the document.
 */

/** S3's limit on the parts of one multipart upload. */
const MAX_PARTS = 10_000;
/** S3's limits on one part and on one object. */
const MIN_PART_BYTES = 5 * 1024 * 1024;
const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024;
const MAX_OBJECT_BYTES = 5 * 1024 * 1024 * 1024 * 1024;
/** S3's limit on an object name, in bytes; keys are ASCII here. */
const MAX_OBJECT_NAME_LENGTH = 1024;
/** Keys per DeleteObjects request (S3's maximum) and per listing page. */
const DELETE_BATCH = 1000;
const CONTENT_TYPE = "application/octet-stream";
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS = 120_000;
const FREE_SOCKET_TIMEOUT_MS = 4_000;
/** Attempts of a request that is safe to repeat (a read, a delete, or a PUT or part whose body is in memory) on a transient failure. */
const SEND_ATTEMPTS = 3;
const RETRY_BASE_MS = 200;
/** Answers that mean "try again": the server's own and a connection that broke or was refused. */
const TRANSIENT_CODES = new Set([
  "HTTP_500",
  "HTTP_502",
  "HTTP_503",
  "HTTP_504",
  "SlowDown",
  "InternalError",
  "ServiceUnavailable",
  "RequestTimeout",
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNABORTED",
]);
const NOT_FOUND_CODES = new Set(["NoSuchKey", "NotFound"]);
const CREDENTIAL_CODES = new Set(["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"]);

export interface S3BlobStoreOptions {
  /** Host name or address of the endpoint, without scheme or port. */
  endPoint: string;
  port: number;
  useSSL: boolean;
  accessKey: string;
  secretKey: string;
  bucket: string;
  /** Every key is stored as `<prefix>/<key>`; "" stores keys at the bucket's root. */
  prefix: string;
  region: string;
  /** Size of a multipart part, and the largest document sent as one PUT (5 MiB .. 5 GiB). */
  partSizeBytes: number;
  /** How long `open` waits for the endpoint's first answer (default 10 s). */
  connectTimeoutMs?: number;
  /** A request whose connection stays silent this long fails (default 120 s): a lost endpoint must not hang a worker. */
  idleTimeoutMs?: number;
}

interface MultipartUpload {
  objectName: string;
  uploadId: string;
  parts: Array<{ part: number; etag: string }>;
}

export class S3BlobStore implements BlobStore {
  /** `http://host:port`, for messages. */
  readonly endpoint: string;
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: MinioClient;
  private readonly agent: http.Agent;
  private readonly partSize: number;
  private readonly region: string;
  private readonly maxKeyLength: number;
  private readonly connectTimeoutMs: number;

  constructor(opts: S3BlobStoreOptions) {
    if (!Number.isSafeInteger(opts.partSizeBytes) || opts.partSizeBytes < MIN_PART_BYTES || opts.partSizeBytes > MAX_PART_BYTES) {
      throw docqError(
        ERROR_CODE.Config,
        `S3 blob store: partSizeBytes must be ${MIN_PART_BYTES}..${MAX_PART_BYTES}, got ${opts.partSizeBytes}`,
        { field: "partSizeBytes" },
      );
    }
    if (
      opts.prefix !== "" &&
      (!BLOB_KEY_CHARS.test(opts.prefix) || opts.prefix.length > 200 || opts.prefix.split("/").some((s) => s === "" || s.startsWith(".")))
    ) {
      throw docqError(
        ERROR_CODE.Config,
        `S3 blob store: invalid prefix ${quoteKey(opts.prefix)}: /-separated names of letters, digits, . _ - (none empty or starting with a dot)`,
        { field: "prefix" },
      );
    }
    this.endpoint = `${opts.useSSL ? "https" : "http"}://${opts.endPoint.includes(":") ? `[${opts.endPoint}]` : opts.endPoint}:${opts.port}`;
    this.bucket = opts.bucket;
    this.prefix = opts.prefix;
    this.partSize = opts.partSizeBytes;
    this.region = opts.region;
    this.maxKeyLength = MAX_OBJECT_NAME_LENGTH - (opts.prefix === "" ? 0 : opts.prefix.length + 1);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;

    const base = opts.useSSL ? https : http;
    // Our own agent, so close() can drop its kept-alive connections. An idle connection is closed
    // before the server's own keep-alive timeout (5 s and more on the servers we know) would close
    // it under a new request; a request still finding a dead one is retried (see `retrying`).
    this.agent = new base.Agent({ keepAlive: true, timeout: FREE_SOCKET_TIMEOUT_MS });
    const endpoint = this.endpoint;
    const request = ((options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void) => {
      const req = base.request(options, callback);
      req.setTimeout(idleTimeoutMs, () =>
        req.destroy(Object.assign(new Error(`no answer from ${endpoint} for ${idleTimeoutMs} ms`), { code: "ETIMEDOUT" })),
      );
      return req;
    }) as typeof http.request;
    try {
      this.client = new MinioClient({
        endPoint: opts.endPoint,
        port: opts.port,
        useSSL: opts.useSSL,
        accessKey: opts.accessKey,
        secretKey: opts.secretKey,
        region: opts.region,
        partSize: opts.partSizeBytes,
        transport: { request },
        transportAgent: this.agent,
        // Its retry neither drains the failed answer nor stays quiet; ours (send) retries what is safe to resend.
        retryOptions: { disableRetry: true },
      });
    } catch (err) {
      this.agent.destroy();
      throw docqError(ERROR_CODE.Config, `S3 blob store ${this.endpoint}, bucket "${opts.bucket}": ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Connects, checks the keys, and creates the bucket if it is missing. Fails within
   * `connectTimeoutMs` with a message naming the endpoint and bucket: CONFIG when the endpoint
   * refuses the keys or the bucket, STORE_UNAVAILABLE when it cannot be reached.
   */
  static async open(opts: S3BlobStoreOptions): Promise<S3BlobStore> {
    const store = new S3BlobStore(opts);
    try {
      await withTimeout(store.ensureBucket(), store.connectTimeoutMs, () =>
        docqError(
          ERROR_CODE.StoreUnavailable,
          `${store.label()}: no answer within ${store.connectTimeoutMs} ms (is the endpoint right and up?)`,
        ),
      );
      return store;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Consumes `body`; on any failure it is destroyed and nothing is written under `key`. */
  async put(key: string, body: Readable, opts: { size?: number } = {}): Promise<BlobStat> {
    let objectName: string;
    let partSize: number;
    try {
      objectName = this.objectName(key, "key");
      checkExpectedSize(opts.size);
      partSize = this.partSizeFor(key, opts.size);
    } catch (err) {
      body.destroy();
      throw err;
    }
    const expected = opts.size;
    const pending = new ByteQueue();
    let size = 0;
    let upload: MultipartUpload | null = null;
    try {
      let sending = false;
      try {
        for await (const chunk of body as AsyncIterable<unknown>) {
          sending = true;
          const bytes = asBytes(chunk);
          size += bytes.byteLength;
          if (expected !== undefined && size > expected) throw sizeMismatch(key, expected, `more than ${expected}`);
          pending.push(bytes);
          // Strictly more than a part: the last part is never empty, and a body of exactly one part is one PUT.
          while (pending.length > partSize) {
            upload ??= await this.startUpload(key, objectName);
            await this.sendPart(key, upload, pending.take(partSize));
          }
          sending = false;
        }
      } catch (err) {
        // A DocqError from the body is the caller's own verdict (an upload limit's PAYLOAD_TOO_LARGE): keep its code.
        if (sending || isDocqError(err)) throw err;
        throw new Error(`blob ${quoteKey(key)}: reading the body failed: ${errorMessage(err)}`, { cause: err });
      }
      if (expected !== undefined && size !== expected) throw sizeMismatch(key, expected, String(size));
      if (upload === null) {
        await this.sendObject(key, objectName, pending.take(pending.length));
      } else {
        await this.sendPart(key, upload, pending.take(pending.length));
        const finished = upload;
        await this.attempt("put (complete multipart)", key, () =>
          this.client.completeMultipartUpload(this.bucket, objectName, finished.uploadId, finished.parts),
        );
        upload = null;
      }
      return { size };
    } catch (err) {
      if (upload !== null) await this.abortUpload(upload);
      throw err;
    }
  }

  /** An object appears whole or not at all: the same as put. */
  putNew(key: string, bytes: Uint8Array): Promise<BlobStat> {
    return this.put(key, Readable.from(bytes.byteLength === 0 ? [] : [bytes]));
  }

  async get(key: string): Promise<Readable> {
    const objectName = this.objectName(key, "key");
    try {
      return await this.retrying(() => this.client.getObject(this.bucket, objectName));
    } catch (err) {
      if (NOT_FOUND_CODES.has(codeOf(err) ?? "")) throw blobNotFound(key);
      throw this.unavailable("get", key, err);
    }
  }

  async stat(key: string): Promise<BlobStat | null> {
    const objectName = this.objectName(key, "key");
    try {
      const stat = await this.retrying(() => this.client.statObject(this.bucket, objectName));
      return { size: stat.size };
    } catch (err) {
      if (NOT_FOUND_CODES.has(codeOf(err) ?? "")) return null;
      throw this.unavailable("stat", key, err);
    }
  }

  async delete(key: string): Promise<void> {
    const objectName = this.objectName(key, "key");
    try {
      await this.retrying(() => this.client.removeObject(this.bucket, objectName));
    } catch (err) {
      if (NOT_FOUND_CODES.has(codeOf(err) ?? "")) return;
      throw this.unavailable("delete", key, err);
    }
  }

  /** Every object under this store's prefix, in key order (S3 lists by name), paged with a marker as deletePrefix is. */
  async *list(): AsyncIterable<BlobEntry> {
    const objectPrefix = this.prefix === "" ? "" : `${this.prefix}/`;
    let marker = "";
    for (;;) {
      const page = await this.send("list", "", () =>
        this.client.listObjectsQuery(this.bucket, objectPrefix, marker, { Delimiter: "", MaxKeys: DELETE_BATCH }),
      );
      const objects = (page.objects ?? []).filter((item) => item.name !== undefined && item.name !== "");
      for (const item of objects) {
        const modified = item.lastModified instanceof Date ? item.lastModified.getTime() : Date.now();
        yield { key: item.name!.slice(objectPrefix.length), modifiedAt: Number.isFinite(modified) ? modified : Date.now() };
      }
      const last = objects[objects.length - 1];
      if (last === undefined || page.isTruncated !== true) return;
      marker = last.name!;
    }
  }

  /**
   * Lists a page of keys under the prefix, deletes them, and lists again after the last one deleted.
   * The listing is S3's version 1 with a marker: supported everywhere, and keyed on names, so the
   * deletions cannot shift the next page (s3rver also fails to make version 2 continuation tokens
   * on current OpenSSL).
   */
  async deletePrefix(prefix: string): Promise<void> {
    const objectPrefix = this.objectName(prefix, "prefix");
    let marker = "";
    for (;;) {
      const page = await this.send("deletePrefix (list)", prefix, () =>
        this.client.listObjectsQuery(this.bucket, objectPrefix, marker, { Delimiter: "", MaxKeys: DELETE_BATCH }),
      );
      const names = (page.objects ?? []).flatMap((item) => (item.name === undefined || item.name === "" ? [] : [item.name]));
      const last = names[names.length - 1];
      if (last === undefined) return;
      await this.removeMany(prefix, names);
      if (page.isTruncated !== true) return;
      marker = last;
    }
  }

  /** S3 keeps no local file to move a file into: the caller puts a copy. */
  async adopt(): Promise<BlobStat | null> {
    return null;
  }

  async close(): Promise<void> {
    this.agent.destroy();
  }

  // -------------------------------------------------------------------------

  /**
   * One DeleteObjects request for the page; when the endpoint fails it (some S3-compatible servers
   * lack it, s3rver races on it), the keys one by one, which is the same end state.
   */
  private async removeMany(prefix: string, names: string[]): Promise<void> {
    let results: Awaited<ReturnType<MinioClient["removeObjects"]>>;
    try {
      results = await this.client.removeObjects(this.bucket, names);
    } catch (err) {
      if (isConnectionFailure(err)) throw this.unavailable("deletePrefix", prefix, err);
      for (const name of names) {
        await this.send("deletePrefix", prefix, () => this.client.removeObject(this.bucket, name));
      }
      return;
    }
    const failed = results.find((r) => r?.Error !== undefined && r.Error.Code !== "NoSuchKey");
    if (failed?.Error !== undefined) {
      const { Code, Message, Key } = failed.Error;
      throw docqError(
        ERROR_CODE.StoreUnavailable,
        `${this.label()}: deletePrefix ${quoteKey(prefix)} failed on ${Key ?? "?"}: ${Code ?? "error"}: ${Message ?? ""}`,
      );
    }
  }

  private async ensureBucket(): Promise<void> {
    try {
      // A listing rather than HEAD: a HEAD refused for bad keys says only "403", a GET names the reason.
      await this.client.listObjectsQuery(this.bucket, this.prefix === "" ? "" : `${this.prefix}/`, "", { Delimiter: "", MaxKeys: 1 });
      return;
    } catch (err) {
      if (codeOf(err) !== "NoSuchBucket") throw this.openError(err);
    }
    try {
      await this.client.makeBucket(this.bucket, this.region);
    } catch (err) {
      // Another process created it meanwhile.
      if (codeOf(err) !== "BucketAlreadyOwnedByYou") throw this.openError(err, "creating the bucket");
    }
  }

  private openError(err: unknown, doing = "connecting"): Error {
    const code = codeOf(err) ?? "";
    const detail = describe(err);
    if (CREDENTIAL_CODES.has(code)) {
      return docqError(
        ERROR_CODE.Config,
        `${this.label()}: the endpoint refused the credentials or the bucket (${detail}); check S3_ACCESS_KEY, S3_SECRET_KEY and the bucket's policy`,
        {
          cause: err,
        },
      );
    }
    if (
      code === "BucketAlreadyExists" ||
      code === "InvalidBucketName" ||
      code === "AuthorizationHeaderMalformed" ||
      code === "InvalidRegion"
    ) {
      return docqError(ERROR_CODE.Config, `${this.label()}: ${doing} failed: ${detail}`, { cause: err });
    }
    return docqError(ERROR_CODE.StoreUnavailable, `${this.label()}: ${doing} failed: ${detail}`, { cause: err });
  }

  /** The configured part size, or larger when a known size would need more than S3's 10,000 parts. */
  private partSizeFor(key: string, expected: number | undefined): number {
    if (expected === undefined || expected <= this.partSize * MAX_PARTS) return this.partSize;
    if (expected > MAX_OBJECT_BYTES) throw tooLarge(key, `S3 stores at most ${MAX_OBJECT_BYTES} bytes per object`);
    const mib = 1024 * 1024;
    return Math.ceil(expected / MAX_PARTS / mib) * mib;
  }

  private async startUpload(key: string, objectName: string): Promise<MultipartUpload> {
    const uploadId = await this.attempt("put (start multipart)", key, () =>
      this.client.initiateNewMultipartUpload(this.bucket, objectName, { "Content-Type": CONTENT_TYPE }),
    );
    return { objectName, uploadId, parts: [] };
  }

  private async sendPart(key: string, upload: MultipartUpload, bytes: Buffer): Promise<void> {
    const part = upload.parts.length + 1;
    if (part > MAX_PARTS)
      throw tooLarge(key, `a document of unknown size may have at most ${MAX_PARTS} parts of ${this.partSize} bytes (blobs.partSizeBytes)`);
    const md5 = createHash("md5").update(bytes).digest("base64");
    const { etag } = await this.send(`put (part ${part})`, key, () =>
      this.client.uploadPart(
        {
          bucketName: this.bucket,
          objectName: upload.objectName,
          uploadID: upload.uploadId,
          partNumber: part,
          headers: { "Content-MD5": md5 },
        },
        bytes,
      ),
    );
    upload.parts.push({ part, etag });
  }

  /** One PUT of a whole (small) object. */
  private async sendObject(key: string, objectName: string, bytes: Buffer): Promise<void> {
    const md5 = createHash("md5").update(bytes).digest("base64");
    const response = await this.send("put", key, () =>
      this.client.makeRequestAsync(
        { method: "PUT", bucketName: this.bucket, objectName, headers: { "Content-Type": CONTENT_TYPE, "Content-MD5": md5 } },
        bytes,
        [200],
      ),
    );
    response.resume();
  }

  private async abortUpload(upload: MultipartUpload): Promise<void> {
    // Best effort (s3rver has no abort): the upload was never completed, so no blob appears either way.
    await this.client.abortMultipartUpload(this.bucket, upload.objectName, upload.uploadId).catch(() => undefined);
  }

  /** `attempt` with retries on transient failures. */
  private async send<T>(operation: string, key: string, run: () => Promise<T>): Promise<T> {
    try {
      return await this.retrying(run);
    } catch (err) {
      throw this.unavailable(operation, key, err);
    }
  }

  /**
   * Runs a request that is safe to repeat, again after a transient failure (a refused or reset
   * connection, a 5xx, S3's SlowDown), up to SEND_ATTEMPTS times; rethrows the last error as is.
   */
  private async retrying<T>(run: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (err) {
        if (attempt >= SEND_ATTEMPTS || !TRANSIENT_CODES.has(codeOf(err) ?? "")) throw err;
        await new Promise((resolve) => setTimeout(resolve, RETRY_BASE_MS * 4 ** (attempt - 1)));
      }
    }
  }

  private async attempt<T>(operation: string, key: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw this.unavailable(operation, key, err);
    }
  }

  private unavailable(operation: string, key: string, err: unknown): Error {
    if (isDocqError(err)) return err;
    return docqError(ERROR_CODE.StoreUnavailable, `${this.label()}: ${operation} ${quoteKey(key)} failed: ${describe(err)}`, {
      cause: err,
    });
  }

  private label(): string {
    return `S3 blob store ${this.endpoint}, bucket "${this.bucket}"`;
  }

  private objectName(key: string, field: "key" | "prefix"): string {
    checkBlobKey(key, field, { maxLength: this.maxKeyLength });
    return this.prefix === "" ? key : `${this.prefix}/${key}`;
  }
}

/** Bytes waiting to be sent, as received; `take` copies the first n into one buffer. */
class ByteQueue {
  private chunks: Uint8Array[] = [];
  length = 0;

  push(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) return;
    this.chunks.push(bytes);
    this.length += bytes.byteLength;
  }

  take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let offset = 0;
    while (offset < n) {
      const head = this.chunks[0];
      if (head === undefined) throw new Error(`ByteQueue.take(${n}) with ${offset} bytes queued`);
      const wanted = n - offset;
      if (head.byteLength <= wanted) {
        out.set(head, offset);
        offset += head.byteLength;
        this.chunks.shift();
      } else {
        out.set(head.subarray(0, wanted), offset);
        this.chunks[0] = head.subarray(wanted);
        offset += wanted;
      }
    }
    this.length -= n;
    return out;
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** What minio 8 throws, without the S3 error, for an answer it counts as retryable (408, 429, 5xx) once its retries are off. */
const RETRYABLE_STATUS = /Retryable HTTP status: (\d+)/;

/** The S3 error code (`NoSuchKey`), the system one (`ECONNREFUSED`), or `HTTP_503` for a bare status. */
function codeOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && code !== "") return code;
  const status = RETRYABLE_STATUS.exec(errorMessage(err));
  return status === null ? undefined : `HTTP_${status[1]}`;
}

/** The endpoint could not be reached or stopped answering (as opposed to answering with an error). */
function isConnectionFailure(err: unknown): boolean {
  const code = codeOf(err) ?? "";
  return code.startsWith("E") && code === code.toUpperCase();
}

/**
 * The error in one line: S3's code and message, or the connection's (Node 20 reports a refused `localhost` as an
 * AggregateError with no message).
 */
function describe(err: unknown): string {
  const code = codeOf(err);
  let message = errorMessage(err);
  const status = RETRYABLE_STATUS.exec(message);
  if (status !== null) return `the endpoint answered HTTP ${status[1]}`;
  if (message === "" && err instanceof AggregateError) message = err.errors.map((e: unknown) => errorMessage(e)).join("; ");
  if (message === "") message = "no message";
  return code === undefined || message.includes(code) ? message : `${code}: ${message}`;
}

function asBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === "string") return Buffer.from(chunk, "utf8");
  throw new TypeError(`blob body must yield bytes or strings, got ${typeof chunk}`);
}

function tooLarge(key: string, why: string): Error {
  return docqError(ERROR_CODE.PayloadTooLarge, `blob ${quoteKey(key)} is too large: ${why}`, { field: "body" });
}
