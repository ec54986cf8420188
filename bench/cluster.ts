import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { freePort, listAll, REPO, startEmbeddedApp, tempDir, waitUntil, type EmbeddedApp } from "../testFunctional/helpers.js";
import { startNats, type NatsServer } from "../testFunctional/nats.js";
import { CLIENT_CONCURRENCY, log, procStatusMb, submitMany, waitForCounts } from "./harness.js";
import { round, type FigureResult, type Row } from "./report.js";
import { measureQueueThroughput } from "./throughput.js";

/** Slots per worker process in the cluster figure: the embedded figure's 2 slots, per process. */
const SLOTS_PER_WORKER = 2;
const THIEF_SLOTS = 2;

async function natsAvailable(): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = spawn("nats-server", ["--version"], { stdio: "ignore" });
    probe.once("error", () => resolve(false));
    probe.once("exit", (code) => resolve(code === 0));
  });
}

interface ClusterRun {
  tasksPerSec: number;
  endToEndMs: number;
  peakRssMb: Record<string, number | null>;
}

/** A site as separate processes over a real NATS: controller + queuer in one, `workers` worker processes. */
async function runCluster(nats: NatsServer, workers: number, job: string, count: number): Promise<ClusterRun> {
  const dataDir = await tempDir("bench-cluster");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    ...(process.env as Record<string, string>),
    DOCQ_NATS_URL: nats.url,
    DATA_DIR: dataDir,
    PORT: String(port),
    DOCQ_SLOTS: String(SLOTS_PER_WORKER),
    DOCQ_LOG_LEVEL: "warn",
  };
  const processes = new Map<string, ChildProcess>();
  const start = (name: string, services: string): void => {
    processes.set(
      name,
      spawn(process.execPath, ["--import", "tsx", path.join(REPO, "services/main.ts"), "--services", services], {
        cwd: REPO,
        env,
        stdio: "ignore",
      }),
    );
  };
  try {
    start("controller+queuer", "controller,queuer");
    for (let i = 1; i <= workers; i++) start(`worker ${i}`, "worker");
    await waitUntil("the cluster to answer", async () => (await fetch(`${url}/api/health`)).ok, 60_000, 100);
    await waitUntil(
      `${workers} workers to report`,
      async () => ((await (await fetch(`${url}/api/stats`)).json()) as { workers: unknown[] }).workers.length === workers,
      30_000,
      100,
    );
    const t0 = performance.now();
    const [, done] = await Promise.all([
      submitMany(url, count, CLIENT_CONCURRENCY, (i) => `small document number ${i}\n`, { job, params: { ms: 0 } }),
      waitForCounts(
        url,
        `${count} tasks over ${workers} worker processes`,
        (c) => (c.output ?? 0) >= count,
        Math.max(120_000, count * 200),
      ),
    ]);
    const endToEndMs = done.at - t0;
    const peakRssMb: Record<string, number | null> = {};
    for (const [name, p] of processes) peakRssMb[name] = p.pid === undefined ? null : await procStatusMb(p.pid, "VmHWM");
    return { tasksPerSec: round((count / endToEndMs) * 1000, 1), endToEndMs: round(endToEndMs), peakRssMb };
  } finally {
    await Promise.all(
      [...processes.values()].map(async (p) => {
        if (p.exitCode !== null) return;
        const exited = new Promise((r) => p.once("exit", r));
        p.kill("SIGTERM");
        await exited;
      }),
    );
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * Stealing where slots, not the CPU, are the limit: `count` sleep-warm(200 ms) tasks submitted to
 * site a only, with `siteCount` one-process sites (2 slots each) lending each other capacity over a
 * global NATS. (One-shot tasks of all sites share the machine's CPU for process start-up: on 2
 * cores more sites cannot run them faster, and the figure measured the CPU, not stealing.)
 */
const STEAL_JOB = "sleep-warm";
const STEAL_TASK_MS = 200;

async function runStealing(siteCount: number, count: number): Promise<{ makespanMs: number; ranAt: Record<string, number> }> {
  const global = await startNats();
  const names = ["a", "b", "c"].slice(0, siteCount);
  const siteNats: NatsServer[] = [];
  const apps: EmbeddedApp[] = [];
  try {
    for (const site of names) {
      const nats = await startNats();
      siteNats.push(nats);
      apps.push(
        await startEmbeddedApp({
          slots: THIEF_SLOTS,
          configYaml: "stealing:\n  backlogIntervalMs: 500\n",
          env: { DOCQ_SITE: site, DOCQ_NATS_URL: nats.url, DOCQ_GLOBAL_NATS_URL: global.url },
        }),
      );
    }
    await new Promise((r) => setTimeout(r, 2500));
    const a = apps[0]!;
    await submitMany(a.url, count, CLIENT_CONCURRENCY, (i) => `document ${i}\n`, { job: STEAL_JOB, params: { ms: STEAL_TASK_MS } });
    await waitForCounts(a.url, `${count} tasks over ${siteCount} site(s)`, (c) => (c.output ?? 0) >= count, 300_000);
    const tasks = await listAll(a.url, "status=output");
    const ranAt: Record<string, number> = {};
    for (const t of tasks) ranAt[t.processedBy?.site ?? "?"] = (ranAt[t.processedBy?.site ?? "?"] ?? 0) + 1;
    const makespanMs = Math.max(...tasks.map((t) => t.endTime ?? 0)) - Math.min(...tasks.map((t) => t.submitTime));
    return { makespanMs, ranAt };
  } finally {
    await Promise.all(apps.map((app) => app.stop()));
    for (const nats of siteNats) await nats.stop();
    await global.stop();
  }
}

/**
 * Figure 7: the throughput test over NATS with 1 and 3 worker processes (each its own process,
 * as pm2 runs them) next to the embedded mode on the same run; and the stealing speed-up with
 * 1, 2 and 3 sites. `quick` runs the 3-worker cluster and 2 sites only (no speed-up).
 */
export async function clusterFigure(opts: { count: number; quick?: boolean }): Promise<FigureResult> {
  const base = { key: "cluster", number: 7, title: "Cluster (worker processes over NATS) and stealing" };
  if (!(await natsAvailable()))
    return { ...base, rows: [], data: {}, skipped: "nats-server is not installed (apt-get install nats-server)" };
  const rows: Row[] = [];
  const data: Record<string, unknown> = {};
  const job = "sleep";
  log(`cluster: ${opts.count} ${job}(0 ms) tasks embedded, then over NATS`);
  // The embedded mode on the same run, for the ratio (the quick run skips it: figure 2 stands in).
  const embedded =
    opts.quick === true ? null : await measureQueueThroughput({ job, count: opts.count, slots: SLOTS_PER_WORKER, params: { ms: 0 } });
  if (embedded !== null) {
    rows.push({
      measure: `embedded: ${opts.count.toLocaleString("en-US")} sleep(0) tasks, ${SLOTS_PER_WORKER} slots`,
      value: embedded.tasksPerSec,
      unit: "tasks/s",
      peakRssMb: embedded.appPeakRssMb,
      rssOf: "app",
    });
    data.embedded = embedded;
  }
  const nats = await startNats();
  try {
    for (const workers of opts.quick === true ? [3] : [1, 3]) {
      const run = await runCluster(nats, workers, job, opts.count);
      const workerPeak = Math.max(
        ...Object.entries(run.peakRssMb)
          .filter(([k]) => k.startsWith("worker"))
          .map(([, v]) => v ?? 0),
      );
      rows.push({
        measure: `cluster over NATS: ${workers} worker process${workers > 1 ? "es" : ""} × ${SLOTS_PER_WORKER} slots`,
        value: run.tasksPerSec,
        unit: "tasks/s",
        peakRssMb: workerPeak,
        rssOf: "worker",
        note: `${embedded === null ? "" : `${round(run.tasksPerSec / embedded.tasksPerSec, 2)}× embedded; `}controller+queuer peak ${run.peakRssMb["controller+queuer"] ?? "?"} MB`,
      });
      data[`cluster${workers}`] = run;
    }
  } finally {
    await nats.stop();
  }
  // The quick run (CI's) only keeps this code from rotting: two sites once, no speed-up.
  const stealCount = opts.quick === true ? 20 : 120;
  let alone: number | null = null;
  for (const siteCount of opts.quick === true ? [2] : [1, 2, 3]) {
    log(`stealing: ${stealCount} ${STEAL_JOB}(${STEAL_TASK_MS} ms) tasks to site a, ${siteCount} site(s)`);
    const run = await runStealing(siteCount, stealCount);
    alone ??= run.makespanMs;
    rows.push({
      measure: `stealing: ${stealCount} ${STEAL_JOB}(${STEAL_TASK_MS} ms) tasks to site a, ${siteCount} site(s) × ${THIEF_SLOTS} slots`,
      value: round(run.makespanMs),
      unit: "ms makespan",
      note: `${opts.quick === true ? "speed-up not measured (--quick)" : `speed-up ${round(alone / run.makespanMs, 2)}`}; ran at ${JSON.stringify(run.ranAt)}`,
    });
    data[`stealing${siteCount}`] = run;
  }
  return { ...base, rows, data };
}
