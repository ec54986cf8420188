import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { afterEach, beforeEach, describe, it } from "node:test";
import { DocqError, ERROR_CODE, type ErrorCode } from "../model/errors.js";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import {
  assertTaskId,
  availableAtOf,
  isMultipart,
  MAX_DELAY_MS,
  MAX_FORM_FIELD_BYTES,
  MAX_FORM_FIELDS,
  parseCreateTaskFields,
  parseCreateTaskRequest,
  parseListTasksQuery,
  storeMultipartBody,
  storeRawBody,
  type UploadRequest,
} from "./task-submission.js";
import { rejection } from "../testing/rejection.js";
import { waitUntil } from "../testing/wait-until.js";

/** Runs `fn`, which must throw a DocqError with `code` (and `field` when given); answers it. */
function throwsDocq(fn: () => unknown, code: ErrorCode, field?: string): DocqError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof DocqError, `expected a DocqError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (field !== undefined) assert.equal(caught.field, field, caught.message);
  return caught;
}

/** `promise`, or a failure when it has not settled within `ms` (a hung upload must fail its test, not stall the file). */
async function settles<T>(promise: Promise<T>, what: string, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("parseCreateTaskFields", () => {
  it("fills the defaults", () => {
    assert.deepEqual(parseCreateTaskFields({ job: "wordcount" }), {
      job: "wordcount",
      priority: 50,
      name: "",
      user: "anonymous",
      params: {},
    });
  });

  it("keeps the given fields", () => {
    const fields = parseCreateTaskFields({
      job: "sleep",
      priority: "80",
      name: "report",
      user: "ann",
      params: '{"ms":500}',
      maxTries: "4",
    });
    assert.deepEqual(fields, { job: "sleep", priority: 80, name: "report", user: "ann", params: { ms: 500 }, maxTries: 4 });
  });

  it("takes priority as a string or a number, bounds included", () => {
    for (const [raw, want] of [
      ["0", 0],
      ["100", 100],
      [" 7 ", 7],
      [0, 0],
      [100, 100],
      [42, 42],
    ] as const) {
      assert.equal(parseCreateTaskFields({ job: "j", priority: raw }).priority, want, JSON.stringify(raw));
    }
  });

  it("refuses a priority out of range, not an integer or not a number, naming the field", () => {
    for (const raw of ["101", "-1", 101, -1, "1.5", 2.5, "abc", "", "  ", "NaN", "Infinity", Number.NaN, true, null, {}, [50]]) {
      const err = throwsDocq(() => parseCreateTaskFields({ job: "j", priority: raw }), ERROR_CODE.BadRequest, "priority");
      assert.match(err.message, /^priority: /, JSON.stringify(raw));
    }
  });

  it("takes params as JSON text or as an object", () => {
    assert.deepEqual(parseCreateTaskFields({ job: "j", params: '{"ms":5,"deep":{"a":[1]}}' }).params, { ms: 5, deep: { a: [1] } });
    assert.deepEqual(parseCreateTaskFields({ job: "j", params: { ms: 5 } }).params, { ms: 5 });
    assert.deepEqual(parseCreateTaskFields({ job: "j", params: "{}" }).params, {});
  });

  it("refuses params that are not JSON or not a JSON object, naming the field", () => {
    const bad = throwsDocq(() => parseCreateTaskFields({ job: "j", params: "{ms: 5" }), ERROR_CODE.BadRequest, "params");
    assert.match(bad.message, /params: is not valid JSON/);
    for (const raw of ["[1,2]", "42", '"text"', "null", "true", [1, 2], null, 7]) {
      const err = throwsDocq(() => parseCreateTaskFields({ job: "j", params: raw }), ERROR_CODE.BadRequest, "params");
      assert.match(err.message, /params: must be a JSON object/, JSON.stringify(raw));
    }
  });

  it("requires a job with a valid name", () => {
    const missing = throwsDocq(() => parseCreateTaskFields({ priority: "10" }), ERROR_CODE.BadRequest, "job");
    assert.match(missing.message, /job: is required/);
    for (const job of ["", "Word", "-x", "_x", "a b", "../etc", "a/b", "wc.sh", 5]) {
      throwsDocq(() => parseCreateTaskFields({ job }), ERROR_CODE.BadRequest, "job");
    }
    for (const job of ["a", "0", "word-count_2"]) assert.equal(parseCreateTaskFields({ job }).job, job);
  });

  it("bounds maxTries to 1..1000", () => {
    assert.equal(parseCreateTaskFields({ job: "j", maxTries: "1" }).maxTries, 1);
    assert.equal(parseCreateTaskFields({ job: "j", maxTries: 1000 }).maxTries, 1000);
    assert.equal(parseCreateTaskFields({ job: "j" }).maxTries, undefined);
    for (const raw of ["0", 0, "1001", 1001, "2.5", "x", -3]) {
      throwsDocq(() => parseCreateTaskFields({ job: "j", maxTries: raw }), ERROR_CODE.BadRequest, "maxTries");
    }
  });

  it("takes an http or https callbackUrl, and refuses any other naming callbackUrl", () => {
    assert.equal(parseCreateTaskFields({ job: "j", callbackUrl: "https://example.com/hook" }).callbackUrl, "https://example.com/hook");
    assert.equal(parseCreateTaskFields({ job: "j" }).callbackUrl, undefined);
    for (const raw of ["ftp://example.com/x", "file:///etc/passwd", "not a url", "http://user:pw@example.com/", 7]) {
      throwsDocq(() => parseCreateTaskFields({ job: "j", callbackUrl: raw }), ERROR_CODE.BadRequest, "callbackUrl");
    }
  });

  it("bounds name and user", () => {
    assert.equal(parseCreateTaskFields({ job: "j", name: "n".repeat(500) }).name.length, 500);
    throwsDocq(() => parseCreateTaskFields({ job: "j", name: "n".repeat(501) }), ERROR_CODE.BadRequest, "name");
    throwsDocq(() => parseCreateTaskFields({ job: "j", user: "u".repeat(201) }), ERROR_CODE.BadRequest, "user");
  });

  it("names the first bad field when several are bad", () => {
    throwsDocq(() => parseCreateTaskFields({ priority: "x", params: "[" }), ERROR_CODE.BadRequest, "job");
    throwsDocq(() => parseCreateTaskFields({ job: "j", priority: "x", params: "[" }), ERROR_CODE.BadRequest, "priority");
  });
});

describe("parseCreateTaskFields: keys that reach an object's prototype", () => {
  it("refuses __proto__, constructor and prototype in params at any depth, naming the field and the place", () => {
    for (const [json, at] of [
      ['{"__proto__":{"polluted":1}}', "params.__proto__"],
      ['{"ms":5,"deep":{"x":[1,{"__proto__":{}}]}}', "params.deep.x[1].__proto__"],
      ['{"constructor":{"prototype":{"polluted":1}}}', "params.constructor"],
      ['{"a":{"prototype":1}}', "params.a.prototype"],
    ] as const) {
      const err = throwsDocq(() => parseCreateTaskFields({ job: "j", params: json }), ERROR_CODE.BadRequest, "params");
      assert.ok(err.message.startsWith("params: must not hold the key"), err.message);
      assert.ok(err.message.includes(`(at ${at})`), `${json}: ${err.message}`);
    }
    const literal = JSON.parse('{"__proto__":{"x":1}}') as Record<string, unknown>;
    throwsDocq(() => parseCreateTaskFields({ job: "j", params: literal }), ERROR_CODE.BadRequest, "params");
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it("accepts such words as values, and params nested deeper than the stack", () => {
    assert.deepEqual(parseCreateTaskFields({ job: "j", params: '{"mode":"__proto__","list":["constructor"]}' }).params, {
      mode: "__proto__",
      list: ["constructor"],
    });
    const depth = 200_000;
    assert.deepEqual(Object.keys(parseCreateTaskFields({ job: "j", params: `{"a":${"[".repeat(depth)}${"]".repeat(depth)}}` }).params), [
      "a",
    ]);
  });
});

describe("parseCreateTaskRequest", () => {
  it("takes the query's text fields, the form's overriding them", () => {
    assert.deepEqual(parseCreateTaskRequest({ job: "wordcount", priority: "7", name: "q" }, { name: "f", user: "ann" }), {
      job: "wordcount",
      priority: 7,
      name: "f",
      user: "ann",
      params: {},
    });
  });

  it("refuses a field given as an array or an object (qs's f[]=, f=a&f=b, f[k]=), naming it", () => {
    for (const [query, field] of [
      [{ job: ["noop"] }, "job"],
      [{ job: "noop", priority: ["7"] }, "priority"],
      [{ job: "noop", maxTries: ["1", "2"] }, "maxTries"],
      [{ job: "noop", params: { ms: "5" } }, "params"],
      [{ job: "noop", name: { a: "x" } }, "name"],
      [{ job: "noop", user: ["a", "b"] }, "user"],
    ] as Array<[Record<string, unknown>, string]>) {
      const err = throwsDocq(() => parseCreateTaskRequest(query), ERROR_CODE.BadRequest, field);
      assert.match(err.message, new RegExp(`^${field}: must be given once, as text`));
    }
  });
});

describe("parseListTasksQuery", () => {
  it("answers only the filters that are set, limit as a number", () => {
    assert.deepEqual(parseListTasksQuery({}), {});
    assert.deepEqual(
      parseListTasksQuery({
        status: "output",
        user: "ann",
        job: "noop",
        name: "report.pdf",
        parentId: "local-01ARZ3NDEKTSV4RRFFQ69G5FAV",
        cursor: "c",
        limit: "1000",
      }),
      {
        status: "output",
        user: "ann",
        job: "noop",
        name: "report.pdf",
        parentId: "local-01ARZ3NDEKTSV4RRFFQ69G5FAV",
        cursor: "c",
        limit: 1000,
      },
    );
    assert.deepEqual(parseListTasksQuery({ status: "", user: "", limit: "1", other: "ignored" }), { limit: 1 });
  });

  it("refuses a limit that is not digits in 1..1000, naming limit", () => {
    for (const limit of ["0", "1001", "1e3", "1000.0", "1.5", "-1", "+5", " 5", "", "0x10", "abc", ["1"], { a: "1" }, 5]) {
      const err = throwsDocq(() => parseListTasksQuery({ limit }), ERROR_CODE.BadRequest, "limit");
      assert.match(err.message, /^limit: must be an integer 1\.\.1000/, JSON.stringify(limit));
    }
  });

  it("refuses a filter given as an array, an object or a non-string, naming it", () => {
    for (const field of ["status", "user", "job", "name", "parentId", "cursor"]) {
      for (const value of [["output"], ["a", "b"], { a: "x" }, 5]) {
        const err = throwsDocq(() => parseListTasksQuery({ [field]: value }), ERROR_CODE.BadRequest, field);
        assert.match(err.message, new RegExp(`^${field}: `));
      }
    }
  });

  it("refuses an unknown status, naming status", () => {
    throwsDocq(() => parseListTasksQuery({ status: "bogus" }), ERROR_CODE.BadRequest, "status");
  });

  it("refuses a filter value no task can hold, naming the field: a job that is not a job name, a parentId that is not a task id, too long", () => {
    const bad: [string, string][] = [
      ["job", "Not A Job"],
      ["job", "../x"],
      ["parentId", "nope"],
      ["parentId", "local-01ARZ3NDEKTSV4RRFFQ69G5FA"],
      ["name", "n".repeat(501)],
      ["user", "u".repeat(201)],
      ["cursor", "c".repeat(201)],
    ];
    for (const [field, value] of bad) {
      const err = throwsDocq(() => parseListTasksQuery({ [field]: value }), ERROR_CODE.BadRequest, field);
      assert.match(err.message, new RegExp(`^${field}: `), `${field}=${value}`);
    }
  });
});

describe("assertTaskId", () => {
  it("answers a well-formed id", () => {
    for (const id of ["local-01JD3ZQ4M5N6P7R8S9T0VWXYZA", "site_2-01ARZ3NDEKTSV4RRFFQ69G5FAV", "a-b-c-01ARZ3NDEKTSV4RRFFQ69G5FAV"])
      assert.equal(assertTaskId(id), id);
  });

  it("refuses anything else with BAD_REQUEST on field id", () => {
    for (const id of [
      undefined,
      null,
      42,
      "",
      "local",
      "01ARZ3NDEKTSV4RRFFQ69G5FAV",
      "local-01arz3ndektsv4rrffq69g5fav",
      "local-01ARZ3NDEKTSV4RRFFQ69G5FA",
      "local-01ARZ3NDEKTSV4RRFFQ69G5FAVX",
      "local-01ARZ3NDEKTSV4RRFFQ69G5FAI",
      "Local-01ARZ3NDEKTSV4RRFFQ69G5FAV",
      "../local-01ARZ3NDEKTSV4RRFFQ69G5FAV",
      "local-01ARZ3NDEKTSV4RRFFQ69G5FAV/",
      `${"s".repeat(64)}-01ARZ3NDEKTSV4RRFFQ69G5FAV`,
    ]) {
      const err = throwsDocq(() => assertTaskId(id), ERROR_CODE.BadRequest, "id");
      assert.match(err.message, /malformed task id/);
    }
  });
});

describe("isMultipart", () => {
  it("recognises multipart/form-data with or without parameters, in any case", () => {
    assert.equal(isMultipart("multipart/form-data; boundary=----x"), true);
    assert.equal(isMultipart("multipart/form-data"), true);
    assert.equal(isMultipart("Multipart/Form-Data; boundary=x"), true);
  });

  it("refuses other types and a missing header", () => {
    for (const type of [
      undefined,
      "",
      "application/octet-stream",
      "text/plain",
      "multipart/mixed; boundary=x",
      "application/x-www-form-urlencoded",
      "text/plain; multipart/form-data",
    ]) {
      assert.equal(isMultipart(type), false, String(type));
    }
  });
});

describe("storing uploads", () => {
  let dir: string;
  let blobs: FsBlobStore;
  const KEY = "local-01ARZ3NDEKTSV4RRFFQ69G5FAV/input";

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-submission-test-"));
    blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const tempFiles = (): Promise<string[]> => fs.readdir(path.join(blobs.root, ".tmp"));

  async function assertNothingStored(): Promise<void> {
    assert.equal(await blobs.stat(KEY), null, "no blob under the key");
    // A put that failed removes its temp file on its way out; give it the moment it needs.
    await waitUntil("no temp file left in .tmp", async () => (await tempFiles()).length === 0);
  }

  /** A body the test has not read from; `read` tells whether anyone asked for data. */
  function untouchedBody(): { body: Readable; wasRead: () => boolean } {
    let read = false;
    const body = new Readable({
      read() {
        read = true;
        this.push(null);
      },
    });
    return { body, wasRead: () => read };
  }

  /**
   * Pushes `first`, then `rest` only once the blob store has opened its temp file: by then it reads
   * the body, as it always does in a real upload, whose bytes arrive over time.
   */
  const tempFileOpened = (): Promise<unknown> => waitUntil("the store to open its temp file", async () => (await tempFiles()).length > 0);
  /** A small raw body is read whole before it is stored (no temp file to wait for): the rest comes a few turns later. */
  const aFewTurns = async (): Promise<void> => {
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  };

  /** A body whose `rest` comes only once `gate` resolves: bytes arriving while the store is at work. */
  function gatedBody(
    first: Buffer,
    rest: Iterable<Buffer>,
    ending: "end" | Error = "end",
    gate: () => Promise<unknown> = tempFileOpened,
  ): Readable {
    return Readable.from(
      (async function* () {
        yield first;
        await gate();
        await new Promise((resolve) => setImmediate(resolve));
        yield* rest;
        if (ending !== "end") throw ending;
      })(),
    );
  }

  const raw = (body: Readable, maxBytes: number, contentLength?: number): UploadRequest => ({
    body,
    contentType: "application/octet-stream",
    contentLength: contentLength === undefined ? undefined : String(contentLength),
    maxBytes,
  });

  describe("storeRawBody", () => {
    it("stores a streamed body and answers its size", async () => {
      const chunks = Array.from({ length: 50 }, (_, i) => Buffer.from(`chunk ${i}\n`));
      const whole = Buffer.concat(chunks);
      const size = await storeRawBody(raw(Readable.from(chunks), 1 << 20, whole.length), blobs, KEY);
      assert.equal(size, whole.length);
      assert.equal(await text(await blobs.get(KEY)), whole.toString());
      assert.deepEqual(await tempFiles(), []);
    });

    it("streams a body larger than what it reads into memory, its first chunks included", async () => {
      const chunks = Array.from({ length: 48 }, (_, i) => Buffer.alloc(64 * 1024, i));
      const whole = Buffer.concat(chunks);
      assert.equal(await storeRawBody(raw(Readable.from(chunks), 4 << 20), blobs, KEY), whole.length);
      assert.ok((await text(await blobs.get(KEY))) === whole.toString(), "the stored document is the body");
      assert.deepEqual(await tempFiles(), []);
    });

    it("accepts a body of exactly the limit, undeclared", async () => {
      assert.equal(await storeRawBody(raw(Readable.from([Buffer.alloc(600, 1), Buffer.alloc(400, 2)]), 1000), blobs, KEY), 1000);
      assert.equal((await blobs.stat(KEY))?.size, 1000);
    });

    it("refuses a declared Content-Length over the limit before reading the body", async () => {
      const { body, wasRead } = untouchedBody();
      const err = await rejection(storeRawBody(raw(body, 1000, 1001), blobs, KEY), { code: ERROR_CODE.PayloadTooLarge, field: "body" });
      assert.match(err.message, /limit of 1000 bytes/);
      assert.equal(wasRead(), false);
      assert.equal(await blobs.stat(KEY), null);
    });

    it("refuses an undeclared body as soon as it passes the limit, storing nothing", async () => {
      let pulled = 0;
      const rest = (function* () {
        for (let i = 0; i < 10_000; i++) {
          pulled++;
          yield Buffer.alloc(1000, 7);
        }
      })();
      const body = gatedBody(Buffer.alloc(10, 7), rest, "end", aFewTurns);
      await rejection(storeRawBody(raw(body, 64 * 1024), blobs, KEY), { code: ERROR_CODE.PayloadTooLarge, field: "body" });
      body.destroy();
      await assertNothingStored();
      assert.ok(pulled < 10_000, `stopped reading early (${pulled} of 10000 chunks pulled)`);
    });

    it("refuses an undeclared body that passes a small limit before the store reads it, without an uncaught error", async () => {
      // Body of 5000 bytes against a limit of 1000: the ByteLimit transform fails before blobs.put
      // has opened its temp file, and its 'error' event must not escape as an uncaught exception.
      await rejection(storeRawBody(raw(Readable.from([Buffer.alloc(5000, 1)]), 1000), blobs, KEY), {
        code: ERROR_CODE.PayloadTooLarge,
        field: "body",
      });
      await assertNothingStored();
    });

    it("refuses an empty body as missing, declared or not, storing nothing", async () => {
      const declared = untouchedBody();
      const a = await rejection(storeRawBody(raw(declared.body, 1000, 0), blobs, KEY), { code: ERROR_CODE.BadRequest, field: "body" });
      assert.match(a.message, /^missing body/);
      assert.equal(declared.wasRead(), false);
      const b = await rejection(storeRawBody(raw(Readable.from([]), 1000), blobs, KEY), { code: ERROR_CODE.BadRequest, field: "body" });
      assert.match(b.message, /^missing body/);
      await assertNothingStored();
    });

    it("answers BAD_REQUEST when the client breaks off the upload, storing nothing", async () => {
      const err = await rejection(
        storeRawBody(
          raw(gatedBody(Buffer.alloc(100, 1), [Buffer.alloc(100, 2)], new Error("socket hang up"), aFewTurns), 1000),
          blobs,
          KEY,
        ),
        { code: ERROR_CODE.BadRequest, field: "body" },
      );
      assert.match(err.message, /^upload interrupted: .*socket hang up/);
      await assertNothingStored();
    });

    it("ends, storing nothing, when the request failed before it was read, 'error' already emitted", async () => {
      // Node fails a request whose chunk size is malformed, or whose socket closes before its
      // Content-Length is reached, as it parses the packet: before the action listens.
      const body = Readable.from([Buffer.from("hello")]);
      body.on("error", () => undefined);
      body.destroy(new Error("aborted"));
      await new Promise((resolve) => setImmediate(resolve));
      body.removeAllListeners("error");
      const err = await rejection(settles(storeRawBody(raw(body, 1000), blobs, KEY), "storeRawBody"), {
        code: ERROR_CODE.BadRequest,
        field: "body",
      });
      assert.match(err.message, /^upload interrupted: .*aborted/);
      await assertNothingStored();
    });

    it("ends, storing nothing, when the request closes without 'end' and without an error", async () => {
      const body = new Readable({ read() {} });
      body.push(Buffer.from("part of it"));
      const storing = storeRawBody(raw(body, 1000), blobs, KEY);
      await waitUntil("the body to be read", () => Promise.resolve(body.readableFlowing === true && body.readableLength === 0));
      body.destroy();
      const err = await rejection(settles(storing, "storeRawBody"), { code: ERROR_CODE.BadRequest, field: "body" });
      assert.match(err.message, /^upload interrupted: .*[Pp]remature close/);
      await assertNothingStored();
    });
  });

  describe("storeMultipartBody", () => {
    type Part = [name: string, value: string] | [name: string, value: Blob, filename: string];

    /** A real multipart body and its content-type header, as fetch would send them. */
    async function form(parts: Part[]): Promise<{ contentType: string; bytes: Buffer }> {
      const data = new FormData();
      for (const [name, value, filename] of parts) {
        if (typeof value === "string") data.append(name, value);
        else data.append(name, value, filename);
      }
      const response = new Response(data);
      const contentType = response.headers.get("content-type");
      assert.ok(contentType !== null && isMultipart(contentType));
      return { contentType, bytes: Buffer.from(await response.arrayBuffer()) };
    }

    const upload = (body: Readable, contentType: string, maxBytes: number, contentLength?: number): UploadRequest => ({
      body,
      contentType,
      contentLength: contentLength === undefined ? undefined : String(contentLength),
      maxBytes,
    });

    /** The form's bytes split just after the start of the file's `content`, the rest gated on the store reading it. */
    function gatedForm(bytes: Buffer, content: string, ending: "end" | Error = "end"): Readable {
      const at = bytes.indexOf(content.slice(0, 100)) + 8;
      assert.ok(at > 8, "the file's content is in the form");
      return gatedBody(bytes.subarray(0, at), [bytes.subarray(at)], ending);
    }

    it("stores the field file and answers the fields given before and after it", async () => {
      const doc = "the document\n".repeat(200);
      const { contentType, bytes } = await form([
        ["job", "wordcount"],
        ["priority", "80"],
        ["file", new Blob([doc]), "report.txt"],
        ["name", "report"],
        ["params", '{"ms":5}'],
      ]);
      // In small chunks, as a socket delivers them.
      const chunks = [];
      for (let i = 0; i < bytes.length; i += 97) chunks.push(bytes.subarray(i, i + 97));
      const result = await settles(
        storeMultipartBody(upload(Readable.from(chunks), contentType, 1 << 20, bytes.length), blobs, KEY),
        "storeMultipartBody",
      );
      assert.deepEqual(result, {
        fields: { job: "wordcount", priority: "80", name: "report", params: '{"ms":5}' },
        size: Buffer.byteLength(doc),
      });
      assert.equal(await text(await blobs.get(KEY)), doc);
      assert.deepEqual(await tempFiles(), []);
      assert.deepEqual(parseCreateTaskFields(result.fields), {
        job: "wordcount",
        priority: 80,
        name: "report",
        user: "anonymous",
        params: { ms: 5 },
      });
    });

    it("refuses a second file, or a file in another field than file, naming the field and storing nothing", async () => {
      for (const [parts, field, pattern] of [
        [
          [
            ["file", new Blob(["me"]), "doc.txt"],
            ["file", new Blob(["me too"]), "doc2.txt"],
            ["job", "noop"],
          ],
          "file",
          /more than one file/,
        ],
        [
          [
            ["file", new Blob(["me"]), "doc.txt"],
            ["attachment", new Blob(["not me"]), "a.txt"],
            ["job", "noop"],
          ],
          "file",
          /more than one file/,
        ],
        [
          [
            ["attachment", new Blob(["not me"]), "a.txt"],
            ["file", new Blob(["me"]), "doc.txt"],
            ["job", "noop"],
          ],
          "attachment",
          /^attachment: is a file/,
        ],
        [
          [
            ["job", "noop"],
            ["document", new Blob(["x"]), "d.txt"],
          ],
          "document",
          /^document: is a file/,
        ],
      ] as Array<[Part[], string, RegExp]>) {
        const { contentType, bytes } = await form(parts);
        const err = await rejection(
          settles(storeMultipartBody(upload(Readable.from([bytes]), contentType, 1000), blobs, KEY), "storeMultipartBody"),
          { code: ERROR_CODE.BadRequest, field: field },
        );
        assert.match(err.message, pattern);
        await assertNothingStored();
      }
    });

    it("refuses a field over the size limit instead of truncating it, naming the field and storing nothing", async () => {
      const long = "p".repeat(MAX_FORM_FIELD_BYTES + 1);
      for (const parts of [
        [
          ["job", "noop"],
          ["params", long],
          ["file", new Blob(["doc"]), "d.txt"],
        ],
        [
          ["job", "noop"],
          ["file", new Blob(["doc"]), "d.txt"],
          ["params", long],
        ],
      ] as Part[][]) {
        const { contentType, bytes } = await form(parts);
        const err = await rejection(
          settles(storeMultipartBody(upload(Readable.from([bytes]), contentType, 4 << 20), blobs, KEY), "storeMultipartBody"),
          { code: ERROR_CODE.BadRequest, field: "params" },
        );
        assert.match(err.message, /^params: is longer than 1048576 bytes/);
        await assertNothingStored();
      }
      // A field of exactly the limit is whole.
      const exact = "q".repeat(MAX_FORM_FIELD_BYTES);
      const { contentType, bytes } = await form([
        ["name", exact],
        ["file", new Blob(["doc"]), "d.txt"],
      ]);
      const result = await settles(
        storeMultipartBody(upload(Readable.from([bytes]), contentType, 4 << 20), blobs, KEY),
        "storeMultipartBody",
      );
      assert.equal(result.fields.name?.length, MAX_FORM_FIELD_BYTES);
    });

    it("refuses more fields than the limit, and a field given twice, storing nothing", async () => {
      const many: Part[] = Array.from({ length: MAX_FORM_FIELDS + 1 }, (_, i): Part => [`f${i}`, "v"]);
      const tooMany = await form([["file", new Blob(["doc"]), "d.txt"], ...many]);
      const err = await rejection(
        settles(storeMultipartBody(upload(Readable.from([tooMany.bytes]), tooMany.contentType, 1000), blobs, KEY), "storeMultipartBody"),
        { code: ERROR_CODE.BadRequest, field: "body" },
      );
      assert.match(err.message, /more than 100 fields/);
      await assertNothingStored();
      const twice = await form([
        ["job", "noop"],
        ["file", new Blob(["doc"]), "d.txt"],
        ["job", "other"],
      ]);
      const dup = await rejection(
        settles(storeMultipartBody(upload(Readable.from([twice.bytes]), twice.contentType, 1000), blobs, KEY), "storeMultipartBody"),
        { code: ERROR_CODE.BadRequest, field: "job" },
      );
      assert.match(dup.message, /^job: is given twice/);
      await assertNothingStored();
    });

    it("refuses a file over the limit as soon as it passes it, without reading the rest of the form", async () => {
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob(["x".repeat(5000)]), "big.txt"],
      ]);
      let pulled = 0;
      const rest = (function* () {
        for (let i = 0; i < 10_000; i++) {
          pulled++;
          yield Buffer.alloc(1000, 120);
        }
      })();
      // The form's head and the first bytes of the file, then far more file than the limit, never ending.
      const at = bytes.indexOf("xxxx");
      await rejection(
        settles(
          storeMultipartBody(upload(gatedBody(bytes.subarray(0, at + 10), rest), contentType, 1000), blobs, KEY),
          "storeMultipartBody",
        ),
        { code: ERROR_CODE.PayloadTooLarge, field: "body" },
      );
      await assertNothingStored();
      assert.ok(pulled < 10_000, `stopped reading early (${pulled} of 10000 chunks pulled)`);
    });

    it("ends, storing nothing, when the request failed before it was read (a malformed chunk in the headers' packet)", async () => {
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob(["doc"]), "d.txt"],
      ]);
      const body = Readable.from([bytes]);
      body.on("error", () => undefined);
      body.destroy(new Error("Parse Error: Invalid character in chunk size"));
      await new Promise((resolve) => setImmediate(resolve));
      const err = await rejection(settles(storeMultipartBody(upload(body, contentType, 1000), blobs, KEY), "storeMultipartBody"), {
        code: ERROR_CODE.BadRequest,
        field: "body",
      });
      assert.match(err.message, /^upload interrupted: .*chunk size/);
      await assertNothingStored();
    });

    it("refuses a form without a file field as a missing body, storing nothing", async () => {
      for (const parts of [[["job", "noop"]], [["file", "a plain field, not a file"]]] as Part[][]) {
        const { contentType, bytes } = await form(parts);
        const err = await rejection(
          settles(storeMultipartBody(upload(Readable.from([bytes]), contentType, 1000), blobs, KEY), "storeMultipartBody"),
          { code: ERROR_CODE.BadRequest, field: "body" },
        );
        assert.match(err.message, /^missing body/);
        await assertNothingStored();
      }
    });

    it("refuses an empty file as a missing body, storing nothing", async () => {
      const { contentType, bytes } = await form([
        ["file", new Blob([]), "empty.txt"],
        ["job", "noop"],
      ]);
      const err = await rejection(
        settles(storeMultipartBody(upload(Readable.from([bytes]), contentType, 1000), blobs, KEY), "storeMultipartBody"),
        { code: ERROR_CODE.BadRequest, field: "body" },
      );
      assert.match(err.message, /^missing body/);
      await assertNothingStored();
    });

    it("refuses a file over the limit with PAYLOAD_TOO_LARGE, storing nothing", async () => {
      const content = "x".repeat(5000);
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob([content]), "big.txt"],
        ["name", "after"],
      ]);
      const err = await rejection(
        settles(storeMultipartBody(upload(gatedForm(bytes, content), contentType, 1000), blobs, KEY), "storeMultipartBody"),
        { code: ERROR_CODE.PayloadTooLarge, field: "body" },
      );
      assert.match(err.message, /limit of 1000 bytes/);
      await assertNothingStored();
    });

    it("accepts a file of exactly the limit, as a raw body of that size is", async () => {
      const content = "y".repeat(1000);
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob([content]), "exact.txt"],
      ]);
      const result = await settles(
        storeMultipartBody(upload(gatedForm(bytes, content), contentType, 1000), blobs, KEY),
        "storeMultipartBody",
      );
      assert.equal(result.size, 1000);
      assert.equal(await text(await blobs.get(KEY)), content);
    });

    it("refuses a declared Content-Length far over the limit before reading", async () => {
      const { body, wasRead } = untouchedBody();
      await rejection(
        settles(
          storeMultipartBody(upload(body, "multipart/form-data; boundary=x", 1000, 1000 + 64 * 1024 + 1), blobs, KEY),
          "storeMultipartBody",
        ),
        { code: ERROR_CODE.PayloadTooLarge, field: "body" },
      );
      assert.equal(wasRead(), false);
      assert.equal(await blobs.stat(KEY), null);
    });

    it("refuses a content type without a boundary as a malformed form", async () => {
      const err = await rejection(
        settles(
          storeMultipartBody(upload(Readable.from([Buffer.from("x")]), "multipart/form-data", 1000), blobs, KEY),
          "storeMultipartBody",
        ),
        { code: ERROR_CODE.BadRequest, field: "body" },
      );
      assert.match(err.message, /^malformed multipart form/);
    });

    it("refuses a form cut off in the file, storing nothing (bytes arriving over time)", async () => {
      const content = "z".repeat(3000);
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob([content]), "cut.txt"],
      ]);
      const cut = bytes.subarray(0, bytes.indexOf(content) + 1500);
      await rejection(settles(storeMultipartBody(upload(gatedForm(cut, content), contentType, 10_000), blobs, KEY), "storeMultipartBody"), {
        code: ERROR_CODE.BadRequest,
        field: "body",
      });
      await assertNothingStored();
    });

    it("refuses a small form cut off in the file, arriving at once, without an uncaught error", async () => {
      // busboy fails the file stream ("Unexpected end of form") before blobs.put has started reading it.
      const content = "z".repeat(3000);
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob([content]), "cut.txt"],
      ]);
      const cut = bytes.subarray(0, bytes.indexOf(content) + 1500);
      await rejection(settles(storeMultipartBody(upload(Readable.from([cut]), contentType, 10_000), blobs, KEY), "storeMultipartBody"), {
        code: ERROR_CODE.BadRequest,
        field: "body",
      });
      await assertNothingStored();
    });

    it("answers BAD_REQUEST when the client breaks off the upload, leaving no temp file behind", async () => {
      const content = "w".repeat(3000);
      const { contentType, bytes } = await form([
        ["job", "noop"],
        ["file", new Blob([content]), "abort.txt"],
      ]);
      const cut = bytes.subarray(0, bytes.indexOf(content) + 1500);
      const err = await rejection(
        settles(
          storeMultipartBody(upload(gatedForm(cut, content, new Error("socket hang up")), contentType, 10_000), blobs, KEY),
          "storeMultipartBody",
        ),
        { code: ERROR_CODE.BadRequest, field: "body" },
      );
      assert.match(err.message, /^upload interrupted: .*socket hang up/);
      await assertNothingStored();
    });
  });
});

describe("runAt and delayMs (delayed tasks)", () => {
  const now = Date.parse("2026-05-01T09:00:00Z");
  const fieldsOf = (raw: Record<string, unknown>) => parseCreateTaskFields({ job: "pages", ...raw });

  it("takes runAt as ISO 8601 or as ms since the epoch, and delayMs as ms from now", () => {
    assert.equal(availableAtOf(fieldsOf({ runAt: "2026-05-01T10:00:00Z" }), now), now + 3_600_000);
    assert.equal(availableAtOf(fieldsOf({ runAt: String(now + 5000) }), now), now + 5000);
    assert.equal(availableAtOf(fieldsOf({ runAt: now + 5000 }), now), now + 5000);
    assert.equal(availableAtOf(fieldsOf({ delayMs: "2500" }), now), now + 2500);
  });

  it("runs at once (no availableAt) without either, or with a runAt in the past", () => {
    assert.equal(availableAtOf(fieldsOf({}), now), undefined);
    assert.equal(availableAtOf(fieldsOf({ runAt: "2020-01-01T00:00:00Z" }), now), undefined);
    assert.equal(availableAtOf(fieldsOf({ delayMs: "0" }), now), undefined);
  });

  it("refuses a bad runAt or delayMs, both given, or more than a year ahead, naming the field", () => {
    throwsDocq(() => fieldsOf({ runAt: "tomorrow" }), ERROR_CODE.BadRequest, "runAt");
    throwsDocq(() => fieldsOf({ runAt: "2026-13-45T00:00:00Z" }), ERROR_CODE.BadRequest, "runAt");
    throwsDocq(() => fieldsOf({ delayMs: "-5" }), ERROR_CODE.BadRequest, "delayMs");
    throwsDocq(() => fieldsOf({ delayMs: String(MAX_DELAY_MS + 1) }), ERROR_CODE.BadRequest, "delayMs");
    throwsDocq(() => availableAtOf(fieldsOf({ runAt: String(now + 1), delayMs: "1" }), now), ERROR_CODE.BadRequest, "delayMs");
    throwsDocq(() => availableAtOf(fieldsOf({ runAt: "2028-01-01T00:00:00Z" }), now), ERROR_CODE.BadRequest, "runAt");
  });
});
