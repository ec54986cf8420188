import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import { freePort, APP_ENTRY, REPO, tempDir, waitUntil } from "../testFunctional/helpers.js";
import { startNats, type NatsServer } from "../testFunctional/nats.js";
import { CLIENT_CONCURRENCY, log, procStatusMb, submitMany, waitForCounts } from "./harness.js";
import { round, type FigureResult, type Row } from "./report.js";
import { measureQueueThroughput } from "./throughput.js";

/** Slots per worker process in the cluster figure: the embedded figure's 2 slots, per process. */
const SLOTS_PER_WORKER = 2;

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
      spawn(process.execPath, [APP_ENTRY, "--services", services], {
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
 * Figure 7: the throughput test over NATS with 1 and 3 worker processes (each its own process,
 * as pm2 runs them) next to the embedded mode on the same run. `quick` runs the 3-worker cluster
 * only. (Stealing is figure 8, bench/stealing-slot-bound.ts.)
 */
export async function clusterFigure(opts: { count: number; quick?: boolean }): Promise<FigureResult> {
  const base = { key: "cluster", number: 7, title: "Cluster (worker processes over NATS)" };
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
  return { ...base, rows, data };
}
