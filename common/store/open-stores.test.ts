import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { loadConfig, type BlobsConfig, type S3BlobsConfig } from "../config/config.js";
import { ERROR_CODE } from "../model/errors.js";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { openBlobStore, openTaskStore } from "./open-stores.js";
import { S3BlobStore } from "../blobs/s3-blob-store.js";
import { SqliteTaskStore } from "./sqlite/sqlite-task-store.js";
import { makeTask } from "./task-store.contract.js";
import { freePort } from "../testing/free-port.js";
import { rejection } from "../testing/rejection.js";

/** s3rver has no types of its own; what this test uses of it. */
interface S3rverServer {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
type S3rverConstructor = new (options: { address: string; port: number; directory: string; silent: boolean }) => S3rverServer;
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverConstructor;

let root: string;
let s3rver: S3rverServer;
let s3Port: number;

before(async () => {
  root = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-open-stores-")));
  s3rver = new S3rver({ address: "127.0.0.1", port: 0, directory: path.join(root, "s3rver"), silent: true });
  ({ port: s3Port } = await s3rver.run());
});
after(async () => {
  await s3rver?.close();
  await fs.rm(root, { recursive: true, force: true });
});

let count = 0;
const freshDir = async (): Promise<string> => {
  const dir = path.join(root, `case-${++count}`);
  await fs.mkdir(dir);
  return dir;
};

const s3 = (overrides: Partial<S3BlobsConfig> = {}): BlobsConfig => ({
  type: "s3",
  endPoint: "127.0.0.1",
  port: s3Port,
  useSSL: false,
  bucket: "docq-open",
  prefix: "local",
  region: "us-east-1",
  partSizeBytes: 8 * 1024 * 1024,
  accessKey: "S3RVER",
  secretKey: "S3RVER",
  ...overrides,
});

describe("openTaskStore", () => {
  it("opens SQLite at <dataDir>/tasks.sqlite", async () => {
    const dataDir = await freshDir();
    const store = await openTaskStore({ store: { type: "sqlite" }, dataDir });
    try {
      assert.ok(store instanceof SqliteTaskStore);
      const task = makeTask();
      await store.create(task);
      assert.deepEqual(await store.get(task.id), task);
      assert.ok((await fs.stat(path.join(dataDir, "tasks.sqlite"))).isFile());
    } finally {
      await store.close();
    }
  });

  it("stops with CONFIG naming sqlite and the file when it cannot be opened", async () => {
    const dataDir = path.join(await freshDir(), "a-file");
    await fs.writeFile(dataDir, "not a folder");
    const err = await rejection(openTaskStore({ store: { type: "sqlite" }, dataDir }));
    assert.equal(err.code, ERROR_CODE.Config);
    assert.match(err.message, /^cannot open the task store \(store\.type sqlite\): /);
    assert.ok(err.message.includes(path.join(dataDir, "tasks.sqlite")), err.message);
    assert.deepEqual(err.details, { adapter: "sqlite", endpoint: path.join(dataDir, "tasks.sqlite"), reason: ERROR_CODE.StoreUnavailable });
    assert.ok(err.cause !== undefined);
  });

  it("stops with CONFIG naming mongodb, the server without its password, and the cause when MongoDB does not answer", async () => {
    const port = await freePort();
    const url = `mongodb://docq:hunter2@127.0.0.1:${port}/?serverSelectionTimeoutMS=300`;
    const err = await rejection(
      openTaskStore({ store: { type: "mongodb", url, database: "site_a", writeConcern: "majority" }, dataDir: root }),
    );
    assert.equal(err.code, ERROR_CODE.Config);
    assert.match(
      err.message,
      new RegExp(
        `^cannot open the task store \\(store\\.type mongodb\\): MongoDB mongodb://127\\.0\\.0\\.1:${port}, database "site_a": cannot connect: .*ECONNREFUSED`,
      ),
    );
    assert.doesNotMatch(err.message, /hunter2/);
    assert.deepEqual(err.details, {
      adapter: "mongodb",
      endpoint: `mongodb://127.0.0.1:${port}, database "site_a"`,
      reason: ERROR_CODE.StoreUnavailable,
    });
  });

  it("stops with CONFIG naming postgres, the server without its password, and the cause when PostgreSQL does not answer", async () => {
    const port = await freePort();
    const url = `postgresql://docq:hunter2@127.0.0.1:${port}/site_a`;
    const err = await rejection(openTaskStore({ store: { type: "postgres", url, schema: "site_a", poolSize: 2 }, dataDir: root }));
    assert.equal(err.code, ERROR_CODE.Config);
    assert.match(
      err.message,
      new RegExp(
        `^cannot open the task store \\(store\\.type postgres\\): task store PostgreSQL postgresql://127\\.0\\.0\\.1:${port}/site_a, schema "site_a": open failed: .*ECONNREFUSED`,
      ),
    );
    assert.doesNotMatch(err.message, /hunter2/);
    assert.deepEqual(err.details, {
      adapter: "postgres",
      endpoint: `postgresql://127.0.0.1:${port}/site_a, schema "site_a"`,
      reason: ERROR_CODE.StoreUnavailable,
    });
  });
});

describe("openBlobStore", () => {
  it("opens the fs store at <dataDir>/blobs", async () => {
    const dataDir = await freshDir();
    const blobs = await openBlobStore({ blobs: { type: "fs" }, dataDir });
    try {
      assert.ok(blobs instanceof FsBlobStore);
      await blobs.put("t/x", Readable.from([Buffer.from("fs")]));
      assert.equal(await fs.readFile(path.join(dataDir, "blobs", "t", "x"), "utf8"), "fs");
    } finally {
      await blobs.close();
    }
  });

  it("stops with CONFIG naming fs and the folder when it cannot be made", async () => {
    const dataDir = path.join(await freshDir(), "a-file");
    await fs.writeFile(dataDir, "not a folder");
    const err = await rejection(openBlobStore({ blobs: { type: "fs" }, dataDir }));
    assert.equal(err.code, ERROR_CODE.Config);
    assert.match(err.message, /^cannot open the blob store \(blobs\.type fs\): /);
    assert.ok(err.message.includes(path.join(dataDir, "blobs")), err.message);
  });

  it("opens S3 on s3rver, creating the bucket, and stores under the prefix", async () => {
    const blobs = await openBlobStore({ blobs: s3(), dataDir: root });
    try {
      assert.ok(blobs instanceof S3BlobStore);
      assert.equal(blobs.bucket, "docq-open");
      assert.equal(blobs.prefix, "local");
      await blobs.put("t/x", Readable.from([Buffer.from("over s3")]));
      assert.deepEqual(await blobs.stat("t/x"), { size: 7 });
    } finally {
      await blobs.close();
    }
  });

  it("opens S3 from a config file, S3_URL and the key variables", async () => {
    const file = path.join(await freshDir(), "config.yaml");
    await fs.writeFile(file, "site: paris\nblobs:\n  type: s3\n  bucket: docq-from-config\n");
    const config = await loadConfig({
      file,
      env: { S3_URL: `http://127.0.0.1:${s3Port}`, S3_ACCESS_KEY: "S3RVER", S3_SECRET_KEY: "S3RVER" },
    });
    const blobs = await openBlobStore(config);
    try {
      assert.ok(blobs instanceof S3BlobStore);
      assert.equal(blobs.endpoint, `http://127.0.0.1:${s3Port}`);
      assert.equal(blobs.prefix, "paris");
      await blobs.put("t/y", Readable.from([Buffer.from("configured")]));
      assert.deepEqual(await blobs.stat("t/y"), { size: 10 });
    } finally {
      await blobs.close();
    }
  });

  it("stops with CONFIG naming s3, the endpoint and bucket, and the cause when the keys are refused", async () => {
    const err = await rejection(openBlobStore({ blobs: s3({ accessKey: "NOT-A-KEY" }), dataDir: root }));
    assert.equal(err.code, ERROR_CODE.Config);
    assert.match(
      err.message,
      new RegExp(
        `^cannot open the blob store \\(blobs\\.type s3\\): S3 blob store http://127\\.0\\.0\\.1:${s3Port}, bucket "docq-open": .*InvalidAccessKeyId`,
      ),
    );
    assert.deepEqual(err.details, { adapter: "s3", endpoint: `http://127.0.0.1:${s3Port}, bucket "docq-open"`, reason: ERROR_CODE.Config });
  });

  it("stops with CONFIG naming s3, the endpoint and bucket when nothing answers there", async () => {
    const port = await freePort();
    const err = await rejection(openBlobStore({ blobs: s3({ port }), dataDir: root }));
    assert.equal(err.code, ERROR_CODE.Config);
    assert.match(
      err.message,
      new RegExp(
        `^cannot open the blob store \\(blobs\\.type s3\\): S3 blob store http://127\\.0\\.0\\.1:${port}, bucket "docq-open": connecting failed: .*ECONNREFUSED`,
      ),
    );
    assert.equal(err.details?.reason, ERROR_CODE.StoreUnavailable);
  });
});
