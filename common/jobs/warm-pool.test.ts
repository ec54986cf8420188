import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { InlineJobAnswer } from "./executor.js";
import { JobRegistry, type JobDefinition } from "./job-registry.js";
import {
  createWorkDir,
  JobFailedError,
  runJob,
  warmRequestLine,
  type JobAnswer,
  type JobMode,
  type JobRequest,
  type WorkDir,
} from "./job-runner.js";
import { OWNER } from "./launch/leftovers.mjs";
import { restartDelayMs, WarmPool, type WarmPoolOptions } from "./warm-pool.js";
import { isAlive, readPid } from "../testing/processes.js";
import { waitUntil } from "../testing/wait-until.js";

const EXAMPLES = fileURLToPath(new URL("../../scripts-job/", import.meta.url));
const JS_HELPER = path.join(EXAMPLES, "lib", "docq-warm.mjs");
/** The Python helper and wordcount-warm need python3; as in job-registry.test.ts, their tests are skipped without it. */
const NO_PYTHON = (() => {
  try {
    execFileSync("python3", ["-c", "pass"]);
    return false;
  } catch {
    return "no python3";
  }
})();
const TASK: JobRequest["task"] = { id: "test-01JAAAAAAAAAAAAAAAAAAAAAAA", name: "t", user: "u", priority: 50, parentId: null, depth: 0 };

let dir: string;
let pools: WarmPool[] = [];
const workDirs: WorkDir[] = [];
const logs: string[] = [];

before(async () => {
  dir = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-warm-test-")));
});
afterEach(async () => {
  await Promise.all(pools.map((p) => p.stop()));
  pools = [];
});
after(async () => {
  await Promise.all(workDirs.map((w) => w.remove()));
  await fs.rm(dir, { recursive: true, force: true });
});

function makePool(opts: Partial<WarmPoolOptions> = {}): WarmPool {
  const pool = new WarmPool({ workRoot: dir, log: { info: (m) => logs.push(m), warn: (m) => logs.push(m) }, ...opts });
  pools.push(pool);
  return pool;
}

function definition(name: string, command: string, args: string[], overrides: Partial<JobDefinition> = {}): JobDefinition {
  return {
    name,
    dir,
    command,
    args,
    timeoutMs: 10_000,
    maxTries: null,
    split: false,
    env: {},
    passEnv: ["DOCQ_TEST_RUN"],
    paramsSchema: null,
    warm: true,
    maxRequests: null,
    maxRssMb: null,
    concurrency: 1,
    ...overrides,
  };
}

/**
 * A warm JS job built on the helper, steered by its params: writes {pid, params} to out.json and
 * answers it. Every start appends its pid to the file `starts` (one line per process started).
 */
async function ctlJob(name: string, overrides: Partial<JobDefinition> = {}): Promise<{ job: JobDefinition; starts: string }> {
  const file = path.join(dir, `${name}.mjs`);
  const starts = path.join(dir, `${name}.starts`);
  await fs.writeFile(
    file,
    `import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import { FatalError, progress, serve } from ${JSON.stringify(JS_HELPER)};
appendFileSync(${JSON.stringify(starts)}, process.pid + "\\n");
const held = [];
serve(async (req) => {
  const p = req.params;
  while (p.waitFor && !existsSync(p.waitFor)) await new Promise((r) => setTimeout(r, 10));
  if (p.stderr) process.stderr.write(p.stderr + "\\n");
  if (p.log) console.log(p.log);
  if (p.mark) writeFileSync(p.mark, String(process.pid));
  if (p.sleepMs) await new Promise((r) => setTimeout(r, p.sleepMs));
  if (p.exit !== undefined) process.exit(p.exit);
  if (p.throw) throw new Error(p.throw);
  if (p.fatal) throw new FatalError(p.fatal);
  for (const [fraction, message] of p.progress ?? []) progress(fraction, message);
  if (p.allocMb) held.push(Buffer.alloc(p.allocMb * 1024 * 1024, 1));
  if (p.raw) process.stdout.write(p.raw + "\\n");
  writeFileSync(req.outputDir + "/out.json", JSON.stringify({ pid: process.pid, params: p }));
  return p.answer ?? "out.json";
});
`,
  );
  return { job: definition(name, process.execPath, [file], overrides), starts };
}

async function workDir(): Promise<WorkDir> {
  const w = await createWorkDir(dir);
  workDirs.push(w);
  return w;
}

function request(work: WorkDir, params: Record<string, unknown> = {}, mode: JobMode = "simple"): JobRequest {
  return { mode, input: "/dev/null", outputDir: work.outputDir, params, task: TASK };
}

/** Runs one request on a fresh work dir; answers what out.json says. */
async function ask(
  pool: WarmPool,
  job: JobDefinition,
  params: Record<string, unknown> = {},
  signal?: AbortSignal,
): Promise<{ pid: number; answer: JobAnswer }> {
  const work = await workDir();
  const answer = await pool.run(job, request(work, params), { workDir: work.path, ...(signal === undefined ? {} : { signal }) });
  assert.equal(answer.kind, "output");
  const out = answer.kind === "output" ? answer.output : "";
  const { pid } = JSON.parse(await fs.readFile(out, "utf8")) as { pid: number };
  return { pid, answer };
}

async function failure(promise: Promise<unknown>): Promise<JobFailedError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof JobFailedError, `expected JobFailedError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the request to fail");
}

async function startsOf(file: string): Promise<number[]> {
  const text = await fs.readFile(file, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map(Number);
}

describe("createWorkDir on tmpfs and on disk", () => {
  for (const [where, root] of [
    ["the OS temp dir", os.tmpdir()],
    ["tmpfs", "/dev/shm"],
  ] as const) {
    it(
      `makes and removes a fresh dir with out/ in ${where}, with or without leftovers`,
      { skip: !existsSync(root) && `no ${root}` },
      async () => {
        const a = await createWorkDir(root);
        const b = await createWorkDir(root);
        assert.notEqual(a.path, b.path);
        assert.equal(a.outputDir, path.join(a.path, "out"));
        assert.ok((await fs.stat(a.outputDir)).isDirectory());
        await fs.writeFile(path.join(a.outputDir, "stored.txt"), "x");
        await a.remove([path.join(a.outputDir, "stored.txt")]);
        await assert.rejects(fs.stat(a.path), { code: "ENOENT" });
        await fs.mkdir(path.join(b.outputDir, "sub"));
        await fs.writeFile(path.join(b.outputDir, "sub", "left.txt"), "x");
        await fs.writeFile(path.join(b.path, "input"), "x");
        await b.remove();
        await assert.rejects(fs.stat(b.path), { code: "ENOENT" });
      },
    );
  }
});

describe("warm request line", () => {
  it("is the one-shot request with requestId first, keys in the fixed order", () => {
    const line = warmRequestLine("17", { mode: "simple", input: "/in", outputDir: "/out", params: { a: 1 }, task: TASK });
    assert.ok(line.startsWith('{"requestId":"17","mode":"simple","input":"/in","outputDir":"/out",'));
    assert.ok(line.endsWith("}\n"));
    assert.deepEqual(Object.keys(JSON.parse(line) as object), ["requestId", "mode", "input", "outputDir", "params", "task"]);
  });
});

describe("WarmPool", () => {
  it("answers many requests from one process, with the stderr of each request as its tail", async () => {
    const { job, starts } = await ctlJob("many");
    const pool = makePool();
    const pids = new Set<number>();
    for (let i = 0; i < 50; i++) pids.add((await ask(pool, job)).pid);
    assert.equal(pids.size, 1);
    const a = await ask(pool, job, { stderr: "first request says hi" });
    const b = await ask(pool, job, { stderr: "second request", log: "console.log goes to stderr" });
    assert.equal(a.answer.stderrTail, "first request says hi\n");
    assert.equal(b.answer.stderrTail, "second request\nconsole.log goes to stderr\n");
    assert.deepEqual(await startsOf(starts), [...pids]);
    assert.deepEqual(
      pool.processes().map(({ job: name, state, served }) => ({ name, state, served })),
      [{ name: "many", state: "idle", served: 52 }],
    );
  });

  it("starts a process per concurrent request, never more, and reuses them", async () => {
    const { job, starts } = await ctlJob("pair");
    const pool = makePool();
    const first = await Promise.all([ask(pool, job, { sleepMs: 100 }), ask(pool, job, { sleepMs: 100 })]);
    const pids = new Set(first.map((r) => r.pid));
    assert.equal(pids.size, 2);
    for (let i = 0; i < 10; i++) {
      for (const r of await Promise.all([ask(pool, job), ask(pool, job)])) assert.ok(pids.has(r.pid), `pid ${r.pid} is one of the two`);
    }
    assert.equal((await startsOf(starts)).length, 2);
  });

  it("a request that overruns its timeout kills and replaces its process only", async () => {
    // The limit counts from the request, which can be sent before its new process has started: 1.5 s leaves a loaded machine room to start it.
    const { job, starts } = await ctlJob("slow", { timeoutMs: 1500 });
    const pool = makePool();
    const mark = path.join(dir, "slow.pid");
    const [stuck, ok] = await Promise.allSettled([ask(pool, job, { mark, sleepMs: 30_000 }), ask(pool, job, { sleepMs: 50 })]);
    assert.equal(ok.status, "fulfilled");
    const other = ok.status === "fulfilled" ? ok.value.pid : 0;
    assert.equal(stuck.status, "rejected");
    const err = stuck.status === "rejected" ? (stuck.reason as JobFailedError) : null;
    assert.ok(err instanceof JobFailedError);
    assert.equal(err.message, 'job "slow" timed out after 1500 ms');
    assert.equal(err.timedOut, true);
    const killed = await readPid(mark);
    await waitUntil("the overrunning process to be gone", () => !isAlive(killed));
    assert.ok(isAlive(other), "the other process was left alone");
    // A replacement is started at once; both slots answer again, the survivor with its old pid.
    await waitUntil("a replacement process", () => pool.processes().length === 2);
    const again = await Promise.all([ask(pool, job, { sleepMs: 50 }), ask(pool, job, { sleepMs: 50 })]);
    const pids = new Set(again.map((r) => r.pid));
    assert.ok(pids.has(other));
    assert.ok(!pids.has(killed));
    assert.equal((await startsOf(starts)).length, 3);
  });

  it("a canceled request kills its process; the next request gets another", async () => {
    const { job } = await ctlJob("cancel");
    const pool = makePool();
    const mark = path.join(dir, "cancel.pid");
    const abort = new AbortController();
    const pending = ask(pool, job, { mark, sleepMs: 30_000 }, abort.signal);
    // Its pid written, not only its file made: a cancel between the two left the file empty.
    const killed = await readPid(mark);
    abort.abort();
    const err = await failure(pending);
    assert.equal(err.message, 'job "cancel" was canceled');
    assert.equal(err.canceled, true);
    await waitUntil("the canceled process to be gone", () => !isAlive(killed));
    const next = await ask(pool, job);
    assert.notEqual(next.pid, killed);
    const aborted = new AbortController();
    aborted.abort();
    assert.equal((await failure(ask(pool, job, {}, aborted.signal))).canceled, true, "an already aborted signal runs nothing");
  });

  it("a process killed with SIGKILL mid-request fails that request; the next one gets a new process at once", async () => {
    const { job } = await ctlJob("killed");
    const pool = makePool();
    const mark = path.join(dir, "killed.pid");
    const pending = ask(pool, job, { mark, stderr: "working on it", sleepMs: 30_000 });
    await waitUntil("the request to start", () =>
      fs.access(mark).then(
        () => true,
        () => false,
      ),
    );
    const pid = await readPid(mark);
    process.kill(pid, "SIGKILL");
    const err = await failure(pending);
    assert.equal(err.message, `job "killed" (warm process ${pid}) was killed by SIGKILL: working on it`);
    assert.equal(err.exitCode, null);
    assert.equal(err.stderrTail, "working on it\n");
    const started = Date.now();
    const next = await ask(pool, job);
    assert.notEqual(next.pid, pid);
    assert.ok(Date.now() - started < 3000, "no backoff after one crash");
  });

  it("a process that keeps crashing is restarted with backoff; meanwhile its requests fail at once", async () => {
    const starts = path.join(dir, "crashy.starts");
    const script = path.join(dir, "crashy.sh");
    const broken = `echo $$ >> "${starts}"\necho "crashy: cannot load the model" >&2\nexit 3\n`;
    await fs.writeFile(script, broken);
    const job = definition("crashy", "/bin/sh", [script]);
    const pool = makePool({ restartBackoffBaseMs: 300 });
    const work = await workDir();
    const run = (): Promise<JobAnswer> => pool.run({ ...job }, request(work), { workDir: work.path });

    const first = await failure(run());
    assert.match(first.message, /^job "crashy" \(warm process \d+\) exited with code 3 before answering: crashy: cannot load the model$/);
    assert.equal(first.exitCode, 3);
    assert.equal(first.stderrTail, "crashy: cannot load the model\n");
    await failure(run()); // one crash: restarted at once
    assert.equal((await startsOf(starts)).length, 2);
    const fast = await failure(run()); // two in a row: the next start waits 300 ms
    assert.match(
      fast.message,
      /^job "crashy" keeps crashing: its warm process exited with code 3: crashy: cannot load the model \(2 crashes in a row\); the next start is in \d+ ms$/,
    );
    assert.equal(fast.stderrTail, "crashy: cannot load the model\n");
    assert.equal((await startsOf(starts)).length, 2, "no start during the backoff");
    await new Promise((r) => setTimeout(r, 350));
    await failure(run());
    assert.equal((await startsOf(starts)).length, 3, "started again after the backoff");
    assert.match((await failure(run())).message, /keeps crashing.*\(3 crashes in a row\); the next start is in \d+ ms$/);

    // Fixing the job (a new version of the script) starts it at once, whatever the backoff.
    await fs.writeFile(
      script,
      `while IFS= read -r req; do
  id=\${req#'{"requestId":"'}; id=\${id%%'"'*}
  out=\${req#*'"outputDir":"'}; out=\${out%%'"'*}
  echo fixed > "$out/o"
  echo "{\\"requestId\\":\\"$id\\",\\"output\\":\\"o\\"}"
done
`,
    );
    await fs.utimes(script, new Date(), new Date(Date.now() + 5000));
    const fixed = await run();
    assert.equal(fixed.kind, "output");
    assert.equal(await fs.readFile(fixed.kind === "output" ? fixed.output : "", "utf8"), "fixed\n");
  });

  it("restart delay: none after one crash, then base · 2^(n-2), capped", () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 10].map((n) => restartDelayMs(n, 250, 2000)),
      [0, 0, 250, 500, 1000, 2000, 2000],
    );
  });

  it("recycles a process after maxRequests, starting its replacement at once", async () => {
    const { job, starts } = await ctlJob("recycled", { maxRequests: 3 });
    const pool = makePool();
    const pids: number[] = [];
    for (let i = 0; i < 10; i++) pids.push((await ask(pool, job)).pid);
    const distinct = [...new Set(pids)];
    assert.equal(distinct.length, 4);
    assert.deepEqual(
      distinct.map((pid) => pids.filter((p) => p === pid).length),
      [3, 3, 3, 1],
    );
    await waitUntil("the recycled processes to exit", () => distinct.slice(0, 3).every((pid) => !isAlive(pid)));
    assert.equal((await startsOf(starts)).length, 4);
    assert.ok(logs.some((l) => l.includes("recycled: it served 3 requests (maxRequests 3)")));
  });

  it("recycles a process whose RSS grows over maxRssMb", async () => {
    const { job } = await ctlJob("leaky", { maxRssMb: 120 });
    const pool = makePool({ rssCheckMs: 0 });
    const pids: number[] = [];
    for (let i = 0; i < 6; i++) pids.push((await ask(pool, job, { allocMb: 40 })).pid);
    const first = pids[0] ?? 0;
    const servedByFirst = pids.filter((p) => p === first).length;
    assert.ok(servedByFirst >= 1 && servedByFirst < 6, `the first process served ${servedByFirst} requests before its recycling`);
    assert.ok(new Set(pids).size >= 2);
    assert.ok(logs.some((l) => /recycled: its RSS is \d+ MB \(maxRssMb 120\)/.test(l)));
  });

  it("an error answer or an invalid answer fails its request only; the process stays", async () => {
    const { job } = await ctlJob("picky");
    const pool = makePool();
    const { pid } = await ask(pool, job);
    const thrown = await failure(ask(pool, job, { throw: "cannot parse page 3" }));
    assert.equal(thrown.message, 'job "picky" failed: Error: cannot parse page 3');
    assert.match(thrown.stderrTail, /^Error: cannot parse page 3\n {4}at /);
    const invalid = await failure(ask(pool, job, { answer: { output: "" } }));
    assert.match(invalid.message, /^job "picky" printed no valid answer on stdout: output: /);
    const escaping = await failure(ask(pool, job, { answer: "/etc/passwd" }));
    assert.equal(escaping.message, 'job "picky" answered output "/etc/passwd": path escapes the work dir');
    const children = await failure(ask(pool, job, { answer: { children: [{ input: "out.json" }] } }));
    assert.equal(children.message, 'job "picky" answered children in simple mode: declare split: true in job.yaml');
    assert.equal((await ask(pool, job)).pid, pid);
    assert.equal(pool.processes().length, 1);
  });

  it("a FatalError answers retry: false: the request fails as not retryable, the process stays", async () => {
    const { job } = await ctlJob("fatal");
    const pool = makePool();
    const { pid } = await ask(pool, job);
    const err = await failure(ask(pool, job, { fatal: "not a PDF" }));
    assert.equal(err.message, 'job "fatal" failed: not a PDF (the script asked for no retry)');
    assert.equal(err.retryable, false);
    const thrown = await failure(ask(pool, job, { throw: "busy" }));
    assert.equal(thrown.retryable, true);
    assert.equal((await ask(pool, job)).pid, pid);
  });

  it("progress lines of the request reach onProgress (those of another request are ignored, not a protocol error)", async () => {
    const { job } = await ctlJob("progressing");
    const pool = makePool();
    const { pid } = await ask(pool, job);
    const seen: unknown[] = [];
    const work = await workDir();
    const raw = '{"requestId":"other","progress":0.9}';
    const answer = await pool.run(job, request(work, { raw, progress: [[0.5, "half"], [2]] }), {
      workDir: work.path,
      onProgress: (report) => seen.push(report),
    });
    assert.equal(answer.kind, "output");
    assert.deepEqual(seen, [
      { progress: 0.5, message: "half" },
      { progress: 1, message: null },
    ]);
    assert.equal((await ask(pool, job)).pid, pid, "the same process answers on");
  });

  it("an answer to another request breaks the protocol: the request fails and the process is replaced", async () => {
    const { job } = await ctlJob("liar");
    const pool = makePool();
    const { pid } = await ask(pool, job);
    const err = await failure(ask(pool, job, { raw: '{"requestId":"bogus","output":"out.json"}' }));
    assert.match(
      err.message,
      new RegExp(
        `^job "liar" \\(warm process ${pid}\\) answered request "bogus" while request "\\d+" was asked: the process was restarted$`,
      ),
    );
    await waitUntil("the process to be killed", () => !isAlive(pid));
    assert.notEqual((await ask(pool, job)).pid, pid);
  });

  it("ignores chatter on stdout: only a line with the request's id answers", async () => {
    const { job } = await ctlJob("chatty");
    const pool = makePool();
    const { answer } = await ask(pool, job, { raw: 'progress 50%\n{"not":"an answer"}\n[1,2]' });
    assert.equal(answer.kind, "output");
  });

  it("a job that cannot start fails its request with the reason", async () => {
    const job = definition("ghost", path.join(dir, "no-such-program"), []);
    const work = await workDir();
    const err = await failure(makePool().run(job, request(work), { workDir: work.path }));
    assert.match(err.message, /^job "ghost" could not start: spawn .*no-such-program ENOENT$/);
  });

  it("stops a process idle for idleMs, and starts one again when needed", async () => {
    const { job } = await ctlJob("idler");
    const pool = makePool({ idleMs: 150 });
    const { pid } = await ask(pool, job);
    await waitUntil("the idle process to be stopped", () => !isAlive(pid) && pool.processes().length === 0);
    assert.notEqual((await ask(pool, job)).pid, pid);
  });

  it("retires the processes of a job whose script changed", async () => {
    const { job } = await ctlJob("edited");
    const pool = makePool();
    const { pid } = await ask(pool, job);
    await fs.utimes(job.args[0] ?? "", new Date(), new Date(Date.now() + 10_000));
    // The registry hands out a new definition once its cache expires: as here.
    const next = await ask(pool, { ...job });
    assert.notEqual(next.pid, pid);
    await waitUntil("the old process to exit", () => !isAlive(pid));
  });

  it("retires the processes of a folder job when a module beside its entry changes", async () => {
    const folder = path.join(dir, "modular");
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, "answer.mjs"), `export const name = "out.json";\n`);
    await fs.writeFile(
      path.join(folder, "main.mjs"),
      `import { writeFileSync } from "node:fs";
import { FatalError, progress, serve } from ${JSON.stringify(JS_HELPER)};
import { name } from "./answer.mjs";
serve((req) => { writeFileSync(req.outputDir + "/" + name, JSON.stringify({ pid: process.pid })); return name; });
`,
    );
    const job = { ...definition("modular", process.execPath, [path.join(folder, "main.mjs")]), dir: folder };
    const pool = makePool();
    const { pid } = await ask(pool, job);
    assert.equal((await ask(pool, { ...job })).pid, pid, "unchanged: the same process");
    await fs.utimes(path.join(folder, "answer.mjs"), new Date(), new Date(Date.now() + 10_000));
    assert.notEqual((await ask(pool, { ...job })).pid, pid);
  });

  it("stop() ends idle and busy processes and refuses new requests", async () => {
    const { job } = await ctlJob("stopped");
    const pool = makePool();
    const mark = path.join(dir, "stopped.pid");
    const { pid: idle } = await ask(pool, job);
    const busy = ask(pool, job, { mark, sleepMs: 30_000 });
    await waitUntil("the busy request to start", () =>
      fs.access(mark).then(
        () => true,
        () => false,
      ),
    );
    const busyPid = await readPid(mark);
    const started = Date.now();
    // Listened to before the stop fails it (the stop then still removes the process's dir).
    const busyFailed = failure(busy);
    await pool.stop();
    assert.ok(Date.now() - started < 3000);
    const err = await busyFailed;
    assert.equal(err.canceled, true);
    assert.ok(!isAlive(idle) && !isAlive(busyPid));
    assert.deepEqual(pool.processes(), []);
    // Stopped means their dirs are gone too: a worker that exits right after leaves none behind.
    assert.deepEqual(
      (await fs.readdir(dir)).filter((n) => n.startsWith(`docq-warm-${OWNER}-stopped-`)),
      [],
    );
    assert.equal((await failure(ask(pool, job))).message, 'job "stopped" was stopped: the worker is shutting down');
  });

  it("ends what a warm process started with setsid when the process ends (killed for a timeout, or stopped), and removes its dir", async () => {
    const file = path.join(dir, "setsid-warm.mjs");
    // With params.setsid, the request starts `setsid sh` (a new session: out of the process group),
    // which writes its pid there and sleeps; the request waits for the pid, then for params.sleepMs.
    await fs.writeFile(
      file,
      `import { spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { FatalError, progress, serve } from ${JSON.stringify(JS_HELPER)};
serve(async (req) => {
  const p = req.params;
  if (p.setsid) {
    spawn("setsid", ["sh", "-c", 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 1000', "sh", p.setsid], { stdio: "ignore" }).unref();
    while (!existsSync(p.setsid)) await new Promise((r) => setTimeout(r, 5));
  }
  if (p.sleepMs) await new Promise((r) => setTimeout(r, p.sleepMs));
  writeFileSync(req.outputDir + "/out.json", JSON.stringify({ pid: process.pid }));
  return "out.json";
});
`,
    );
    const job = definition("setsid-warm", process.execPath, [file], { timeoutMs: 5000 });
    const pool = makePool();
    const leftovers: number[] = [];
    const ownDirs = async (): Promise<string[]> => (await fs.readdir(dir)).filter((n) => n.startsWith(`docq-warm-${OWNER}-setsid-warm-`));
    try {
      const work = await workDir();
      const timedOut = await failure(
        pool.run(job, request(work, { setsid: path.join(dir, "setsid-1.pid"), sleepMs: 30_000 }), { workDir: work.path }),
      );
      assert.equal(timedOut.timedOut, true);
      leftovers.push(await readPid(path.join(dir, "setsid-1.pid")));
      assert.equal(isAlive(leftovers[0] ?? 0), false, "the setsid child of a process killed for a timeout is gone when the request fails");

      const { pid } = await ask(pool, job, { setsid: path.join(dir, "setsid-2.pid") });
      leftovers.push(await readPid(path.join(dir, "setsid-2.pid")));
      assert.equal(isAlive(leftovers[1] ?? 0), true, "what a warm process started lives as long as the process");
      assert.equal((await ownDirs()).length, 1, "the process's dir is named after its owner");
      await pool.stop();
      assert.equal(isAlive(pid), false);
      assert.equal(isAlive(leftovers[1] ?? 0), false, "the setsid child is gone once the pool has stopped");
      await waitUntil("the process's dir to be removed", async () => (await ownDirs()).length === 0);
    } finally {
      // Whatever failed: a leftover still running `sleep 1000` (not a pid reused meanwhile).
      for (const leftover of leftovers) {
        try {
          if ((await fs.readFile(`/proc/${leftover}/cmdline`, "utf8")).startsWith("sleep\u00001000")) process.kill(leftover, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
  });

  it("a sh loop speaks the protocol without any helper", async () => {
    const script = path.join(dir, "loop.sh");
    await fs.writeFile(
      script,
      `while IFS= read -r req; do
  id=\${req#'{"requestId":"'}; id=\${id%%'"'*}
  out=\${req#*'"outputDir":"'}; out=\${out%%'"'*}
  echo $$ > "$out/pid"
  echo "{\\"requestId\\":\\"$id\\",\\"output\\":\\"pid\\"}"
done
`,
    );
    const job = definition("loop", "/bin/sh", [script]);
    const pool = makePool();
    const pids = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const work = await workDir();
      const answer = await pool.run(job, request(work), { workDir: work.path });
      pids.add(await fs.readFile(answer.kind === "output" ? answer.output : "", "utf8"));
    }
    assert.equal(pids.size, 1);
  });
});

describe("WarmPool with concurrency (several requests held by one process)", () => {
  /**
   * Sends one request on a fresh work dir and answers once it is sent, with its outcome to come:
   * its answer's pid or its JobFailedError (in an object: an async function would wait for it).
   */
  const send = async (
    pool: WarmPool,
    job: JobDefinition,
    params: Record<string, unknown>,
    opts: { signal?: AbortSignal; onProgress?: (report: unknown) => void } = {},
  ): Promise<{ outcome: Promise<number | JobFailedError> }> => {
    const work = await workDir();
    const outcome = pool.run(job, request(work, params), { workDir: work.path, ...opts }).then(
      async (answer) => (JSON.parse(await fs.readFile(answer.kind === "output" ? answer.output : "", "utf8")) as { pid: number }).pid,
      (err: unknown) => {
        assert.ok(err instanceof JobFailedError, `expected JobFailedError, got ${String(err)}`);
        return err;
      },
    );
    return { outcome };
  };

  it("runs up to `concurrency` requests side by side in one process, and starts another only when it is full", async () => {
    const { job, starts } = await ctlJob("sharing", { concurrency: 2 });
    const pool = makePool();
    const mark = path.join(dir, "sharing.mark");
    // a and b wait for a mark that only c writes: served in turn, they would never answer.
    const a = (await send(pool, job, { waitFor: mark })).outcome;
    await waitUntil("the first process to start", async () => (await startsOf(starts)).length === 1);
    const b = (await send(pool, job, { waitFor: mark })).outcome;
    const c = (await send(pool, job, { mark })).outcome;
    const [pa, pb, pc] = await Promise.all([a, b, c]);
    assert.equal(typeof pa, "number");
    assert.equal(pa, pb, "a and b share a process");
    assert.notEqual(pa, pc, "c found it full and got a second one");
    assert.equal((await startsOf(starts)).length, 2);
    // Idle again: the next two requests share one process as well.
    const [pd, pe] = await Promise.all([
      (await send(pool, job, { sleepMs: 50 })).outcome,
      (await send(pool, job, { sleepMs: 50 })).outcome,
    ]);
    assert.equal(pd, pe);
    assert.equal((await startsOf(starts)).length, 2, "no process started for them");
  });

  it("a canceled request kills the shared process: it fails canceled, the other fails as collateral (not its own failure)", async () => {
    const { job, starts } = await ctlJob("shared-cancel", { concurrency: 2 });
    const pool = makePool();
    const abort = new AbortController();
    const doomed = (await send(pool, job, { sleepMs: 30_000 }, { signal: abort.signal })).outcome;
    const bystander = (await send(pool, job, { sleepMs: 30_000 })).outcome;
    await waitUntil("the process to start", async () => (await startsOf(starts)).length === 1);
    const [pid] = await startsOf(starts);
    abort.abort();
    const [own, other] = await Promise.all([doomed, bystander]);
    assert.ok(own instanceof JobFailedError && other instanceof JobFailedError);
    assert.equal(own.canceled, true);
    assert.equal(own.collateral, false);
    assert.match(own.message, /^job "shared-cancel" was canceled/);
    assert.equal(other.collateral, true);
    assert.equal(other.timedOut, false);
    assert.match(
      other.message,
      new RegExp(
        `^job "shared-cancel" \\(warm process ${pid}, shared with other requests: concurrency 2\\) was killed because another request it held was canceled$`,
      ),
    );
    await waitUntil("the shared process to be killed", () => !isAlive(pid ?? 0));
  });

  it("a request that times out fails timed out; the other request of its process fails as collateral", async () => {
    const { job } = await ctlJob("shared-timeout", { concurrency: 2, timeoutMs: 1500 });
    const pool = makePool();
    const late = (await send(pool, job, { sleepMs: 30_000 })).outcome;
    // Sent later, so its own timeout comes after the first one's.
    await new Promise((r) => setTimeout(r, 200));
    const bystander = (await send(pool, job, { sleepMs: 30_000 })).outcome;
    const [own, other] = await Promise.all([late, bystander]);
    assert.ok(own instanceof JobFailedError && other instanceof JobFailedError);
    assert.equal(own.timedOut, true);
    assert.match(own.message, /^job "shared-timeout" timed out after 1500 ms$/);
    assert.equal(other.collateral, true);
    assert.match(other.message, /was killed because another request it held timed out$/);
  });

  it("a process that dies holding two requests fails both as its own failures (not collateral)", async () => {
    const { job, starts } = await ctlJob("shared-crash", { concurrency: 2 });
    const pool = makePool();
    const first = (await send(pool, job, { sleepMs: 30_000 })).outcome;
    const second = (await send(pool, job, { sleepMs: 30_000 })).outcome;
    await waitUntil("the process to start", async () => (await startsOf(starts)).length === 1);
    const [pid] = await startsOf(starts);
    process.kill(pid ?? 0, "SIGKILL");
    for (const outcome of await Promise.all([first, second])) {
      assert.ok(outcome instanceof JobFailedError);
      assert.equal(outcome.collateral, false);
      assert.equal(outcome.canceled, false);
      assert.match(outcome.message, new RegExp(`^job "shared-crash" \\(warm process ${pid}\\) was killed by SIGKILL`));
    }
  });

  it("progress lines reach the request they name", async () => {
    const { job } = await ctlJob("shared-progress", { concurrency: 2 });
    const pool = makePool();
    const mark = path.join(dir, "shared-progress.mark");
    const seenA: unknown[] = [];
    const seenB: unknown[] = [];
    const a = (await send(pool, job, { waitFor: mark, progress: [[0.5, "a half"]] }, { onProgress: (r) => seenA.push(r) })).outcome;
    const b = (await send(pool, job, { mark, progress: [[0.25, "b quarter"]] }, { onProgress: (r) => seenB.push(r) })).outcome;
    const [pa, pb] = await Promise.all([a, b]);
    assert.equal(pa, pb);
    assert.deepEqual(seenA, [{ progress: 0.5, message: "a half" }]);
    assert.deepEqual(seenB, [{ progress: 0.25, message: "b quarter" }]);
  });

  it("with maxRequests, a process takes no request past its limit and is recycled once its requests are over", async () => {
    const { job, starts } = await ctlJob("shared-recycle", { concurrency: 2, maxRequests: 3 });
    const pool = makePool();
    const [p1, p2] = await Promise.all([
      (await send(pool, job, { sleepMs: 50 })).outcome,
      (await send(pool, job, { sleepMs: 50 })).outcome,
    ]);
    assert.equal(p1, p2);
    // Its third request is its last: the fourth goes to another process.
    const [p3, p4] = await Promise.all([
      (await send(pool, job, { sleepMs: 200 })).outcome,
      (await send(pool, job, { sleepMs: 50 })).outcome,
    ]);
    assert.equal(p3, p1);
    assert.notEqual(p4, p1);
    await waitUntil("the first process to be recycled", () => !isAlive(Number(p1)));
    await waitUntil("its replacement to start", async () => (await startsOf(starts)).length === 3);
    assert.ok(logs.some((l) => l.includes(`warm process ${p1} of job "shared-recycle" recycled: it served 3 requests (maxRequests 3)`)));
  });
});

describe("job.yaml of a warm job", () => {
  /** A registry of a fresh jobs folder (under the test dir) with one sh job per [name, job.yaml lines]. */
  const registryOf = async (folder: string, jobs: readonly (readonly [string, string])[]): Promise<JobRegistry> => {
    const root = path.join(dir, folder);
    for (const [name, yaml] of jobs) {
      await fs.mkdir(path.join(root, name), { recursive: true });
      await fs.writeFile(path.join(root, name, "job.yaml"), `entry: main.sh\n${yaml}`);
      await fs.writeFile(path.join(root, name, "main.sh"), "exit 0\n");
    }
    return new JobRegistry({ dir: root, defaultTimeoutMs: 1000 });
  };

  it("takes concurrency from 1 to 64 on a warm job; refuses it on another, or out of bounds", async () => {
    const registry = await registryOf("concurrency-jobs", [
      ["wide", "warm: true\nconcurrency: 64\n"],
      ["plain", "warm: true\n"],
      ["cold", "concurrency: 2\n"],
      ["zero", "warm: true\nconcurrency: 0\n"],
      ["huge", "warm: true\nconcurrency: 65\n"],
    ]);
    assert.equal((await registry.resolve("wide")).concurrency, 64);
    assert.equal((await registry.resolve("plain")).concurrency, 1);
    await assert.rejects(registry.resolve("cold"), /job\.yaml: concurrency: applies to warm jobs only: add warm: true/);
    await assert.rejects(registry.resolve("zero"), /job\.yaml: concurrency: /);
    await assert.rejects(registry.resolve("huge"), /job\.yaml: concurrency: /);
  });

  it("refuses maxRequests or maxRssMb without warm: true, naming the key", async () => {
    const registry = await registryOf("yaml-jobs", [
      ["limited", "maxRequests: 10\n"],
      ["heavy", "warm: false\nmaxRssMb: 100\n"],
    ]);
    await assert.rejects(registry.resolve("limited"), /job\.yaml: maxRequests: applies to warm jobs only: add warm: true/);
    await assert.rejects(registry.resolve("heavy"), /job\.yaml: maxRssMb: applies to warm jobs only: add warm: true/);
  });
});

describe("the warm example jobs and helpers", () => {
  const registry = new JobRegistry({ dir: EXAMPLES, defaultTimeoutMs: 10_000 });
  let sample: string;
  before(async () => {
    sample = path.join(dir, "sample.txt");
    // A blank line, runs of spaces and tabs, multi-byte chars, a non-breaking space, a last line without newline.
    await fs.writeFile(sample, "first line here\n\n  indented\twith tab  \nünïcode words\u00a0here\nno newline at the end");
  });

  const run = async (
    job: JobDefinition,
    req: Omit<JobRequest, "outputDir" | "params" | "task"> & { params?: Record<string, unknown> },
    pool?: WarmPool,
  ): Promise<JobAnswer> => {
    const work = await workDir();
    const full: JobRequest = { params: {}, task: TASK, ...req, outputDir: work.outputDir };
    return pool === undefined ? runJob(job, full, { workDir: work.path }) : pool.run(job, full, { workDir: work.path });
  };
  const text = (answer: JobAnswer): Promise<string> => fs.readFile(answer.kind === "output" ? answer.output : "", "utf8");

  it("declare warm: true", { skip: NO_PYTHON }, async () => {
    for (const name of ["noop-warm", "wordcount-warm", "pages-warm"]) assert.equal((await registry.resolve(name)).warm, true, name);
    assert.equal((await registry.resolve("pages-warm")).split, true);
  });

  it("wordcount-warm outputs exactly what wordcount outputs", { skip: NO_PYTHON }, async () => {
    const pool = makePool();
    const warm = await registry.resolve("wordcount-warm");
    const oneShot = await registry.resolve("wordcount");
    const empty = path.join(dir, "empty.txt");
    await fs.writeFile(empty, "");
    for (const input of [sample, empty, path.join(EXAMPLES, "noop")]) {
      const expected = await text(await run(oneShot, { mode: "simple", input }));
      assert.equal(await text(await run(warm, { mode: "simple", input }, pool)), expected, input);
    }
    const [lines, words, bytes] = execFileSync("sh", ["-c", 'wc < "$1"', "sh", sample], { encoding: "utf8" })
      .trim()
      .split(/\s+/)
      .map(Number);
    assert.equal(await text(await run(warm, { mode: "simple", input: sample }, pool)), JSON.stringify({ lines, words, bytes }));
    // wc's words depend on the locale (a non-breaking space separates words in UTF-8 only): the warm job follows it too.
    for (const locale of ["C", "C.UTF-8"]) {
      const env = { LC_ALL: locale };
      const expected = await text(await run({ ...oneShot, env }, { mode: "simple", input: sample }));
      assert.equal(await text(await run({ ...warm, env }, { mode: "simple", input: sample }, makePool())), expected, locale);
    }
  });

  it("pages-warm gives what pages gives in split, child and merge mode", async () => {
    const pool = makePool();
    const warm = await registry.resolve("pages-warm");
    const oneShot = await registry.resolve("pages");
    const blank = path.join(dir, "blank.txt");
    await fs.writeFile(blank, "\n\n");
    for (const input of [sample, blank]) {
      const [a, b] = [await run(oneShot, { mode: "split", input }), await run(warm, { mode: "split", input }, pool)];
      assert.equal(a.kind, b.kind);
      if (a.kind === "output" || b.kind === "output") {
        assert.equal(await text(b), await text(a));
        continue;
      }
      // The parts' contents, in order (their file names are the helpers' own: part-<i>).
      const read = (files: { input: string }[]): Promise<string[]> => Promise.all(files.map((c) => fs.readFile(c.input, "latin1")));
      assert.deepEqual(await read(b.children), await read(a.children));
      const outputs: string[] = [];
      for (const child of b.children) {
        const [x, y] = [
          await run(oneShot, { mode: "child", input: child.input }),
          await run(warm, { mode: "child", input: child.input }, pool),
        ];
        assert.equal(await text(y), await text(x));
        outputs.push(y.kind === "output" ? y.output : "");
      }
      const merged = await run(warm, { mode: "merge", inputs: outputs }, pool);
      assert.equal(await text(merged), await text(await run(oneShot, { mode: "merge", inputs: outputs })));
      assert.equal(await text(await run(warm, { mode: "simple", input }, pool)), await text(merged));
    }
    assert.equal(await text(await run(warm, { mode: "merge", inputs: [] }, pool)), "");
  });

  it("noop-warm outputs an empty file", async () => {
    const answer = await run(await registry.resolve("noop-warm"), { mode: "simple", input: sample }, makePool());
    assert.equal(await text(answer), "");
  });

  it("the helpers also make one-shot jobs: the same scripts run by runJob when warm is off", { skip: NO_PYTHON }, async () => {
    for (const name of ["wordcount-warm", "pages-warm"]) {
      const job = { ...(await registry.resolve(name)), warm: false };
      const answer = await run(job, { mode: name === "pages-warm" ? "child" : "simple", input: sample });
      assert.equal(answer.kind, "output", name);
    }
    // A handler's exception in one-shot mode is an exit code 1 with the traceback on stderr.
    const missing = path.join(dir, "missing.txt");
    const err = await failure(run({ ...(await registry.resolve("wordcount-warm")), warm: false }, { mode: "simple", input: missing }));
    assert.equal(err.exitCode, 1);
    assert.match(err.stderrTail, /FileNotFoundError/);
  });

  it("the Python helper: Fatal answers retry: false and progress() reports, warm and one-shot", { skip: NO_PYTHON }, async () => {
    const file = path.join(dir, "pyfatal.py");
    await fs.writeFile(
      file,
      `import os, sys
sys.path.insert(0, ${JSON.stringify(path.join(EXAMPLES, "lib"))})
from docq_warm import serve, progress, Fatal

def handle(req):
    progress(0.25, "page 1 of 4")
    if req["params"].get("fatal"):
        raise Fatal(req["params"]["fatal"])
    with open(os.path.join(req["outputDir"], "r.txt"), "w") as f:
        f.write("ok")
    return "r.txt"

serve(handle)
`,
    );
    for (const warm of [true, false]) {
      const job = definition("pyfatal", "python3", [file], { warm, env: { PYTHONDONTWRITEBYTECODE: "1" } });
      const pool = warm ? makePool() : undefined;
      const seen: unknown[] = [];
      const work = await workDir();
      const req: JobRequest = { mode: "simple", input: sample, outputDir: work.outputDir, params: {}, task: TASK };
      const opts = { workDir: work.path, onProgress: (r: unknown) => seen.push(r) };
      const answer = pool === undefined ? await runJob(job, req, opts) : await pool.run(job, req, opts);
      assert.equal(answer.kind, "output", `warm ${warm}`);
      assert.deepEqual(seen, [{ progress: 0.25, message: "page 1 of 4" }], `warm ${warm}`);
      const failWork = await workDir();
      const failing: JobRequest = { ...req, outputDir: failWork.outputDir, params: { fatal: "encrypted" } };
      const err = await failure(
        pool === undefined ? runJob(job, failing, { workDir: failWork.path }) : pool.run(job, failing, { workDir: failWork.path }),
      );
      assert.equal(err.message, 'job "pyfatal" failed: encrypted (the script asked for no retry)', `warm ${warm}`);
      assert.equal(err.retryable, false);
    }
  });

  it(
    "the Python helper runs up to `concurrency` requests side by side, each progress() reported for its own",
    { skip: NO_PYTHON },
    async () => {
      const file = path.join(dir, "pyshare.py");
      await fs.writeFile(
        file,
        `import os, sys, time
sys.path.insert(0, ${JSON.stringify(path.join(EXAMPLES, "lib"))})
from docq_warm import serve, progress

def handle(req):
    p = req["params"]
    progress(0.5, p["name"])
    deadline = time.monotonic() + 20
    while p.get("waitFor") and not os.path.exists(p["waitFor"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    if p.get("mark"):
        open(p["mark"], "w").close()
    if p.get("throw"):
        raise ValueError(p["throw"])
    with open(os.path.join(req["outputDir"], "out.json"), "w") as f:
        f.write('{"pid": %d, "waited": %s}' % (os.getpid(), "true" if os.path.exists(p.get("waitFor") or "") else "false"))
    return "out.json"

serve(handle)
`,
      );
      const job = definition("pyshare", "python3", [file], { concurrency: 3, env: { PYTHONDONTWRITEBYTECODE: "1" } });
      const pool = makePool();
      const mark = path.join(dir, "pyshare.mark");
      const asked = async (params: Record<string, unknown>) => {
        const work = await workDir();
        const seen: unknown[] = [];
        const answer = pool.run(job, request(work, params), { workDir: work.path, onProgress: (r) => seen.push(r) }).then(
          async (a) => JSON.parse(await fs.readFile(a.kind === "output" ? a.output : "", "utf8")) as { pid: number; waited: boolean },
          (err: unknown) => err,
        );
        return { answer, seen };
      };
      // a waits for the mark that c writes, b fails meanwhile: answered in turn, a would hold the others up for 20 s.
      const started = Date.now();
      const a = await asked({ name: "a", waitFor: mark });
      const b = await asked({ name: "b", throw: "not this one" });
      const c = await asked({ name: "c", mark });
      const [ra, rb, rc] = await Promise.all([a.answer, b.answer, c.answer]);
      assert.ok(Date.now() - started < 10_000, "a was answered once c wrote its mark, not after its own 20 s");
      assert.ok(!(ra instanceof Error) && !(rc instanceof Error), `a: ${String(ra)}, c: ${String(rc)}`);
      const [outA, outC] = [ra as { pid: number; waited: boolean }, rc as { pid: number; waited: boolean }];
      assert.equal(outA.waited, true);
      assert.equal(outA.pid, outC.pid, "one process held them all");
      assert.ok(rb instanceof JobFailedError && /ValueError: not this one/.test(rb.message), String(rb));
      assert.deepEqual(
        [a.seen, b.seen, c.seen],
        [[{ progress: 0.5, message: "a" }], [{ progress: 0.5, message: "b" }], [{ progress: 0.5, message: "c" }]],
      );
      assert.equal(pool.processes().length, 1);
    },
  );

  it("the Python helper answers a handler's exception as an error, with the traceback in the tail", { skip: NO_PYTHON }, async () => {
    const pool = makePool();
    const job = await registry.resolve("wordcount-warm");
    const err = await failure(run(job, { mode: "simple", input: path.join(dir, "missing.txt") }, pool));
    assert.match(err.message, /^job "wordcount-warm" failed: FileNotFoundError: /);
    assert.match(err.stderrTail, /^Traceback \(most recent call last\):\n[\s\S]*FileNotFoundError/);
    assert.equal(err.exitCode, null);
    assert.equal(pool.processes().length, 1, "the process is still there");
    assert.equal((await run(job, { mode: "simple", input: sample }, pool)).kind, "output");
  });
});

/** The output bytes of an inline answer (it fails when the answer is children). */
function bytesOf(answer: InlineJobAnswer): Buffer {
  assert.equal(answer.kind, "output");
  return answer.kind === "output" ? answer.output : Buffer.alloc(0);
}

describe("inline requests (job.yaml inline: true)", () => {
  /** A warm job on `helper` (JS or Python) whose handler's body is `body`, inline. */
  const inlineJob = async (name: string, source: string, command: string): Promise<JobDefinition> => {
    const file = path.join(dir, name);
    await fs.writeFile(file, source);
    // No __pycache__ left beside the helper in the repository.
    return definition(name, command, [file], { inline: true, concurrency: 2, env: { PYTHONDONTWRITEBYTECODE: "1" } });
  };
  const jsJob = (name: string, body: string): Promise<JobDefinition> =>
    inlineJob(
      `${name}.mjs`,
      `import { existsSync, readFileSync, writeFileSync } from "node:fs";\nimport { serve } from ${JSON.stringify(JS_HELPER)};\nserve(async (req) => {\n${body}\n});\n`,
      process.execPath,
    );
  const PY_LIB = path.join(EXAMPLES, "lib");
  const pyJob = (name: string, body: string): Promise<JobDefinition> =>
    inlineJob(
      `${name}.py`,
      `import os, sys\nsys.path.insert(0, ${JSON.stringify(PY_LIB)})\nfrom docq_warm import serve\ndef handle(req):\n${body}\nserve(handle)\n`,
      "python3",
    );
  const inlineRequest = (input?: string, params: Record<string, unknown> = {}) => ({
    mode: "simple" as const,
    inline: true as const,
    ...(input === undefined ? {} : { inputBase64: Buffer.from(input).toString("base64") }),
    params,
    task: TASK,
  });

  it("hands the document over in the line and takes the output back in the answer, with no file (JS helper)", async () => {
    const job = await jsJob(
      "inline-bytes",
      `  return { outputBytes: JSON.stringify({ input: req.inputBytes?.toString(), hasFiles: existsSync(process.cwd() + "/inline-1") }) };`,
    );
    const pool = makePool();
    const answer = await pool.runInline(job, inlineRequest("hello inline"), {});
    assert.deepEqual(JSON.parse(bytesOf(answer).toString()), { input: "hello inline", hasFiles: false });
    const none = await pool.runInline(job, inlineRequest(), {});
    assert.deepEqual(JSON.parse(bytesOf(none).toString()), { hasFiles: false });
  });

  it("a handler written for files runs unchanged: input and outputDir are made when read, and nothing is left after (JS helper)", async () => {
    const job = await jsJob(
      "inline-files",
      `  const text = readFileSync(req.input, "utf8");
  writeFileSync(req.outputDir + "/out.txt", text.toUpperCase());
  return "out.txt";`,
    );
    const pool = makePool();
    for (const input of ["first document", "second, longer document", ""]) {
      const answer = await pool.runInline(job, inlineRequest(input), {});
      assert.equal(bytesOf(answer).toString(), input.toUpperCase());
    }
    const [proc] = pool.processes();
    assert.ok(proc?.pid !== undefined);
    // The process's own dir keeps one folder per request held at once, each with an empty out/ and no input.
    const cwd = await fs.readlink(`/proc/${proc.pid}/cwd`);
    assert.deepEqual(await fs.readdir(path.join(cwd, "inline-1")), ["out"]);
    assert.deepEqual(await fs.readdir(path.join(cwd, "inline-1", "out")), []);
  });

  it("refuses an output outside outputDir, a link, children, or one past 2 MiB as not retryable; the process stays", async () => {
    const job = await jsJob(
      "inline-bad",
      `  const p = req.params;
  if (p.outside) return "../../escape.txt";
  if (p.link) { (await import("node:fs")).symlinkSync("/etc/hostname", req.outputDir + "/link"); return "link"; }
  if (p.children) return { children: [{ input: "a" }] };
  if (p.bytesChildren) return { children: [{ inputBytes: "a" }] };
  if (p.huge) return { outputBytes: Buffer.alloc(2 * 1024 * 1024 + 1) };
  return { outputBytes: "fine" };`,
    );
    const pool = makePool();
    for (const [params, why] of [
      [{ outside: true }, /is not inside outputDir/],
      [{ link: true }, /is not a regular file/],
      [{ children: true }, /the child input "a" is not inside outputDir/],
      [{ huge: true }, /an inline answer carries at most 2097152/],
    ] as const) {
      const err = await failure(pool.runInline(job, inlineRequest("x", params), {}));
      assert.match(err.message, why);
      assert.equal(err.retryable, false, err.message);
    }
    // Parts answered to a request in simple mode: docq refuses them, as for a job answering files.
    const simple = await failure(pool.runInline(job, inlineRequest("x", { bytesChildren: true }), {}));
    assert.match(simple.message, /answered children in simple mode: declare split: true in job\.yaml/);
    assert.equal(bytesOf(await pool.runInline(job, inlineRequest("x"), {})).toString(), "fine");
    assert.equal(pool.processes().length, 1);
  });

  const mergeRequest = (parts: string[]) => ({
    mode: "merge" as const,
    inline: true as const,
    inputsBase64: parts.map((part) => Buffer.from(part).toString("base64")),
    params: {},
    task: TASK,
  });

  it("a merge gets its parts' bytes as inputsBytes, or as files through inputs, removed after (JS helper)", async () => {
    const job = await jsJob(
      "inline-merge",
      `  if (req.params.files) return { outputBytes: req.inputs.map((f) => readFileSync(f, "utf8")).join("|") };
  return { outputBytes: req.inputsBytes.map((b) => b.toString()).join("+") };`,
    );
    const pool = makePool();
    assert.equal(bytesOf(await pool.runInline(job, mergeRequest(["a", "bb", ""]), {})).toString(), "a+bb+");
    const files = { ...mergeRequest(["x", "yy"]), params: { files: true } };
    assert.equal(bytesOf(await pool.runInline(job, files, {})).toString(), "x|yy");
    assert.equal(bytesOf(await pool.runInline(job, { ...mergeRequest([]), params: { files: true } }, {})).toString(), "");
    const [proc] = pool.processes();
    assert.ok(proc?.pid !== undefined);
    const cwd = await fs.readlink(`/proc/${proc.pid}/cwd`);
    assert.deepEqual(await fs.readdir(path.join(cwd, "inline-1")), ["out"], "the parts written as files are removed");
  });

  it("a merge gets its parts' bytes as inputsBytes, or as files through inputs (Python helper)", { skip: NO_PYTHON }, async () => {
    const job = await pyJob(
      "inline_merge",
      `    if req["params"].get("files"):\n        return {"outputBytes": "|".join(open(f).read() for f in req["inputs"])}\n    return {"outputBytes": b"+".join(req["inputsBytes"])}`,
    );
    const pool = makePool();
    assert.equal(bytesOf(await pool.runInline(job, mergeRequest(["a", "bb", ""]), {})).toString(), "a+bb+");
    const files = { ...mergeRequest(["x", "yy"]), params: { files: true } };
    assert.equal(bytesOf(await pool.runInline(job, files, {})).toString(), "x|yy");
  });

  const splitRequest = (input: string) => ({ ...inlineRequest(input), mode: "split" as const });
  const partsOf = (answer: InlineJobAnswer): [string, unknown][] => {
    assert.equal(answer.kind, "children");
    return answer.kind === "children" ? answer.children.map((c) => [c.input.toString(), c.params]) : [];
  };

  it("a split answers its parts' bytes: given as inputBytes, or files of outputDir read once each and removed (JS helper)", async () => {
    const job = await jsJob(
      "inline-split",
      `  if (req.params.huge) return { children: [{ inputBytes: Buffer.alloc(1024 * 1024) }, { inputBytes: Buffer.alloc(1024 * 1024 + 1) }] };
  const [a, b] = req.inputBytes.toString().split(" ");
  writeFileSync(req.outputDir + "/shared", b);
  return { children: [{ inputBytes: a, params: { n: 1 } }, { input: "shared" }, { input: "shared", params: { n: 3 } }] };`,
    );
    const pool = makePool();
    assert.deepEqual(partsOf(await pool.runInline(job, splitRequest("left right"), {})), [
      ["left", { n: 1 }],
      ["right", undefined],
      ["right", { n: 3 }],
    ]);
    const [proc] = pool.processes();
    assert.ok(proc?.pid !== undefined);
    const cwd = await fs.readlink(`/proc/${proc.pid}/cwd`);
    assert.deepEqual(await fs.readdir(path.join(cwd, "inline-1", "out")), [], "the answered files are removed");
    const err = await failure(pool.runInline(job, { ...splitRequest("x"), params: { huge: true } }, {}));
    assert.match(err.message, /the parts together: 2097153 bytes, and an inline answer carries at most 2097152/);
    assert.equal(err.retryable, false);
  });

  it("a split answers its parts' bytes (Python helper); inputBytes to a request with files become files", { skip: NO_PYTHON }, async () => {
    const job = await pyJob(
      "inline_split",
      `    a, b = req["inputBytes"].split(b" ") if "inputBytes" in req else open(req["input"], "rb").read().split(b" ")\n    with open(os.path.join(req["outputDir"], "f"), "wb") as f:\n        f.write(b)\n    return {"children": [{"inputBytes": a, "params": {"n": 1}}, {"input": "f"}]}`,
    );
    const pool = makePool();
    assert.deepEqual(partsOf(await pool.runInline(job, splitRequest("py thon"), {})), [
      ["py", { n: 1 }],
      ["thon", undefined],
    ]);
    const work = await workDir();
    const split = { ...request(work), mode: "split" as const, input: path.join(dir, "split-input.txt") };
    await fs.writeFile(split.input, "with files");
    const answer = await pool.run({ ...job, inline: false }, split, { workDir: work.path });
    assert.equal(answer.kind, "children");
    const files = answer.kind === "children" ? answer.children : [];
    assert.deepEqual(await Promise.all(files.map((c) => fs.readFile(c.input, "utf8"))), ["with", "files"]);
    assert.deepEqual(
      files.map((c) => c.params),
      [{ n: 1 }, undefined],
    );
  });

  it("a child file answered to an inline request fails, naming inputBase64; inputBase64 to a request with files fails", async () => {
    const answerWith = async (name: string, answer: string): Promise<JobDefinition> => {
      const script = path.join(dir, `${name}.sh`);
      await fs.writeFile(
        script,
        `while IFS= read -r req; do id=\${req#'{"requestId":"'}; id=\${id%%'"'*}; echo "{\\"requestId\\":\\"$id\\",${answer}}"; done\n`,
      );
      return definition(name, "sh", [script], { inline: true });
    };
    const pool = makePool();
    const fileChild = await answerWith("child-file", `\\"children\\":[{\\"input\\":\\"x\\"}]`);
    const err = await failure(pool.runInline(fileChild, splitRequest("x"), {}));
    assert.match(
      err.message,
      /answered the child file "x" to an inline request \(job\.yaml inline: true\): answer its bytes as inputBase64/,
    );
    const bytesChild = await answerWith("child-bytes", `\\"children\\":[{\\"inputBase64\\":\\"eA==\\"}]`);
    const work = await workDir();
    const err2 = await failure(pool.run({ ...bytesChild, inline: false }, { ...request(work), mode: "split" }, { workDir: work.path }));
    assert.match(err2.message, /answered a child's inputBase64, which only an inline request takes/);
  });

  it("a script answering an output file to an inline request fails, naming outputBase64", async () => {
    const script = path.join(dir, "inline-raw.sh");
    await fs.writeFile(
      script,
      `while IFS= read -r req; do id=\${req#'{"requestId":"'}; id=\${id%%'"'*}; echo "{\\"requestId\\":\\"$id\\",\\"output\\":\\"x\\"}"; done\n`,
    );
    const job = definition("inline-raw", "sh", [script], { inline: true });
    const err = await failure(makePool().runInline(job, inlineRequest("x"), {}));
    assert.match(
      err.message,
      /answered the output file "x" to an inline request \(job\.yaml inline: true\): answer \{"outputBase64": \.\.\.\}/,
    );
  });

  it("an outputBase64 answer to a request with files fails; outputBytes from the helper is written as the file output", async () => {
    const raw = path.join(dir, "b64-raw.sh");
    await fs.writeFile(
      raw,
      `while IFS= read -r req; do id=\${req#'{"requestId":"'}; id=\${id%%'"'*}; echo "{\\"requestId\\":\\"$id\\",\\"outputBase64\\":\\"eA==\\"}"; done\n`,
    );
    const pool = makePool();
    const work = await workDir();
    const err = await failure(pool.run(definition("b64-raw", "sh", [raw]), request(work), { workDir: work.path }));
    assert.match(err.message, /answered outputBase64, which only an inline request takes/);
    const bytesJob = await jsJob("bytes-files", `  return { outputBytes: "as a file" };`);
    const work2 = await workDir();
    const answer = await pool.run({ ...bytesJob, inline: false }, request(work2), { workDir: work2.path });
    assert.equal(answer.kind === "output" ? await fs.readFile(answer.output, "utf8") : null, "as a file");
  });

  it(
    "the Python helper: inputBytes and outputBytes, a handler written for files, and outputBytes as a file when asked for files",
    { skip: NO_PYTHON },
    async () => {
      const pool = makePool();
      const bytes = await pyJob(
        "inline_bytes",
        `    return {"outputBytes": req["inputBytes"].upper() + (b"!" if "input" in req else b"?")}`,
      );
      assert.equal(bytesOf(await pool.runInline(bytes, inlineRequest("py bytes"), {})).toString(), "PY BYTES!");
      const files = await pyJob(
        "inline_files",
        `    with open(req["input"]) as f, open(os.path.join(req["outputDir"], "o.txt"), "w") as o:\n        o.write(f.read()[::-1])\n    return "o.txt"`,
      );
      assert.equal(bytesOf(await pool.runInline(files, inlineRequest("abc"), {})).toString(), "cba");
      assert.equal(bytesOf(await pool.runInline(files, inlineRequest("second"), {})).toString(), "dnoces");
      const work = await workDir();
      const answer = await pool
        .run({ ...bytes, inline: false }, { ...request(work), input: undefined }, { workDir: work.path })
        .catch((e: unknown) => e);
      assert.ok(answer instanceof JobFailedError, "a handler reading inputBytes fails on a request with files");
      const asFile = await pyJob("bytes_as_file", `    return {"outputBytes": "written"}`);
      const work2 = await workDir();
      const out = await pool.run({ ...asFile, inline: false }, request(work2), { workDir: work2.path });
      assert.equal(out.kind === "output" ? await fs.readFile(out.output, "utf8") : null, "written");
    },
  );

  it("job.yaml takes inline: true on a warm job only, split or not", async () => {
    const root = path.join(dir, "inline-yaml");
    for (const [name, yaml] of [
      ["fast", "warm: true\ninline: true\n"],
      ["cold", "inline: true\n"],
      ["splitting", "warm: true\nsplit: true\ninline: true\n"],
    ] as const) {
      await fs.mkdir(path.join(root, name), { recursive: true });
      await fs.writeFile(path.join(root, name, "job.yaml"), `entry: main.sh\n${yaml}`);
      await fs.writeFile(path.join(root, name, "main.sh"), "exit 0\n");
    }
    const registry = new JobRegistry({ dir: root, defaultTimeoutMs: 1000 });
    assert.equal((await registry.resolve("fast")).inline, true);
    await assert.rejects(registry.resolve("cold"), /job\.yaml: inline: applies to warm jobs only: add warm: true/);
    assert.equal((await registry.resolve("splitting")).inline, true);
    assert.equal((await new JobRegistry({ dir: EXAMPLES, defaultTimeoutMs: 1000 }).resolve("noop-warm")).inline, true);
  });
});
