import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { createThrottledLink, throttledLinkUnavailable, type ThrottledLink } from "../common/testing/netns.js";
import { spread, stealCosts, type OwnerRun, type ProxyRun, type StealCost } from "../common/testing/steal-timeline.js";
import {
  listAll,
  ownChild,
  APP_ENTRY,
  REPO,
  startEmbeddedApp,
  tempDir,
  useKey,
  waitUntil,
  type EmbeddedApp,
} from "../testFunctional/helpers.js";
import { startNats, type NatsServer } from "../testFunctional/nats.js";
import { log, sleep, submitMany, waitForCounts } from "./harness.js";
import { round, type FigureResult, type Row } from "./report.js";
import { STEAL_JOB } from "./stealing-slot-bound.js";

/*
 * Figure 9: stealing over a slow link. Site a (the victim, 2 slots) runs on this host; site b (the
 * thief, 2 slots) runs in a network namespace with its own NATS, and reaches the global NATS on the
 * host through a veth pair throttled to LINK_MBIT each way (tbf; see common/testing/netns.ts). A
 * stolen task's document and result travel as Moleculer streams over the global NATS, so each
 * 10 MB crosses the slow link once each way. Two loads at site a, one after the other: a short
 * backlog that no steal can beat (the document's trip alone outlasts the whole backlog), and a long
 * one where stealing the tail pays. For every steal: its transfer (lent → running at b, plus ended
 * at b → result recorded at a) against the wait it saved (how long it would still have queued at a,
 * see stealCosts). Goal: no steal whose transfer exceeds the wait it saves.
 */

const LINK_MBIT = 10;
const DOCUMENT_BYTES = 10 * 1024 * 1024;
const SLOTS = 2;
const DISCOVERY_MS = 2_500;
/**
 * nats-server cuts a client as a slow consumer when one write to it blocks longer than its write
 * deadline (10 s by default): a 10 MB document, about 4× that as Moleculer's JSON stream chunks,
 * queued at once for a thief behind 10 Mbit/s, does. The stream then stalls for good while the
 * thief's heartbeats keep the task leased (measured 2026-12-02: "Slow Consumer Detected:
 * WriteDeadline of 10s exceeded"). The figure measures the steal policy, so its global NATS is
 * given room; a deployment with slow links needs the same (`write_deadline` in the NATS config).
 */
const GLOBAL_NATS_CONFIG = 'write_deadline: "300s"\n';
/** A load that has not finished this long after its expected time has a stuck task: the figure says so and stops. */
const STUCK_AFTER_MS = 150_000;
/** The two loads: the short one gives no steal worth making, the long one gives a few. */
const LOADS = [
  { label: "short backlog", tasks: 6, taskMs: 1_000 },
  { label: "long backlog", tasks: 16, taskMs: 4_000 },
] as const;

interface ThiefSite {
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/** Starts a child inside the namespace, its output kept; stop() sends SIGTERM (SIGKILL after 10 s). */
function startInside(
  link: ThrottledLink,
  command: string,
  args: string[],
  env: Record<string, string>,
): ThiefSite & { child: ChildProcess } {
  const [cmd, argv] = link.inside(command, args);
  const child = ownChild(
    spawn(cmd, argv, { cwd: REPO, env: { ...(process.env as Record<string, string>), ...env }, stdio: ["ignore", "pipe", "pipe"] }),
  );
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-200_000)));
  child.stderr?.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-200_000)));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    child,
    url: "",
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Site b inside the namespace: its NATS on the namespace's loopback, its app reachable from here at the veth's address. */
async function startThief(link: ThrottledLink, globalPort: number, dataDir: string, started: ThiefSite[]): Promise<ThiefSite> {
  const natsPort = 4222;
  started.push(startInside(link, "nats-server", ["-a", "127.0.0.1", "-p", String(natsPort)], {}));
  const key = randomBytes(24).toString("hex");
  const port = 3000;
  const app = startInside(link, process.execPath, [APP_ENTRY], {
    DOCQ_SITE: "b",
    DOCQ_NATS_URL: `nats://127.0.0.1:${natsPort}`,
    DOCQ_GLOBAL_NATS_URL: `nats://${link.hostIp}:${globalPort}`,
    // Reachable from the host over the veth: the API then wants a key.
    DOCQ_HOST: link.innerIp,
    DOCQ_ADMIN_KEY: key,
    PORT: String(port),
    DATA_DIR: dataDir,
    DOCQ_SLOTS: String(SLOTS),
    DOCQ_LOG_LEVEL: "info",
    DOCQ_SHUTDOWN_GRACE_MS: "2000",
  });
  // The app first: it stops before its NATS.
  started.unshift(app);
  const url = `http://${link.innerIp}:${port}`;
  useKey(url, key);
  await waitUntil(
    "site b (in the namespace) to answer /api/health",
    async () => {
      if (app.child.exitCode !== null) throw new Error(`site b exited during start-up:\n${app.output()}`);
      return (await fetch(`${url}/api/health`).catch(() => null))?.ok === true;
    },
    90_000,
    200,
  );
  return { ...app, url };
}

const seconds = (ms: number): string => `${round(ms / 1000, 1)}`;

interface LoadResult {
  label: string;
  tasks: number;
  taskMs: number;
  wallMs: number;
  ranAt: Record<string, number>;
  steals: StealCost[];
  notPaying: number;
  /** Tasks still lent to the thief, unfinished, when the load timed out: steals that stalled on the link. */
  stalled: number;
  /** Steals that came back without a result (lease lapsed, failed at the thief): the task ran again at a. */
  failed: { id: string; outcome: string; lostMs: number }[];
}

async function runLoad(victim: EmbeddedApp, thief: ThiefSite, load: (typeof LOADS)[number], seen: Set<string>): Promise<LoadResult> {
  const before = (await waitForCounts(victim.url, "the previous load", () => true, 1_000)).counts.output ?? 0;
  const filler = "x".repeat(DOCUMENT_BYTES - 64);
  const t0 = Date.now();
  const { ids } = await submitMany(victim.url, load.tasks, 2, (i) => `${load.label} document ${i}\n${filler}`, {
    job: STEAL_JOB,
    params: { ms: load.taskMs },
  });
  const expectedAloneMs = Math.ceil(load.tasks / SLOTS) * load.taskMs;
  const mine = new Set(ids);
  let stalled = 0;
  try {
    await waitForCounts(
      victim.url,
      `${load.label}: ${load.tasks} tasks`,
      (c) => (c.output ?? 0) >= before + load.tasks,
      expectedAloneMs + STUCK_AFTER_MS,
    );
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith("timed out"))) throw err;
    // A measured outcome, not a broken bench: steals that never finished.
    stalled = (await listAll(victim.url, "status=work")).filter((t) => mine.has(t.id) && t.lease?.owner === "site:b").length;
    if (stalled === 0) throw err;
    log(
      `${load.label}: ${stalled} task(s) lent to site b still unfinished ${seconds(expectedAloneMs + STUCK_AFTER_MS)} s after the submit`,
    );
  }
  const tasks = (await listAll(victim.url, "status=output")).filter((t) => mine.has(t.id));
  const ranAt: Record<string, number> = {};
  const ownerRuns: OwnerRun[] = tasks.map((t) => {
    const site = t.processedBy?.site ?? "?";
    ranAt[site] = (ranAt[site] ?? 0) + 1;
    return { id: t.id, ranAt: site, priority: t.priority, submitTime: t.submitTime, start: t.startTime ?? 0, end: t.endTime ?? 0 };
  });
  const proxies = new Map<string, ProxyRun>();
  for (const p of await listAll(thief.url, "status=output")) {
    if (seen.has(p.id) || !mine.has(p.id) || p.startTime === null || p.endTime === null) continue;
    seen.add(p.id);
    proxies.set(p.id, { id: p.id, start: p.startTime, end: p.endTime });
  }
  const steals = stealCosts("a", SLOTS, ownerRuns, proxies);
  // A steal that came back empty-handed shows only in the owner's attempts.
  const failed = tasks.flatMap((t) =>
    t.attempts
      .filter((at) => at.site !== null && at.site !== "a" && at.outcome !== "output")
      .map((at) => ({ id: t.id, outcome: at.outcome, lostMs: at.end - (at.start ?? at.end) })),
  );
  return {
    label: load.label,
    tasks: load.tasks,
    taskMs: load.taskMs,
    wallMs: Math.max(...tasks.map((t) => t.endTime ?? 0)) - t0,
    ranAt,
    steals,
    notPaying: steals.filter((s) => s.transferMs > s.waitSavedMs).length + stalled + failed.length,
    stalled,
    failed,
  };
}

export async function stealingSlowLinkFigure(opts: { quick?: boolean }): Promise<FigureResult> {
  const base = { key: "stealingSlowLink", number: 9, title: "Stealing over a slow link" };
  if (opts.quick === true)
    return { ...base, rows: [], data: {}, skipped: "not run by --quick (about 2 minutes of 10 MB documents over 10 Mbit/s): --only 9" };
  const unavailable = await throttledLinkUnavailable();
  if (unavailable !== null) return { ...base, rows: [], data: {}, skipped: `no throttled link here: ${unavailable}` };
  const link = await createThrottledLink({ rateMbit: LINK_MBIT });
  const dirs: string[] = [];
  const natsConfigDir = await tempDir("bench-slow-nats");
  dirs.push(natsConfigDir);
  await fs.writeFile(path.join(natsConfigDir, "global.conf"), GLOBAL_NATS_CONFIG);
  // On every interface: the thief reaches it at the veth's host address.
  const global = await startNats(["-c", path.join(natsConfigDir, "global.conf"), "-a", "0.0.0.0"]);
  let victimNats: NatsServer | null = null;
  let victim: EmbeddedApp | null = null;
  let thief: ThiefSite | null = null;
  /** What runs in the namespace, in the order to stop it. */
  const inside: ThiefSite[] = [];
  try {
    victimNats = await startNats();
    const thiefData = await tempDir("bench-slow-thief");
    dirs.push(thiefData);
    const [a, b] = await Promise.allSettled([
      startEmbeddedApp({
        slots: SLOTS,
        env: { DOCQ_SITE: "a", DOCQ_NATS_URL: victimNats.url, DOCQ_GLOBAL_NATS_URL: global.url, DOCQ_LOG_LEVEL: "info" },
      }),
      startThief(link, global.port, thiefData, inside),
    ]);
    if (a.status === "fulfilled") victim = a.value;
    if (b.status === "fulfilled") thief = b.value;
    if (a.status === "rejected") throw a.reason;
    if (b.status === "rejected") throw b.reason;
    if (victim === null || thief === null) throw new Error("unreachable: both sites started");
    dirs.push(victim.dataDir);
    await sleep(DISCOVERY_MS);
    const rows: Row[] = [];
    const data: Record<string, unknown> = { linkMbit: LINK_MBIT, documentBytes: DOCUMENT_BYTES };
    const seen = new Set<string>();
    for (const load of LOADS) {
      log(`stealing over ${LINK_MBIT} Mbit/s: ${load.label}, ${load.tasks} × ${STEAL_JOB}(${load.taskMs} ms), 10 MB documents`);
      const r = await runLoad(victim, thief, load, seen);
      const transfer = spread(r.steals.map((s) => s.transferMs));
      rows.push({
        measure: `${load.label}: ${r.tasks} × ${STEAL_JOB}(${r.taskMs} ms) of 10 MB at site a (${SLOTS} slots), thief b (${SLOTS} slots) over ${LINK_MBIT} Mbit/s: steals made`,
        value: r.steals.length + r.stalled + r.failed.length,
        unit: "steals",
        note:
          `${r.notPaying} whose transfer exceeded the wait saved (goal 0)` +
          (r.failed.length === 0
            ? ""
            : `, of which ${r.failed.length} came back without a result (${r.failed.map((f) => `${f.outcome} after ${seconds(f.lostMs)} s`).join(", ")}) and ran again at a`) +
          (r.stalled === 0
            ? "; "
            : `, of which ${r.stalled} stalled (lent, unfinished ${seconds(STUCK_AFTER_MS)} s after a alone would have ended; the figure stops); `) +
          (r.steals.length === 0
            ? ""
            : `transfer vs wait saved (s): ${r.steals.map((s) => `${seconds(s.transferMs)}/${seconds(s.waitSavedMs)}`).join(", ")}; transfer p50 ${seconds(transfer!.p50)} s; `) +
          `wall ${seconds(r.wallMs)} s (site a alone: ≥ ${seconds(Math.ceil(r.tasks / SLOTS) * r.taskMs)} s); ran at ${Object.entries(
            r.ranAt,
          )
            .sort()
            .map(([s, n]) => `${s} ${n}`)
            .join(", ")}`,
      });
      data[load.label] = r;
      // What the thief said of it: its warnings explain a steal that stalled or came back empty.
      data[`${load.label}: thief warnings so far (last 10)`] = thief
        .output()
        .split("\n")
        .filter((line) => /\b(WARN|ERROR)\b/.test(line))
        .slice(-10);
      // And what it measured of the link and took: the grounds of its steals.
      data[`${load.label}: thief link and steal lines so far (last 10)`] = thief
        .output()
        .split("\n")
        .filter((line) => /link to site|probing|stole \d+/.test(line))
        .slice(-10);
      // A stalled task holds its lease at a: a later load would measure that, not the policy.
      if (r.stalled > 0) break;
    }
    return { ...base, rows, data };
  } catch (err) {
    const tails = [
      victim === null ? "" : `--- site a (tail) ---\n${victim.output().split("\n").slice(-15).join("\n")}`,
      inside[0] === undefined ? "" : `--- site b (tail) ---\n${inside[0].output().split("\n").slice(-15).join("\n")}`,
    ];
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${tails.join("\n")}`, { cause: err });
  } finally {
    await victim?.stop();
    for (const child of inside) await child.stop();
    await victimNats?.stop();
    await global.stop();
    await link.remove();
    for (const dir of dirs) await fs.rm(dir, { recursive: true, force: true });
  }
}
