import { execFile } from "node:child_process";
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./free-port.js";

/*
 * A private PostgreSQL server for a test: a fresh cluster (initdb) in a temp dir, started with
 * pg_ctl on a free port of 127.0.0.1, its unix socket inside that dir, trust authentication. The
 * Debian package puts the binaries in /usr/lib/postgresql/<version>/bin, which is not in PATH.
 * PostgreSQL refuses to run as root, so when this process is root every binary runs as the
 * `postgres` user (runuser) and the dir is given to it.
 */

const run = promisify(execFile);

const POSTGRES_ROOT = "/usr/lib/postgresql";
const UNPRIVILEGED_USER = "postgres";

/**
 * Settings that make a throwaway server fast: no fsync, so a commit is safe from a kill of the
 * server's processes (the kernel holds it) but not from a crash of the machine. synchronous_commit
 * stays on: off would lose the last commits even to a kill.
 */
export const FAST_UNSAFE_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  fsync: "off",
  full_page_writes: "off",
});

export interface PostgresServerOptions {
  /** The database made for the caller (its URL is `url`). Default `docq`. */
  database?: string;
  /**
   * `postgres -c` settings. Default FAST_UNSAFE_SETTINGS; pass `{}` for the real, durable
   * defaults (a test that kills the server and counts what survived).
   */
  settings?: Readonly<Record<string, string>>;
}

export interface PostgresServer {
  /** `postgresql://postgres@127.0.0.1:<port>/<database>` */
  readonly url: string;
  readonly port: number;
  /** The temp dir holding the cluster (data/), its socket and its log. */
  readonly dir: string;
  /** The URL of another database on this server. */
  urlOf(database: string): string;
  /** Makes a database (from `template` when given, e.g. one already migrated); answers its URL. */
  createDatabase(name: string, template?: string): Promise<string>;
  /** The postmaster's pid now (null when it is not running). */
  pid(): number | null;
  /** SIGKILLs the postmaster and every backend: a crash, as when its machine dies. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and data dir (after kill); it recovers from its WAL. */
  start(): Promise<void>;
  /** A clean shutdown (fast mode) and a start on the same port and data dir. */
  restart(): Promise<void>;
  /** Stops the server (immediate mode, else SIGKILL) and removes the dir, whatever fails. */
  stop(): Promise<void>;
}

/** The bin dir of the highest installed PostgreSQL version, or null when none is installed. */
export function findPostgresBin(): string | null {
  if (!existsSync(POSTGRES_ROOT)) return null;
  const versions = readdirSync(POSTGRES_ROOT)
    .filter((name) => /^\d+(\.\d+)?$/.test(name) && existsSync(join(POSTGRES_ROOT, name, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? null : join(POSTGRES_ROOT, versions[0]!, "bin");
}

function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** Runs a PostgreSQL binary, as the unprivileged user when this process is root. */
async function runBinary(bin: string, args: readonly string[]): Promise<string> {
  const [file, argv] = isRoot() ? ["runuser", ["-u", UNPRIVILEGED_USER, "--", bin, ...args]] : [bin, [...args]];
  try {
    const { stdout } = await run(file, argv, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const failure = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${bin} ${args.join(" ")} failed: ${failure.stderr || failure.stdout || failure.message}`);
  }
}

/**
 * Gives `dir` (and what initdb writes in it later) to the unprivileged user, and lets it reach the
 * dir: a temp dir made private to root (scripts/test.sh's run dir is 0700) gets search permission
 * for others (o+x: enter, not list).
 */
function chownToPostgres(dir: string): void {
  if (!isRoot()) return;
  for (let parent = dirname(dir); parent !== dirname(parent); parent = dirname(parent)) {
    const mode = statSync(parent).mode;
    if ((mode & 0o001) === 0) chmodSync(parent, (mode & 0o7777) | 0o001);
  }
  const passwd = readFileSync("/etc/passwd", "utf8");
  const line = passwd.split("\n").find((entry) => entry.startsWith(`${UNPRIVILEGED_USER}:`));
  if (line === undefined) throw new Error(`no user ${UNPRIVILEGED_USER} to run PostgreSQL as (it refuses to run as root)`);
  const [, , uid, gid] = line.split(":");
  chownSync(dir, Number(uid), Number(gid));
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The pids of `parent`'s children (the backends and helpers of a postmaster). */
function childrenOf(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The fields after the command (which may hold spaces) are: state ppid ...
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === parent) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

async function waitGone(pids: readonly number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/** Starts a private server; see PostgresServerOptions. Throws (leaving nothing behind) when it cannot. */
export async function startPostgresServer(options: PostgresServerOptions = {}): Promise<PostgresServer> {
  const bin = findPostgresBin();
  if (bin === null) throw new Error(`no PostgreSQL installed: no ${POSTGRES_ROOT}/*/bin/initdb (apt-get install postgresql)`);
  const database = options.database ?? "docq";
  const settings = options.settings ?? FAST_UNSAFE_SETTINGS;
  const dir = await mkdtemp(join(tmpdir(), "docq-pg-"));
  const dataDir = join(dir, "data");
  const logFile = join(dir, "server.log");
  let port = 0;
  let stopped = false;

  const postmasterPid = (): number | null => {
    try {
      const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
      return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : null;
    } catch {
      return null;
    }
  };
  const killAll = (): number[] => {
    const pid = postmasterPid();
    if (pid === null) return [];
    const pids = [pid, ...childrenOf(pid)];
    for (const each of pids) signal(each, "SIGKILL");
    return pids;
  };
  // Whatever the test does, a server it started does not outlive it.
  const onExit = (): void => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);

  const serverOptions = (): string =>
    [
      `-p ${port}`,
      `-k ${dir}`,
      "-c listen_addresses=127.0.0.1",
      ...Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`),
    ].join(" ");
  const pgCtlStart = async (): Promise<void> => {
    const logBefore = await readFile(logFile, "utf8").catch(() => "");
    try {
      await runBinary(join(bin, "pg_ctl"), ["-D", dataDir, "-l", logFile, "-w", "-t", "60", "-o", serverOptions(), "start"]);
    } catch (err) {
      const log = await readFile(logFile, "utf8").catch(() => "");
      throw new Error(`${String(err)}\nserver log:\n${log.slice(logBefore.length)}`);
    }
  };
  const startOnFreePort = async (): Promise<void> => {
    // Another process may take the port between freePort and the bind: try a few.
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      try {
        await pgCtlStart();
        return;
      } catch (err) {
        if (attempt >= 3 || !/could not bind|Address already in use/i.test(String(err))) throw err;
      }
    }
  };
  const urlOf = (name: string): string => `postgresql://${UNPRIVILEGED_USER}@127.0.0.1:${port}/${encodeURIComponent(name)}`;
  const admin = async <T>(work: (client: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: urlOf("postgres") });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
    }
  };
  /** `immediate` skips the checkpoint (quick, the next start recovers); `fast` is a clean shutdown. */
  const stopServer = async (mode: "immediate" | "fast"): Promise<void> => {
    const pid = postmasterPid();
    if (pid === null) return;
    try {
      await runBinary(join(bin, "pg_ctl"), ["-D", dataDir, "-m", mode, "-w", "-t", "20", "stop"]);
    } catch {
      killAll();
    }
    await waitGone([pid], 20_000);
  };

  try {
    chownToPostgres(dir);
    await runBinary(join(bin, "initdb"), ["-D", dataDir, "-U", UNPRIVILEGED_USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
    await startOnFreePort();
    await admin((client) => client.query(`CREATE DATABASE ${quoteIdent(database)}`));
  } catch (err) {
    await stopServer("immediate").catch(() => undefined);
    killAll();
    rmSync(dir, { recursive: true, force: true });
    process.removeListener("exit", onExit);
    throw err;
  }

  return {
    get url() {
      return urlOf(database);
    },
    get port() {
      return port;
    },
    dir,
    urlOf,
    async createDatabase(name, template) {
      await admin((client) =>
        client.query(`CREATE DATABASE ${quoteIdent(name)}${template === undefined ? "" : ` TEMPLATE ${quoteIdent(template)}`}`),
      );
      return urlOf(name);
    },
    pid: postmasterPid,
    async kill() {
      const pids = killAll();
      if (!(await waitGone(pids, 20_000))) throw new Error(`PostgreSQL processes ${pids.join(",")} outlived SIGKILL`);
      // Where nothing reaps orphans (a container whose init does not), the killed postmaster stays a
      // zombie and its pid still answers kill(0): the next start would take its lock files for a
      // running server's. Every process of the server is gone: they are stale.
      for (const lockFile of [join(dataDir, "postmaster.pid"), join(dir, `.s.PGSQL.${port}.lock`), join(dir, `.s.PGSQL.${port}`)]) {
        rmSync(lockFile, { force: true });
      }
    },
    async start() {
      if (postmasterPid() !== null) return;
      await pgCtlStart();
    },
    async restart() {
      await stopServer("fast");
      await pgCtlStart();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await stopServer("immediate");
      } finally {
        killAll();
        rmSync(dir, { recursive: true, force: true });
        process.removeListener("exit", onExit);
      }
    },
  };
}
