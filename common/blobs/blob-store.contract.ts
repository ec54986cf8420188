import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { BlobStore } from "./blob-store.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { rejection } from "../testing/rejection.js";

const MB = 1024 * 1024;
const LARGE_BLOB_BYTES = 50 * MB;
/** Well under the blob's size: a store that buffers the whole document cannot pass. */
const MAX_RSS_GROWTH_BYTES = 40 * MB;

const INVALID_KEYS = ["", "/abs", "a/../b", "..", "./a", "a/./b", "a\\b", "a\0b", "a b", "caf\u00e9", "a//b", "a/", "x".repeat(1025)];
const INVALID_PREFIXES = ["", "/", "/a", "../", "a/../", "a//", "a\\"];

/**
 * The behaviour every BlobStore adapter must have, written against the port only so each adapter
 * (fs, S3) runs it unchanged. `open` must return an empty store; `cleanup` runs after `close()`.
 */
export function blobStoreContract(adapterName: string, open: () => Promise<{ store: BlobStore; cleanup(): Promise<void> }>): void {
  describe(`BlobStore contract: ${adapterName}`, () => {
    let store: BlobStore;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await open());
    });
    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    it("round-trips small, empty and binary content and reports sizes", async () => {
      const everyByte = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const cases: Array<[string, Buffer]> = [
        ["t1/input", Buffer.from("hello, blob\n")],
        ["t1/empty", Buffer.alloc(0)],
        ["t1/binary", Buffer.concat([everyByte, randomBytes(10_000), everyByte])],
      ];
      for (const [key, content] of cases) {
        assert.deepEqual(await store.put(key, bodyOf(content)), { size: content.length }, key);
      }
      for (const [key, content] of cases) {
        assert.deepEqual(await readAll(await store.get(key)), content, key);
        assert.deepEqual(await store.stat(key), { size: content.length }, key);
      }
    });

    it("accepts a body in many chunks and an exact opts.size", async () => {
      const chunks = Array.from({ length: 100 }, (_, i) => Buffer.from(`line ${i}\n`));
      const content = Buffer.concat(chunks);
      assert.deepEqual(await store.put("t/chunked", Readable.from(chunks), { size: content.length }), { size: content.length });
      assert.deepEqual(await readAll(await store.get("t/chunked")), content);
    });

    it(`streams a ${LARGE_BLOB_BYTES / MB} MB document in and out without holding it in memory`, async () => {
      const rss = rssTracker();
      const written = createHash("sha256");
      const body = generatedBody(LARGE_BLOB_BYTES, (chunk) => {
        written.update(chunk);
        rss.sample(chunk.length);
      });
      assert.deepEqual(await store.put("big/input", body, { size: LARGE_BLOB_BYTES }), { size: LARGE_BLOB_BYTES });
      assert.deepEqual(await store.stat("big/input"), { size: LARGE_BLOB_BYTES });

      const read = createHash("sha256");
      let readBytes = 0;
      for await (const chunk of (await store.get("big/input")) as AsyncIterable<Buffer>) {
        read.update(chunk);
        readBytes += chunk.length;
        rss.sample(chunk.length);
      }
      assert.equal(readBytes, LARGE_BLOB_BYTES);
      assert.equal(read.digest("hex"), written.digest("hex"));
      const growth = rss.growth();
      assert.ok(growth < MAX_RSS_GROWTH_BYTES, `RSS grew by ${(growth / MB).toFixed(1)} MB moving a ${LARGE_BLOB_BYTES / MB} MB blob`);
    });

    it("rejects get of a missing key with BLOB_NOT_FOUND naming the key, and stat gives null", async () => {
      const err = await rejection(store.get("nope/input"), { code: ERROR_CODE.BlobNotFound });
      assert.match(err.message, /nope\/input/);
      assert.equal(await store.stat("nope/input"), null);
    });

    it("does not treat a prefix of other blobs as a blob", async () => {
      await store.put("dir/child", bodyOf("x"));
      await rejection(store.get("dir"), { code: ERROR_CODE.BlobNotFound });
      assert.equal(await store.stat("dir"), null);
      await store.delete("dir");
      assert.deepEqual(await store.stat("dir/child"), { size: 1 });
    });

    it("replaces a blob on overwrite, including with shorter content", async () => {
      await store.put("t/output", bodyOf("a much longer first version"));
      assert.deepEqual(await store.put("t/output", bodyOf("short")), { size: 5 });
      assert.equal((await readAll(await store.get("t/output"))).toString(), "short");
      assert.deepEqual(await store.stat("t/output"), { size: 5 });
    });

    it("rejects with the body's error when the body fails midway, and leaves no blob", async () => {
      const boom = new Error("client went away");
      const err = await rejectionOf(store.put("t/input", failingBody(boom)));
      assert.ok(causes(err).includes(boom), `the body's error should be the rejection or its cause, got ${String(err)}`);
      assert.equal(await store.stat("t/input"), null);
      await rejection(store.get("t/input"), { code: ERROR_CODE.BlobNotFound });
    });

    it("keeps the code of a DocqError raised by the body, so an upload limit still answers 413", async () => {
      const tooLarge = docqError(ERROR_CODE.PayloadTooLarge, "document larger than 2 KiB");
      const err = await rejection(store.put("t/input", failingBody(tooLarge)), { code: ERROR_CODE.PayloadTooLarge });
      assert.ok(causes(err).includes(tooLarge));
      assert.equal(await store.stat("t/input"), null);
    });

    it("keeps the previous blob when an overwrite fails", async () => {
      await store.put("t/input", bodyOf("original"));
      await rejectionOf(store.put("t/input", failingBody(new Error("boom"))));
      await rejection(store.put("t/input", bodyOf("too long"), { size: 3 }), { code: ERROR_CODE.BadRequest });
      assert.equal((await readAll(await store.get("t/input"))).toString(), "original");
    });

    it("rejects a body whose length differs from opts.size, writing nothing", async () => {
      await rejection(store.put("t/short", bodyOf("12345"), { size: 6 }), { code: ERROR_CODE.BadRequest });
      await rejection(store.put("t/long", bodyOf("1234567"), { size: 6 }), { code: ERROR_CODE.BadRequest });
      await rejection(store.put("t/empty", bodyOf(""), { size: 1 }), { code: ERROR_CODE.BadRequest });
      for (const key of ["t/short", "t/long", "t/empty"]) assert.equal(await store.stat(key), null, key);
    });

    it("deletes idempotently", async () => {
      await store.delete("never/was");
      await store.put("t/input", bodyOf("x"));
      await store.delete("t/input");
      assert.equal(await store.stat("t/input"), null);
      await rejection(store.get("t/input"), { code: ERROR_CODE.BlobNotFound });
      await store.delete("t/input");
    });

    it("deletePrefix('a/') removes a/x and a/y but not ab/z", async () => {
      for (const key of ["a/x", "a/y", "a/sub/deep", "ab/z", "b/a/x"]) await store.put(key, bodyOf(key));
      await store.deletePrefix("a/");
      assert.deepEqual(await statAll(store, ["a/x", "a/y", "a/sub/deep", "ab/z", "b/a/x"]), [null, null, null, 4, 5]);
      await store.deletePrefix("a/");
      await store.deletePrefix("missing/");
      await store.put("a/x", bodyOf("again"));
      assert.deepEqual(await store.stat("a/x"), { size: 5 });
    });

    it("deletePrefix matches raw key prefixes, not only whole segments", async () => {
      for (const key of ["a/x", "ab/z", "abc", "b/q", "abd.txt"]) await store.put(key, bodyOf(key));
      await store.deletePrefix("ab");
      assert.deepEqual(await statAll(store, ["a/x", "ab/z", "abc", "b/q", "abd.txt"]), [3, null, null, 3, null]);
      await store.put("t/input-1", bodyOf("1"));
      await store.put("t/input-2", bodyOf("2"));
      await store.put("t/output", bodyOf("3"));
      await store.deletePrefix("t/input");
      assert.deepEqual(await statAll(store, ["t/input-1", "t/input-2", "t/output"]), [null, null, 1]);
    });

    it("lists every blob with its write time, a folder's keys together, and nothing deleted", async () => {
      const before = Date.now() - 60_000;
      const keys = ["b-2/output-1", "a-1/input", "b-2/input", "a-1/split-1/part-0", "a-10/input", "b-2/split-1/part-1"];
      for (const key of keys) await store.put(key, bodyOf(Buffer.from(key)));
      await store.delete("b-2/input");
      const listed: { key: string; modifiedAt: number }[] = [];
      for await (const entry of store.list()) listed.push(entry);
      assert.deepEqual(listed.map((e) => e.key).sort(), keys.filter((k) => k !== "b-2/input").sort());
      for (const entry of listed)
        assert.ok(entry.modifiedAt > before && entry.modifiedAt < Date.now() + 60_000, `${entry.key} written now`);
      const folders = listed.map((e) => e.key.split("/")[0]);
      const runs = folders.filter((f, i) => i === 0 || folders[i - 1] !== f);
      assert.equal(new Set(runs).size, runs.length, `each folder's keys come together: ${folders.join(" ")}`);
    });

    it("refuses invalid keys with BAD_REQUEST on field key", async () => {
      for (const key of INVALID_KEYS) {
        const label = JSON.stringify(key.slice(0, 20));
        await rejection(store.put(key, bodyOf("x")), { code: ERROR_CODE.BadRequest, field: "key", label: label });
        await rejection(store.putNew(key, Buffer.from("x")), { code: ERROR_CODE.BadRequest, field: "key", label: label });
        await rejection(store.get(key), { code: ERROR_CODE.BadRequest, field: "key", label: label });
        await rejection(store.stat(key), { code: ERROR_CODE.BadRequest, field: "key", label: label });
        await rejection(store.delete(key), { code: ERROR_CODE.BadRequest, field: "key", label: label });
      }
      for (const prefix of INVALID_PREFIXES) {
        await rejection(store.deletePrefix(prefix), { code: ERROR_CODE.BadRequest, field: "prefix", label: JSON.stringify(prefix) });
      }
    });

    it("accepts keys made of every allowed character", async () => {
      const key = "Task-01_A.b/Z9.part-2_of-3/x";
      await store.put(key, bodyOf("ok"));
      assert.equal((await readAll(await store.get(key))).toString(), "ok");
    });

    it("putNew stores a new key's bytes, empty ones too, seen by get, stat and list", async () => {
      const content = Buffer.concat([Buffer.from("new document\n"), randomBytes(2_000)]);
      assert.deepEqual(await store.putNew("fresh/input", content), { size: content.length });
      assert.deepEqual(await store.putNew("fresh/empty", new Uint8Array(0)), { size: 0 });
      assert.deepEqual(await readAll(await store.get("fresh/input")), content);
      assert.deepEqual(await store.stat("fresh/empty"), { size: 0 });
      const listed: string[] = [];
      for await (const entry of store.list()) listed.push(entry.key);
      assert.deepEqual(listed.sort(), ["fresh/empty", "fresh/input"]);
      await store.deletePrefix("fresh/");
      assert.equal(await store.stat("fresh/input"), null);
    });

    it("putNew takes many new folders at once", async () => {
      const keys = Array.from({ length: 40 }, (_, i) => `batch-${i % 20}/input-${i}`);
      await Promise.all(keys.map((key) => store.putNew(key, Buffer.from(key))));
      for (const key of keys) assert.equal((await readAll(await store.get(key))).toString(), key);
    });

    it("handles concurrent puts into the same new folder", async () => {
      const keys = Array.from({ length: 20 }, (_, i) => `par/part-${i}`);
      await Promise.all(keys.map((key) => store.put(key, bodyOf(key))));
      for (const key of keys) assert.equal((await readAll(await store.get(key))).toString(), key);
    });

    it("adopt takes a local file over as the blob (gone from where it was), or answers null and leaves it", async (t) => {
      if (store.adopt === undefined) return t.skip("the adapter has no adopt");
      const dir = await mkdtemp(path.join(os.tmpdir(), "docq-adopt-contract-"));
      const file = path.join(dir, "answered");
      await writeFile(file, "an answered output\n");
      const fd = openSync(file, "r");
      try {
        const answer = await store.adopt("t/adopted", { path: file, fd });
        if (answer === null) {
          assert.equal(await readFile(file, "utf8"), "an answered output\n", "a refused file is left as it was");
          assert.equal(await store.stat("t/adopted"), null);
        } else {
          assert.deepEqual(answer, { size: "an answered output\n".length });
          assert.equal((await readAll(await store.get("t/adopted"))).toString(), "an answered output\n");
          await assert.rejects(stat(file), { code: "ENOENT" });
        }
      } finally {
        closeSync(fd);
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
}

function bodyOf(content: Buffer | string): Readable {
  const bytes = Buffer.from(content);
  return Readable.from(bytes.length === 0 ? [] : [bytes]);
}

/** A body that sends a few chunks, then fails like an interrupted upload. */
function failingBody(error: Error): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent < 3) {
        sent++;
        this.push(Buffer.alloc(1024, sent));
      } else {
        this.destroy(error);
      }
    },
  });
}

/**
 * `totalBytes` of varied content without allocating per chunk: each chunk is a view at a different
 * offset into one random pattern that is never mutated. A generator, not a byte-mode Readable pushing
 * synchronously: that one concatenates chunks on every read, and the copies would count against the store.
 */
function generatedBody(totalBytes: number, onChunk: (chunk: Buffer) => void): Readable {
  const chunkBytes = MB;
  const pattern = randomBytes(2 * chunkBytes);
  function* chunks(): Generator<Buffer> {
    for (let sent = 0, index = 0; sent < totalBytes; index++) {
      const length = Math.min(chunkBytes, totalBytes - sent);
      const offset = (index * 7919) % chunkBytes;
      const chunk = pattern.subarray(offset, offset + length);
      sent += length;
      onChunk(chunk);
      yield chunk;
    }
  }
  return Readable.from(chunks());
}

/**
 * Peak RSS growth while a blob moves. It forces a full collection every few MB: otherwise V8 lets tens
 * of MB of dead read buffers pile up before collecting, and that garbage says nothing about the store.
 */
function rssTracker(): { sample(bytesMoved: number): void; growth(): number } {
  const collect = garbageCollector();
  const collectEveryBytes = 4 * MB;
  let sinceCollect = 0;
  collect();
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  return {
    sample(bytesMoved) {
      peak = Math.max(peak, process.memoryUsage.rss());
      sinceCollect += bytesMoved;
      if (sinceCollect >= collectEveryBytes) {
        sinceCollect = 0;
        collect();
      }
    },
    growth: () => peak - baseline,
  };
}

function garbageCollector(): () => void {
  if (globalThis.gc !== undefined) return globalThis.gc;
  // The test runner does not pass --expose-gc; the flag still takes effect for contexts created afterwards.
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer | string>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

async function statAll(store: BlobStore, keys: string[]): Promise<Array<number | null>> {
  return Promise.all(keys.map(async (key) => (await store.stat(key))?.size ?? null));
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail("expected a rejection");
}

function causes(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = err; e !== undefined && !chain.includes(e); e = e instanceof Error ? e.cause : undefined) chain.push(e);
  return chain;
}
