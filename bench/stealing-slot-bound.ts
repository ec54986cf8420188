import { listAll, startEmbeddedApp, type EmbeddedApp } from "../testFunctional/helpers.js";
import { startNats, type NatsServer } from "../testFunctional/nats.js";
import { slotIdleGaps, spread, type NodeRun } from "../common/testing/steal-timeline.js";
import type { Task } from "../common/model/task-model.js";
import { CLIENT_CONCURRENCY, log, sleep, submitMany, waitForCounts } from "./harness.js";
import { round, type FigureResult, type Row } from "./report.js";

/*
 * Figure 8: stealing where slots, not the CPU, are the limit. `count` tasks of the warm job
 * sleep-warm (each holds its slot STEAL_TASK_MS, costs no CPU) are all submitted to site a; 1, 2
 * or 3 one-process sites of SLOTS slots each, every site with its own NATS, one global NATS
 * between their stealers, the product's default stealing settings. One-shot jobs would measure
 * the machine instead: on 2 cores all sites share the CPU that starts their processes.
 */

export const STEAL_JOB = "sleep-warm";
export const STEAL_TASK_MS = 200;
const SLOTS = 2;
const SITES = ["a", "b", "c"] as const;
/** Time for the sites' stealers to find each other on the global NATS (Moleculer's discovery) before the load. */
const DISCOVERY_MS = 2_500;

export interface SlotBoundRun {
  sites: number;
  tasks: number;
  /** First submit → last result recorded at site a, ms. */
  wallMs: number;
  /** First submit → last submit answered, ms (the submits overlap the runs). */
  submitMs: number;
  /** First submit → each thief's first stolen task started, ms: how soon stealing starts. */
  firstStealMs: Record<string, number>;
  /** Where each task ran (its record's processedBy.site at site a). */
  ranAt: Record<string, number>;
  /** Tasks that took more than one attempt (a lapsed lease, a failed steal). */
  retried: number;
  /** Per slot of the thieves, the gaps between one task's end and the next start while site a had work to give, ms. */
  thiefIdleMs: { count: number; p50: number; p95: number; max: number } | null;
  /** Steal round trips, from the thieves' logs ("stole N task(s)"), when they say so. */
  stealRounds: number | null;
}

/** Sums "stole N task(s)" lines of the thieves' logs: the number of steal round trips that brought work. */
function stealRoundsIn(outputs: readonly string[]): number | null {
  let rounds = 0;
  for (const out of outputs) rounds += [...out.matchAll(/stole \d+ task/g)].length;
  return rounds === 0 ? null : rounds;
}

export async function runSlotBound(siteCount: number, count: number): Promise<SlotBoundRun> {
  const global = await startNats();
  const names = SITES.slice(0, siteCount);
  const siteNats: NatsServer[] = [];
  const apps: EmbeddedApp[] = [];
  try {
    for (const _ of names) siteNats.push(await startNats());
    // Side by side: each start is mostly waiting (tsx, the brokers' connections).
    const started = await Promise.allSettled(
      names.map((site, i) =>
        startEmbeddedApp({
          slots: SLOTS,
          // Info, for the thieves' "stole N task(s)" lines.
          env: { DOCQ_SITE: site, DOCQ_NATS_URL: siteNats[i]!.url, DOCQ_GLOBAL_NATS_URL: global.url, DOCQ_LOG_LEVEL: "info" },
        }),
      ),
    );
    for (const s of started) if (s.status === "fulfilled") apps.push(s.value);
    const failed = started.find((s) => s.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    // Each slot's warm process started before the clock does (the figure measures stealing, not
    // Node's start-up): every site runs a few short tasks of the job first, left out of the figures.
    const warmUpIds = new Set<string>();
    await Promise.all(
      apps.map(async (app) => {
        const before = (await waitForCounts(app.url, "nothing", () => true, 1_000)).counts.output ?? 0;
        const { ids } = await submitMany(app.url, 2 * SLOTS, 2 * SLOTS, (i) => `warm-up ${i}\n`, { job: STEAL_JOB, params: { ms: 100 } });
        for (const id of ids) warmUpIds.add(id);
        await waitForCounts(app.url, "the warm-up tasks", (c) => (c.output ?? 0) >= before + 2 * SLOTS, 120_000);
      }),
    );
    if (siteCount > 1) await sleep(DISCOVERY_MS);
    const [victim, ...thieves] = apps;
    // (A proxy here of another site's warm-up task counts in this site's outputs too.)
    const outputBefore = (await waitForCounts(victim!.url, "nothing", () => true, 1_000)).counts.output ?? 0;
    const t0 = Date.now();
    await submitMany(victim!.url, count, CLIENT_CONCURRENCY, (i) => `document ${i}\n`, { job: STEAL_JOB, params: { ms: STEAL_TASK_MS } });
    const submitMs = Date.now() - t0;
    await waitForCounts(victim!.url, `${count} tasks over ${siteCount} site(s)`, (c) => (c.output ?? 0) >= outputBefore + count, 300_000);
    const tasks = (await listAll(victim!.url, "status=output")).filter((t) => !warmUpIds.has(t.id) && t.site === "a");
    const ranAt: Record<string, number> = {};
    for (const t of tasks) ranAt[t.processedBy?.site ?? "?"] = (ranAt[t.processedBy?.site ?? "?"] ?? 0) + 1;
    // Site a had work to give until it handed out its last task (claimed by its worker or lent).
    const backlogUntil = Math.max(...tasks.map((t) => t.startTime ?? 0));
    const thiefRuns: NodeRun[] = [];
    const firstStealMs: Record<string, number> = {};
    for (const [i, thief] of thieves.entries()) {
      const proxies: Task[] = (await listAll(thief.url, "status=output")).filter((t) => !warmUpIds.has(t.id) && t.site === "a");
      const starts = proxies.flatMap((p) => (p.startTime === null ? [] : [p.startTime]));
      if (starts.length > 0) firstStealMs[names[i + 1]!] = Math.min(...starts) - t0;
      for (const p of proxies) {
        if (p.startTime === null || p.endTime === null) continue;
        thiefRuns.push({ node: `${p.processedBy?.site ?? "?"}/${p.processedBy?.node ?? "?"}`, start: p.startTime, end: p.endTime });
      }
    }
    return {
      sites: siteCount,
      tasks: count,
      wallMs: Math.max(...tasks.map((t) => t.endTime ?? 0)) - t0,
      submitMs,
      firstStealMs,
      ranAt,
      retried: tasks.filter((t) => t.attempts.length > 1).length,
      thiefIdleMs: thieves.length === 0 ? null : spread(slotIdleGaps(thiefRuns, SLOTS, backlogUntil)),
      stealRounds: thieves.length === 0 ? null : stealRoundsIn(thieves.map((t) => t.output())),
    };
  } catch (err) {
    const tails = apps.map((app, i) => `--- site ${names[i]} (tail) ---\n${app.output().split("\n").slice(-15).join("\n")}`);
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${tails.join("\n")}`, { cause: err });
  } finally {
    await Promise.all(apps.map((app) => app.stop()));
    for (const nats of siteNats) await nats.stop();
    await global.stop();
  }
}

function idleNote(run: SlotBoundRun): string {
  if (run.thiefIdleMs === null) return "no thief slot freed while site a had work";
  const { p50, p95, max, count } = run.thiefIdleMs;
  return `thief slot idle p50 ${p50} / p95 ${p95} / max ${max} ms over ${count} refills (goal ≤ 20 ms)`;
}

/**
 * The figure: 1, 2 and 3 sites with `count` tasks, the speed-up over site a alone, where the tasks
 * ran, and how long the thieves' slots idled. `quick` (CI's run) runs 2 sites once on a few tasks:
 * it keeps the code working, measures nothing (no speed-up without the 1-site run).
 */
export async function stealingSlotBoundFigure(opts: { count: number; quick?: boolean }): Promise<FigureResult> {
  const base = { key: "stealing", number: 8, title: "Stealing, slot-bound" };
  const rows: Row[] = [];
  const data: Record<string, unknown> = {};
  let alone: number | null = null;
  for (const siteCount of opts.quick === true ? [2] : [1, 2, 3]) {
    log(`stealing: ${opts.count} ${STEAL_JOB}(${STEAL_TASK_MS} ms) tasks to site a, ${siteCount} site(s) × ${SLOTS} slots`);
    const run = await runSlotBound(siteCount, opts.count);
    alone ??= siteCount === 1 ? run.wallMs : null;
    const speedUp = alone === null ? null : round(alone / run.wallMs, 2);
    rows.push({
      measure: `${opts.count} ${STEAL_JOB}(${STEAL_TASK_MS} ms) tasks to site a, ${siteCount} site(s) × ${SLOTS} slots: wall time`,
      value: run.wallMs,
      unit: "ms",
      note:
        `${speedUp === null ? "speed-up not measured (--quick)" : `speed-up ${speedUp}× (goal ≥ 2.7× with 3 sites)`}; ` +
        `submits done after ${round(run.submitMs / 1000, 1)} s; ` +
        `ran at ${Object.entries(run.ranAt)
          .sort()
          .map(([s, n]) => `${s} ${n}`)
          .join(", ")}` +
        (run.retried > 0 ? `; ${run.retried} retried` : "") +
        (siteCount > 1
          ? `; first stolen task started after ${Object.entries(run.firstStealMs)
              .map(([site, ms]) => `${ms} ms at ${site}`)
              .join(", ")}`
          : "") +
        (siteCount > 1 ? `; ${idleNote(run)}${run.stealRounds === null ? "" : `; ${run.stealRounds} steal round trips`}` : ""),
    });
    data[`sites${siteCount}`] = { ...run, speedUp };
  }
  return { ...base, rows, data };
}
