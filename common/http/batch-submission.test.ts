import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { ERROR_CODE } from "../model/errors.js";
import { rejection } from "../testing/rejection.js";
import { storeBatchForm } from "./batch-submission.js";
import type { UploadRequest } from "./task-submission.js";

const silent = { warn: () => undefined, error: () => undefined, info: () => undefined, debug: () => undefined };

/** A multipart request of `documents` (one file part each) after the field job. */
async function batchRequest(documents: Buffer[], maxBytes: number): Promise<UploadRequest> {
  const form = new FormData();
  form.set("job", "noop");
  documents.forEach((doc, i) => form.append("file", new Blob([new Uint8Array(doc)]), `doc-${i}.txt`));
  const response = new Response(form);
  const bytes = Buffer.from(await response.arrayBuffer());
  return {
    body: Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]),
    contentType: response.headers.get("content-type") ?? undefined,
    contentLength: String(bytes.length),
    maxBytes,
  };
}

describe("storeBatchForm", () => {
  let dir: string;
  let blobs: FsBlobStore;
  let ids = 0;
  const options = {
    query: {},
    newId: () => `task-${String(++ids).padStart(4, "0")}`,
    prepare: (fields: { job: string }) => fields.job,
    log: silent,
  };
  /** Every file under the store's root but its empty temp folder. */
  /** The documents stored (files and small documents' rows) and the partial uploads. */
  const filesOnDisk = async (): Promise<string[]> => {
    const keys: string[] = [];
    for await (const entry of blobs.list()) keys.push(entry.key);
    return [...keys, ...(await fs.readdir(path.join(blobs.root, ".tmp")).catch(() => []))];
  };

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-batch-test-"));
    blobs = await FsBlobStore.open(path.join(dir, "blobs"), "process");
  });
  afterEach(async () => {
    await blobs.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("stores small documents whole and a large one streamed, in file order, leaving no temp file", async () => {
    const documents = [Buffer.from("first\n"), Buffer.alloc(3 * 1024 * 1024, 7), Buffer.from("third\n")];
    const files = await storeBatchForm(await batchRequest(documents, 8 * 1024 * 1024), blobs, options);
    assert.deepEqual(
      files.map((f) => f.size),
      documents.map((d) => d.length),
    );
    for (const [i, file] of files.entries()) {
      assert.equal(file.prepared, "noop");
      const stored = Buffer.concat(await (await blobs.get(file.input)).toArray());
      assert.ok(stored.equals(documents[i]!), `document ${i} stored as sent`);
    }
    assert.deepEqual(await fs.readdir(path.join(blobs.root, ".tmp")), []);
  });

  it("refuses the batch whose documents together pass the limit, naming the file, storing nothing", async () => {
    const documents = [Buffer.alloc(600, 1), Buffer.alloc(600, 2), Buffer.alloc(600, 3)];
    await rejection(storeBatchForm(await batchRequest(documents, 1000), blobs, options), {
      code: ERROR_CODE.PayloadTooLarge,
      field: "file[1]",
    });
    assert.deepEqual(await filesOnDisk(), []);
  });

  it("refuses an empty file, naming its position, storing nothing", async () => {
    await rejection(storeBatchForm(await batchRequest([Buffer.from("a"), Buffer.alloc(0), Buffer.from("c")], 1000), blobs, options), {
      code: ERROR_CODE.BadRequest,
      field: "file[1]",
    });
    assert.deepEqual(await filesOnDisk(), []);
  });
});
