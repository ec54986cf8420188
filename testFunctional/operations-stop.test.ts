import assert from "node:assert/strict";
import { promises as fs, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { spawn } from "node:child_process";
import { after, describe, it } from "node:test";
import type { Task } from "../common/model/task-model.js";
import { SqliteTaskStore } from "../common/store/sqlite/sqlite-task-store.js";
import { SiteProcesses } from "./site-processes.js";
import { startNats, type NatsServer } from "./nats.js";
import {
  freePort,
  getTask,
  ownChild,
  APP_ENTRY,
  REPO,
  startEmbeddedApp,
  submit,
  tempDir,
  waitAllFinal,
  waitUntil,
  type EmbeddedApp,
} from "./helpers.js";

/*
 * Graceful stop of the embedded app: SIGTERM lets the running tasks finish within shutdownGraceMs
 * (the REST API answers meanwhile), releases those still running after it (queued again, the try
 * not counted), and exits 0. And a start-up whose port is taken exits 1 at once, naming the port.
 */

/** The task as the stopped app left it in its SQLite file. */
async function storedTask(dataDir: string, id: string): Promise<Task> {
  const store = SqliteTaskStore.open(path.join(dataDir, "tasks.sqlite"));
  try {
    const task = await store.get(id);
    assert.ok(task !== null, `task ${id} is in the store`);
    return task;
  } finally {
    await store.close();
  }
}

/** Sends `signal` and waits for the app to exit; answers its exit code. */
async function signalAndWait(app: EmbeddedApp, signal: NodeJS.Signals): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => app.process.once("exit", (code) => resolve(code)));
  app.process.kill(signal);
  return exited;
}

/** Pids of the processes under `root` (its descendants) that run a script of a warm job. */
async function warmProcessesOf(root: number): Promise<number[]> {
  const parentOf = new Map<number, number>();
  const warm: number[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, "utf8").catch(() => null);
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (stat === null) continue;
    parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    if (cmdline.includes("sleep-warm")) warm.push(Number(entry));
  }
  const under = (pid: number): boolean => {
    for (let p = parentOf.get(pid); p !== undefined && p > 1; p = parentOf.get(p)) if (p === root) return true;
    return false;
  };
  return warm.filter(under);
}

/** Whether `pid` is a live process (a zombie counts as gone). */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

async function waitRunning(url: string, id: string): Promise<void> {
  await waitUntil(`task ${id} to run`, async () => (await getTask(url, id)).status === "work", 60_000, 50);
}

describe("graceful stop (SIGTERM)", () => {
  const apps: EmbeddedApp[] = [];
  after(async () => {
    for (const app of apps) await app.stop();
  });

  it("lets a running 3 s task finish while the API still answers, then exits 0", async () => {
    const app = await startEmbeddedApp({ slots: 1, env: { DOCQ_LOG_LEVEL: "info", DOCQ_SHUTDOWN_GRACE_MS: "30000" } });
    apps.push(app);
    const id = await submit(app.url, "three seconds\n", { job: "sleep", params: { ms: 3000 } });
    await waitRunning(app.url, id);
    const exited = new Promise<number | null>((resolve) => app.process.once("exit", (code) => resolve(code)));
    app.process.kill("SIGTERM");
    // The queuer and the REST API stay up while the worker drains: a client can still read the task.
    await waitUntil("the stop to begin", () => app.output().includes("SIGTERM: stopping"), 30_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${app.output()}`);
    });
    const during = await fetch(`${app.url}/api/tasks/${id}`).then((res) => res.json() as Promise<Task>);
    assert.equal(during.status, "work");
    assert.equal(await exited, 0, app.output());
    const task = await storedTask(app.dataDir, id);
    assert.equal(task.status, "output", app.output());
    assert.equal(task.tries, 1);
    assert.deepEqual(
      task.attempts.map((a) => a.outcome),
      ["output"],
    );
  });

  it("releases a task still running after shutdownGraceMs: queued again without counting its try, and it runs after a restart", async () => {
    const dataDir = await tempDir("stop-release");
    const app = await startEmbeddedApp({ dataDir, slots: 1, env: { DOCQ_SHUTDOWN_GRACE_MS: "1000", DOCQ_LOG_LEVEL: "info" } });
    apps.push(app);
    const id = await submit(app.url, "long\n", { job: "sleep", params: { ms: 4000 } });
    await waitRunning(app.url, id);
    assert.equal(await signalAndWait(app, "SIGTERM"), 0, app.output());
    const released = await storedTask(dataDir, id);
    assert.equal(released.status, "input", app.output());
    assert.equal(released.tries, 0, "the released try is not counted");
    assert.equal(released.lease, null);
    assert.deepEqual(
      released.attempts.map((a) => a.outcome),
      ["released"],
    );
    assert.match(app.output(), /1 of 1 task\(s\) still running were released/);

    const again = await startEmbeddedApp({ dataDir, slots: 1 });
    apps.push(again);
    const [done] = await waitAllFinal(again.url, [id], 60_000);
    assert.equal(done?.status, "output");
    assert.equal(done?.tries, 1);
    assert.deepEqual(
      done?.attempts.map((a) => a.outcome),
      ["released", "output"],
    );
  });

  it("does the same for warm jobs: one finishes within the grace, one past it is released, and no warm process is left", async () => {
    const dataDir = await tempDir("stop-warm");
    const app = await startEmbeddedApp({ dataDir, slots: 2, env: { DOCQ_SHUTDOWN_GRACE_MS: "3000", DOCQ_LOG_LEVEL: "info" } });
    apps.push(app);
    const quick = await submit(app.url, "quick\n", { job: "sleep-warm", params: { ms: 1000 } });
    const slow = await submit(app.url, "slow\n", { job: "sleep-warm", params: { ms: 600_000 } });
    await waitRunning(app.url, quick);
    await waitRunning(app.url, slow);
    // A leased task's record says `work` before its warm process is started: wait for the process.
    let warmPids: number[] = [];
    await waitUntil("the warm processes to run", async () => (warmPids = await warmProcessesOf(app.process.pid!)).length > 0, 30_000);
    assert.equal(await signalAndWait(app, "SIGTERM"), 0, app.output());
    assert.equal((await storedTask(dataDir, quick)).status, "output", app.output());
    const released = await storedTask(dataDir, slow);
    assert.deepEqual([released.status, released.tries], ["input", 0]);
    await waitUntil("the warm processes to be gone", () => warmPids.every((pid) => !isRunning(pid)));
  });

  it("a second SIGTERM skips the rest of the grace: the running task is released and the app exits 0", async () => {
    const dataDir = await tempDir("stop-hurry");
    // A grace far longer than the test waits: only the second signal can end it.
    const app = await startEmbeddedApp({ dataDir, slots: 1, env: { DOCQ_SHUTDOWN_GRACE_MS: "600000", DOCQ_LOG_LEVEL: "info" } });
    apps.push(app);
    const id = await submit(app.url, "very long\n", { job: "sleep", params: { ms: 600_000 } });
    await waitRunning(app.url, id);
    const exited = new Promise<number | null>((resolve) => app.process.once("exit", (code) => resolve(code)));
    app.process.kill("SIGTERM");
    await waitUntil("the worker to wait for its task", () => app.output().includes("waiting up to 600000 ms"), 30_000);
    app.process.kill("SIGTERM");
    assert.equal(await exited, 0, app.output());
    const task = await storedTask(dataDir, id);
    assert.equal(task.status, "input");
    assert.equal(task.tries, 0);
  });
});

describe("graceful stop of a worker process in cluster mode", () => {
  let nats: NatsServer | undefined;
  const site = new SiteProcesses();
  after(async () => {
    await site.stopAll(0);
    await nats?.stop();
  });

  it("lets its running 3 s task finish and report to the queuer of another process, then exits 0", async () => {
    nats = await startNats();
    const dataDir = await tempDir("stop-cluster");
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const env = {
      DOCQ_NATS_URL: nats.url,
      DATA_DIR: dataDir,
      PORT: String(port),
      DOCQ_SLOTS: "1",
      DOCQ_LOG_LEVEL: "info",
      DOCQ_SHUTDOWN_GRACE_MS: "30000",
    };
    site.start("queuer and controller", "queuer,controller", env);
    const worker = site.start("worker", "worker", env).child;
    const outputs = (): string => site.outputs();
    await waitUntil(
      "the site to answer with a worker",
      async () => {
        if (site.gone().length > 0) throw new Error(`a process exited:\n${outputs()}`);
        const stats = await fetch(`${url}/api/stats`).then(
          (res) => (res.ok ? (res.json() as Promise<{ workers: unknown[] }>) : null),
          () => null,
        );
        return stats !== null && stats.workers.length === 1;
      },
      90_000,
      250,
    );
    const id = await submit(url, "three seconds\n", { job: "progress", params: { steps: 3, ms: 1000 } });
    // Running on the worker, not only leased: in cluster mode the lease is granted before the pull's
    // answer crosses NATS, and a worker stopping meanwhile hands the task back untried. Its first
    // progress line shows the script runs.
    await waitUntil(`task ${id} to report progress`, async () => (await getTask(url, id)).progress !== null, 60_000, 50);
    const exited = new Promise<number | null>((resolve) => worker.once("exit", (code) => resolve(code)));
    worker.kill("SIGTERM");
    assert.equal(await exited, 0, outputs());
    const task = await getTask(url, id);
    assert.equal(task.status, "output", outputs());
    assert.equal(task.tries, 1);
  });
});

describe("start-up with the port in use", () => {
  it("exits 1 at once with a message naming the address and port", async () => {
    const port = await freePort();
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(port, "127.0.0.1", resolve));
    try {
      const dataDir = await tempDir("port-in-use");
      const child = ownChild(
        spawn(process.execPath, [APP_ENTRY], {
          cwd: REPO,
          env: { ...process.env, PORT: String(port), DATA_DIR: dataDir, DOCQ_LOG_LEVEL: "warn" },
          stdio: ["ignore", "pipe", "pipe"],
        }),
      );
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr.on("data", (d: Buffer) => (output += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
      assert.equal(code, 1, output);
      assert.match(output, new RegExp(`docq: cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use`));
    } finally {
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    }
  });
});
