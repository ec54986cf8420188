import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { blobStoreContract } from "./blob-store.contract.js";
import { loadConfig, type S3BlobsConfig } from "../config/config.js";
import { ERROR_CODE, isDocqError } from "../model/errors.js";
import { S3BlobStore, type S3BlobStoreOptions } from "./s3-blob-store.js";
import { freePort } from "../testing/free-port.js";
import { rejection } from "../testing/rejection.js";

/*
 * The S3 adapter over HTTP against real S3-compatible servers:
 * - s3rver (npm), started here in a child process on a free port (its memory stays out of the
 *   contract's RSS measure, and it can be killed and restarted for the outage test). The store
 *   drives multipart uploads itself (initiate, parts, complete), which s3rver implements, so the
 *   multipart path runs for real here; s3rver's log shows each part it stored.
 * - any endpoint given by S3_URL (MinIO, AWS S3, ...) with S3_ACCESS_KEY and S3_SECRET_KEY, and the
 *   bucket S3_TEST_BUCKET (default docq-test): the same contract with 5 MiB parts.
 */

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const MiB = 1024 * 1024;
/** S3's smallest part: the 50 MB contract document goes up in 10 parts. */
const PART = 5 * MiB;
/** s3rver's built-in account. */
const S3RVER_KEYS = { accessKey: "S3RVER", secretKey: "S3RVER" };
const BUCKET = "docq-test";

interface S3rverProcess {
  port: number;
  dir: string;
  /** What s3rver logged so far (one line per request it served). */
  log(): string;
  stop(): Promise<void>;
}

const S3RVER_MAIN = `
const S3rver = require("s3rver");
const [directory, port] = process.argv.slice(1);
new S3rver({ address: "127.0.0.1", port: Number(port), directory, silent: false })
  .run()
  .then((address) => console.log("S3RVER_LISTENING " + address.port), (err) => { console.error(err); process.exit(1); });
`;

/** Starts s3rver in a child process storing under `dir`; port 0 picks a free one. */
async function startS3rver(dir: string, port = 0): Promise<S3rverProcess> {
  const child: ChildProcess = spawn(process.execPath, ["-e", S3RVER_MAIN, dir, String(port)], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listening = new Promise<number>((resolve, reject) => {
    child.stdout?.on("data", (data: Buffer) => {
      output += data.toString();
      const match = /S3RVER_LISTENING (\d+)/.exec(output);
      if (match !== null) resolve(Number(match[1]));
    });
    child.stderr?.on("data", (data: Buffer) => (output += data.toString()));
    void exited.then(() => reject(new Error(`s3rver exited during start-up:\n${output}`)));
  });
  const actualPort = await listening;
  return {
    port: actualPort,
    dir,
    log: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
}

function s3rverOptions(server: S3rverProcess, overrides: Partial<S3BlobStoreOptions> = {}): S3BlobStoreOptions {
  return {
    endPoint: "127.0.0.1",
    port: server.port,
    useSSL: false,
    ...S3RVER_KEYS,
    bucket: BUCKET,
    prefix: "local",
    region: "us-east-1",
    partSizeBytes: PART,
    ...overrides,
  };
}

let root: string;
let server: S3rverProcess;
let prefixCount = 0;
const freshPrefix = (): string => `t${++prefixCount}-${process.pid}`;

before(async () => {
  root = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-s3-test-")));
  server = await startS3rver(path.join(root, "s3rver"));
});
after(async () => {
  if (process.env.DOCQ_DEBUG_S3RVER_LOG !== undefined) await fs.writeFile(process.env.DOCQ_DEBUG_S3RVER_LOG, server.log());
  await server?.stop();
  await fs.rm(root, { recursive: true, force: true });
});

blobStoreContract("S3BlobStore on s3rver (5 MiB parts)", async () => ({
  store: await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() })),
  // A fresh prefix per test is an empty store; s3rver's folder goes at the end.
  cleanup: async () => undefined,
}));

// ---------------------------------------------------------------------------
// The same contract against any endpoint named by S3_URL.
// ---------------------------------------------------------------------------

const S3_URL_SKIP =
  "S3_URL is not set: the contract against an external S3 endpoint (MinIO, AWS) needs S3_URL=http://host:port, S3_ACCESS_KEY and S3_SECRET_KEY (see README)";

if (process.env.S3_URL === undefined || process.env.S3_URL === "") {
  describe("BlobStore contract: S3BlobStore on S3_URL", () => {
    it("runs the contract against S3_URL", { skip: S3_URL_SKIP }, () => undefined);
  });
} else {
  let loaded: Promise<S3BlobsConfig> | undefined;
  /** S3_URL and the keys read as docq reads them, through the config loader. */
  const externalConfig = async (): Promise<S3BlobsConfig> => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-s3-url-"));
    const file = path.join(dir, "config.yaml");
    await fs.writeFile(file, `blobs:\n  type: s3\n  bucket: ${process.env.S3_TEST_BUCKET ?? BUCKET}\n  partSizeBytes: ${PART}\n`);
    try {
      const config = await loadConfig({ file, env: process.env });
      assert.ok(config.blobs.type === "s3");
      return config.blobs;
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  };
  blobStoreContract(`S3BlobStore on S3_URL ${process.env.S3_URL} (5 MiB parts)`, async () => {
    const external = await (loaded ??= externalConfig());
    const prefix = `docq-test-${process.pid}-${Date.now()}-${++prefixCount}`;
    return {
      store: await S3BlobStore.open({ ...external, prefix }),
      async cleanup() {
        const atRoot = await S3BlobStore.open({ ...external, prefix: "" });
        try {
          await atRoot.deletePrefix(`${prefix}/`);
        } finally {
          await atRoot.close();
        }
      },
    };
  });
}

// ---------------------------------------------------------------------------
// What the contract does not show.
// ---------------------------------------------------------------------------

/** `totalBytes` of random-looking content, in 256 KiB chunks; `failAfter` makes it fail like a dropped upload. */
function body(totalBytes: number, opts: { failAfter?: number; error?: Error } = {}): { stream: Readable; sha256: () => string } {
  const pattern = randomBytes(MiB);
  const hash = createHash("sha256");
  function* chunks(): Generator<Buffer> {
    for (let sent = 0, i = 0; sent < totalBytes; i++) {
      if (opts.failAfter !== undefined && sent >= opts.failAfter) throw opts.error ?? new Error("client went away");
      const length = Math.min(256 * 1024, totalBytes - sent);
      const offset = (i * 7919) % (MiB - length + 1);
      const chunk = pattern.subarray(offset, offset + length);
      hash.update(chunk);
      sent += length;
      yield chunk;
    }
  }
  return { stream: Readable.from(chunks()), sha256: () => hash.digest("hex") };
}

async function sha256Of(stream: Readable): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** Parts s3rver stored since `from` (an offset into its log). */
function partsLogged(from: number): number {
  return (
    server
      .log()
      .slice(from)
      .match(/Stored part \d+ of /g) ?? []
  ).length;
}

describe("S3BlobStore on s3rver", () => {
  it("sends a document over one part as a multipart upload, its size unknown, and reads it back whole", async () => {
    const store = await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() }));
    try {
      const size = 2 * PART + 12_345;
      const logAt = server.log().length;
      const doc = body(size);
      assert.deepEqual(await store.put("t/big", doc.stream), { size });
      assert.equal(partsLogged(logAt), 3, "three parts: two full ones and the rest");
      assert.deepEqual(await store.stat("t/big"), { size });
      assert.deepEqual(await sha256Of(await store.get("t/big")), { sha256: doc.sha256(), bytes: size });
    } finally {
      await store.close();
    }
  });

  it("sends a body of exactly one part as a single PUT", async () => {
    const store = await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() }));
    try {
      const logAt = server.log().length;
      const doc = body(PART);
      assert.deepEqual(await store.put("t/one-part", doc.stream), { size: PART });
      assert.equal(partsLogged(logAt), 0);
      assert.equal((await sha256Of(await store.get("t/one-part"))).sha256, doc.sha256());
    } finally {
      await store.close();
    }
  });

  it("leaves no blob and keeps the previous one when the body fails after parts were sent", async () => {
    const store = await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() }));
    try {
      await store.put("t/input", Readable.from([Buffer.from("previous")]));
      const boom = new Error("client went away at 11 MiB");
      const logAt = server.log().length;
      const err: unknown = await store.put("t/input", body(3 * PART, { failAfter: 11 * MiB, error: boom }).stream).then(
        () => assert.fail("put should reject"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof Error && err.cause === boom, String(err));
      assert.ok(!isDocqError(err), "a failed body is not a store failure");
      assert.equal(partsLogged(logAt), 2, "two parts had been sent");
      assert.equal((await sha256Of(await store.get("t/input"))).bytes, "previous".length);
      // This upload fails by design: the test is that no blob appears, asserted next.
      await store.put("t/new", body(3 * PART, { failAfter: 6 * MiB }).stream).catch(() => undefined);
      assert.equal(await store.stat("t/new"), null);
    } finally {
      await store.close();
    }
  });

  it("refuses a body longer or shorter than opts.size after parts were sent, writing nothing", async () => {
    const store = await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() }));
    try {
      const longer = await rejection(store.put("t/long", body(2 * PART + 10).stream, { size: 2 * PART + 9 }));
      assert.equal(longer.code, ERROR_CODE.BadRequest);
      assert.match(longer.message, /more than/);
      const shorter = await rejection(store.put("t/short", body(2 * PART).stream, { size: 3 * PART }));
      assert.equal(shorter.code, ERROR_CODE.BadRequest);
      assert.equal(await store.stat("t/long"), null);
      assert.equal(await store.stat("t/short"), null);
    } finally {
      await store.close();
    }
  });

  it("keeps sites apart by prefix in one bucket, and stores `<prefix>/<key>`", async () => {
    const base = freshPrefix();
    const a = await S3BlobStore.open(s3rverOptions(server, { prefix: `${base}/site_a` }));
    const b = await S3BlobStore.open(s3rverOptions(server, { prefix: `${base}/site_b` }));
    const bucketRoot = await S3BlobStore.open(s3rverOptions(server, { prefix: "" }));
    try {
      await a.put("t/input", Readable.from([Buffer.from("from a")]));
      await b.put("t/input", Readable.from([Buffer.from("from b, longer")]));
      assert.deepEqual(await a.stat("t/input"), { size: 6 });
      assert.deepEqual(await b.stat("t/input"), { size: 14 });
      assert.deepEqual(await bucketRoot.stat(`${base}/site_a/t/input`), { size: 6 });
      await a.deletePrefix("t");
      assert.equal(await a.stat("t/input"), null);
      assert.deepEqual(await b.stat("t/input"), { size: 14 });
    } finally {
      await Promise.all([a.close(), b.close(), bucketRoot.close()]);
    }
  });

  it("deletePrefix removes more than one listing page", async () => {
    const store = await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() }));
    try {
      const keys = Array.from({ length: 1100 }, (_, i) => `many/k${String(i).padStart(4, "0")}`);
      for (let i = 0; i < keys.length; i += 50) {
        await Promise.all(keys.slice(i, i + 50).map((key) => store.put(key, Readable.from([Buffer.from("x")]))));
      }
      await store.put("manz", Readable.from([Buffer.from("kept")]));
      await store.deletePrefix("many/");
      for (const key of [keys[0], keys[999], keys[1000], keys[1099]]) assert.equal(await store.stat(key!), null, key);
      assert.deepEqual(await store.stat("manz"), { size: 4 });
    } finally {
      await store.close();
    }
  });

  it("has no localPath: workers download", async () => {
    const store = await S3BlobStore.open(s3rverOptions(server, { prefix: freshPrefix() }));
    try {
      assert.equal((store as { localPath?: unknown }).localPath, undefined);
    } finally {
      await store.close();
    }
  });

  it("open creates a missing bucket", async () => {
    const bucket = `docq-new-${process.pid}`;
    const store = await S3BlobStore.open(s3rverOptions(server, { bucket }));
    try {
      await store.put("t/x", Readable.from([Buffer.from("in a new bucket")]));
      assert.deepEqual(await store.stat("t/x"), { size: 15 });
    } finally {
      await store.close();
    }
    // Opening again finds it.
    await (await S3BlobStore.open(s3rverOptions(server, { bucket }))).close();
  });

  it("open fails with CONFIG naming the endpoint, bucket and keys when the credentials are wrong", async () => {
    const err = await rejection(S3BlobStore.open(s3rverOptions(server, { accessKey: "WRONG", secretKey: "WRONG" })));
    assert.equal(err.code, ERROR_CODE.Config, err.message);
    assert.match(err.message, new RegExp(`S3 blob store http://127\\.0\\.0\\.1:${server.port}, bucket "${BUCKET}"`));
    assert.match(err.message, /InvalidAccessKeyId/);
    assert.match(err.message, /S3_ACCESS_KEY/);
    // A wrong secret key is SignatureDoesNotMatch on a real endpoint; s3rver does not check v4 signatures.
  });

  it("open fails with STORE_UNAVAILABLE naming the endpoint and bucket when nothing listens", async () => {
    const port = await freePort();
    const err = await rejection(S3BlobStore.open(s3rverOptions(server, { port })));
    assert.equal(err.code, ERROR_CODE.StoreUnavailable, err.message);
    assert.match(
      err.message,
      new RegExp(`S3 blob store http://127\\.0\\.0\\.1:${port}, bucket "${BUCKET}": connecting failed: .*ECONNREFUSED`),
    );
  });

  it("open gives up after connectTimeoutMs on an endpoint that never answers", async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as net.AddressInfo;
    try {
      const started = Date.now();
      const err = await rejection(S3BlobStore.open(s3rverOptions(server, { port, connectTimeoutMs: 300 })));
      assert.equal(err.code, ERROR_CODE.StoreUnavailable);
      assert.match(err.message, /no answer within 300 ms/);
      assert.ok(Date.now() - started < 5_000);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it("fails with STORE_UNAVAILABLE while the endpoint is down, and works again when it is back, losing nothing", async () => {
    const own = await startS3rver(path.join(root, "s3rver-outage"));
    let restarted: S3rverProcess | undefined;
    const store = await S3BlobStore.open(s3rverOptions(own, { prefix: "outage" }));
    try {
      await store.put("t/kept", Readable.from([Buffer.from("written before the outage")]));
      await own.stop();

      const failures = await Promise.all([
        rejection(store.get("t/kept")),
        rejection(store.stat("t/kept")),
        rejection(store.put("t/during", Readable.from([Buffer.from("x")]))),
        rejection(store.delete("t/kept")),
        rejection(store.deletePrefix("t/")),
      ]);
      for (const [i, operation] of ["get", "stat", "put", "delete", "deletePrefix"].entries()) {
        const err = failures[i]!;
        assert.equal(err.code, ERROR_CODE.StoreUnavailable, err.message);
        // Refused, or reset on a connection kept alive from before.
        assert.match(
          err.message,
          new RegExp(`^S3 blob store http://127\\.0\\.0\\.1:${own.port}, bucket "${BUCKET}": ${operation}\\b.*(ECONNREFUSED|ECONNRESET)`),
        );
        assert.ok(err.cause !== undefined);
      }

      restarted = await startS3rver(own.dir, own.port);
      assert.equal((await sha256Of(await store.get("t/kept"))).bytes, "written before the outage".length);
      await store.put("t/after", Readable.from([Buffer.from("after")]));
      assert.deepEqual(await store.stat("t/after"), { size: 5 });
      assert.equal(await store.stat("t/during"), null);
    } finally {
      await store.close();
      await own.stop();
      await restarted?.stop();
    }
  });
});

/** A port nothing listens on (bound, read, closed). */
