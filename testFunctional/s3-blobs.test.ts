import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { S3BlobStore } from "../common/blobs/s3-blob-store.js";
import {
  freePort,
  mapLimit,
  APP_ENTRY,
  REPO,
  result,
  startEmbeddedApp,
  submit,
  tempDir,
  waitAllFinal,
  type EmbeddedApp,
} from "./helpers.js";
import { startS3rver, S3RVER_KEYS, type S3rverProcess } from "./s3rver.js";

/*
 * The embedded app with `blobs: s3` against a real S3-compatible server over HTTP (s3rver, in a
 * child process so it can be killed like a real outage): documents and results go through S3,
 * the keys come from the environment, and an S3 outage answers 503 and heals when S3 is back.
 */

const KEYS = S3RVER_KEYS;
const BUCKET = "docq-functional";

/** What `wc` prints for a text: newlines, whitespace-separated words, bytes. */
function wc(text: string): { lines: number; words: number; bytes: number } {
  return {
    lines: (text.match(/\n/g) ?? []).length,
    words: text.split(/\s+/).filter((w) => w !== "").length,
    bytes: Buffer.byteLength(text),
  };
}

function document(i: number): string {
  const words = ["alpha", "beta", "gamma", "délta", "z", "  ", "\t"];
  const lines = Array.from({ length: 1 + (i % 9) }, (_, l) =>
    Array.from({ length: (i * 5 + l) % 11 }, (_, w) => words[(i + l + w) % words.length]).join(" "),
  );
  return `s3 doc ${i}\n${lines.join("\n")}${i % 2 === 0 ? "\n" : ""}`;
}

/**
 * Starts the app (as `npm start` does) where it must refuse to start, and waits for it to exit.
 * (startEmbeddedApp would notice the exit only after its 60 s health timeout.)
 */
async function startExpectingExit(yaml: string, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const dir = await tempDir("s3-refused");
  try {
    const config = path.join(dir, "config.yaml");
    await fs.writeFile(config, yaml);
    const child = spawn(process.execPath, [APP_ENTRY], {
      cwd: REPO,
      env: {
        ...process.env,
        PORT: String(await freePort()),
        DATA_DIR: path.join(dir, "data"),
        DOCQ_LOG_LEVEL: "warn",
        DOCQ_CONFIG: config,
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const code = await new Promise<number | null>((resolve) => child.once("exit", (exitCode) => resolve(exitCode)));
    clearTimeout(timer);
    return { code, output };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function configYaml(port: number): string {
  return `maxBodyBytes: 100000\nblobs:\n  type: s3\n  endPoint: 127.0.0.1\n  port: ${port}\n  bucket: ${BUCKET}\n`;
}

describe("embedded docq with blobs on S3 (s3rver)", () => {
  let dir: string;
  let s3Port: number;
  let s3: S3rverProcess;
  let app: EmbeddedApp;
  /** The same bucket and prefix as the app, to look at what it stored. */
  let look: S3BlobStore;

  before(async () => {
    dir = await tempDir("s3-functional");
    s3Port = await freePort();
    s3 = await startS3rver(path.join(dir, "s3rver"), s3Port);
    app = await startEmbeddedApp({ slots: 2, configYaml: configYaml(s3Port), env: KEYS });
    look = await S3BlobStore.open({
      endPoint: "127.0.0.1",
      port: s3Port,
      useSSL: false,
      accessKey: KEYS.S3_ACCESS_KEY,
      secretKey: KEYS.S3_SECRET_KEY,
      bucket: BUCKET,
      prefix: "local",
      region: "us-east-1",
      partSizeBytes: 8 * 1024 * 1024,
    });
  });
  after(async () => {
    await app?.stop();
    await look?.close();
    await s3?.stop();
    if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true });
  });

  it("runs 20 wordcount tasks with their documents and results in S3", async () => {
    const docs = Array.from({ length: 20 }, (_, i) => document(i));
    const ids = await mapLimit(docs, 8, (doc, i) => submit(app.url, doc, { job: "wordcount", name: `s3-doc${i}` }));
    const tasks = await waitAllFinal(app.url, ids);
    for (const [i, task] of tasks.entries()) {
      assert.equal(task.status, "output", `task ${i}: ${task.error}\n${app.output()}`);
      assert.deepEqual(JSON.parse(await result(app.url, task.id)), wc(docs[i]!), `task ${i}`);
      assert.ok(task.input !== null && task.output !== null);
      // Both documents are objects in the bucket, under the site's prefix.
      assert.deepEqual(await look.stat(task.input), { size: Buffer.byteLength(docs[i]!) }, `input of task ${i}`);
      assert.ok((await look.stat(task.output)) !== null, `output of task ${i}`);
    }
    // Nothing went to the local blob folder.
    const local = await fs.readdir(path.join(app.dataDir, "blobs")).catch(() => []);
    assert.deepEqual(
      local.filter((name) => name !== ".tmp"),
      [],
    );
  });

  it("answers 503 naming S3 while it is down, and works again when it is back, losing nothing", async () => {
    const earlier = await submit(app.url, "kept across the outage\n", { job: "wordcount" });
    const [done] = await waitAllFinal(app.url, [earlier]);
    assert.equal(done?.status, "output");

    await s3.stop();
    const refused = await fetch(`${app.url}/api/tasks?job=wordcount`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "during the outage\n",
    });
    const body = (await refused.json()) as { error: string };
    assert.equal(refused.status, 503, JSON.stringify(body));
    assert.match(body.error, new RegExp(`S3 blob store http://127\\.0\\.0\\.1:${s3Port}, bucket "${BUCKET}": put .*failed`));
    const unreadable = await fetch(`${app.url}/api/tasks/${earlier}/result`);
    assert.equal(unreadable.status, 503);

    s3 = await startS3rver(path.join(dir, "s3rver"), s3Port);
    assert.deepEqual(JSON.parse(await result(app.url, earlier)), wc("kept across the outage\n"));
    const later = await submit(app.url, "after the outage\n", { job: "wordcount" });
    const [again] = await waitAllFinal(app.url, [later]);
    assert.equal(again?.status, "output", again?.error ?? "");
    assert.deepEqual(JSON.parse(await result(app.url, later)), wc("after the outage\n"));
  });

  it("refuses to start, naming the endpoint and bucket, when S3 does not answer", async () => {
    const closed = await freePort();
    const { code, output } = await startExpectingExit(configYaml(closed), KEYS);
    assert.notEqual(code, 0);
    assert.match(
      output,
      new RegExp(`docq: .*S3 blob store http://127\\.0\\.0\\.1:${closed}, bucket "${BUCKET}": connecting failed: .*ECONNREFUSED`),
    );
  });

  it("refuses to start, naming the variables, when the S3 keys are not in the environment", async () => {
    const { code, output } = await startExpectingExit(configYaml(s3Port), { S3_ACCESS_KEY: "", S3_SECRET_KEY: "" });
    assert.equal(code, 2, output);
    assert.match(output, /docq: cannot start: blobs\.type s3 needs the environment variables S3_ACCESS_KEY and S3_SECRET_KEY/);
  });
});
