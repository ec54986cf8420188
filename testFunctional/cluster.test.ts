import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { freePort, getTask, listAll, mapLimit, ownChild, REPO, result, submit, tempDir, waitAllFinal, waitUntil } from "./helpers.js";
import { startNats, type NatsServer } from "./nats.js";
import { storedUnder } from "./stored-blobs.js";
import { Pm2 } from "./pm2.js";
import type { Task } from "../common/model/task-model.js";

const LEASE_MS = 3000;
const CONFIG = `
site: fr01
queue:
  leaseMs: ${LEASE_MS}
  heartbeatMs: 1000
  sweepMs: 250
  backoffBaseMs: 50
  backoffMaxMs: 500
`;

function pagesDoc(i: number): string {
  return Array.from({ length: 5 }, (_, l) => `doc ${i} page ${l}`).join("\n") + "\n";
}

/** Every task ended output once: its record names the output of its last attempt, and only that one exists. */
async function assertDoneOnce(dataDir: string, tasks: readonly Task[]): Promise<void> {
  for (const task of tasks) {
    assert.equal(task.status, "output", `${task.id}: ${task.error}`);
    assert.equal(task.output, `${task.id}/output-${task.tries}`);
    const outputs = await storedUnder(dataDir, task.id, "output-");
    assert.deepEqual(outputs, [`output-${task.tries}`], `one output on record for ${task.id}`);
  }
}

describe("cluster mode: pm2 ecosystem over a real NATS", () => {
  let nats: NatsServer;
  let pm2: Pm2;
  let url: string;
  let dataDir: string;
  let pm2Env: Record<string, string>;

  before(async () => {
    // `npm run build`, as the README says before pm2 start: the ecosystem runs dist/.
    await promisify(execFile)(process.execPath, [path.join(REPO, "scripts/build-dist.mjs")], { cwd: REPO });
    nats = await startNats();
    dataDir = await tempDir("cluster-data");
    const configFile = path.join(await tempDir("cluster-config"), "cluster.yaml");
    await fs.writeFile(configFile, CONFIG);
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    pm2Env = {
      PM2_HOME: await tempDir("pm2-home"),
      DOCQ_NATS_URL: nats.url,
      PORT: String(port),
      DATA_DIR: dataDir,
      DOCQ_CONFIG: configFile,
      DOCQ_WORKERS: "3",
      DOCQ_SLOTS: "2",
      DOCQ_LOG_LEVEL: "warn",
    };
    pm2 = new Pm2(pm2Env);
    await pm2.cmd("start", path.join(REPO, "config/pm2/ecosystem.config.cjs"));
    await waitUntil("the cluster to answer /api/health", async () => (await fetch(`${url}/api/health`)).ok, 60_000, 200);
    await waitUntil(
      "3 worker processes to report",
      async () => ((await (await fetch(`${url}/api/stats`)).json()) as { workers: unknown[] }).workers.length === 3,
      30_000,
      200,
    );
  });

  after(async () => {
    await pm2?.kill();
    await nats?.stop();
  });

  it("runs 100 pages tasks over 3 worker processes, every result correct", async () => {
    const docs = Array.from({ length: 100 }, (_, i) => pagesDoc(i));
    const ids = await mapLimit(docs, 16, (doc) => submit(url, doc, { job: "pages" }));
    const tasks = await waitAllFinal(url, ids, 300_000);
    for (const [i, task] of tasks.entries()) {
      assert.equal(task.status, "output", `${task.id}: ${task.error}`);
      assert.equal(await result(url, task.id), docs[i]!.toUpperCase());
    }
    const children = await listAll(url, "job=pages&status=output");
    const nodes = new Set(children.map((t) => t.processedBy?.node));
    assert.ok(nodes.size > 1, `tasks ran on ${[...nodes].join(", ")}`);
    for (const node of nodes) assert.match(node ?? "", /^fr01-.*-worker-\d+$/);
    const processes = await pm2.list();
    assert.deepEqual(processes.map((p) => p.name).sort(), ["docq-controller", "docq-queuer", "docq-worker", "docq-worker", "docq-worker"]);
  });

  it("requeues the tasks of a worker killed with SIGKILL after the lease timeout; they complete elsewhere", async () => {
    const ids = await mapLimit(
      Array.from({ length: 6 }, (_, i) => `slow ${i}\n`),
      6,
      (doc) => submit(url, doc, { job: "sleep", params: { ms: 4000 }, priority: 100 }),
    );
    const victim = await waitUntil("a task to run", async () => {
      for (const id of ids) {
        const task = await getTask(url, id);
        if (task.status === "work" && task.lease !== null) return task;
      }
      return undefined;
    });
    const owner = victim.lease!.owner;
    const pid = Number(/-(\d+)$/.exec(owner)?.[1]);
    assert.ok(pid > 0, `pid from lease owner ${owner}`);
    process.kill(pid, "SIGKILL");
    const tasks = await waitAllFinal(url, ids, 60_000);
    await assertDoneOnce(dataDir, tasks);
    const killedNode = owner.replace(/^worker@/, "");
    const requeued = tasks.filter((t) => t.tries >= 2);
    assert.ok(
      requeued.some((t) => t.id === victim.id),
      "the killed worker's task was retried",
    );
    for (const task of requeued) assert.notEqual(task.processedBy?.node, killedNode);
    assert.match(tasks.find((t) => t.id === victim.id)?.error ?? "", /^$|lease expired/);
  });

  it("survives a SIGKILL of the queuer mid-run: pm2 restarts it and everything completes exactly once", async () => {
    const ids = await mapLimit(
      Array.from({ length: 100 }, (_, i) => `doc ${i}\n`),
      16,
      (doc) => submit(url, doc, { job: "sleep", params: { ms: 50 } }),
    );
    await waitUntil("some progress", async () => (await listAll(url, "job=sleep&status=output")).length >= 20);
    const [queuer] = (await pm2.list()).filter((p) => p.name === "docq-queuer");
    assert.ok(queuer);
    process.kill(queuer.pid, "SIGKILL");
    await waitUntil(
      "pm2 to restart the queuer",
      async () => {
        const [again] = (await pm2.list()).filter((p) => p.name === "docq-queuer");
        return again !== undefined && again.restarts > queuer.restarts && again.status === "online";
      },
      30_000,
      200,
    );
    const tasks = await waitAllFinal(url, ids, 120_000);
    await assertDoneOnce(dataDir, tasks);
    for (const [i, task] of tasks.entries()) assert.equal(await result(url, task.id), `doc ${i}\n`);
  });

  it("answers at once while the queuer is down (503 with Retry-After, never a hang) and accepts again soon after its restart", async () => {
    const [queuer] = (await pm2.list()).filter((p) => p.name === "docq-queuer");
    assert.ok(queuer);
    process.kill(queuer.pid, "SIGKILL");
    const killedAt = Date.now();
    const answers: { status: number; ms: number; retryAfter: string | null }[] = [];
    for (;;) {
      const started = Date.now();
      const res = await fetch(`${url}/api/tasks?job=wordcount`, {
        method: "POST",
        body: "after the kill\n",
        signal: AbortSignal.timeout(60_000),
      });
      await res.arrayBuffer();
      answers.push({ status: res.status, ms: Date.now() - started, retryAfter: res.headers.get("retry-after") });
      if (res.status === 201) break;
      assert.ok(Date.now() - killedAt < 60_000, `no submission accepted within 60 s of the kill: ${JSON.stringify(answers.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const refused = answers.filter((a) => a.status !== 201);
    const slowest = Math.max(...answers.map((a) => a.ms));
    console.log(
      `# queuer SIGKILL: ${refused.length} answers of 503 before the first 201 at +${Date.now() - killedAt} ms; slowest answer ${slowest} ms`,
    );
    for (const a of refused) {
      assert.equal(a.status, 503, JSON.stringify(a));
      assert.match(a.retryAfter ?? "", /^\d+$/, "a 503 says when to retry");
    }
    // The controller waits for the queuer at most its call timeout (5 s), not the broker's 15 s
    // request timeout nor the 4-8 s it takes to notice a dead node; the margin is for a slow machine.
    assert.ok(slowest < 12_000, `an answer took ${slowest} ms`);
    await waitUntil("pm2's queuer to be back", async () => (await fetch(`${url}/api/health`)).ok, 30_000, 200);
  });

  it("lets a second queuer of the site stand by, and take over when the first one stops", async () => {
    const env = { ...(process.env as Record<string, string>), ...pm2Env };
    const second = ownChild(
      spawn(process.execPath, [path.join(REPO, "dist/services/main.js"), "--services", "queuer"], {
        cwd: REPO,
        env: { ...env, DOCQ_LOG_LEVEL: "info" },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let log = "";
    second.stdout.on("data", (d: Buffer) => (log += d.toString()));
    second.stderr.on("data", (d: Buffer) => (log += d.toString()));
    try {
      await waitUntil("the second queuer to say it stands by", () => /holds .*queuer\.lock: standing by/.test(log), 30_000);
      // Still one queue: work goes on through the first queuer.
      const id = await submit(url, "x\n", { job: "wordcount" });
      assert.equal((await waitAllFinal(url, [id]))[0]?.status, "output");
      // Stop pm2's queuer for good: the standby takes the queue.
      await pm2.cmd("stop", "docq-queuer");
      await waitUntil("the standby to take over", () => /queue reloaded/.test(log), 30_000);
      // The controller learns of the new queuer by the broker's discovery: 503 until then.
      await waitUntil("the controller to see the new queuer", async () => (await fetch(`${url}/api/health`)).ok, 30_000, 100);
      const after = await submit(url, "y\n", { job: "wordcount" });
      assert.equal((await waitAllFinal(url, [after], 60_000))[0]?.status, "output");
    } finally {
      second.kill("SIGTERM");
      await new Promise((r) => second.once("exit", r));
      await pm2.cmd("start", "docq-queuer");
      await waitUntil("pm2's queuer to be back", async () => (await fetch(`${url}/api/health`)).ok, 30_000, 200);
    }
  });

  it("streams a 200 MB document to a worker without passing it through NATS or holding it in memory", async () => {
    const size = 200 * 1024 * 1024;
    const line = "lorem ipsum dolor sit amet\n";
    const chunk = Buffer.from(line.repeat(Math.floor((1024 * 1024) / line.length)));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= size) return controller.close();
        const part = chunk.subarray(0, Math.min(chunk.length, size - sent));
        sent += part.length;
        controller.enqueue(part);
      },
    });
    const procField = async (pid: number, field: string) =>
      Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(await fs.readFile(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024;
    const before = new Map<number, number>();
    for (const p of await pm2.list()) before.set(p.pid, await procField(p.pid, "VmRSS"));
    const res = await fetch(`${url}/api/tasks?job=wordcount`, { method: "POST", body, duplex: "half" } as RequestInit);
    assert.equal(res.status, 201);
    const { id } = (await res.json()) as { id: string };
    const [task] = await waitAllFinal(url, [id], 120_000);
    assert.equal(task?.status, "output", task?.error ?? "");
    const counts = (await (await fetch(`${url}/api/tasks/${id}/result`)).json()) as { bytes: number; lines: number };
    assert.equal(counts.bytes, size);
    // Holding the document whole anywhere would push that process's peak 200 MB above where it stood.
    for (const p of await pm2.list()) {
      const peakMb = await procField(p.pid, "VmHWM");
      const startMb = before.get(p.pid) ?? 0;
      assert.ok(peakMb < startMb + 100, `${p.name} peaked at ${peakMb.toFixed(0)} MB from ${startMb.toFixed(0)} MB`);
    }
  });

  it("rides out a NATS outage of 5 s", async () => {
    const ids = await mapLimit(
      Array.from({ length: 100 }, (_, i) => `doc ${i}\n`),
      16,
      (doc) => submit(url, doc, { job: "sleep", params: { ms: 50 } }),
    );
    await waitUntil("some progress", async () =>
      (await Promise.all(ids.slice(0, 30).map((id) => getTask(url, id)))).some((t) => t.status === "output"),
    );
    await nats.stop();
    const stoppedAt = Date.now();
    // Meanwhile the controller cannot reach the queuer: it says so at once, with when to retry.
    await waitUntil(
      "the controller to notice",
      async () => (await fetch(`${url}/api/tasks?job=wordcount`, { method: "POST", body: "x\n" })).status === 503,
      4000,
      100,
    );
    const started = Date.now();
    const res = await fetch(`${url}/api/tasks?job=wordcount`, {
      method: "POST",
      body: "during the outage\n",
      signal: AbortSignal.timeout(30_000),
    });
    const waited = Date.now() - started;
    assert.equal(res.status, 503, await res.text());
    assert.match(res.headers.get("retry-after") ?? "", /^\d+$/);
    // Not the broker's 15 s request timeout: the margin is for a slow, loaded machine (3.1 s seen in CI).
    assert.ok(waited < 10_000, `a submission during the outage waited ${waited} ms for its 503`);
    await new Promise((r) => setTimeout(r, Math.max(0, 5000 - (Date.now() - stoppedAt))));
    await nats.start();
    // And accepts again once the link is back.
    await waitUntil(
      "a submission to be accepted again",
      async () => (await fetch(`${url}/api/tasks?job=wordcount`, { method: "POST", body: "y\n" })).status === 201,
      30_000,
      200,
    );
    const tasks = await waitAllFinal(url, ids, 120_000);
    await assertDoneOnce(dataDir, tasks);
  });
});
