import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";
import type { Task } from "../common/model/task-model.js";

import { freePort } from "../common/testing/free-port.js";
import { waitUntil } from "../common/testing/wait-until.js";

export { freePort, waitUntil };

export const REPO = fileURLToPath(new URL("..", import.meta.url));
/** What `npm start` runs: compiles the sources to dist/ when they changed, then starts the app from it. */
export const APP_ENTRY = path.join(REPO, "scripts", "start.mjs");

/*
 * Whatever a test file starts is stopped, and whatever it makes is removed, when the file ends,
 * whether its tests passed, failed or timed out: a failing test that skipped its own clean-up must
 * not leave processes that keep the file from exiting (a hang until the runner's limit) or that
 * join the next test's sites.
 */
const liveChildren = new Set<ChildProcess>();
const madeDirs = new Set<string>();

/** Registers a child process to be killed when the test file ends, if it is still running then. */
export function ownChild<C extends ChildProcess>(child: C): C {
  liveChildren.add(child);
  child.once("exit", () => liveChildren.delete(child));
  return child;
}

async function killLiveChildren(): Promise<void> {
  await Promise.all(
    [...liveChildren].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
    }),
  );
}

// Only under the test runner: registering a hook elsewhere (the bench imports these helpers)
// would start node:test's own run, which prints its report on stdout at exit.
if (process.env.NODE_TEST_CONTEXT !== undefined) {
  after(async () => {
    await killLiveChildren();
    for (const dir of madeDirs) await fs.rm(dir, { recursive: true, force: true });
    madeDirs.clear();
  });
}
// A file that ends without the root hook (an uncaught error): still nothing left running.
process.once("exit", () => {
  for (const child of liveChildren) child.kill("SIGKILL");
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

/** A fresh temp dir, removed when the test file ends. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `docq-${prefix}-`));
  madeDirs.add(dir);
  return dir;
}

export interface EmbeddedApp {
  url: string;
  port: number;
  dataDir: string;
  process: ChildProcess;
  /** Everything the app printed, for assertions and for failure messages. */
  output(): string;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export interface StartOptions {
  dataDir?: string;
  port?: number;
  slots?: number;
  /** YAML text of a config file to use instead of config/default.yaml. */
  configYaml?: string;
  env?: Record<string, string>;
}

/** Starts `npm start`'s entry point as a real child process and waits until it answers /api/health. */
export async function startEmbeddedApp(opts: StartOptions = {}): Promise<EmbeddedApp> {
  const dataDir = opts.dataDir ?? (await tempDir("data"));
  const port = opts.port ?? (await freePort());
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    PORT: String(port),
    DATA_DIR: dataDir,
    DOCQ_LOG_LEVEL: "warn",
    // stop() waits 10 s before its SIGKILL: a test that stops an app with tasks running should not wait out the 30 s default.
    DOCQ_SHUTDOWN_GRACE_MS: "2000",
    ...opts.env,
  };
  if (opts.slots !== undefined) env.DOCQ_SLOTS = String(opts.slots);
  if (opts.configYaml !== undefined) {
    const file = path.join(await tempDir("config"), "docq.yaml");
    await fs.writeFile(file, opts.configYaml);
    env.DOCQ_CONFIG = file;
  }
  const child = ownChild(
    spawn(process.execPath, [APP_ENTRY], {
      cwd: REPO,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  let gone = false;
  void exited.then(() => (gone = true));
  await waitUntil(
    "the app to answer /api/health",
    async () => {
      // An app that died will never answer: stop waiting (returning, not throwing, as waitUntil retries throws).
      if (gone) return true;
      const res = await fetch(`${url}/api/health`).catch(() => null);
      return res?.ok === true;
    },
    60_000,
    100,
  ).catch((err: unknown) => {
    child.kill("SIGKILL");
    throw err;
  });
  if (gone) throw new Error(`the app exited during start-up:\n${output}`);
  return {
    url,
    port,
    dataDir,
    process: child,
    output: () => output,
    async stop() {
      if (gone) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (gone) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
}

export interface SubmitOptions {
  job: string;
  priority?: number;
  name?: string;
  params?: Record<string, unknown>;
  maxTries?: number;
}

/** The key the helpers below send to an app (by its URL), for apps started with authentication on. */
const keysByUrl = new Map<string, string>();

export function useKey(url: string, key: string): void {
  keysByUrl.set(url, key);
}

export function authFor(url: string): Record<string, string> {
  const key = keysByUrl.get(url);
  return key === undefined ? {} : { authorization: `Bearer ${key}` };
}

/** POST /api/tasks with the fields of `opts` in its query. */
export function submitUrl(url: string, opts: SubmitOptions): string {
  const q = new URLSearchParams({ job: opts.job });
  if (opts.priority !== undefined) q.set("priority", String(opts.priority));
  if (opts.name !== undefined) q.set("name", opts.name);
  if (opts.params !== undefined) q.set("params", JSON.stringify(opts.params));
  if (opts.maxTries !== undefined) q.set("maxTries", String(opts.maxTries));
  return `${url}/api/tasks?${q}`;
}

export async function submit(url: string, body: string, opts: SubmitOptions): Promise<string> {
  const res = await fetch(submitUrl(url, opts), {
    method: "POST",
    headers: { "content-type": "application/octet-stream", ...authFor(url) },
    body,
  });
  const json = (await res.json()) as { id?: string; error?: string };
  if (res.status !== 201 || json.id === undefined) throw new Error(`submit answered ${res.status}: ${JSON.stringify(json)}`);
  return json.id;
}

export async function getTask(url: string, id: string): Promise<Task> {
  const res = await fetch(`${url}/api/tasks/${id}`, { headers: authFor(url) });
  if (!res.ok) throw new Error(`GET ${id} answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as Task;
}

export async function result(url: string, id: string): Promise<string> {
  const res = await fetch(`${url}/api/tasks/${id}/result`, { headers: authFor(url) });
  if (!res.ok) throw new Error(`result of ${id} answered ${res.status}: ${await res.text()}`);
  return res.text();
}

const FINAL = new Set(["output", "error", "canceled"]);

/** Waits until every task is final; answers them in the order of `ids`. */
export async function waitAllFinal(url: string, ids: readonly string[], timeoutMs = 120_000): Promise<Task[]> {
  const done = new Map<string, Task>();
  await waitUntil(
    `${ids.length} tasks to finish`,
    async () => {
      for (const id of ids) {
        if (done.has(id)) continue;
        const task = await getTask(url, id);
        if (FINAL.has(task.status)) done.set(id, task);
        else return false;
      }
      return true;
    },
    timeoutMs,
    100,
  );
  return ids.map((id) => done.get(id)!);
}

/** Runs `fn` over `items` with at most `concurrency` in flight, keeping the order of results. */
export async function mapLimit<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!, i);
    }),
  );
  return results;
}

/** A jobs dir holding the examples of scripts-job/ plus the test-only jobs of testFunctional/jobs/. */
export async function testJobsDir(): Promise<string> {
  const dir = await tempDir("jobs");
  await fs.cp(path.join(REPO, "scripts-job"), dir, { recursive: true });
  await fs.cp(path.join(REPO, "testFunctional/jobs"), dir, { recursive: true });
  return dir;
}

/** Pids of live processes whose command line contains every one of `parts` (as separate arguments). */
export async function processesWith(...parts: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const args = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").then(
      (t) => t.split("\0"),
      () => null,
    );
    if (args !== null && parts.every((p) => args.includes(p))) pids.push(Number(entry));
  }
  return pids;
}

export async function listAll(url: string, query: string): Promise<Task[]> {
  const all: Task[] = [];
  let cursor: string | null = null;
  do {
    const res: Response = await fetch(`${url}/api/tasks?${query}&limit=1000${cursor === null ? "" : `&cursor=${cursor}`}`, {
      headers: authFor(url),
    });
    if (!res.ok) throw new Error(`list answered ${res.status}: ${await res.text()}`);
    const page = (await res.json()) as { items: Task[]; nextCursor: string | null };
    all.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return all;
}
