import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { afterEach, beforeEach, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { JobRegistry } from "../jobs/job-registry.js";
import { blobKeys, newTaskId } from "../queue/new-task.js";
import type { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import type { WorkerQueue } from "../queue/queue-client.js";
import type { TaskQueue } from "../queue/task-queue.js";
import type { Task } from "../model/task-model.js";
import { WorkerPool, type WorkerPoolOptions } from "./worker-pool.js";
import { isAlive, readPid } from "../testing/processes.js";
import { waitUntil } from "../testing/wait-until.js";
import { directWorkerQueue, sqliteQueue, type WorkerQueueCalls } from "../testing/queue-harness.js";

/*
 * Warm jobs through the worker pool and a real queue (SQLite, fs blobs): the same retry, cancel,
 * lease and shutdown behaviour as one-shot jobs, with one long-lived process per slot.
 */

const EXAMPLES = fileURLToPath(new URL("../../scripts-job/", import.meta.url));
const JS_HELPER = path.join(EXAMPLES, "lib", "docq-warm.mjs");
const OWNER = "worker@warm-test";
/** The Python jobs need python3; as in job-registry.test.ts, their tests are skipped without it. */
const NO_PYTHON = (() => {
  try {
    execFileSync("python3", ["-c", "pass"]);
    return false;
  } catch {
    return "no python3";
  }
})();
const PROCESSED_BY = { site: "test", node: "n1" };

interface Harness {
  dir: string;
  jobs: string;
  marks: string;
  store: SqliteTaskStore;
  queue: TaskQueue;
  blobs: FsBlobStore;
  client: WorkerQueue;
  calls: WorkerQueueCalls;
  pools: WorkerPool[];
}

let h: Harness;

beforeEach(async () => {
  const dir = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-pool-warm-test-")));
  const jobs = path.join(dir, "jobs");
  const marks = path.join(dir, "marks");
  await Promise.all([fs.mkdir(jobs), fs.mkdir(marks), fs.mkdir(path.join(dir, "work"))]);
  const { store, queue } = sqliteQueue(dir);
  const blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  const calls: WorkerQueueCalls = { succeed: [], fail: [], pulls: [], heartbeats: [] };
  const client = directWorkerQueue(queue, calls);
  h = { dir, jobs, marks, store, queue, blobs, client, calls, pools: [] };
});

afterEach(async () => {
  await Promise.all(h.pools.map((p) => p.stop()));
  h.queue.stop();
  h.queue.removeAllListeners();
  await h.store.close();
  await fs.rm(h.dir, { recursive: true, force: true });
});

function makePool(overrides: Partial<WorkerPoolOptions> = {}, jobsDir = h.jobs): WorkerPool {
  const pool = new WorkerPool({
    owner: OWNER,
    processedBy: PROCESSED_BY,
    slots: 2,
    batchSize: 0,
    heartbeatMs: 60_000,
    pollMs: 60_000,
    client: h.client,
    blobs: h.blobs,
    registry: new JobRegistry({ dir: jobsDir, defaultTimeoutMs: 20_000 }),
    workRoot: path.join(h.dir, "work"),
    log: { info: () => undefined, warn: () => undefined },
    ...overrides,
  });
  h.queue.on("task:queued", () => pool.wake());
  h.pools.push(pool);
  return pool;
}

/**
 * A warm JS job (folder with job.yaml) that outputs {"pid", "input"}: the pid of the process that
 * ran the task. A task whose input starts with "hang" records its pid in marks/<taskId>.pid and
 * hangs, unless marks/<taskId>.release exists. Each process start appends its pid to
 * marks/<name>.starts.
 */
async function pidJob(name: string, yaml = ""): Promise<string> {
  const folder = path.join(h.jobs, name);
  await fs.mkdir(folder);
  await fs.writeFile(path.join(folder, "job.yaml"), `warm: true\nentry: main.mjs\n${yaml}`);
  await fs.writeFile(
    path.join(folder, "main.mjs"),
    `import { appendFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { serve } from ${JSON.stringify(JS_HELPER)};
const marks = ${JSON.stringify(h.marks)};
appendFileSync(marks + "/${name}.starts", process.pid + "\\n");
serve(async (req) => {
  const id = req.task.id;
  if (readFileSync(req.input, "utf8").startsWith("hang") && !existsSync(marks + "/" + id + ".release")) {
    writeFileSync(marks + "/" + id + ".pid", String(process.pid));
    await new Promise(() => undefined);
  }
  writeFileSync(req.outputDir + "/out.json", JSON.stringify({ pid: process.pid, input: readFileSync(req.input, "utf8") }));
  return "out.json";
});
`,
  );
  return name;
}

async function submit(job: string, content: string, overrides: { maxTries?: number; small?: boolean } = {}): Promise<Task> {
  const id = newTaskId("test");
  const input = blobKeys.input(id);
  // A small document as the submit route stores it (a row the store holds at hand), or a file.
  if (overrides.small === true) await h.blobs.putNew(input, Buffer.from(content));
  else await h.blobs.put(input, Readable.from([Buffer.from(content)]));
  return h.queue.submit({
    id,
    site: "test",
    user: "u",
    name: "n",
    job,
    params: {},
    priority: 50,
    maxTries: overrides.maxTries ?? 3,
    input,
  });
}

async function task(id: string): Promise<Task> {
  const t = await h.store.get(id);
  assert.ok(t, `task ${id} exists`);
  return t;
}

const waitStatus = async (id: string, status: Task["status"], timeoutMs = 10_000): Promise<Task> => {
  await waitUntil(`task ${id} to be ${status}`, async () => (await task(id)).status === status, timeoutMs);
  return task(id);
};

const exists = (file: string): Promise<boolean> =>
  fs.access(file).then(
    () => true,
    () => false,
  );

async function outputOf(t: Task): Promise<{ pid: number; input: string }> {
  assert.ok(t.output !== null, `task ${t.id} has an output`);
  return JSON.parse(await text(await h.blobs.get(t.output))) as { pid: number; input: string };
}

async function startsOf(name: string): Promise<number[]> {
  const content = await fs.readFile(path.join(h.marks, `${name}.starts`), "utf8").catch(() => "");
  return content
    .split("\n")
    .filter((l) => l !== "")
    .map(Number);
}

/** Makes the task hang in its warm process; answers that process's pid once it holds the task. */
async function hangingPid(id: string): Promise<number> {
  const file = path.join(h.marks, `${id}.pid`);
  await waitUntil(`task ${id} to reach its warm process`, () => exists(file));
  return await readPid(file);
}

describe("WorkerPool with warm jobs", () => {
  /** Runs `count` tasks of `job` through a started 2-slot pool, checks each was output once and right; answers the pool and the pids that ran them. */
  async function runEachOnce(job: string, count: number): Promise<{ pool: WorkerPool; pids: Set<number> }> {
    const pool = makePool({ slots: 2 });
    let outputs = 0;
    h.queue.on("task:done", (t) => void (t.status === "output" && outputs++));
    pool.start();
    const tasks = await Promise.all(Array.from({ length: count }, (_, i) => submit(job, `document ${i}`)));
    await waitUntil(`${count} tasks to be output`, () => outputs === count, 120_000);
    const pids = new Set<number>();
    for (const [i, t] of tasks.entries()) {
      const done = await task(t.id);
      assert.equal(done.tries, 1);
      const out = await outputOf(done);
      assert.equal(out.input, `document ${i}`);
      pids.add(out.pid);
    }
    return { pool, pids };
  }

  it("answers 1,000 tasks with one process per slot", async () => {
    const job = await pidJob("pids");
    const { pool, pids } = await runEachOnce(job, 1000);
    assert.equal(pids.size, 2, `tasks ran in ${pids.size} processes`);
    assert.deepEqual([...pids].sort(), (await startsOf(job)).sort(), "the only processes ever started");
    assert.deepEqual(
      pool
        .warmProcesses()
        .map((p) => p.pid)
        .sort(),
      [...pids].sort(),
    );
    assert.equal(h.calls.fail.length, 0);
    assert.equal(h.calls.succeed.length, 1000);
    const kept = await fs.readdir(path.join(h.dir, "work")).then((names) => names.filter((n) => n.startsWith("docq-job-")));
    assert.ok(kept.length <= 4, `at most 2 × slots work dirs are kept, not one per task (${kept.length})`);
    for (const name of kept) assert.deepEqual(await fs.readdir(path.join(h.dir, "work", name, "out")), [], `${name} is emptied`);
  });

  it("with concurrency 2, the two slots share one process: 500 tasks, each output once", async () => {
    const job = await pidJob("shared", "concurrency: 2\n");
    const { pids } = await runEachOnce(job, 500);
    assert.deepEqual([...pids], await startsOf(job), "one process, the only one ever started");
    assert.equal(h.calls.fail.length, 0);
    assert.equal(h.calls.succeed.length, 500);
  });

  it("a task that times out in a shared process fails by the retry rule; the task it shared the process with runs again, its try not counted", async () => {
    const job = await pidJob("shared-timeouts", "timeoutMs: 2000\nconcurrency: 2\n");
    makePool({ slots: 2 }).start();
    const stuck = await submit(job, "hang: stuck", { maxTries: 1 });
    const pid = await hangingPid(stuck.id);
    const bystander = await submit(job, "hang: bystander", { maxTries: 1 });
    assert.equal(await hangingPid(bystander.id), pid, "both tasks are held by one process");
    await fs.writeFile(path.join(h.marks, `${bystander.id}.release`), ""); // its next run answers
    const failed = await waitStatus(stuck.id, "error");
    assert.match(failed.error ?? "", /^job "shared-timeouts" timed out after 2000 ms$/);
    const done = await waitStatus(bystander.id, "output");
    assert.equal(done.tries, 1, "the bystander's killed run did not count");
    assert.notEqual((await outputOf(done)).pid, pid);
    assert.deepEqual(
      h.calls.fail.map((f) => f.claim.id),
      [stuck.id],
      "only the task that timed out failed",
    );
    assert.ok(!isAlive(pid));
  });

  it("a task that times out kills and restarts only its own process, and follows the retry rule", async () => {
    // 2 s, not less: the other slot's process is spawned and serves 5 tasks while this one hangs, and on a loaded 2-core CI machine a spawn alone has taken over 500 ms.
    const job = await pidJob("timeouts", "timeoutMs: 2000\n");
    makePool({ slots: 2 }).start();
    const stuck = await submit(job, "hang: stuck", { maxTries: 1 });
    const stuckPid = await hangingPid(stuck.id);
    // While it hangs, the other slot's process serves everything else.
    const before = await Promise.all(Array.from({ length: 5 }, (_, i) => submit(job, `before ${i}`)));
    const beforePids = new Set(await Promise.all(before.map(async (t) => (await outputOf(await waitStatus(t.id, "output"))).pid)));
    assert.equal(beforePids.size, 1);
    const [other] = [...beforePids];
    const failed = await waitStatus(stuck.id, "error");
    assert.match(failed.error ?? "", /^job "timeouts" timed out after 2000 ms$/);
    await waitUntil("the stuck process to be killed", () => !isAlive(stuckPid));
    assert.ok(other !== undefined && isAlive(other), "the other process is untouched");
    const after = await Promise.all(Array.from({ length: 20 }, (_, i) => submit(job, `after ${i}`)));
    const afterPids = new Set(await Promise.all(after.map(async (t) => (await outputOf(await waitStatus(t.id, "output"))).pid)));
    assert.ok(afterPids.has(other ?? 0) && !afterPids.has(stuckPid));
    assert.equal((await startsOf(job)).length, 3, "two processes, then one replacement");
  });

  it("a warm process killed with SIGKILL mid-task: the task is retried and completes once", async () => {
    const job = await pidJob("sigkill");
    const pool = makePool({ slots: 1 });
    pool.start();
    const t = await submit(job, "hang: survivor", { maxTries: 3 });
    const pid = await hangingPid(t.id);
    await fs.writeFile(path.join(h.marks, `${t.id}.release`), ""); // the retry runs normally
    process.kill(pid, "SIGKILL");
    const done = await waitStatus(t.id, "output");
    assert.equal(done.tries, 2);
    const out = await outputOf(done);
    assert.equal(out.input, "hang: survivor");
    assert.notEqual(out.pid, pid);
    assert.equal(h.calls.fail.length, 1);
    assert.match(h.calls.fail[0]?.error ?? "", new RegExp(`^job "sigkill" \\(warm process ${pid}\\) was killed by SIGKILL`));
    assert.equal(h.calls.fail[0]?.retryable, true);
    assert.deepEqual(
      h.calls.succeed.map((c) => [c.claim.tries, c.accepted]),
      [[2, true]],
      "completed once, by the retry",
    );
    assert.equal(await h.blobs.stat(blobKeys.output(t.id, 1)), null, "no output of the killed attempt");
    await waitUntil("the pool to be idle", () => pool.held === 0);
  });

  it("recycles a warm process after maxRequests tasks", async () => {
    const job = await pidJob("recycling", "maxRequests: 5\n");
    makePool({ slots: 1 }).start();
    const tasks: Task[] = [];
    for (let i = 0; i < 12; i++) tasks.push(await submit(job, `doc ${i}`));
    const pids: number[] = [];
    for (const t of tasks) pids.push((await outputOf(await waitStatus(t.id, "output"))).pid);
    const distinct = [...new Set(pids)];
    assert.equal(distinct.length, 3);
    assert.deepEqual(
      distinct.map((pid) => pids.filter((p) => p === pid).length),
      [5, 5, 2],
    );
    await waitUntil("the recycled processes to exit", () => distinct.slice(0, 2).every((pid) => !isAlive(pid)));
    assert.equal(h.calls.fail.length, 0);
  });

  it("cancel(id) kills the warm process of the task; nothing is reported and the next task gets a new process", async () => {
    const job = await pidJob("canceling");
    const pool = makePool({ slots: 1 });
    pool.start();
    const t = await submit(job, "hang: doomed");
    const pid = await hangingPid(t.id);
    await h.queue.cancel(t.id);
    assert.equal(pool.cancel(t.id), true);
    await waitUntil("the warm process to be killed", () => !isAlive(pid));
    await waitUntil("the slot to be freed", () => pool.held === 0);
    assert.equal((await task(t.id)).status, "canceled");
    assert.equal(h.calls.fail.length, 0);
    assert.equal(h.calls.succeed.length, 0);
    const next = await submit(job, "next");
    assert.notEqual((await outputOf(await waitStatus(next.id, "output"))).pid, pid);
  });

  it("stops the warm process of a task whose lease was lost", async () => {
    const job = await pidJob("lease");
    const pool = makePool({ slots: 1, heartbeatMs: 100 });
    pool.start();
    const t = await submit(job, "hang: doc");
    const pid = await hangingPid(t.id);
    await h.queue.cancel(t.id); // no pool.cancel(): only the heartbeat can tell
    await waitUntil("the heartbeat to stop the warm process", () => !isAlive(pid));
    assert.equal(h.calls.fail.length, 0);
  });

  it("a failing request (an error answer) goes through the retry rule with the stderr tail in the error", { skip: NO_PYTHON }, async () => {
    const folder = path.join(h.jobs, "flaky");
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, "job.yaml"), "warm: true\nentry: main.py\n");
    await fs.writeFile(
      path.join(folder, "main.py"),
      `import sys
sys.dont_write_bytecode = True
sys.path.insert(0, ${JSON.stringify(path.join(EXAMPLES, "lib"))})
from docq_warm import serve

def handle(req):
    print("reading page 3")
    raise ValueError("page 3 is not a page")

serve(handle)
`,
    );
    makePool().start();
    const t = await submit("flaky", "doc", { maxTries: 2 });
    const done = await waitStatus(t.id, "error");
    assert.equal(done.tries, 2);
    assert.match(
      done.error ?? "",
      /^job "flaky" failed: ValueError: page 3 is not a page\n--- stderr \(tail\) ---\nreading page 3\nTraceback \(most recent call last\):\n[\s\S]*ValueError: page 3 is not a page$/,
    );
    assert.deepEqual(
      h.calls.fail.map((f) => [f.claim.tries, f.retryable]),
      [
        [1, true],
        [2, true],
      ],
    );
  });

  it("stop() ends the warm processes, idle and busy; their leases lapse", async () => {
    const job = await pidJob("stopping");
    const pool = makePool({ slots: 2 });
    pool.start();
    const idle = await submit(job, "quick");
    const { pid: idlePid } = await outputOf(await waitStatus(idle.id, "output"));
    const busy = await submit(job, "hang: slow");
    const busyPid = await hangingPid(busy.id);
    await pool.stop();
    assert.deepEqual(pool.warmProcesses(), []);
    await waitUntil("every warm process to be gone", () => !isAlive(idlePid) && !isAlive(busyPid));
    assert.equal((await task(busy.id)).status, "work", "nothing reported: the lease lapses");
    assert.equal(h.calls.fail.length, 0);
  });

  it(
    "the example warm jobs give the results of their one-shot versions through the queue, split and merge included",
    { skip: NO_PYTHON },
    async () => {
      makePool({ slots: 2 }, EXAMPLES).start();
      const docs = ["first line\n\n  second\tline  \nünïcode\u00a0words\nno newline at the end", "\n\n", "one line only\n"];
      for (const doc of docs) {
        for (const [warm, oneShot] of [
          ["wordcount-warm", "wordcount"],
          ["pages-warm", "pages"],
          ["noop-warm", "noop"],
          ["noop-warm-files", "noop"],
        ] as const) {
          // Small documents as the submit route stores them: noop-warm's go inline.
          const [a, b] = [await submit(oneShot, doc, { small: true }), await submit(warm, doc, { small: true })];
          const [x, y] = [await waitStatus(a.id, "output"), await waitStatus(b.id, "output")];
          assert.equal(y.childrenTotal, x.childrenTotal, `${warm} splits as ${oneShot} does`);
          assert.equal(
            await text(await h.blobs.get(y.output ?? "")),
            await text(await h.blobs.get(x.output ?? "")),
            `${warm} on ${JSON.stringify(doc)}`,
          );
        }
      }
    },
  );
});

describe("WorkerPool with warm jobs: what a request answered is stored from inside its work dir only", () => {
  /**
   * Swaps `<dir>/sub` between a folder and a link to `<outside>` until it cannot (its work dir is gone); writes
   * its pid to `<pidFile>` first.
   */
  const SWAPPER = `echo $$ > "$3"; cd "$1" || exit 1
while mv sub held && ln -s "$2" sub && rm sub && mv held sub; do :; done`;

  it("never stores the file outside while a process the warm process started swaps a folder of the answer for a link", async () => {
    const outside = path.join(h.dir, "outside");
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, "f"), "OUTSIDE\n");
    // The warm process lives on after each answer, and so does the swapper it starts for it: the
    // swaps go on while docq checks the answer, stores it and removes the work dir.
    const folder = path.join(h.jobs, "swap");
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, "job.yaml"), "warm: true\nentry: main.mjs\n");
    await fs.writeFile(
      path.join(folder, "main.mjs"),
      `import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { serve } from ${JSON.stringify(JS_HELPER)};
serve(async (req) => {
  mkdirSync(req.outputDir + "/sub");
  writeFileSync(req.outputDir + "/sub/f", "inside\\n");
  const args = ["-c", ${JSON.stringify(SWAPPER)}, "sh", req.outputDir, ${JSON.stringify(outside)}, ${JSON.stringify(h.marks)} + "/" + req.task.id + ".swapper"];
  spawn("/bin/sh", args, { detached: true, stdio: "ignore" }).unref();
  await new Promise((r) => setTimeout(r, 2));
  return "sub/f";
});
`,
    );
    const outcomes = new Map<string, number>();
    try {
      makePool({ slots: 2 }).start();
      const tasks = await Promise.all(Array.from({ length: 30 }, () => submit("swap", "doc", { maxTries: 1 })));
      for (const t of tasks) {
        await waitUntil(`task ${t.id} to end`, async () => ["output", "error"].includes((await task(t.id)).status), 20_000);
        const done = await task(t.id);
        if (done.status === "output") {
          assert.equal(await text(await h.blobs.get(done.output ?? "")), "inside\n", `task ${t.id} stored the file outside the work dir`);
          outcomes.set("stored inside", (outcomes.get("stored inside") ?? 0) + 1);
        } else {
          // Refused at the answer's check or at storing, or the work dir could not be removed meanwhile.
          assert.match(
            done.error ?? "",
            /answered output "sub\/f"|was not stored|ENOTEMPTY/,
            `task ${t.id} failed for another reason: ${done.error}`,
          );
          const reason = (done.error ?? "").replace(/^.*?: (?=[^:]*$)/, "");
          outcomes.set(reason, (outcomes.get(reason) ?? 0) + 1);
        }
      }
      assert.equal(await fs.readFile(path.join(outside, "f"), "utf8"), "OUTSIDE\n", "the file outside is where it was, unchanged");
      // What each task met depends on the timing: only shown, not asserted.
      console.log(`# outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    } finally {
      await Promise.all(h.pools.map((p) => p.stop()));
      // Whatever failed: each swapper still running (its pid not reused meanwhile).
      for (const name of await fs.readdir(h.marks).catch(() => [] as string[])) {
        if (!name.endsWith(".swapper")) continue;
        const pid = Number((await fs.readFile(path.join(h.marks, name), "utf8")).trim());
        try {
          if (pid > 0 && (await fs.readFile(`/proc/${pid}/cmdline`, "utf8")).includes("mv sub held")) process.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }
    }
  });
});

describe("WorkerPool with an inline warm job (job.yaml inline: true)", () => {
  /** An inline job answering {"inline", "input"}: whether the document came inside the request, and the document read from req.input. */
  async function inlineJob(name: string, extra = ""): Promise<string> {
    const folder = path.join(h.jobs, name);
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, "job.yaml"), "warm: true\ninline: true\nconcurrency: 2\nentry: main.mjs\n");
    await fs.writeFile(
      path.join(folder, "main.mjs"),
      `import { readFileSync } from "node:fs";
import { serve } from ${JSON.stringify(JS_HELPER)};
serve((req) => {
  const input = readFileSync(req.input, "utf8");
  ${extra}
  return { outputBytes: JSON.stringify({ inline: "inputBytes" in req, input }) };
});
`,
    );
    return name;
  }

  async function outputText(id: string): Promise<string> {
    const done = await waitStatus(id, "output");
    assert.ok(done.output !== null);
    return text(await h.blobs.get(done.output));
  }

  it("sends a small document inside the request and stores the answered bytes; a large one goes as a file", async () => {
    const job = await inlineJob("inline-echo");
    const pool = makePool({ slots: 2 });
    pool.start();
    const small = await Promise.all(Array.from({ length: 20 }, (_, i) => submit(job, `small document ${i}`, { small: true })));
    const large = "x".repeat(100 * 1024);
    const big = await submit(job, large, { small: true });
    for (const [i, t] of small.entries()) {
      assert.deepEqual(JSON.parse(await outputText(t.id)), { inline: true, input: `small document ${i}` });
    }
    assert.deepEqual(JSON.parse(await outputText(big.id)), { inline: false, input: large });
  });

  it("a split job: its split, parts and merge go inline when small; a large document, part, or a merge with a large part gets files", async () => {
    const folder = path.join(h.jobs, "inline-split");
    await fs.mkdir(folder);
    await fs.writeFile(path.join(folder, "job.yaml"), "warm: true\nsplit: true\ninline: true\nconcurrency: 2\nentry: main.mjs\n");
    await fs.writeFile(
      path.join(folder, "main.mjs"),
      `import { readFileSync, writeFileSync } from "node:fs";
import { serve } from ${JSON.stringify(JS_HELPER)};
serve((req) => {
  if (req.mode === "split") {
    const lines = readFileSync(req.input, "utf8").split("\\n").filter((l) => l !== "" && !l.startsWith("#"));
    const params = { splitInline: "inputBytes" in req };
    const bytes = (l) => (l === "big" ? "b".repeat(100 * 1024) : l);
    // Half the parts as files, half as bytes: the helper sends either as bytes to an inline request, or as files.
    lines.forEach((l, i) => i % 2 === 0 && writeFileSync(req.outputDir + "/p" + i, bytes(l)));
    return { children: lines.map((l, i) => (i % 2 === 0 ? { input: "p" + i, params } : { inputBytes: bytes(l), params })) };
  }
  if (req.mode === "child") {
    const input = readFileSync(req.input, "utf8");
    const pad = input === "wide" ? "w".repeat(100 * 1024) : "";
    return { outputBytes: JSON.stringify({ inline: "inputBytes" in req, head: input.slice(0, 5), pad, split: req.params.splitInline }) };
  }
  const parts = req.inputs.map((f) => JSON.parse(readFileSync(f, "utf8")));
  return { outputBytes: JSON.stringify({ mode: req.mode, inline: "inputsBytes" in req, parts: parts.map((p) => [p.inline, p.head, p.split]) }) };
});
`,
    );
    makePool({ slots: 2 }).start();
    // [document, the merge inline, each part: [the child inline, its first bytes, the split inline]]
    const cases = [
      [
        "one\ntwo\nthree\n",
        true,
        [
          [true, "one", true],
          [true, "two", true],
          [true, "three", true],
        ],
      ],
      [
        "one\nbig\n",
        true,
        [
          [true, "one", true],
          [false, "bbbbb", true],
        ],
      ],
      [
        "big\none\n",
        true,
        [
          [false, "bbbbb", true],
          [true, "one", true],
        ],
      ],
      [
        "one\nwide\n",
        false,
        [
          [true, "one", true],
          [true, "wide", true],
        ],
      ],
      [
        `one\n#${"x".repeat(70 * 1024)}\ntwo\n`,
        true,
        [
          [true, "one", false],
          [true, "two", false],
        ],
      ],
    ] as const;
    for (const [doc, mergeInline, parts] of cases) {
      const t = await submit("inline-split", doc, { small: true });
      assert.deepEqual(JSON.parse(await outputText(t.id)), { mode: "merge", inline: mergeInline, parts }, JSON.stringify(doc));
    }
  });

  it("a large answered output is stored too; a script error fails the task by the retry rule", async () => {
    const job = await inlineJob(
      "inline-big",
      `if (input === "big") return { outputBytes: Buffer.alloc(200 * 1024, 65) };
  if (input === "boom") throw new Error("boom");`,
    );
    const pool = makePool({ slots: 2 });
    pool.start();
    const big = await submit(job, "big", { small: true });
    const boom = await submit(job, "boom", { small: true, maxTries: 1 });
    assert.equal(await outputText(big.id), "A".repeat(200 * 1024));
    const failed = await waitStatus(boom.id, "error");
    assert.match(failed.error ?? "", /Error: boom/);
  });
});
