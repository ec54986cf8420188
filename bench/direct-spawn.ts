import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/*
 * The physical limit docq's throughput is compared with: the same job script, spawned in a loop
 * at a fixed concurrency with no queue, by a SMALL node process (this file, run as its own child
 * of the bench), so the reference is not slowed by a big parent (Node's fork cost grows with the
 * spawning process's memory).
 *
 * Each run does what docq's worker does around a script, and nothing else: a fresh temp work dir
 * with an `out/` dir, the same one-line JSON request on stdin, the answer read from stdout, the
 * dir removed. Two methods: `execa` with the options common/jobs/job-runner.ts uses, and bare
 * `child_process.spawn`.
 *
 * Only node builtins are imported at the top (execa is loaded only for the execa method), so the
 * child stays as small as node + tsx allows; its peak RSS is reported with the figure.
 *
 * Run as: node --import tsx bench/direct-spawn.ts '<DirectOptions as JSON>'; prints one JSON line.
 */

export type DirectMethod = "execa" | "spawn";

export interface DirectOptions {
  method: DirectMethod;
  command: string;
  args: string[];
  count: number;
  concurrency: number;
  /** Runs before timing starts, not counted. */
  warmup: number;
}

export interface DirectResult {
  method: DirectMethod;
  count: number;
  concurrency: number;
  ms: number;
  perSec: number;
  failures: number;
  rssMbAtStart: number | null;
  peakRssMb: number | null;
}

const STDOUT_MAX_BYTES = 4 * 1024 * 1024;

function requestLine(input: string, outputDir: string, i: number): string {
  // The key order of common/jobs/job-runner.ts's requestLine: mode, input, outputDir, params, task.
  return (
    JSON.stringify({
      mode: "simple",
      input,
      outputDir,
      params: {},
      task: { id: `direct-${String(i).padStart(26, "0")}`, name: "", user: "anonymous", priority: 50, parentId: null, depth: 0 },
    }) + "\n"
  );
}

type RunOne = (workDir: string, line: string) => Promise<boolean>;

async function execaRunner(command: string, args: string[]): Promise<RunOne> {
  const { execa } = await import("execa");
  return async (workDir, line) => {
    const subprocess = execa(command, args, {
      cwd: workDir,
      input: line,
      env: {},
      detached: true,
      reject: false,
      stripFinalNewline: false,
      buffer: { stdout: true, stderr: false },
      maxBuffer: { stdout: STDOUT_MAX_BYTES },
    });
    subprocess.stderr.setEncoding("utf8");
    subprocess.stderr.on("data", () => undefined);
    const result = await subprocess;
    return result.exitCode === 0 && String(result.stdout).includes('"output"');
  };
}

function spawnRunner(command: string, args: string[]): RunOne {
  return (workDir, line) =>
    new Promise<boolean>((resolve) => {
      const child = spawn(command, args, { cwd: workDir, detached: true, stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (d: string) => (stdout += d));
      child.stderr.on("data", () => undefined);
      child.stdin.on("error", () => undefined);
      child.stdin.end(line);
      child.once("error", () => resolve(false));
      child.once("close", (code) => resolve(code === 0 && stdout.includes('"output"')));
    });
}

async function statusMb(field: "VmHWM" | "VmRSS"): Promise<number | null> {
  const text = await fs.readFile("/proc/self/status", "utf8").catch(() => null);
  const match = text === null ? null : new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return match === null ? null : Math.round(Number(match[1]) / 1024);
}

export async function measureDirect(opts: DirectOptions): Promise<DirectResult> {
  const rssMbAtStart = await statusMb("VmRSS");
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "docq-direct-"));
  const input = path.join(root, "input");
  await fs.writeFile(input, "small document\n");
  const runOne = opts.method === "execa" ? await execaRunner(opts.command, opts.args) : spawnRunner(opts.command, opts.args);
  let failures = 0;
  const once = async (i: number): Promise<void> => {
    const workDir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-job-"));
    const outputDir = path.join(workDir, "out");
    await fs.mkdir(outputDir);
    try {
      if (!(await runOne(workDir, requestLine(input, outputDir, i)))) failures++;
    } finally {
      await fs.rm(workDir, { recursive: true, force: true });
    }
  };
  const loop = async (count: number): Promise<void> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(opts.concurrency, count) }, async () => {
        for (let i = next++; i < count; i = next++) await once(i);
      }),
    );
  };
  await loop(opts.warmup);
  failures = 0;
  const t0 = performance.now();
  await loop(opts.count);
  const ms = performance.now() - t0;
  await fs.rm(root, { recursive: true, force: true });
  return {
    method: opts.method,
    count: opts.count,
    concurrency: opts.concurrency,
    ms: Math.round(ms),
    perSec: Math.round((opts.count / ms) * 1000 * 10) / 10,
    failures,
    rssMbAtStart,
    peakRssMb: await statusMb("VmHWM"),
  };
}

const THIS_FILE = fileURLToPath(import.meta.url);

/** Parent side: runs the measurement in a fresh small node child process and answers its result. */
export async function runDirectReference(opts: DirectOptions): Promise<DirectResult> {
  const child = spawn(process.execPath, ["--import", "tsx", THIS_FILE, JSON.stringify(opts)], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  const last = stdout.trim().split("\n").pop() ?? "";
  if (code !== 0 || last === "") throw new Error(`direct-spawn (${opts.method}) exited with ${code}: ${stderr.slice(-2000)}`);
  return JSON.parse(last) as DirectResult;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === THIS_FILE) {
  const opts = JSON.parse(process.argv[2] ?? "{}") as DirectOptions;
  measureDirect(opts).then(
    (result) => process.stdout.write(JSON.stringify(result) + "\n"),
    (err: unknown) => {
      process.stderr.write(`direct-spawn: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
