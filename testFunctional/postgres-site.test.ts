import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { S3BlobStore } from "../common/blobs/s3-blob-store.js";
import { startPostgresServer, type PostgresServer } from "../common/testing/postgres-server.js";
import { freePort, getTask, listAll, mapLimit, submit, tempDir, waitUntil } from "./helpers.js";
import { startNats, type NatsServer } from "./nats.js";
import { startS3rver, S3RVER_KEYS, type S3rverProcess } from "./s3rver.js";
import { SiteProcesses } from "./site-processes.js";

/*
 * A site on several machines, on one: every process has its own DATA_DIR, and nothing is shared
 * but PostgreSQL (the task store and the queuer lock), the S3 server (documents) and NATS. An
 * active queuer and a standby, a controller, two workers. The active queuer is SIGKILLed mid-run
 * and the standby takes over; then PostgreSQL itself crashes (SIGKILL) and comes back mid-run.
 * No accepted task is lost, each ends `output` once with the right output.
 */

const SITE = "pgsite";
const BUCKET = "docq-pg-site";
const LEASE_MS = 1500;

function configYaml(s3Port: number): string {
  return [
    `site: ${SITE}`,
    "store:",
    "  type: postgres",
    "blobs:",
    "  type: s3",
    "  endPoint: 127.0.0.1",
    `  port: ${s3Port}`,
    `  bucket: ${BUCKET}`,
    "queue:",
    `  leaseMs: ${LEASE_MS}`,
    "  heartbeatMs: 400",
    "  sweepMs: 200",
    "  backoffBaseMs: 100",
    "  backoffMaxMs: 1000",
    "",
  ].join("\n");
}

/** What `wc` prints for a text: what the wordcount job answers. */
function wc(text: string): { lines: number; words: number; bytes: number } {
  return {
    lines: (text.match(/\n/g) ?? []).length,
    words: text.split(/\s+/).filter((w) => w !== "").length,
    bytes: Buffer.byteLength(text),
  };
}

function documentOf(round: string, i: number): string {
  return `${round} document ${i}\n${"word ".repeat(i % 13)}\n`;
}

async function text(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

async function statusCounts(url: string): Promise<Record<string, number>> {
  const res = await fetch(`${url}/api/stats`);
  if (!res.ok) throw new Error(`GET /api/stats answered ${res.status}`);
  return ((await res.json()) as { byStatus: Record<string, number> }).byStatus;
}

/** Submits documents, retrying each while the site cannot take it (a 503 during an outage): answers the accepted ids. */
async function submitAll(url: string, docs: readonly string[], name: string): Promise<string[]> {
  return mapLimit(docs, 8, (doc, i) =>
    waitUntil(`task ${i} of ${name} to be accepted`, () => submit(url, doc, { job: "wordcount", name: `${name}-${i}` }), 60_000, 50),
  );
}

describe("a site on several machines: PostgreSQL store and lock, S3 documents, nothing else shared", () => {
  let pg: PostgresServer;
  let nats: NatsServer;
  let s3: S3rverProcess;
  /** The bucket as the site sees it, to count the outputs it stored. */
  let look: S3BlobStore;
  let url: string;
  const site = new SiteProcesses();
  const envOf = async (name: string): Promise<Record<string, string>> => ({
    ...common,
    DATA_DIR: await tempDir(`pg-site-${name}`),
  });
  let common: Record<string, string>;

  before(async () => {
    // The durable defaults (fsync, synchronous_commit on): the server is crashed below.
    const s3Port = await freePort();
    [pg, nats, s3] = await Promise.all([
      startPostgresServer({ settings: {} }),
      startNats(),
      tempDir("pg-site-s3").then((dir) => startS3rver(path.join(dir, "objects"), s3Port)),
    ]);
    const configDir = await tempDir("pg-site-config");
    const configFile = path.join(configDir, "docq.yaml");
    await writeFile(configFile, configYaml(s3Port));
    common = {
      ...S3RVER_KEYS,
      DOCQ_CONFIG: configFile,
      DOCQ_POSTGRES_URL: pg.url,
      DOCQ_NATS_URL: nats.url,
      DOCQ_LOG_LEVEL: "info",
      DOCQ_SHUTDOWN_GRACE_MS: "2000",
    };
    look = await S3BlobStore.open({
      endPoint: "127.0.0.1",
      port: s3Port,
      useSSL: false,
      accessKey: S3RVER_KEYS.S3_ACCESS_KEY,
      secretKey: S3RVER_KEYS.S3_SECRET_KEY,
      bucket: BUCKET,
      prefix: SITE,
      region: "us-east-1",
      partSizeBytes: 8 * 1024 * 1024,
    });
    // Queuer 1 serves before queuer 2 starts, so that it is the active one; the others start meanwhile.
    const first = site.start("queuer 1", "queuer", await envOf("queuer1"));
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    site.start("controller", "controller", { ...(await envOf("controller")), PORT: String(port) });
    site.start("worker 1", "worker", { ...(await envOf("worker1")), DOCQ_SLOTS: "4" });
    site.start("worker 2", "worker", { ...(await envOf("worker2")), DOCQ_SLOTS: "4" });
    await waitUntil("queuer 1 to serve", () => site.gone().length > 0 || /active queuer of site/.test(first.output()), 90_000, 50);
    const standby = site.start("queuer 2", "queuer", await envOf("queuer2"));
    await waitUntil(
      "the site to answer and the second queuer to stand by",
      async () =>
        site.gone().length > 0 ||
        (/standing by/.test(standby.output()) && (await fetch(`${url}/api/health`).catch(() => null))?.status === 200),
      90_000,
      100,
    );
    if (site.gone().length > 0) throw new Error(`a process of the site exited during start-up:\n${site.gone().join("\n")}`);
  });

  after(async () => {
    await site.stopAll(5_000);
    await look?.close();
    await Promise.all([s3?.stop(), nats?.stop(), pg?.stop()]);
  });

  /**
   * Every task ended `output` with its document's counts, its one output object the one on record,
   * its attempts sane. Waits on the counts of /api/stats (`expectedOutputs`: every task of the
   * site that should then be `output`), then until a listing holds each of `ids` as output.
   */
  async function assertAllDone(ids: readonly string[], docs: readonly string[], expectedOutputs: number): Promise<void> {
    const counts = await waitUntil(
      `${expectedOutputs} tasks of the site output`,
      async () => {
        const now = await statusCounts(url);
        return ((now.error ?? 0) + (now.canceled ?? 0) > 0 || (now.output ?? 0) >= expectedOutputs) && now;
      },
      120_000,
      100,
    );
    const failed = await listAll(url, "status=error");
    assert.deepEqual(
      failed.map((task) => `${task.id} ${task.name}: ${task.error}`),
      [],
      `no task failed (counts ${JSON.stringify(counts)})\n${site.outputs().slice(-6000)}`,
    );
    // A submit retried across a kill may have made a second task of its document (the first answer
    // lost after the store recorded it): the count can reach the figure before each of `ids` is output.
    const records = await waitUntil(
      `each of the ${ids.length} tasks submitted output`,
      async () => {
        const listed = new Map((await listAll(url, "status=output")).map((task) => [task.id, task]));
        return ids.every((id) => listed.has(id)) && listed;
      },
      60_000,
      200,
    );
    const outputsByTask = new Map<string, string[]>();
    for await (const entry of look.list()) {
      const [taskId, name] = entry.key.split("/");
      if (taskId === undefined || name === undefined || !name.startsWith("output")) continue;
      outputsByTask.set(taskId, [...(outputsByTask.get(taskId) ?? []), entry.key]);
    }
    await mapLimit(ids, 16, async (id, i) => {
      const task = records.get(id);
      assert.ok(task !== undefined, `${id} is not output:\n${JSON.stringify(await getTask(url, id))}`);
      assert.deepEqual(JSON.parse(await text(await look.get(task.output!))), wc(docs[i]!), `output of ${task.id}`);
      assert.deepEqual(outputsByTask.get(task.id), [task.output], `one output on record for ${task.id}`);
      const ended = task.attempts.filter((a) => a.outcome === "output");
      assert.equal(ended.length, 1, `${task.id} ended once: ${JSON.stringify(task.attempts)}`);
      assert.ok(task.tries >= 1 && task.tries <= task.maxTries, `${task.id}: tries ${task.tries}`);
      assert.ok(task.attempts.length <= task.tries + 3, `${task.id}: ${task.attempts.length} attempts for ${task.tries} tries`);
    });
  }

  it("300 tasks: the active queuer SIGKILLed mid-run, the standby takes over, each task done once", async (t) => {
    const docs = Array.from({ length: 300 }, (_, i) => documentOf("first", i));
    const submitting = submitAll(url, docs, "first");
    await waitUntil("a third of them done", async () => ((await statusCounts(url)).output ?? 0) >= 100, 90_000, 50);
    const killedAt = Date.now();
    site.named("queuer 1").child.kill("SIGKILL");
    const standby = site.named("queuer 2");
    const tookOverAt = await waitUntil(
      "the standby to take over",
      () => /took over as the active queuer/.test(standby.output()) && Date.now(),
      30_000,
      20,
    );
    const servingAt = await waitUntil(
      "the site to serve again",
      async () => (await fetch(`${url}/api/health`).catch(() => null))?.status === 200 && Date.now(),
      30_000,
      20,
    );
    t.diagnostic(
      `queuer SIGKILLed: the standby took over after ${tookOverAt - killedAt} ms, the site served again after ${servingAt - killedAt} ms (leaseMs ${LEASE_MS})`,
    );
    const line = /took over as the active queuer[^\n]*/.exec(standby.output());
    if (line !== null) t.diagnostic(`standby's log: ${line[0]}`);
    assert.doesNotMatch(site.named("queuer 1").output(), /lost the queuer lock/, "the active queuer kept its lock until it was killed");
    const ids = await submitting;
    await assertAllDone(ids, docs, ids.length);
  });

  it("PostgreSQL crashes and restarts mid-run: no accepted task is lost, and the site serves again once it is back", async (t) => {
    const before = (await statusCounts(url)).output ?? 0;
    const docs = Array.from({ length: 60 }, (_, i) => documentOf("second", i));
    const ids = await submitAll(url, docs.slice(0, 40), "second");
    await waitUntil(
      "some of them done",
      async () => {
        const done = await Promise.all(ids.slice(0, 20).map((id) => getTask(url, id)));
        return done.filter((task) => task.status === "output").length >= 5;
      },
      60_000,
      50,
    );
    const killedAt = Date.now();
    await pg.kill();
    // Submissions go on through the outage: each is retried until the site accepts it.
    const later = submitAll(url, docs.slice(40), "second-later");
    await pg.start();
    const backAt = Date.now();
    const laterIds = await later;
    const servingAt = Date.now();
    t.diagnostic(`PostgreSQL down for ${backAt - killedAt} ms; the site accepted tasks again ${servingAt - backAt} ms after it was back`);
    // The active queuer lost its lock with its connection, stood by through the outage, and took the queue again.
    const queuerLog = site.named("queuer 2").output();
    assert.match(queuerLog, /lost the queuer lock of site "pgsite" \(the connection holding the queuer lock/);
    assert.equal(queuerLog.match(/took over as the active queuer/g)?.length, 2, queuerLog.slice(-3000));
    const retaken = [...queuerLog.matchAll(/took over as the active queuer[^\n]*/g)][1];
    if (retaken !== undefined) t.diagnostic(`queuer 2 after the restart: ${retaken[0]}`);
    const oneMore = await submit(url, "one more, once it is back\n", { job: "wordcount", name: "after-restart" });
    const all = [...ids, ...laterIds, oneMore];
    await assertAllDone(all, [...docs, "one more, once it is back\n"], before + all.length);
  });
});
