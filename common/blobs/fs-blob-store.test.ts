import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { afterEach, beforeEach, describe, it } from "node:test";
import { blobStoreContract } from "./blob-store.contract.js";
import { DocqError, ERROR_CODE } from "../model/errors.js";
import { FsBlobStore, SMALL_BLOB_BYTES } from "./fs-blob-store.js";
import { rejection } from "../testing/rejection.js";

async function tempDir(): Promise<string> {
  return fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-blobs-test-")));
}

blobStoreContract("FsBlobStore", async () => {
  const dir = await tempDir();
  return { store: await FsBlobStore.open(path.join(dir, "blobs")), cleanup: () => fs.rm(dir, { recursive: true, force: true }) };
});

// durability "process": no fsync.
blobStoreContract("FsBlobStore, durability process", async () => {
  const dir = await tempDir();
  return { store: await FsBlobStore.open(path.join(dir, "blobs"), "process"), cleanup: () => fs.rm(dir, { recursive: true, force: true }) };
});

describe("FsBlobStore: on disk", () => {
  let dir: string;
  let root: string;
  let store: FsBlobStore;

  beforeEach(async () => {
    dir = await tempDir();
    root = path.join(dir, "data", "blobs");
    store = await FsBlobStore.open(root);
  });
  afterEach(async () => {
    await store.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  const tempFiles = (): Promise<string[]> => fs.readdir(path.join(root, ".tmp"));

  it("open creates missing folders", async () => {
    assert.ok((await fs.stat(root)).isDirectory());
    assert.deepEqual(await tempFiles(), []);
  });

  it("stores key a/b at <root>/a/b", async () => {
    await store.put("task-1/input", Readable.from([Buffer.from("doc")]));
    assert.equal(await fs.readFile(path.join(root, "task-1", "input"), "utf8"), "doc");
    await store.deletePrefix("task-1/");
    await assert.rejects(fs.stat(path.join(root, "task-1")), { code: "ENOENT" });
  });

  it("leaves no temp file after a put succeeds, its body fails, or its size is wrong", async () => {
    await store.put("t/ok", Readable.from([Buffer.from("ok")]));
    assert.deepEqual(await tempFiles(), []);

    const boom = new Error("boom");
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(4096));
        this.destroy(boom);
      },
    });
    const err: unknown = await store.put("t/failed", failing).then(
      () => assert.fail("put should reject"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof Error && err.cause === boom, String(err));
    assert.deepEqual(await tempFiles(), []);

    await assert.rejects(store.put("t/wrong-size", Readable.from([Buffer.from("abc")]), { size: 2 }), { code: ERROR_CODE.BadRequest });
    assert.deepEqual(await tempFiles(), []);
    assert.deepEqual((await fs.readdir(path.join(root, "t"))).sort(), ["ok"]);
  });

  it("writes the body to .tmp until it is complete", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let pushed = false;
    const body = new Readable({
      read() {
        if (pushed) {
          void held.then(() => this.push(null));
          return;
        }
        pushed = true;
        this.push(Buffer.from("partial"));
      },
    });
    const putting = store.put("t/slow", body);
    while ((await tempFiles()).length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(store.localPath("t/slow"), null);
    assert.equal(await store.stat("t/slow"), null);
    release();
    assert.deepEqual(await putting, { size: 7 });
    assert.deepEqual(await tempFiles(), []);
  });

  it("open removes stale temp leftovers and keeps ones a live writer may still own", async () => {
    const tmp = path.join(root, ".tmp");
    await fs.writeFile(path.join(tmp, "crashed-upload"), "half a document");
    await fs.mkdir(path.join(tmp, "odd-folder"));
    const old = new Date(Date.now() - 2 * 60 * 60 * 1000);
    await fs.utimes(path.join(tmp, "crashed-upload"), old, old);
    await fs.utimes(path.join(tmp, "odd-folder"), old, old);
    await fs.writeFile(path.join(tmp, "in-progress"), "being written by another process");

    await FsBlobStore.open(root);
    assert.deepEqual(await tempFiles(), ["in-progress"]);
  });

  it("localPath gives the absolute file of a blob, or null", async () => {
    await store.put("t/input", Readable.from([Buffer.from("local")]));
    const file = store.localPath("t/input");
    assert.equal(file, path.join(root, "t", "input"));
    assert.ok(file !== null && path.isAbsolute(file));
    assert.equal(await fs.readFile(file, "utf8"), "local");
    assert.equal(store.localPath("t/missing"), null);
    assert.equal(store.localPath("t"), null);
    assert.equal(store.localPath("t/input/below"), null);
    assert.throws(
      () => store.localPath("../etc/passwd"),
      (err: unknown) => err instanceof DocqError && err.code === ERROR_CODE.BadRequest,
    );
  });

  it("refuses keys inside its temp folder and keeps it out of deletePrefix", async () => {
    await assert.rejects(store.put(".tmp/x", Readable.from([Buffer.from("x")])), { code: ERROR_CODE.BadRequest, field: "key" });
    await assert.rejects(store.deletePrefix(".tmp/"), { code: ERROR_CODE.BadRequest, field: "prefix" });
    await store.put(".tmpfile", Readable.from([Buffer.from("x")]));
    await store.deletePrefix(".t");
    assert.equal(await store.stat(".tmpfile"), null);
    assert.ok((await fs.stat(path.join(root, ".tmp"))).isDirectory());
  });

  it("refuses a key that would need a blob to also be a folder", async () => {
    await store.put("t/input", Readable.from([Buffer.from("x")]));
    await assert.rejects(store.put("t/input/part", Readable.from([Buffer.from("y")])), { code: ERROR_CODE.BadRequest, field: "key" });
    await assert.rejects(store.put("t", Readable.from([Buffer.from("y")])), { code: ERROR_CODE.BadRequest, field: "key" });
    assert.deepEqual(await store.stat("t/input"), { size: 1 });
    assert.deepEqual(await tempFiles(), []);
  });

  it("putNew keeps a small document as a row (no folder, no file) and writes a larger one in place with no temp file", async () => {
    assert.deepEqual(await store.putNew("task-2/input", Buffer.from("new doc")), { size: 7 });
    await assert.rejects(fs.stat(path.join(root, "task-2")), { code: "ENOENT" });
    assert.equal(store.localPath("task-2/input"), null, "a row has no file to point at");
    assert.equal((await buffer(await store.get("task-2/input"))).toString(), "new doc");
    const large = Buffer.alloc(SMALL_BLOB_BYTES + 1, 7);
    assert.deepEqual(await store.putNew("task-3/parts/p1", large), { size: large.length });
    assert.deepEqual(await fs.readFile(path.join(root, "task-3", "parts", "p1")), large);
    assert.equal(store.localPath("task-3/parts/p1"), path.join(root, "task-3", "parts", "p1"));
    assert.deepEqual(await tempFiles(), []);
  });

  it("putNew refuses a key that holds a blob (a row or a file), keeping it", async () => {
    await store.putNew("task-2/input", Buffer.from("new doc"));
    await rejection(store.putNew("task-2/input", Buffer.from("other")), { code: ERROR_CODE.BadRequest, field: "key" });
    assert.equal((await buffer(await store.get("task-2/input"))).toString(), "new doc");
    const large = Buffer.alloc(SMALL_BLOB_BYTES + 1, 7);
    await store.putNew("task-3/input", large);
    await rejection(store.putNew("task-3/input", large), { code: ERROR_CODE.BadRequest, field: "key" });
    await rejection(store.putNew("task-3/input/below", large), { code: ERROR_CODE.BadRequest, field: "key" });
    await rejection(store.putNew("task-3", Buffer.from("y")), { code: ERROR_CODE.BadRequest, field: "key" });
    assert.deepEqual(await fs.readFile(path.join(root, "task-3", "input")), large);
  });

  it("rows asked for in one turn share a commit, each answered as its own: a key given twice is refused the second time", async () => {
    const keys = Array.from({ length: 50 }, (_, i) => `many-${i}/input`);
    const answers = await Promise.allSettled([
      ...keys.map((key) => store.putNew(key, Buffer.from(key))),
      store.putNew("many-3/input", Buffer.from("again")),
    ]);
    assert.deepEqual(
      answers.slice(0, keys.length).map((a) => a.status),
      keys.map(() => "fulfilled"),
    );
    const again = answers[keys.length];
    assert.equal(again?.status, "rejected");
    assert.equal(((again as PromiseRejectedResult).reason as DocqError).code, ERROR_CODE.BadRequest);
    for (const key of keys) assert.equal((await buffer(await store.get(key))).toString(), key);
  });

  it("a row is replaced by put, removed by delete and deletePrefix, listed with the files of its folder, and kept across a reopen", async () => {
    await store.putNew("t1/input", Buffer.from("row"));
    await store.put("t1/output-1", Readable.from([Buffer.from("file")]));
    await store.putNew("t2/input", Buffer.from("row 2"));
    await store.putNew("t2/other", Buffer.from("row 3"));
    await store.put("t0/input", Readable.from([Buffer.from("file 0")]));
    const listed: string[] = [];
    for await (const entry of store.list()) listed.push(entry.key);
    assert.deepEqual(listed, ["t0/input", "t1/input", "t1/output-1", "t2/input", "t2/other"]);
    await store.put("t1/input", Readable.from([Buffer.from("now a file")]));
    assert.equal((await buffer(await store.get("t1/input"))).toString(), "now a file");
    assert.equal(store.localPath("t1/input"), path.join(root, "t1", "input"));
    await store.delete("t2/input");
    assert.equal(await store.stat("t2/input"), null);
    assert.deepEqual(await store.stat("t2/other"), { size: 5 });
    const reopened = await FsBlobStore.open(root, "process");
    try {
      assert.equal((await buffer(await reopened.get("t2/other"))).toString(), "row 3");
      await reopened.deletePrefix("t2/");
    } finally {
      await reopened.close();
    }
    assert.equal(await store.stat("t2/other"), null);
    await rejection(store.put(".small/x", Readable.from([Buffer.from("x")])), { code: ERROR_CODE.BadRequest, field: "key" });
  });

  it("reads back a row it stored (kept in memory) until put, delete or deletePrefix removes it", async () => {
    const bytes = Buffer.from("small input");
    await store.putNew("r1/input", bytes);
    bytes.write("CHANGED");
    await store.putNew("r1/output-1", Buffer.from("out"));
    await store.putNew("r2/input", Buffer.from("two"));
    await store.putNew("r20/input", Buffer.from("twenty"));
    assert.equal(store.readSmall("r1/input")?.toString(), "small input", "the bytes as stored, not as the caller changed them after");
    await store.put("r1/input", Readable.from([Buffer.from("now a file")]));
    assert.equal(store.readSmall("r1/input"), null);
    assert.equal((await buffer(await store.get("r1/input"))).toString(), "now a file");
    await store.delete("r1/output-1");
    assert.equal(store.readSmall("r1/output-1"), null);
    await store.deletePrefix("r2");
    assert.equal(store.readSmall("r2/input"), null);
    assert.equal(store.readSmall("r20/input"), null);
  });

  it("works without open() once the root exists or not", async () => {
    const direct = new FsBlobStore({ root: path.join(dir, "direct") });
    await direct.put("k", Readable.from([Buffer.from("v")]));
    assert.equal(await fs.readFile(path.join(dir, "direct", "k"), "utf8"), "v");
  });

  it("destroys the body when it refuses the key", async () => {
    const body = Readable.from([Buffer.from("x")]);
    await assert.rejects(store.put("../x", body), { code: ERROR_CODE.BadRequest });
    assert.equal(body.destroyed, true);
  });
});
