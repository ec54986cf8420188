import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { closeSync, existsSync, promises as fs, readFileSync, readSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { JobRegistry, type JobDefinition } from "./job-registry.js";
import { Spawner } from "./launch/spawner.js";
import {
  createWorkDir,
  JobFailedError,
  openInWorkDir,
  placeAnswer,
  removeTree,
  requestLine,
  runJob,
  sweepLeftovers,
  takeAnswered,
  type JobAnswer,
  type JobMode,
  type JobRequest,
  type WorkDir,
} from "./job-runner.js";
import { OWNER, RUN_ID_VAR } from "./launch/leftovers.mjs";
import type { ProgressReport } from "./script-answer.js";
import { isAlive, readPid } from "../testing/processes.js";

const EXAMPLES = fileURLToPath(new URL("../../scripts-job/", import.meta.url));
const TASK: JobRequest["task"] = { id: "test-01JAAAAAAAAAAAAAAAAAAAAAAA", name: "t", user: "u", priority: 50, parentId: null, depth: 0 };

/** The same suite runs scripts through the spawner process when DOCQ_TEST_LAUNCHER=spawner (see spawner.test.ts). */
const launcher = process.env.DOCQ_TEST_LAUNCHER === "spawner" ? new Spawner() : undefined;
let scriptsDir: string;
const workDirs: WorkDir[] = [];

before(async () => {
  scriptsDir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-runner-test-"));
});
after(async () => {
  await launcher?.stop();
  await Promise.all(workDirs.map((w) => w.remove()));
  await fs.rm(scriptsDir, { recursive: true, force: true });
});

/** A job made of an inline sh script. */
async function shJob(name: string, body: string, overrides: Partial<JobDefinition> = {}): Promise<JobDefinition> {
  const file = path.join(scriptsDir, `${name}.sh`);
  await fs.writeFile(file, body);
  return {
    name,
    dir: scriptsDir,
    command: "/bin/sh",
    args: [file],
    timeoutMs: 10_000,
    maxTries: null,
    split: false,
    env: {},
    // npm test's mark, so a script these tests leave running is found (scripts/test.sh).
    passEnv: ["DOCQ_TEST_RUN"],
    paramsSchema: null,
    warm: false,
    maxRequests: null,
    maxRssMb: null,
    concurrency: 1,
    ...overrides,
  };
}

async function workDir(): Promise<WorkDir> {
  const w = await createWorkDir();
  workDirs.push(w);
  return w;
}

async function run(
  job: JobDefinition,
  opts: {
    mode?: JobMode;
    input?: string;
    inputs?: string[];
    params?: Record<string, unknown>;
    signal?: AbortSignal;
    onSpawn?: (pid: number) => void;
    onProgress?: (report: ProgressReport) => void;
    timeoutMs?: number;
  } = {},
): Promise<{ answer: JobAnswer; work: WorkDir }> {
  const work = await workDir();
  const request: JobRequest = {
    mode: opts.mode ?? "simple",
    ...(opts.input === undefined ? {} : { input: opts.input }),
    ...(opts.inputs === undefined ? {} : { inputs: opts.inputs }),
    outputDir: work.outputDir,
    params: opts.params ?? {},
    task: TASK,
  };
  const answer = await runJob(job, request, {
    workDir: work.path,
    signal: opts.signal,
    onSpawn: opts.onSpawn,
    ...(opts.onProgress === undefined ? {} : { onProgress: opts.onProgress }),
    ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
    ...(launcher === undefined ? {} : { launcher }),
  });
  return { answer, work };
}

async function failure(promise: Promise<unknown>): Promise<JobFailedError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof JobFailedError, `expected JobFailedError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the job to fail");
}

function output(answer: JobAnswer): string {
  assert.equal(answer.kind, "output");
  return answer.output;
}

async function waitDead(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (!isAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

describe("createWorkDir", () => {
  it("makes a fresh dir with an out/ folder and removes it", async () => {
    const a = await createWorkDir();
    const b = await createWorkDir();
    assert.notEqual(a.path, b.path);
    assert.equal(a.outputDir, path.join(a.path, "out"));
    assert.ok((await fs.stat(a.outputDir)).isDirectory());
    await a.remove();
    await b.remove();
    await assert.rejects(fs.stat(a.path), { code: "ENOENT" });
  });
});

describe("WorkDir.writeFile: a file docq hands its script, rewritten in place run after run", () => {
  // Both ways createWorkDir works: on a disk (the OS temp dir here) and in memory (tmpfs).
  const roots = [os.tmpdir(), ...(existsSync("/dev/shm") ? ["/dev/shm"] : [])];
  for (const root of roots) {
    it(`keeps the same file across runs, rewritten in place or removed before the next script, and the dir counts as empty (${root})`, async () => {
      const work = await createWorkDir(root);
      try {
        const file = await work.writeFile("input", Buffer.from("the first task's document"));
        assert.equal(file, path.join(work.path, "input"));
        const { ino } = await fs.stat(file);
        assert.equal(await work.empty(), true, "a kept file leaves the dir reusable");
        await work.writeFile("input", Buffer.from("short"));
        work.removeStale();
        assert.equal(readFileSync(file, "utf8"), "short", "the run's own file is left as written");
        assert.equal((await fs.stat(file)).ino, ino, "rewritten in place: no new file");
        assert.equal(await work.empty(), true);
        // A run that writes no document of that name: the earlier run's is removed before its script starts.
        work.removeStale();
        await assert.rejects(fs.lstat(file), { code: "ENOENT" }, "nothing of the earlier task is left for this one");
        assert.equal(await work.empty(), true);
        // Forgotten: a later run without the name finds nothing to remove, and the dir is still empty.
        work.removeStale();
        assert.equal(await work.empty(), true);
        // A later run that writes it again makes it anew, and keeps it from then on.
        await work.writeFile("input", Buffer.from("a longer second document"));
        assert.equal(await work.empty(), true);
        await work.writeFile("input", Buffer.from("cut"));
        work.removeStale();
        assert.equal(readFileSync(file, "utf8"), "cut", "a shorter document leaves no tail of the longer one");
      } finally {
        await work.remove();
      }
      await assert.rejects(fs.stat(work.path), { code: "ENOENT" });
    });

    it(`never writes through what a script put in the file's place: a link, a hard link, a folder (${root})`, async () => {
      const work = await createWorkDir(root);
      const outside = await fs.mkdtemp(path.join(root, "docq-kept-outside-"));
      try {
        const target = path.join(outside, "precious");
        await fs.writeFile(target, "not docq's");
        const file = await work.writeFile("input", Buffer.from("doc 1"));
        for (const plant of [() => fs.symlink(target, file), () => fs.link(target, file), () => fs.mkdir(file)]) {
          await fs.rm(file, { recursive: true, force: true });
          await plant();
          await work.writeFile("input", Buffer.from("doc 2"));
          assert.equal(readFileSync(target, "utf8"), "not docq's", "the file elsewhere is untouched");
          const stats = await fs.lstat(file);
          assert.ok(stats.isFile() && stats.nlink === 1, "the name is a file of its own again");
          assert.equal(readFileSync(file, "utf8"), "doc 2");
        }
        // Swapped after the write: a link is no kept file, so the dir is not reused; the file elsewhere is untouched.
        await fs.rm(file);
        await fs.symlink(target, file);
        assert.equal(await work.empty(), false);
        assert.equal(readFileSync(target, "utf8"), "not docq's");
        // Swapped for a hard link once the run is over: never emptied through it, the name is let go.
        await fs.rm(file);
        await fs.link(target, file);
        assert.equal(await work.empty(), true, "a hard link is a file: the next run takes it over");
        work.removeStale();
        assert.equal(readFileSync(target, "utf8"), "not docq's");
        await assert.rejects(fs.lstat(file), { code: "ENOENT" });
        await assert.rejects(work.writeFile("../escape", Buffer.from("x")), /not a plain name/);
      } finally {
        await work.remove();
        await fs.rm(outside, { recursive: true, force: true });
      }
    });
  }
});

describe("runJob: answers", () => {
  it("returns an output, relative to outputDir, with chatter before the answer and the stderr tail", async () => {
    const job = await shJob(
      "ok",
      `IFS= read -r req
       echo "chatter" ; echo "working" >&2
       echo result > out/result.txt
       echo '{"output":"result.txt"}'
       echo`,
    );
    const { answer, work } = await run(job);
    assert.deepEqual(answer, { kind: "output", output: path.join(work.outputDir, "result.txt"), stderrTail: "working\n" });
  });

  it("accepts an absolute output path inside the work dir", async () => {
    const job = await shJob("abs", `echo x > "$PWD/top.txt"; echo "{\\"output\\":\\"$PWD/top.txt\\"}"`);
    const { answer, work } = await run(job);
    assert.equal(output(answer), path.join(work.path, "top.txt"));
  });

  it("writes the request as one JSON line, keys in a fixed order, and runs in the work dir", async () => {
    const job = await shJob("echo-req", `cat > out/req.json; pwd > out/pwd.txt; echo '{"output":"req.json"}'`);
    const { answer, work } = await run(job, { input: "/x/in", params: { a: 1 } });
    const text = await fs.readFile(output(answer), "utf8");
    assert.equal(text, requestLine({ mode: "simple", input: "/x/in", outputDir: work.outputDir, params: { a: 1 }, task: TASK }));
    assert.deepEqual(Object.keys(JSON.parse(text) as object), ["mode", "input", "outputDir", "params", "task"]);
    assert.equal((await fs.readFile(path.join(work.outputDir, "pwd.txt"), "utf8")).trim(), await fs.realpath(work.path));
    assert.deepEqual(
      Object.keys(JSON.parse(requestLine({ mode: "merge", inputs: [], outputDir: "o", params: {}, task: TASK })) as object),
      ["mode", "inputs", "outputDir", "params", "task"],
    );
  });

  it("passes the job's env and what passEnv names, none of the rest of process.env; HOME and TMPDIR are the work dir", async () => {
    process.env.DOCQ_TEST_INHERITED = "inherited";
    process.env.DOCQ_TEST_SECRET = "secret";
    const body = `echo "$DOCQ_TEST_INHERITED $JOB_VAR \${DOCQ_TEST_SECRET:-none} $HOME $TMPDIR $PWD" > out/env.txt; echo '{"output":"env.txt"}'`;
    const job = await shJob("env", body, { env: { JOB_VAR: "mine" }, passEnv: ["DOCQ_TEST_INHERITED"] });
    const { answer } = await run(job);
    const [inherited, mine, secret, home, tmp, cwd] = (await fs.readFile(output(answer), "utf8")).trim().split(" ");
    assert.deepEqual([inherited, mine, secret], ["inherited", "mine", "none"]);
    assert.equal(home, cwd);
    assert.equal(tmp, cwd);
    delete process.env.DOCQ_TEST_SECRET;
  });

  it("returns children in split and child mode, with absolute paths and params", async () => {
    const job = await shJob(
      "splitter",
      `echo a > out/a; echo b > out/b
       echo '{"children":[{"input":"a","params":{"n":1}},{"input":"b"}]}'`,
      { split: true },
    );
    for (const mode of ["split", "child"] as const) {
      const { answer, work } = await run(job, { mode });
      assert.deepEqual(answer, {
        kind: "children",
        children: [{ input: path.join(work.outputDir, "a"), params: { n: 1 } }, { input: path.join(work.outputDir, "b") }],
        stderrTail: "",
      });
    }
  });

  it("refuses children in simple and merge mode", async () => {
    const job = await shJob("bad-split", `echo a > out/a; echo '{"children":[{"input":"a"}]}'`);
    const simple = await failure(run(job, { mode: "simple" }));
    assert.equal(simple.message, 'job "bad-split" answered children in simple mode: declare split: true in job.yaml');
    assert.equal(simple.exitCode, 0);
    const merge = await failure(run(job, { mode: "merge", inputs: [] }));
    assert.match(merge.message, /answered children in merge mode/);
  });

  it("calls onSpawn with the pid", async () => {
    const job = await shJob("pid", `echo $$ > out/pid; echo '{"output":"pid"}'`);
    let spawned = 0;
    const { answer } = await run(job, { onSpawn: (pid) => (spawned = pid) });
    assert.equal(Number(await fs.readFile(output(answer), "utf8")), spawned);
  });

  it("does not wait for a background process the script left behind, and kills it", async () => {
    const job = await shJob("leaves", `sleep 30 & echo $! > out/bg.pid; echo '{"output":"bg.pid"}'`);
    const started = Date.now();
    const { answer } = await run(job);
    assert.ok(Date.now() - started < 5000);
    const bg = await readPid(output(answer));
    assert.ok(await waitDead(bg), "the left-over process is killed");
  });
});

describe("runJob: failures", () => {
  it("fails on a non-zero exit, with the last stderr line in the message and the tail kept", async () => {
    const job = await shJob("exit3", `echo first >&2; echo "second problem" >&2; echo '{"output":"x"}'; exit 3`);
    const err = await failure(run(job));
    assert.equal(err.message, 'job "exit3" exited with code 3: second problem');
    assert.equal(err.exitCode, 3);
    assert.equal(err.timedOut, false);
    assert.equal(err.canceled, false);
    assert.equal(err.stderrTail, "first\nsecond problem\n");
  });

  it("keeps only the last ~4 KB of a long stderr", async () => {
    const job = await shJob(
      "chatty",
      `i=0; while [ $i -lt 3000 ]; do echo "line $i of noise" >&2; i=$((i+1)); done; echo "the end" >&2; exit 1`,
    );
    const err = await failure(run(job));
    assert.ok(err.stderrTail.length <= 4096, `tail is ${err.stderrTail.length} chars`);
    assert.ok(err.stderrTail.endsWith("line 2999 of noise\nthe end\n"));
    assert.match(err.message, /: the end$/);
  });

  it("reports a signal death", async () => {
    const job = await shJob("selfkill", `kill -TERM $$`);
    const err = await failure(run(job));
    assert.match(err.message, /job "selfkill" was killed by SIGTERM/);
    assert.equal(err.exitCode, null);
  });

  it("reports a command that cannot start", async () => {
    const job = await shJob("missing", "", { command: path.join(scriptsDir, "does-not-exist"), args: [] });
    const err = await failure(run(job));
    assert.match(err.message, /job "missing" could not start: .*ENOENT/);
  });

  const badAnswers: Array<[string, string, RegExp]> = [
    ["no stdout", ``, /printed no valid answer on stdout: stdout is empty/],
    ["non-JSON", `echo '{"output":"x"}'; echo 'done!'`, /printed no valid answer on stdout: last line is not JSON: done!/],
    ["a wrong shape", `echo '{"output":42}'`, /printed no valid answer on stdout: output: /],
    ["both output and children", `echo '{"output":"a","children":[{"input":"a"}]}'`, /exactly one of output or children/],
    ["neither", `echo '{"result":"a"}'`, /exactly one of output or children/],
    ["empty children", `echo '{"children":[]}'`, /children: is empty/],
    ["a missing output file", `echo '{"output":"nope.txt"}'`, /answered output "nope.txt": no such file/],
    ["an output that is a folder", `mkdir out/d; echo '{"output":"d"}'`, /answered output "d": not a file/],
    ["an output outside the work dir", `echo '{"output":"/etc/passwd"}'`, /answered output "\/etc\/passwd": path escapes the work dir/],
    ["a relative escape", `echo '{"output":"../../../../etc/passwd"}'`, /path escapes the work dir/],
    [
      "a symlink escape",
      `ln -s /etc/passwd out/link; echo '{"output":"link"}'`,
      /answered output "link": is a symbolic link: docq stores only a regular file, opened without following links/,
    ],
    [
      "a symlink to a file inside",
      `echo x > out/a; ln -s a out/link; echo '{"output":"link"}'`,
      /answered output "link": is a symbolic link/,
    ],
    [
      "a folder that is a link to one outside",
      `ln -s /etc out/sub; echo '{"output":"sub/hostname"}'`,
      /answered output "sub\/hostname": "out\/sub" is a symbolic link: docq follows no link in an answered path/,
    ],
    ["a path through a file", `echo x > out/f; echo '{"output":"f/g"}'`, /answered output "f\/g": "out\/f" is not a folder/],
    ["a FIFO (without waiting for a writer)", `mkfifo out/fifo; echo '{"output":"fifo"}'`, /answered output "fifo": not a file/],
    [
      "a hard link to a file outside the work dir",
      `ln "$OUTSIDE_FILE" out/alias; echo '{"output":"alias"}'`,
      /answered output "alias": has 2 hard links: docq stores only a file with one link/,
    ],
    [
      "a child input that is a hard link",
      `echo a > out/a; ln out/a out/b; echo '{"children":[{"input":"b"}]}'`,
      /answered child input "b": has 2 hard links/,
    ],
    [
      "a child input outside",
      `echo '{"children":[{"input":"/etc/hostname"}]}'`,
      /answered child input "\/etc\/hostname": path escapes the work dir/,
    ],
  ];
  for (const [what, body, message] of badAnswers) {
    it(`fails on ${what}`, async () => {
      // A file outside the work dir on the same filesystem (the temp root), for the hard link case.
      const outside = path.join(scriptsDir, "outside.txt");
      await fs.writeFile(outside, "outside the work dir\n");
      const job = await shJob("bad", body, { split: true, env: { OUTSIDE_FILE: outside } });
      const err = await failure(run(job, { mode: "split" }));
      assert.match(err.message, message);
      assert.equal(err.exitCode, 0);
    });
  }
});

describe("runJob: the script's own failure and its progress", () => {
  it('an answer {"error", "retry": false} fails the run as not retryable, whatever the exit code', async () => {
    for (const code of [0, 1]) {
      const job = await shJob("broken", `echo 'page 1 unreadable' >&2; echo '{"error":"not a PDF","retry":false}'; exit ${code}`);
      const err = await failure(run(job));
      assert.equal(err.message, 'job "broken" failed: not a PDF (the script asked for no retry)');
      assert.equal(err.retryable, false);
      assert.equal(err.exitCode, code);
      assert.equal(err.stderrTail, "page 1 unreadable\n");
    }
  });

  it('an answer {"error"} alone fails the run as retryable, with the script\'s reason', async () => {
    const job = await shJob("flaky", `echo '{"error":"the OCR server is busy"}'; exit 0`);
    const err = await failure(run(job));
    assert.equal(err.message, 'job "flaky" failed: the OCR server is busy');
    assert.equal(err.retryable, true);
  });

  it("a malformed error answer is no valid answer (retryable)", async () => {
    for (const [body, why] of [
      [`echo '{"error":3}'`, /printed no valid answer on stdout: error: must be a string/],
      [`echo '{"error":"x","retry":"no"}'`, /printed no valid answer on stdout: retry: must be true or false/],
    ] as const) {
      const err = await failure(run(await shJob("malformed", body)));
      assert.match(err.message, why);
      assert.equal(err.retryable, true);
    }
  });

  it("a run docq stopped is not taken for the script's answer: a timeout says timed out, even after an error answer", async () => {
    const job = await shJob("late", `echo '{"error":"x","retry":false}'; sleep 5`, { timeoutMs: 300 });
    const err = await failure(run(job));
    assert.match(err.message, /timed out after 300 ms/);
    assert.equal(err.retryable, true);
  });

  it("a run's own time limit (a workflow step's timeoutMs) replaces its job's", async () => {
    const job = await shJob("step-timeout", `sleep 5`, { timeoutMs: 60_000 });
    const err = await failure(run(job, { timeoutMs: 300 }));
    assert.match(err.message, /timed out after 300 ms/);
  });

  it("hands each progress line to onProgress while the script runs (clamped, message cut), and the last line still answers", async () => {
    const go = path.join(scriptsDir, `go-${process.pid}-${Date.now()}`);
    const long = "m".repeat(600);
    const job = await shJob(
      "progress",
      `echo '{"progress":0.25,"message":"page 1 of 4"}'
       # Waits until the test saw the first line: progress arrives while the script runs, not at its end.
       i=0; while [ ! -e "$GO_FILE" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
       echo 'chatter {"progress": "not a number"}'
       echo '{"progress":1.7,"message":"${long}"}'
       echo '{"progress":-1}'
       echo x > out/r.txt
       echo '{"output":"r.txt"}'`,
      { env: { GO_FILE: go } },
    );
    const seen: ProgressReport[] = [];
    const { answer } = await run(job, {
      onProgress: (report) => {
        seen.push(report);
        if (seen.length === 1) void fs.writeFile(go, "");
      },
    });
    assert.equal(path.basename(output(answer)), "r.txt");
    assert.deepEqual(seen, [
      { progress: 0.25, message: "page 1 of 4" },
      { progress: 1, message: "m".repeat(500) },
      { progress: 0, message: null },
    ]);
    await fs.rm(go, { force: true });
  });

  it("a progress line as the last line is no answer", async () => {
    const err = await failure(run(await shJob("noanswer", `echo '{"progress":0.5}'`)));
    assert.match(err.message, /printed no valid answer on stdout: .*exactly one of output or children/);
  });
});

describe("runJob: timeout and cancel kill the whole process group", () => {
  const body = `sleep 30 & echo $! > "$PWD/grandchild.pid"; echo started >&2; sleep 30; echo '{"output":"x"}'`;

  async function grandchildPid(work: string): Promise<number> {
    return await readPid(path.join(work, "grandchild.pid"));
  }

  it("kills the script and its grandchild on timeout", async () => {
    const job = await shJob("sleeper", body, { timeoutMs: 300 });
    const work = await workDir();
    let pid = 0;
    const started = Date.now();
    const err = await failure(
      runJob(
        job,
        { mode: "simple", outputDir: work.outputDir, params: {}, task: TASK },
        { workDir: work.path, onSpawn: (p) => (pid = p), ...(launcher === undefined ? {} : { launcher }) },
      ),
    );
    assert.ok(Date.now() - started < 5000);
    assert.equal(err.message, 'job "sleeper" timed out after 300 ms');
    assert.equal(err.timedOut, true);
    assert.equal(err.canceled, false);
    assert.equal(err.exitCode, null);
    assert.equal(err.stderrTail, "started\n");
    assert.ok(await waitDead(pid), "the script is dead");
    assert.ok(await waitDead(await grandchildPid(work.path)), "the grandchild is dead");
  });

  it("kills the script and its grandchild on cancel", async () => {
    const job = await shJob("sleeper", body);
    const work = await workDir();
    const controller = new AbortController();
    let pid = 0;
    const pending = runJob(
      job,
      { mode: "simple", outputDir: work.outputDir, params: {}, task: TASK },
      { workDir: work.path, signal: controller.signal, onSpawn: (p) => (pid = p), ...(launcher === undefined ? {} : { launcher }) },
    );
    setTimeout(() => controller.abort(), 200);
    const err = await failure(pending);
    assert.equal(err.message, 'job "sleeper" was canceled');
    assert.equal(err.canceled, true);
    assert.equal(err.timedOut, false);
    assert.ok(await waitDead(pid));
    assert.ok(await waitDead(await grandchildPid(work.path)));
  });

  it("does not start a job whose signal is already aborted", async () => {
    const job = await shJob("never", `echo '{"output":"x"}'`);
    let spawned = false;
    const err = await failure(run(job, { signal: AbortSignal.abort(), onSpawn: () => (spawned = true) }));
    assert.equal(err.canceled, true);
    assert.equal(spawned, false);
  });
});

/** SIGKILLs the group `-pid` of a child this test started and has not reaped yet (so the id is still its own). */
function killGroupOf(child: { pid?: number | undefined; exitCode: number | null; signalCode: NodeJS.Signals | null }): void {
  if (child.pid === undefined || child.pid <= 0 || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** Kills the group of a child this test started (see killGroupOf) and waits for the child to exit. */
async function stopGroupOf(child: ReturnType<typeof spawn>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  killGroupOf(child);
  await exited;
}

/**
 * Test cleanup, whatever failed: SIGKILLs `pid` if it still runs `sleep 1000` (a leftover of a
 * test script; a pid that was reused meanwhile by another process is left alone).
 */
function killLeftover(pid: number | undefined): void {
  if (pid === undefined || !(pid > 0)) return;
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("sleep\u00001000")) return;
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

describe("runJob: processes that left the script's process group", () => {
  // The leftover calls setsid (a new session and process group), writes its pid, then sleeps; the
  // script waits for the pid before it answers. `keepStdout` leaves it holding the script's stdout.
  const setsidJob = (keepStdout: boolean): string =>
    `setsid sh -c 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 1000' sh "$PWD/leftover.pid" ${keepStdout ? "" : "> /dev/null 2>&1 < /dev/null"} &
     while [ ! -s "$PWD/leftover.pid" ]; do sleep 0.01; done
     echo done > out/result; echo '{"output":"result"}'`;

  for (const keepStdout of [false, true]) {
    it(`kills a setsid child before the run ends${keepStdout ? " (it held stdout open)" : ""}`, async () => {
      const job = await shJob("setsid-leftover", setsidJob(keepStdout));
      const work = await workDir();
      let leftover: number | undefined;
      try {
        const answer = await runJob(
          job,
          { mode: "simple", outputDir: work.outputDir, params: {}, task: TASK },
          { workDir: work.path, ...(launcher === undefined ? {} : { launcher }) },
        );
        assert.equal(answer.kind, "output");
        leftover = await readPid(path.join(work.path, "leftover.pid"));
        assert.equal(isAlive(leftover), false, `the setsid child ${leftover} is gone once the run is over`);
      } finally {
        killLeftover(leftover);
      }
    });
  }

  it("kills a setsid child on timeout too", async () => {
    const job = await shJob(
      "setsid-timeout",
      `setsid sh -c 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; exec sleep 1000' sh "$PWD/leftover.pid" > /dev/null 2>&1 &
       sleep 1000`,
      { timeoutMs: 300 },
    );
    const work = await workDir();
    let leftover: number | undefined;
    try {
      const err = await failure(
        runJob(
          job,
          { mode: "simple", outputDir: work.outputDir, params: {}, task: TASK },
          { workDir: work.path, ...(launcher === undefined ? {} : { launcher }) },
        ),
      );
      assert.equal(err.timedOut, true);
      leftover = await readPid(path.join(work.path, "leftover.pid"));
      assert.equal(isAlive(leftover), false, `the setsid child ${leftover} is gone once the run is over`);
    } finally {
      killLeftover(leftover);
    }
  });
});

describe("openInWorkDir: a folder swapped for a link while docq opens the answer", () => {
  it("never opens the file outside, however the swaps fall", async () => {
    const work = await workDir();
    const outside = await fs.mkdtemp(path.join(os.tmpdir(), "docq-outside-test-"));
    // Both files are written before the racer starts: an attempt must never meet one half written.
    await fs.mkdir(path.join(work.outputDir, "sub"));
    await fs.writeFile(path.join(work.outputDir, "sub", "f"), "inside\n");
    await fs.writeFile(path.join(outside, "f"), "OUTSIDE");
    // A real process keeps swapping out/sub between a folder and a link to `outside`.
    const racer = spawn(
      "/bin/sh",
      [
        "-c",
        `cd "$1" || exit 1
         while mv out/sub out/held && ln -s "$2" out/sub && rm out/sub && mv out/held out/sub; do :; done`,
        "racer",
        work.path,
        outside,
      ],
      { detached: true, stdio: "ignore" },
    );
    try {
      const file = path.join(work.outputDir, "sub", "f");
      const outcomes = new Map<string, number>();
      const buffer = Buffer.alloc(64);
      for (let i = 0; i < 3000; i++) {
        const opened = openInWorkDir(file, work.path);
        let outcome: string;
        if (typeof opened === "string") {
          outcome = opened;
        } else {
          const n = readSync(opened.fd, buffer, 0, buffer.length, 0);
          closeSync(opened.fd);
          outcome = buffer.toString("utf8", 0, n);
          assert.equal(outcome, "inside\n", `attempt ${i} opened the file outside the work dir`);
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
        if (i % 100 === 99) await new Promise((r) => setImmediate(r));
      }
      // What each attempt met depends on the timing: only shown, not asserted.
      console.log(`# outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    } finally {
      await stopGroupOf(racer);
      await fs.rm(outside, { recursive: true, force: true });
    }
  });
});

describe("removeTree", () => {
  it("removes a work dir with links in it, never what they lead to, even while a process swaps a folder for a link", async () => {
    const outside = await fs.mkdtemp(path.join(os.tmpdir(), "docq-outside-test-"));
    const names = Array.from({ length: 20 }, (_, i) => `f${i}`);
    for (const name of names) await fs.writeFile(path.join(outside, name), "OUTSIDE");
    const racers: ReturnType<typeof spawn>[] = [];
    try {
      for (let round = 0; round < 20; round++) {
        const work = await createWorkDir();
        await fs.mkdir(path.join(work.outputDir, "sub"));
        for (const name of names) await fs.writeFile(path.join(work.outputDir, "sub", name), "inside");
        await fs.symlink(outside, path.join(work.outputDir, "link"));
        await fs.symlink(path.join(outside, "f0"), path.join(work.path, "file-link"));
        // Swaps out/sub between the folder and a link to `outside` until the work dir is gone.
        const racer = spawn(
          "/bin/sh",
          [
            "-c",
            `cd "$1" || exit 1; while mv sub held && ln -s "$2" sub && rm sub && mv held sub; do :; done`,
            "racer",
            work.outputDir,
            outside,
          ],
          {
            detached: true,
            stdio: "ignore",
          },
        );
        racers.push(racer);
        await removeTree(work.path).catch((err: unknown) => {
          // A pass may keep meeting the swapper's latest change (ENOTEMPTY): not what is tested here.
          if ((err as NodeJS.ErrnoException).code !== "ENOTEMPTY") throw err;
        });
        await stopGroupOf(racer);
        await fs.rm(work.path, { recursive: true, force: true });
        assert.deepEqual((await fs.readdir(outside)).sort(), [...names].sort(), `round ${round}: every file outside is still there`);
      }
    } finally {
      for (const racer of racers) await stopGroupOf(racer);
      await fs.rm(outside, { recursive: true, force: true });
    }
  });
});

describe("sweepLeftovers", () => {
  it("removes the work dirs and kills the marked processes of docq processes that are gone, and nothing else", async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), "docq-sweep-test-"));
    // A gone owner: a process that ran and exited (its pid with any start time), and this pid with
    // a start time it never had (a pid reused by another process).
    const exited = spawn("/bin/true");
    await new Promise((resolve) => exited.once("exit", resolve));
    const dead = [`${exited.pid}.1`, `${process.pid}.1`];
    const spawned: number[] = [];
    const sleeper = (runId: string): number => {
      const child = spawn("sleep", ["1000"], { detached: true, stdio: "ignore", env: { ...process.env, [RUN_ID_VAR]: runId } });
      assert.ok(child.pid !== undefined);
      spawned.push(child.pid);
      return child.pid;
    };
    try {
      const names = {
        deadJob: `docq-job-${dead[0]}-aaaaaa`,
        deadWarm: `docq-warm-${dead[1]}-pages-warm-bbbbbb`,
        mine: `docq-job-${OWNER}-cccccc`,
        oldUnowned: "docq-job-dddddd",
        newUnowned: "docq-warm-noop-eeeeee",
        other: "something-else",
      };
      for (const name of Object.values(names)) await fs.mkdir(path.join(root, name, "out"), { recursive: true });
      await fs.writeFile(path.join(root, names.deadJob, "out", "result"), "x");
      const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
      await fs.utimes(path.join(root, names.oldUnowned), twoDaysAgo, twoDaysAgo);
      const orphan = sleeper(`${dead[0]}.7`);
      const mineRunning = sleeper(`${OWNER}.999999`);

      const swept = await sweepLeftovers(root);
      assert.deepEqual(swept.dirs.sort(), [names.deadJob, names.deadWarm, names.oldUnowned].sort());
      assert.deepEqual((await fs.readdir(root)).sort(), [names.mine, names.newUnowned, names.other].sort());
      assert.ok(swept.processes >= 1);
      assert.ok(await waitDead(orphan), "the process of a gone owner's run is killed");
      assert.equal(isAlive(mineRunning), true, "a process of this process's runs is left alone");
    } finally {
      for (const pid of spawned) killLeftover(pid);
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});

describe("runJob: the example jobs in scripts-job/", () => {
  const registry = new JobRegistry({ dir: EXAMPLES, defaultTimeoutMs: 10_000 });
  let sample: string;
  before(async () => {
    sample = path.join(scriptsDir, "sample.txt");
    // A blank line, runs of spaces and tabs, a multi-byte char, and a last line without newline.
    await fs.writeFile(sample, "first line here\n\n  indented\twith tab  \nünïcode words\nno newline at the end");
  });

  it("wordcount outputs exactly wc's counts as JSON", async () => {
    const { answer } = await run(await registry.resolve("wordcount"), { input: sample });
    const [lines, words, bytes] = execFileSync("sh", ["-c", 'wc < "$1"', "sh", sample], { encoding: "utf8" })
      .trim()
      .split(/\s+/)
      .map(Number);
    assert.equal(await fs.readFile(output(answer), "utf8"), JSON.stringify({ lines, words, bytes }));
    assert.equal(lines, 4);
  });

  it("sleep waits and outputs its input unchanged", async () => {
    const job = await registry.resolve("sleep");
    const params = registry.validateParams(job, { ms: 150 });
    const started = Date.now();
    const { answer } = await run(job, { input: sample, params });
    assert.ok(Date.now() - started >= 150);
    assert.equal(await fs.readFile(output(answer), "utf8"), await fs.readFile(sample, "utf8"));
  });

  it("fail fails with its message", async () => {
    const err = await failure(run(await registry.resolve("fail"), { input: sample }));
    assert.equal(err.message, 'job "fail" exited with code 1: fail: this job always fails (as designed, for tests)');
    assert.equal(err.exitCode, 1);
  });

  it("noop outputs an empty file", async () => {
    const { answer } = await run(await registry.resolve("noop"), { input: sample });
    assert.equal((await fs.stat(output(answer))).size, 0);
  });

  it("pages splits, upper-cases each child and merges in order", async () => {
    const job = await registry.resolve("pages");
    const expected = "FIRST LINE HERE\n  INDENTED\tWITH TAB  \nüNïCODE WORDS\nNO NEWLINE AT THE END\n";

    const { answer: split } = await run(job, { mode: "split", input: sample });
    assert.equal(split.kind, "children");
    assert.ok(split.kind === "children");
    const parts = await Promise.all(split.children.map((c) => fs.readFile(c.input, "utf8")));
    assert.deepEqual(parts, ["first line here\n", "  indented\twith tab  \n", "ünïcode words\n", "no newline at the end\n"]);

    const childOutputs: string[] = [];
    for (const child of split.children) {
      const { answer } = await run(job, { mode: "child", input: child.input });
      childOutputs.push(output(answer));
    }
    assert.equal(await fs.readFile(childOutputs[0] ?? "", "utf8"), "FIRST LINE HERE\n");

    const { answer: merged } = await run(job, { mode: "merge", inputs: childOutputs });
    const result = await fs.readFile(output(merged), "utf8");
    // mawk upper-cases ASCII only; compare with what the same awk gives for the whole text.
    const awkUpper = execFileSync("awk", ['$0 != "" { print toupper($0) }', sample], { encoding: "utf8" });
    assert.equal(result, awkUpper);
    assert.equal(result.replace(/[üï]/gi, "?"), expected.replace(/[üï]/gi, "?"));

    const { answer: simple } = await run(job, { mode: "simple", input: sample });
    assert.equal(await fs.readFile(output(simple), "utf8"), result);
  });

  it("pages answers an empty output for an input without lines, and merges nothing to an empty file", async () => {
    const job = await registry.resolve("pages");
    const blank = path.join(scriptsDir, "blank.txt");
    await fs.writeFile(blank, "\n\n");
    const { answer } = await run(job, { mode: "split", input: blank });
    assert.equal(await fs.readFile(output(answer), "utf8"), "");
    const { answer: merged } = await run(job, { mode: "merge", inputs: [] });
    assert.equal(await fs.readFile(output(merged), "utf8"), "");
  });
});

describe("placeAnswer: the answered output is opened once", () => {
  const request = (work: WorkDir): JobRequest => ({
    mode: "simple",
    outputDir: work.outputDir,
    params: {},
    task: { id: "t-1", name: "", user: "u", priority: 50, parentId: null, depth: 0 },
  });
  const place = (work: WorkDir, output: string): Promise<JobAnswer> =>
    placeAnswer({ output }, request(work), { workDir: work.path, stderrTail: "", fail: (m) => new Error(m) });
  const openFds = async (): Promise<number> => (await fs.readdir("/proc/self/fd")).length;

  it("hands the worker the file it checked, even if the name is swapped for a link afterwards", async () => {
    const work = await workDir();
    const outside = await fs.mkdtemp(path.join(os.tmpdir(), "docq-outside-test-"));
    try {
      await fs.writeFile(path.join(outside, "secret"), "OUTSIDE");
      await fs.writeFile(path.join(work.outputDir, "o"), "checked");
      const answer = await place(work, "o");
      assert.equal(answer.kind, "output");
      const file = answer.kind === "output" ? answer.output : "";
      await fs.rm(file);
      await fs.symlink(path.join(outside, "secret"), file);
      const opened = takeAnswered(file, work.path);
      assert.ok(opened !== undefined, "placeAnswer kept what it opened");
      try {
        const buffer = Buffer.alloc(64);
        assert.equal(buffer.toString("utf8", 0, readSync(opened.fd, buffer, 0, 64, 0)), "checked");
      } finally {
        opened.closeDir();
        closeSync(opened.fd);
      }
      assert.equal(takeAnswered(file, work.path), undefined, "taken once");
    } finally {
      await fs.rm(outside, { recursive: true, force: true });
    }
  });

  it("closes what nobody took when its work dir is emptied or removed", { skip: !existsSync("/proc/self/fd") }, async () => {
    const atStart = await openFds();
    const work = await workDir();
    const before = await openFds();
    assert.equal(before, atStart + 1, "the work dir's folder is held open while it lives");
    await fs.writeFile(path.join(work.outputDir, "o"), "x");
    const answer = await place(work, "o");
    assert.ok((await openFds()) > before, "the answer is held open");
    await work.empty(answer.kind === "output" ? [answer.output] : []);
    assert.equal(await openFds(), before);
    assert.equal(takeAnswered(path.join(work.outputDir, "o"), work.path), undefined);
    await fs.writeFile(path.join(work.outputDir, "p"), "y");
    await place(work, "p");
    await work.remove();
    assert.equal(await openFds(), atStart, "nothing is left open once the dir is removed, its folder included");
  });
});
