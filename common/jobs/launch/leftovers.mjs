// What a run leaves behind, and how docq ends it. Plain JavaScript, so the spawner process
// (spawner-child.mjs, through launch-script.mjs) uses it without a TypeScript loader; the worker
// uses it too (one-shot runs in process, warm processes), so every run ends alike. Types:
// leftovers.d.mts.
//
// Processes. A script runs as the leader of its own process group, and docq kills that group when
// the script exits, times out or is canceled. A process that calls setsid (or setpgid) leaves the
// group and outlived that kill. So every run also carries a mark in its environment,
// DOCQ_RUN_ID=<owner>.<n>, which every process it starts inherits through fork, exec and setsid;
// when the run ends docq reads /proc/<pid>/environ and SIGKILLs every live process that carries
// the run's mark, pass after pass, until a pass finds none (a zombie counts as gone: its
// environment reads empty). A pass looks only at the pids handed out since the run started (from
// its first pid up to /proc/sys/kernel/ns_last_pid, probed one by one when they are few; every
// process when the pid counter wrapped or the run took a second or more): for a short run, a few
// small reads, ~0.1 ms, twice per run (at the script's exit, then once more before its result).
//
// Why this and not a cgroup: the alternatives were measured on this project's machine kind (a
// 2-core Firecracker VM, root, a writable cgroup v2 tree at /sys/fs/cgroup/unified). A per-run
// cgroup is airtight against a process that clears its environment, but the script must be in it
// before it runs: moving the (multi-threaded) worker or spawner process in and out around each
// spawn cost ~8 ms per run, and an sh wrapper that moves itself before exec ~0.5 ms plus an exec,
// against ~11 ms for a whole one-shot task; it also needs root or a delegated cgroup tree, which
// is not a given where docq runs. A child subreaper needs prctl, which Node does not expose. The
// environment mark works for any user on any Linux, at a fraction of a millisecond per run. What
// it cannot catch: a process that replaces its environment (env -i, or exec with a fresh one).
//
// Leftovers of a process that died (a crashed worker or spawner) are found by their owner: a mark
// (and a work dir name, see job-runner.ts) starts with <pid>.<start time> of the process that made
// it, and killOrphans() kills the marked processes whose owner is gone.
import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";

/** The environment variable that marks every process of a run. */
export const RUN_ID_VAR = "DOCQ_RUN_ID";

/** A run lasting longer than this is swept over every process (the pid counter may have wrapped). */
const FULL_SCAN_AFTER_MS = 1000;
/** How long endRun keeps killing before it gives up (SIGKILLed processes die within milliseconds). */
const END_RUN_LIMIT_MS = 10_000;

const procAvailable = (() => {
  try {
    readFileSync("/proc/self/stat");
    return true;
  } catch {
    return false;
  }
})();

/**
 * The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or null when it
 * is gone or a zombie; undefined where /proc cannot tell (not Linux).
 */
function startTimeOf(pid) {
  if (!procAvailable) return undefined;
  let stat;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces and parens: count the fields after its closing paren.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return null;
  return fields[19] ?? null;
}

/**
 * This process as the owner of what it makes: `<pid>.<start time>`. The start time tells this
 * process from a later one that reuses its pid.
 */
export const OWNER = `${process.pid}.${startTimeOf(process.pid) ?? "0"}`;

/** True while the process named by `owner` (`<pid>.<start time>`, see OWNER) runs. */
export function isOwnerAlive(owner) {
  const match = /^(\d+)\.(\d+)$/.exec(owner);
  if (match === null) return false;
  const pid = Number(match[1]);
  if (owner === OWNER) return true;
  const start = startTimeOf(pid);
  if (start !== undefined) return start === match[2];
  // Without /proc: the pid alone.
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err?.code === "EPERM";
  }
}

let runs = 0;

/** A fresh mark for one run of this process: `<OWNER>.<n>`. */
export function newRunId() {
  runs += 1;
  return `${OWNER}.${runs}`;
}

/** Pids of the live processes, as /proc lists them ([] without /proc). */
function listPids() {
  let names;
  try {
    names = readdirSync("/proc");
  } catch {
    return [];
  }
  const pids = [];
  for (const name of names) {
    const code = name.charCodeAt(0);
    if (code >= 48 && code <= 57) pids.push(Number(name));
  }
  return pids;
}

/** The last pid handed out in this pid namespace, or null when unknown. */
function lastPid() {
  const text = readSmall("/proc/sys/kernel/ns_last_pid");
  const pid = text === null ? NaN : Number(text.toString("latin1").trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** One buffer for the small reads of /proc (synchronous, so never shared by two reads at once). */
let scratch = Buffer.allocUnsafe(64 * 1024);

/**
 * The content of a /proc file (a view of `scratch`, valid until the next call), or null when it
 * cannot be read. readFileSync costs an fstat and a second read more: this runs once per run.
 */
function readSmall(file) {
  let fd;
  try {
    fd = openSync(file, "r");
  } catch {
    return null;
  }
  try {
    let length = 0;
    for (;;) {
      if (length === scratch.length) {
        const bigger = Buffer.allocUnsafe(scratch.length * 2);
        scratch.copy(bigger);
        scratch = bigger;
      }
      const n = readSync(fd, scratch, length, scratch.length - length, null);
      if (n === 0) return scratch.subarray(0, length);
      length += n;
    }
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

const MARK = Buffer.from(`${RUN_ID_VAR}=`);

/** The run mark in the environment of `pid`, or null (none, gone, a zombie, or not readable). */
function markOf(pid) {
  const environ = readSmall(`/proc/${pid}/environ`);
  if (environ === null) return null;
  for (let at = environ.indexOf(MARK); at !== -1; at = environ.indexOf(MARK, at + 1)) {
    if (at > 0 && environ[at - 1] !== 0) continue;
    const start = at + MARK.length;
    const end = environ.indexOf(0, start);
    return environ.toString("latin1", start, end === -1 ? environ.length : end);
  }
  return null;
}

/** Pids handed out since a short run started are looked at one by one up to this many; past it /proc is listed. */
const PROBE_MAX = 64;

/**
 * The pids that may belong to a run that started at `scope`: those handed out since (the pid
 * counter only grows, until it wraps), or every process when that cannot be told (no scope, a run
 * of a second or more, no ns_last_pid). A few pids are probed one by one: cheaper than listing
 * /proc, which a loaded machine makes cost a millisecond.
 */
function candidates(scope) {
  if (scope === undefined || !(scope.firstPid > 0) || Date.now() - scope.startedAt >= FULL_SCAN_AFTER_MS) return listPids();
  const last = lastPid();
  if (last === null) return listPids();
  const { firstPid } = scope;
  if (last >= firstPid && last - firstPid < PROBE_MAX) {
    const pids = [];
    for (let pid = firstPid; pid <= last; pid++) pids.push(pid);
    return pids;
  }
  // Wrapped at most once in under a second: from firstPid up, then from the bottom up to last.
  // (A pid listed here but handed out after `last` was read is looked at too: a superset.)
  return last >= firstPid ? listPids().filter((p) => p >= firstPid) : listPids().filter((p) => p >= firstPid || p <= last);
}

function sigkill(pid) {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // ESRCH: already gone.
  }
}

/**
 * One pass: SIGKILLs every live process marked with `runId`; answers how many it found. `scope`
 * (the run's first pid and start time) narrows the look to processes born since.
 */
export function killRun(runId, scope) {
  if (typeof runId !== "string" || runId === "") return 0;
  let found = 0;
  for (const pid of candidates(scope)) {
    if (pid === process.pid) continue;
    if (markOf(pid) === runId) {
      found += 1;
      sigkill(pid);
    }
  }
  return found;
}

/**
 * Kills every process of the run and resolves once a pass finds none left (a process may fork
 * while a pass runs: the next pass gets its child). Resolves with the number still found when it
 * gave up after END_RUN_LIMIT_MS (a process stuck in the kernel), 0 otherwise.
 */
export async function endRun(runId, scope) {
  const deadline = Date.now() + END_RUN_LIMIT_MS;
  for (let pass = 0; ; pass++) {
    const found = killRun(runId, scope);
    if (found === 0) return 0;
    if (Date.now() > deadline) return found;
    await new Promise((resolve) => setTimeout(resolve, pass < 10 ? 1 : 20));
  }
}

/**
 * SIGKILLs every marked process whose owner (the process that started its run) is gone: what a
 * crashed worker or spawner left running. Looks at every process; answers how many it killed.
 */
export function killOrphans() {
  const alive = new Map();
  let killed = 0;
  for (const pid of listPids()) {
    if (pid === process.pid || pid === process.ppid) continue;
    const mark = markOf(pid);
    if (mark === null) continue;
    const owner = /^(\d+\.\d+)\.\d+$/.exec(mark)?.[1];
    if (owner === undefined) continue;
    let ownerAlive = alive.get(owner);
    if (ownerAlive === undefined) {
      ownerAlive = isOwnerAlive(owner);
      alive.set(owner, ownerAlive);
    }
    if (!ownerAlive) {
      killed += 1;
      sigkill(pid);
    }
  }
  return killed;
}
