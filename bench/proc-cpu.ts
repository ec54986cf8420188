import { promises as fs } from "node:fs";
import os from "node:os";
import { round } from "./report.js";

/*
 * CPU time read from Linux's /proc, for the figures that say where a task's time goes. A profile
 * inflates every part it samples; these counters cost nothing while the figure runs: they are read
 * once before a phase and once after it. Elsewhere than Linux every reading is null.
 */

/** Linux's USER_HZ, what /proc counts CPU time in. */
const CLOCK_TICKS_PER_SEC = 100;

/** User + system CPU of a /proc `stat` line, ms. */
function cpuMsOfStat(stat: string): number {
  // Fields after the command (which may hold spaces, in parentheses): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SEC;
}

/** The parent pid of a /proc `stat` line. */
function parentOfStat(stat: string): number {
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** User + system CPU of process `pid` (all its threads) in ms; null elsewhere than Linux or when it is gone. */
export async function processCpuMs(pid: number | undefined): Promise<number | null> {
  if (pid === undefined) return null;
  try {
    return cpuMsOfStat(await fs.readFile(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return null;
  }
}

/** CPU ms of process `pid` since `start` (a processCpuMs reading). */
export async function cpuSince(pid: number | undefined, start: number | null): Promise<number | null> {
  const now = await processCpuMs(pid);
  return now === null || start === null ? null : now - start;
}

/** The CPU counters of an app and of the machine at one moment, ms. */
export interface CpuReading {
  /** The app's main thread: its event loop. */
  appMain: number;
  /** The app's process, every thread. */
  appAll: number;
  /** Each live child process of the app (warm job processes, spawner helpers), by pid. */
  children: Map<number, number>;
  /** This process (the bench: its HTTP client and polling). */
  bench: number;
  /** Every CPU of the machine, busy (not idle, not waiting for I/O). */
  machineBusy: number;
}

/** Reads the counters of app `pid` and its children, this process and the machine; null when /proc cannot tell. */
export async function readCpu(pid: number | undefined): Promise<CpuReading | null> {
  if (pid === undefined) return null;
  try {
    const [main, all, machine, children] = await Promise.all([
      fs.readFile(`/proc/${pid}/task/${pid}/stat`, "utf8"),
      fs.readFile(`/proc/${pid}/stat`, "utf8"),
      fs.readFile("/proc/stat", "utf8"),
      childrenCpu(pid),
    ]);
    const self = process.cpuUsage();
    return {
      appMain: cpuMsOfStat(main),
      appAll: cpuMsOfStat(all),
      children,
      bench: (self.user + self.system) / 1000,
      machineBusy: machineBusyMs(machine),
    };
  } catch {
    return null;
  }
}

/** The CPU ms of each process whose parent is `pid`. */
async function childrenCpu(pid: number): Promise<Map<number, number>> {
  const cpu = new Map<number, number>();
  const pids = (await fs.readdir("/proc")).filter((name) => /^\d+$/.test(name));
  await Promise.all(
    pids.map(async (name) => {
      // A process may end between the listing and the read: it is left out.
      const stat = await fs.readFile(`/proc/${name}/stat`, "utf8").catch(() => null);
      if (stat !== null && parentOfStat(stat) === pid) cpu.set(Number(name), cpuMsOfStat(stat));
    }),
  );
  return cpu;
}

/** Busy CPU ms of the whole machine from /proc/stat's first line (user nice system idle iowait irq softirq steal ...). */
function machineBusyMs(procStat: string): number {
  const ticks = (procStat.split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((sum, n) => sum + n, 0);
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return ((total - idle) * 1000) / CLOCK_TICKS_PER_SEC;
}

/** Where the CPU of `tasks` tasks went, per task (µs), between two readings around their run. */
export interface CpuPerTask {
  appMainUs: number;
  appOtherThreadsUs: number;
  /** The app's child processes: for a warm job, its processes. */
  childrenUs: number;
  benchUs: number;
  /** The app's main thread busy, % of the run phase. */
  appMainBusyPct: number | null;
  /** The machine's CPUs busy, % of the run phase (every process, this bench's included). */
  machineBusyPct: number | null;
}

/**
 * The CPU between `before` and `after` per task. The readings are taken around the run phase
 * (`runPhaseMs`, from the records) with some idle time on either side, which costs next to
 * nothing; the busy shares are of the run phase.
 */
export function cpuPerTask(before: CpuReading, after: CpuReading, tasks: number, runPhaseMs: number | null): CpuPerTask {
  const perTask = (ms: number): number => round((ms * 1000) / tasks);
  const main = after.appMain - before.appMain;
  let children = 0;
  for (const ms of childrenSpentMs(before, after).values()) children += ms;
  return {
    appMainUs: perTask(main),
    appOtherThreadsUs: perTask(after.appAll - before.appAll - main),
    childrenUs: perTask(children),
    benchUs: perTask(after.bench - before.bench),
    appMainBusyPct: busyShare(main, runPhaseMs, 1),
    machineBusyPct: busyShare(after.machineBusy - before.machineBusy, runPhaseMs, os.cpus().length),
  };
}

/** The CPU ms each child spent between two readings (one started between them counts from 0). */
export function childrenSpentMs(before: CpuReading, after: CpuReading): Map<number, number> {
  return new Map([...after.children].map(([pid, ms]) => [pid, ms - (before.children.get(pid) ?? 0)]));
}

/** `ms` of CPU as a % of `cpus` CPUs over `runPhaseMs` (at most 100); null without a run phase. */
export function busyShare(ms: number, runPhaseMs: number | null, cpus: number): number | null {
  return runPhaseMs === null || runPhaseMs <= 0 ? null : round(Math.min(100, (ms / (runPhaseMs * cpus)) * 100));
}

/** A busy share as words after a figure: ` (busy 96 % of the run)`, or "" when there is none. */
export function busyText(pct: number | null): string {
  return pct === null ? "" : ` (busy ${pct} % of the run)`;
}

/** A CpuPerTask as words: `the app's main thread 520 µs (busy 96 % of the run), its other threads 60, ...`. */
export function describeCpuPerTask(cpu: CpuPerTask, childrenAre: string): string {
  return (
    `the app's main thread ${cpu.appMainUs} µs${busyText(cpu.appMainBusyPct)}, its other threads ${cpu.appOtherThreadsUs}, ` +
    `${childrenAre} ${cpu.childrenUs}, the bench ${cpu.benchUs}; the machine's CPUs${busyText(cpu.machineBusyPct)}`
  );
}
