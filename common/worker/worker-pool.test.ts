import assert from "node:assert/strict";
import { readFileSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { afterEach, beforeEach, describe, it } from "node:test";
import type { BlobStore } from "../blobs/blob-store.js";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { JobRegistry } from "../jobs/job-registry.js";
import { blobKeys, newTaskId } from "../queue/new-task.js";
import type { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import type { WorkerQueue } from "../queue/queue-client.js";
import type { TaskQueue, TaskQueueOptions } from "../queue/task-queue.js";
import type { Task } from "../model/task-model.js";
import { WorkerPool, type WorkerPoolOptions } from "./worker-pool.js";
import { waitUntil } from "../testing/wait-until.js";
import { directWorkerQueue, sqliteQueue, type WorkerQueueCalls } from "../testing/queue-harness.js";

const OWNER = "worker@test";
const PROCESSED_BY = { site: "test", node: "n1" };

/** True when no live process has this pid (a zombie not yet reaped by its new parent counts as gone). */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

/** The request-line parsing of scripts-job/wordcount.sh: `input`, `out` and the task `id`. */
const READ_REQUEST = `IFS= read -r req
input=\${req#*'"input":"'}; input=\${input%%'"'*}
out=\${req#*'"outputDir":"'}; out=\${out%%'"'*}
id=\${req#*'"task":{"id":"'}; id=\${id%%'"'*}
`;

interface Harness {
  dir: string;
  marks: string;
  workRoot: string;
  store: SqliteTaskStore;
  queue: TaskQueue;
  blobs: FsBlobStore;
  registry: JobRegistry;
  client: WorkerQueue;
  calls: WorkerQueueCalls;
  pools: WorkerPool[];
}

let h: Harness;

async function setUp(queueOpts: Partial<TaskQueueOptions> = {}): Promise<void> {
  const dir = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-pool-test-")));
  const marks = path.join(dir, "marks");
  const workRoot = path.join(dir, "work");
  const jobsDir = path.join(dir, "jobs");
  await Promise.all([fs.mkdir(marks), fs.mkdir(workRoot), fs.mkdir(jobsDir)]);
  const { store, queue } = sqliteQueue(dir, queueOpts);
  const blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  const registry = new JobRegistry({ dir: jobsDir, defaultTimeoutMs: 20_000 });
  const calls: WorkerQueueCalls = { succeed: [], fail: [], pulls: [], heartbeats: [] };
  const client = directWorkerQueue(queue, calls);
  h = { dir, marks, workRoot, store, queue, blobs, registry, client, calls, pools: [] };
}

async function tearDown(): Promise<void> {
  await Promise.all(h.pools.map((p) => p.stop()));
  h.queue.stop();
  h.queue.removeAllListeners();
  await h.store.close();
  await fs.rm(h.dir, { recursive: true, force: true });
}

/** A fresh harness whose queue has other options. */
async function reset(queueOpts: Partial<TaskQueueOptions>): Promise<void> {
  await tearDown();
  await setUp(queueOpts);
}

afterEach(tearDown);

/**
 * Work dirs under `root` holding more than an empty `out/` and `input` (the kept file of
 * WorkDir.writeFile, with the last run's document until the next run rewrites or empties it).
 */
async function dirtyWorkDirs(root: string): Promise<string[]> {
  const dirty: string[] = [];
  for (const name of await fs.readdir(root)) {
    const all = await fs.readdir(path.join(root, name)).catch(() => ["(not a dir)"]);
    const keptFile = all.includes("input") && (await fs.lstat(path.join(root, name, "input"))).isFile();
    const entries = all.filter((entry) => !(entry === "input" && keptFile));
    const out = entries.length === 1 && entries[0] === "out" ? await fs.readdir(path.join(root, name, "out")) : ["?"];
    if (out.length > 0) dirty.push(`${name}: ${entries.join(", ")}; out: ${out.join(", ")}`);
  }
  return dirty;
}

async function writeJob(name: string, body: string): Promise<void> {
  await fs.writeFile(path.join(h.dir, "jobs", `${name}.sh`), `#!/bin/sh\n${body}`);
}

/** A job folder whose job.yaml says split, its entry `main.sh` holding `body`. */
async function writeSplitJob(name: string, body: string): Promise<void> {
  const dir = path.join(h.dir, "jobs", name);
  await fs.mkdir(dir);
  await fs.writeFile(path.join(dir, "job.yaml"), "split: true\nentry: main.sh\n");
  await fs.writeFile(path.join(dir, "main.sh"), body);
}

/** `tr a-z A-Z` of the input, as wordcount.sh does it. */
const upperJob = (): Promise<void> =>
  writeJob("upper", `set -eu\n${READ_REQUEST}tr a-z A-Z < "$input" > "$out/upper.txt"\necho '{"output":"upper.txt"}'\n`);

/** Records "<pid> <child pid>" under marks/<id>.pid, then waits (a background sleep) until killed. */
const longJob = (): Promise<void> =>
  writeJob("long", `${READ_REQUEST}sleep 30 &\necho "$$ $!" > "${h.marks}/$id.tmp"\nmv "${h.marks}/$id.tmp" "${h.marks}/$id.pid"\nwait\n`);

function makePool(overrides: Partial<WorkerPoolOptions> = {}, opts: { wakeOnQueued?: boolean } = {}): WorkerPool {
  const pool = new WorkerPool({
    owner: OWNER,
    processedBy: PROCESSED_BY,
    slots: 2,
    batchSize: 0,
    heartbeatMs: 60_000,
    pollMs: 60_000,
    client: h.client,
    blobs: h.blobs,
    registry: h.registry,
    workRoot: h.workRoot,
    log: { info: () => undefined, warn: () => undefined },
    ...overrides,
  });
  // As the worker service does on the queuer's "task queued" event.
  if (opts.wakeOnQueued ?? true) h.queue.on("task:queued", () => pool.wake());
  h.pools.push(pool);
  return pool;
}

async function submit(
  job: string,
  content: string | null,
  overrides: { maxTries?: number; priority?: number; asNew?: boolean } = {},
): Promise<Task> {
  const id = newTaskId("test");
  let input: string | null = null;
  if (content !== null) {
    input = blobKeys.input(id);
    // asNew: stored as the HTTP routes store a new task's document (putNew: a small one is a row of the fs store).
    if (overrides.asNew === true) await h.blobs.putNew(input, Buffer.from(content));
    else await h.blobs.put(input, Readable.from([Buffer.from(content)]));
  }
  return h.queue.submit({
    id,
    site: "test",
    user: "u",
    name: `n-${id.slice(-4)}`,
    job,
    params: {},
    priority: overrides.priority ?? 50,
    maxTries: overrides.maxTries ?? 3,
    input,
  });
}

async function task(id: string): Promise<Task> {
  const t = await h.store.get(id);
  assert.ok(t, `task ${id} exists`);
  return t;
}

async function waitStatus(id: string, status: Task["status"], timeoutMs = 5000): Promise<Task> {
  await waitUntil(`task ${id} to be ${status}`, async () => (await task(id)).status === status, timeoutMs);
  return task(id);
}

/** The pids a long job recorded: the script's shell and its background sleep. */
async function pidsOf(id: string): Promise<number[]> {
  const file = path.join(h.marks, `${id}.pid`);
  await waitUntil(`the script of ${id} to record its pid`, () =>
    fs.access(file).then(
      () => true,
      () => false,
    ),
  );
  const pids = (await fs.readFile(file, "utf8")).trim().split(/\s+/).map(Number);
  assert.equal(pids.length, 2);
  for (const pid of pids) assert.ok(Number.isInteger(pid) && pid > 0 && !isGone(pid), `pid ${pid} runs`);
  return pids;
}

const blobText = async (key: string): Promise<string> => text(await h.blobs.get(key));

describe("WorkerPool", () => {
  beforeEach(() => setUp());

  it("runs every submitted task to output and stores what the script wrote", async () => {
    await upperJob();
    const pool = makePool({ slots: 3 });
    pool.start();
    const docs = Array.from({ length: 8 }, (_, i) => `document ${i}: hello, world\nsecond line ${i}\n`);
    const tasks = await Promise.all(docs.map((d) => submit("upper", d)));
    for (const [i, t] of tasks.entries()) {
      const done = await waitStatus(t.id, "output");
      assert.equal(done.output, blobKeys.output(t.id, 1));
      assert.equal(done.tries, 1);
      assert.equal(done.lease, null);
      assert.equal(done.error, null);
      assert.deepEqual(done.processedBy, PROCESSED_BY);
      assert.equal(await blobText(done.output ?? ""), (docs[i] ?? "").toUpperCase());
      assert.equal(await blobText(blobKeys.input(t.id)), docs[i], "the input is left as it was");
    }
    assert.equal(h.calls.fail.length, 0);
    assert.ok(h.calls.succeed.every((c) => c.accepted));
    await waitUntil("the pool to be idle", () => pool.held === 0);
    assert.deepEqual(await dirtyWorkDirs(h.workRoot), [], "every work dir is emptied after its run");
    assert.ok((await fs.readdir(h.workRoot)).length <= 6, "at most 2 × slots work dirs are kept");
    await pool.stop();
    assert.deepEqual(await fs.readdir(h.workRoot), [], "stopping removes the kept work dirs");
  });

  it("replaces what a run of the same attempt number left under its output key (its claim lost with a crash of this process)", async () => {
    await upperJob();
    // A claim for a worker of this process is answered before its commit: a crash can lose it after
    // its run stored output-1, and the task's next claim is attempt 1 again.
    const asRow = await submit("upper", "left as a row\n");
    const asFile = await submit("upper", "left as a file\n");
    await h.blobs.putNew(blobKeys.output(asRow.id, 1), Buffer.from("the lost run's output\n"));
    await h.blobs.put(blobKeys.output(asFile.id, 1), Readable.from([Buffer.from("x".repeat(100_000))]));
    makePool().start();
    for (const [t, content] of [
      [asRow, "LEFT AS A ROW\n"],
      [asFile, "LEFT AS A FILE\n"],
    ] as const) {
      const done = await waitStatus(t.id, "output");
      assert.equal(done.tries, 1);
      assert.equal(done.output, blobKeys.output(t.id, 1));
      assert.equal(await blobText(blobKeys.output(t.id, 1)), content);
    }
  });

  it("never hands a run a dir an earlier run left files in: that dir is removed, not kept", async () => {
    // Writes a stray file beside its output (in out/ and in the work dir), then lists out/ as it finds it.
    await writeJob(
      "messy",
      `${READ_REQUEST}seen=$(ls -A "$out"); printf '%s' "$seen" > "$out/seen.txt"; echo x > "$out/stray"; echo y > "$out/../stray2"\necho '{"output":"seen.txt"}'\n`,
    );
    const pool = makePool({ slots: 1 });
    pool.start();
    for (let i = 0; i < 3; i++) {
      const t = await submit("messy", `doc ${i}`);
      const done = await waitStatus(t.id, "output");
      assert.equal(await blobText(done.output ?? ""), "", `run ${i} found out/ empty`);
    }
    await waitUntil("the pool to be idle", () => pool.held === 0);
    assert.deepEqual(await dirtyWorkDirs(h.workRoot), [], "no dir with stray files is kept");
  });

  for (const batchSize of [0, 1]) {
    it(`never runs more than slots scripts at once, and fills them all (batchSize ${batchSize})`, async () => {
      const log = path.join(h.marks, "log");
      await writeJob(
        "slow",
        `set -eu\n${READ_REQUEST}echo "start $id" >> "${log}"\nsleep 0.25\ntr a-z A-Z < "$input" > "$out/o"\necho "end $id" >> "${log}"\necho '{"output":"o"}'\n`,
      );
      const slots = 3;
      const pool = makePool({ slots, batchSize });
      let maxBusy = 0;
      const sampler = setInterval(() => (maxBusy = Math.max(maxBusy, pool.busy)), 2);
      try {
        const tasks = [];
        for (let i = 0; i < 9; i++) tasks.push(await submit("slow", `doc ${i}`));
        pool.start();
        for (const t of tasks) await waitStatus(t.id, "output", 10_000);
      } finally {
        clearInterval(sampler);
      }
      let now = 0;
      let most = 0;
      const lines = (await fs.readFile(log, "utf8")).trim().split("\n");
      assert.equal(lines.length, 18);
      for (const line of lines) {
        now += line.startsWith("start ") ? 1 : -1;
        most = Math.max(most, now);
      }
      assert.equal(now, 0);
      assert.equal(most, slots, "scripts running at once, from their own start/end markers");
      assert.ok(maxBusy <= slots, `pool.busy reached ${maxBusy}`);
    });
  }

  it("starts a task at once on wake(), without waiting for the poll", async () => {
    await upperJob();
    const pool = makePool({ pollMs: 60_000 }, { wakeOnQueued: false });
    pool.start();
    const t = await submit("upper", "wake me");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal((await task(t.id)).status, "input", "nothing pulls without a wake-up");
    const woken = Date.now();
    pool.wake();
    await waitStatus(t.id, "output", 3000);
    assert.ok(Date.now() - woken < 3000);
    assert.equal(await blobText(blobKeys.output(t.id, 1)), "WAKE ME");
  });

  it("gives the script a request line without input for a task without input", async () => {
    await writeJob(
      "echo",
      `set -eu\nIFS= read -r req\nout=\${req#*'"outputDir":"'}; out=\${out%%'"'*}\nprintf '%s' "$req" > "$out/req.json"\necho '{"output":"req.json"}'\n`,
    );
    makePool().start();
    const t = await submit("echo", null, { priority: 70 });
    const done = await waitStatus(t.id, "output");
    const req = JSON.parse(await blobText(done.output ?? "")) as Record<string, unknown>;
    assert.deepEqual(Object.keys(req), ["mode", "outputDir", "params", "task"]);
    assert.equal(req.mode, "simple");
    assert.deepEqual(req.task, { id: t.id, name: t.name, user: "u", priority: 70, parentId: null, depth: 0 });
  });

  it("downloads the input into the work dir when the blob store has no local path", async () => {
    const seen = path.join(h.marks, "seen");
    await writeJob(
      "upper",
      `set -eu\n${READ_REQUEST}printf '%s' "$input" > "${seen}"\ntr a-z A-Z < "$input" > "$out/upper.txt"\necho '{"output":"upper.txt"}'\n`,
    );
    const fsBlobs = h.blobs;
    const remote: BlobStore = {
      put: (key, body, opts) => fsBlobs.put(key, body, opts),
      putNew: (key, bytes) => fsBlobs.putNew(key, bytes),
      get: (key) => fsBlobs.get(key),
      stat: (key) => fsBlobs.stat(key),
      delete: (key) => fsBlobs.delete(key),
      deletePrefix: (prefix) => fsBlobs.deletePrefix(prefix),
      list: () => fsBlobs.list(),
      close: () => fsBlobs.close(),
    };
    makePool({ blobs: remote }).start();
    const t = await submit("upper", "remote doc");
    const done = await waitStatus(t.id, "output");
    assert.equal(await blobText(done.output ?? ""), "REMOTE DOC");
    const inputSeen = await fs.readFile(seen, "utf8");
    assert.ok(inputSeen.startsWith(h.workRoot + path.sep), `input ${inputSeen} is a copy in the work dir`);
    assert.notEqual(inputSeen, fsBlobs.localPath(blobKeys.input(t.id)));
  });

  it("hands a small document kept as a row to the script as `input` in its work dir, rewritten in place for the next task", async () => {
    const seen = path.join(h.marks, "seen");
    await writeJob(
      "upper",
      `set -eu
${READ_REQUEST}printf '%s\\n' "$input" >> "${seen}"
tr a-z A-Z < "$input" > "$out/upper.txt"
echo '{"output":"upper.txt"}'
`,
    );
    const pool = makePool({ slots: 1 });
    pool.start();
    const docs = ["first small document\n", "second\n", "and a third, longer than the second\n"];
    for (const doc of docs) {
      const t = await submit("upper", doc, { asNew: true });
      assert.equal(h.blobs.localPath(blobKeys.input(t.id)), null, "the document is a row, no file");
      const done = await waitStatus(t.id, "output");
      assert.equal(await blobText(done.output ?? ""), doc.toUpperCase());
      assert.equal(h.blobs.localPath(done.output ?? ""), null, "a top-level task's small output is a row too");
    }
    const inputs = (await fs.readFile(seen, "utf8")).trim().split("\n");
    assert.equal(inputs.length, 3);
    for (const input of inputs) assert.ok(input.startsWith(h.workRoot + path.sep), `input ${input} is in the work dir`);
    assert.equal(new Set(inputs).size, 1, "one slot, one kept work dir: the same file each time");
    await waitUntil("the pool to be idle", () => pool.held === 0);
    assert.deepEqual(await dirtyWorkDirs(h.workRoot), [], "nothing of the last task is left but the kept input");
  });

  it("a task without a document finds no `input` of the last task: never an earlier task's document", async () => {
    await writeJob("upper", `set -eu\n${READ_REQUEST}tr a-z A-Z < "$input" > "$out/upper.txt"\necho '{"output":"upper.txt"}'\n`);
    // What the work dir's `input` holds when this script runs: its size, or "none".
    await writeJob(
      "peek",
      `set -eu\n${READ_REQUEST}kept="$(dirname "$out")/input"\nif [ -f "$kept" ]; then wc -c < "$kept" | tr -d ' ' > "$out/peek.txt"; else echo none > "$out/peek.txt"; fi\necho '{"output":"peek.txt"}'\n`,
    );
    const pool = makePool({ slots: 1 });
    pool.start();
    const first = await waitStatus((await submit("upper", "a confidential document\n", { asNew: true })).id, "output");
    assert.equal(await blobText(first.output ?? ""), "A CONFIDENTIAL DOCUMENT\n");
    const peek = await waitStatus((await submit("peek", null)).id, "output");
    assert.equal((await blobText(peek.output ?? "")).trim(), "none", "the last task's kept file is removed");
  });

  it("reports a failing script with its stderr tail, retrying it maxTries times", async () => {
    await writeJob("broken", `IFS= read -r req\necho "first line of chatter" >&2\necho "broken: cannot parse page 3" >&2\nexit 3\n`);
    makePool().start();
    const t = await submit("broken", "doc", { maxTries: 3 });
    const done = await waitStatus(t.id, "error");
    assert.equal(done.tries, 3);
    assert.deepEqual(done.processedBy, PROCESSED_BY);
    assert.equal(done.output, null);
    assert.match(
      done.error ?? "",
      /^job "broken" exited with code 3: broken: cannot parse page 3\n--- stderr \(tail\) ---\nfirst line of chatter\nbroken: cannot parse page 3$/,
    );
    assert.deepEqual(
      h.calls.fail.map((f) => [f.claim.tries, f.retryable]),
      [
        [1, true],
        [2, true],
        [3, true],
      ],
    );
    assert.equal(h.calls.succeed.length, 0);
    assert.deepEqual(await fs.readdir(path.join(h.blobs.root, t.id)), ["input"], "no output blob is left");
  });

  it("ends a task of an unknown job in error at once, without retrying", async () => {
    makePool().start();
    const t = await submit("nosuchjob", "doc", { maxTries: 5 });
    const done = await waitStatus(t.id, "error");
    assert.equal(done.tries, 1);
    assert.match(done.error ?? "", /unknown job "nosuchjob"/);
    assert.equal(h.calls.fail.length, 1);
    assert.equal(h.calls.fail[0]?.retryable, false);
  });

  it('ends a task whose script answers {"error", "retry": false} in error after one try', async () => {
    await writeJob("notpdf", `IFS= read -r req\necho "page 1: bad xref" >&2\necho '{"error":"not a PDF","retry":false}'\nexit 1\n`);
    makePool().start();
    const t = await submit("notpdf", "doc", { maxTries: 5 });
    const done = await waitStatus(t.id, "error");
    assert.equal(done.tries, 1);
    assert.match(
      done.error ?? "",
      /^job "notpdf" failed: not a PDF \(the script asked for no retry\)\n--- stderr \(tail\) ---\npage 1: bad xref$/,
    );
    assert.deepEqual(
      h.calls.fail.map((f) => f.retryable),
      [false],
    );
  });

  it('a split child answering {"error", "retry": false} fails at once and fails its parent', async () => {
    await writeSplitJob(
      "splitfatal",
      `${READ_REQUEST}case $req in
  '{"mode":"split"'*) echo good > "$out/p1"; echo bad > "$out/p2"; echo '{"children":[{"input":"p1"},{"input":"p2"}]}' ;;
  *) if [ "$(cat "$input")" = bad ]; then echo '{"error":"part 2 is unreadable","retry":false}'; exit 1; fi
     cp "$input" "$out/o"; echo '{"output":"o"}' ;;
esac
`,
    );
    makePool().start();
    const parent = await submit("splitfatal", "doc", { maxTries: 5 });
    const failed = await waitStatus(parent.id, "error");
    assert.match(failed.error ?? "", /part 2 is unreadable \(the script asked for no retry\)/);
    const children = await h.store.children(parent.id);
    const bad = children[1];
    assert.ok(bad !== undefined);
    assert.deepEqual([bad.status, bad.tries], ["error", 1]);
  });

  it("a split answering one file for two parts stores it for each (a file answered once is moved, not copied)", async () => {
    await writeSplitJob(
      "splitsame",
      `${READ_REQUEST}case $req in
  '{"mode":"split"'*) echo shared > "$out/p1"; echo own > "$out/p2"
    echo '{"children":[{"input":"p1","params":{"n":1}},{"input":"p2"},{"input":"p1","params":{"n":2}}]}' ;;
  *) sleep 30 ;;
esac
`,
    );
    makePool({ slots: 1 }).start();
    const parent = await submit("splitsame", "doc", { maxTries: 1 });
    await waitUntil("the parent's three parts", async () => (await h.store.children(parent.id)).length === 3);
    const inputs = (await h.store.children(parent.id)).map((child) => child.input ?? "");
    assert.deepEqual(await Promise.all(inputs.map(blobText)), ["shared\n", "own\n", "shared\n"]);
  });

  it("sends the script's progress to the queue while it runs, throttled, the last one before the result", async () => {
    const go = path.join(h.marks, "go");
    await writeJob(
      "pages3",
      `${READ_REQUEST}echo '{"progress":0.1,"message":"page 1 of 3"}'
i=0; while [ ! -e "${go}" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
echo '{"progress":0.5}'; echo '{"progress":0.6}'; echo '{"progress":0.9,"message":"page 3 of 3"}'
echo done > "$out/r.txt"; echo '{"output":"r.txt"}'
`,
    );
    h.calls.progress = [];
    makePool().start();
    const t = await submit("pages3", "doc");
    await waitUntil("the first progress in the record", async () => (await task(t.id)).progress === 0.1);
    const running = await task(t.id);
    assert.deepEqual([running.status, running.progressMessage], ["work", "page 1 of 3"]);
    await fs.writeFile(go, "");
    const done = await waitStatus(t.id, "output");
    const sent = h.calls.progress.map((p) => p.progress);
    assert.equal(sent[0], 0.1);
    assert.equal(sent.at(-1), 0.9, "the last one always goes");
    assert.ok(sent.length < 5, `throttled: ${sent.join(", ")}`);
    assert.deepEqual([done.progress, done.progressMessage], [0.9, "page 3 of 3"]);
  });

  it("cancel(id) kills the running script; the canceled task is not reported as failed", async () => {
    await longJob();
    const pool = makePool({ slots: 1 });
    pool.start();
    const t = await submit("long", "doc");
    const pids = await pidsOf(t.id);
    assert.equal(pool.busy, 1);
    // As the worker service does: the queue cancels, then the worker holding the lease stops the script.
    await h.queue.cancel(t.id);
    assert.equal((await task(t.id)).status, "canceled");
    assert.equal(pool.cancel(t.id), true);
    await waitUntil("the script and its child to be killed", () => pids.every(isGone));
    await waitUntil("the slot to be freed", () => pool.busy === 0);
    // The slot frees when the script ends; the run is over here once its work dir is gone too.
    await waitUntil("the run to wind down", () => pool.held === 0);
    const after = await task(t.id);
    assert.equal(after.status, "canceled");
    assert.equal(after.error, "canceled");
    assert.equal(h.calls.fail.length, 0, "a canceled run reports nothing");
    assert.equal(h.calls.succeed.length, 0);
    assert.equal(pool.cancel(t.id), false, "no longer running here");
    assert.equal(pool.cancel("test-01JAAAAAAAAAAAAAAAAAAAAAAA"), false);
  });

  it("stops the script when a heartbeat learns its lease is lost", async () => {
    await reset({ leaseMs: 40, backoffBaseMs: 60_000, backoffMaxMs: 60_000 });
    await longJob();
    const pool = makePool({ slots: 1, heartbeatMs: 200 });
    pool.start();
    const t = await submit("long", "doc");
    const pids = await pidsOf(t.id);
    // Heartbeats renew the lease for only 40 ms; between two of them it expires and the sweep requeues the task.
    await waitUntil("the lease to expire and be swept", async () => (await h.queue.sweepExpiredLeases()) === 1);
    const requeued = await task(t.id);
    assert.equal(requeued.status, "input");
    assert.match(requeued.error ?? "", /^lease expired: worker@test/);
    assert.equal(pool.busy, 1, "still running until the next heartbeat");
    await waitUntil("the heartbeat to stop the script", () => pids.every(isGone), 3000);
    await waitUntil("the slot to be freed", () => pool.held === 0);
    const after = await task(t.id);
    assert.equal(after.status, "input", "the pool reported nothing over the sweep's requeue");
    assert.equal(after.tries, 1);
    assert.match(after.error ?? "", /^lease expired/);
    assert.equal(h.calls.fail.length, 0);
    assert.equal(h.calls.succeed.length, 0);
    const carrying = h.calls.heartbeats.filter((hb) => hb.ids.includes(t.id));
    assert.ok(carrying.length > 0);
    for (const hb of carrying)
      assert.deepEqual(hb, { ids: [t.id], load: { slots: 1, busy: 1 } }, "a heartbeat names the running tasks and the load");
  });

  it("a heartbeat answer naming a run past its script (its report under way) neither warns nor stops its report", async () => {
    await upperJob();
    const warnings: string[] = [];
    let reportHeld: (() => void) | undefined;
    const heldUntilHeartbeat = new Promise<void>((resolve) => (reportHeld = resolve));
    let storing: string | null = null;
    const client: WorkerQueue = {
      ...h.client,
      // The report waits until a heartbeat has answered: as when the queue took it and the heartbeat's answer comes first.
      succeed: async (claim, result) => {
        storing = claim.id;
        await heldUntilHeartbeat;
        return h.client.succeed(claim, result);
      },
      heartbeat: async (owner, ids, load) => {
        if (storing !== null && ids.includes(storing)) {
          setImmediate(() => reportHeld?.());
          return [storing];
        }
        return h.client.heartbeat(owner, ids, load);
      },
    };
    const pool = makePool({ slots: 1, heartbeatMs: 20, client, log: { info: () => undefined, warn: (m) => warnings.push(m) } });
    pool.start();
    const t = await submit("upper", "hello");
    const done = await waitStatus(t.id, "output");
    assert.equal(await text(await h.blobs.get(done.output ?? "")), "HELLO");
    assert.deepEqual(warnings, []);
  });

  it("a run that finishes after its lease moved on is refused, and its output blob removed", async () => {
    await reset({ leaseMs: 40, backoffBaseMs: 60_000, backoffMaxMs: 60_000 });
    const go = path.join(h.marks, "go");
    await writeJob(
      "gated",
      `set -eu\n${READ_REQUEST}touch "${h.marks}/started"\nwhile [ ! -e "${go}" ]; do sleep 0.01; done\ncp "$input" "$out/o"\necho '{"output":"o"}'\n`,
    );
    const pool = makePool({ slots: 1, heartbeatMs: 60_000 });
    pool.start();
    const t = await submit("gated", "late");
    await waitUntil("the script to start", () =>
      fs.access(path.join(h.marks, "started")).then(
        () => true,
        () => false,
      ),
    );
    await waitUntil("the lease to expire and be swept", async () => (await h.queue.sweepExpiredLeases()) === 1);
    await fs.writeFile(go, "");
    // The slot frees when the script ends; storing and reporting come after it, so wait for the report.
    await waitUntil("the late run to report", () => h.calls.succeed.length > 0);
    assert.deepEqual(
      h.calls.succeed.map((c) => c.accepted),
      [false],
    );
    const after = await task(t.id);
    assert.equal(after.status, "input");
    assert.equal(after.output, null);
    await waitUntil("the stale attempt's output to be deleted", async () => (await h.blobs.stat(blobKeys.output(t.id, 1))) === null);
    assert.equal(h.calls.fail.length, 0);
  });

  it("stop() kills the running scripts and resolves; the pool pulls no more", async () => {
    await longJob();
    const pool = makePool({ slots: 2 });
    pool.start();
    const a = await submit("long", "a");
    const b = await submit("long", "b");
    const pids = [...(await pidsOf(a.id)), ...(await pidsOf(b.id))];
    assert.equal(pool.busy, 2);
    const stopping = Date.now();
    await pool.stop();
    assert.ok(Date.now() - stopping < 3000, "stop() does not wait for the scripts to end by themselves");
    assert.equal(pool.busy, 0);
    await waitUntil("every script of the pool to be killed", () => pids.every(isGone));
    assert.equal(h.calls.fail.length, 0, "a shutdown reports nothing: the leases lapse and the queue requeues");
    assert.equal(h.calls.succeed.length, 0);
    for (const t of [a, b]) assert.equal((await task(t.id)).status, "work");
    const pullsBefore = h.calls.pulls.length;
    const c = await submit("long", "c");
    pool.wake();
    assert.equal(h.calls.pulls.length, pullsBefore, "no pull after stop");
    assert.equal((await task(c.id)).status, "input");
  });

  it("drain() lets a running task finish within the grace, and pulls no more", async () => {
    await writeJob("short", `${READ_REQUEST}sleep 0.3\ncp "$input" "$out/copy"\necho '{"output":"copy"}'\n`);
    const pool = makePool({ slots: 1 });
    pool.start();
    const t = await submit("short", "doc");
    await waitStatus(t.id, "work");
    const waiting = await submit("short", "queued behind it");
    assert.deepEqual(await pool.drain(20_000), { finished: 1, released: 0 });
    assert.equal((await task(t.id)).status, "output");
    assert.equal((await task(waiting.id)).status, "input", "a draining pool takes no new task");
  });

  it("drain() kills a task still running after the grace and releases it: queued again, its try not counted", async () => {
    await longJob();
    const pool = makePool({ slots: 2 });
    pool.start();
    const t = await submit("long", "doc");
    const pids = await pidsOf(t.id);
    assert.deepEqual(await pool.drain(200), { finished: 0, released: 1 });
    await waitUntil("the script and its child to be killed", () => pids.every(isGone));
    const released = await task(t.id);
    assert.equal(released.status, "input");
    assert.equal(released.tries, 0);
    assert.equal(released.lease, null);
    assert.deepEqual(
      released.attempts.map((a) => a.outcome),
      ["released"],
    );
  });

  it("drain() ends its grace early when hurried (a second signal)", async () => {
    await longJob();
    const pool = makePool({ slots: 1 });
    pool.start();
    const t = await submit("long", "doc");
    await pidsOf(t.id);
    const hurry = new AbortController();
    const draining = pool.drain(600_000, hurry.signal);
    hurry.abort();
    assert.deepEqual(await draining, { finished: 0, released: 1 });
    assert.equal((await task(t.id)).status, "input");
  });

  it("stop() while a pull is in flight does not start the pulled tasks afterwards", async () => {
    await longJob();
    await submit("long", "doc");
    const pool = makePool({ slots: 1 }, { wakeOnQueued: false });
    pool.start(); // pulls at once: the task is taken from the index, the lease is being written
    await pool.stop();
    await Promise.allSettled(h.calls.pulls);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(pool.busy, 0, "a stopped pool runs no script");
  });
});

/**
 * A sh loop that swaps `<dir>/sub` between a folder and a link to `<outside>` until it cannot
 * (its work dir is gone); it records its pid in `<pidFile>` first. Arguments: dir outside pidFile.
 */
const SWAPPER = `echo $$ > "$3"; cd "$1" || exit 1
while mv sub held && ln -s "$2" sub && rm sub && mv held sub; do :; done`;

/**
 * Test cleanup, whatever failed: SIGKILLs each swapper whose pid a `*.swapper` file of `dir` holds,
 * if that pid still runs the swapper (not a pid reused meanwhile by another process).
 */
async function killSwappers(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith(".swapper")) continue;
    const pid = Number((await fs.readFile(path.join(dir, name), "utf8")).trim());
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      if ((await fs.readFile(`/proc/${pid}/cmdline`, "utf8")).includes("mv sub held")) process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

describe("WorkerPool: what a script answered is stored from inside its work dir only", () => {
  beforeEach(() => setUp());

  it("never stores the file outside when a process the script left behind swaps a folder of the answer for a link", async () => {
    const outside = path.join(h.dir, "outside");
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, "f"), "OUTSIDE\n");
    // The case: the script answers sub/f and leaves a process (setsid: out of its group)
    // that keeps swapping out/sub for a link to a folder outside the work dir.
    await writeJob(
      "swap",
      `${READ_REQUEST}mkdir "$out/sub" && echo inside > "$out/sub/f"
setsid sh -c '${SWAPPER}' sh "$out" "${outside}" "${h.marks}/$id.swapper" > /dev/null 2>&1 < /dev/null &
while [ ! -s "${h.marks}/$id.swapper" ]; do sleep 0.01; done
echo '{"output":"sub/f"}'
`,
    );
    try {
      makePool({ slots: 2 }).start();
      const tasks = await Promise.all(Array.from({ length: 15 }, () => submit("swap", "doc", { maxTries: 1 })));
      for (const t of tasks) {
        await waitUntil(`task ${t.id} to end`, async () => ["output", "error"].includes((await task(t.id)).status), 20_000);
        const done = await task(t.id);
        if (done.status === "output")
          assert.equal(await blobText(done.output ?? ""), "inside\n", `task ${t.id} stored the file outside the work dir`);
        else
          assert.match(
            done.error ?? "",
            /answered output "sub\/f"|was not stored/,
            `task ${t.id} failed for another reason: ${done.error}`,
          );
      }
      assert.equal(await fs.readFile(path.join(outside, "f"), "utf8"), "OUTSIDE\n", "the file outside is where it was, unchanged");
    } finally {
      await killSwappers(h.marks);
    }
  });

  it("refuses an output that is a hard link to a file outside the work dir, saying why", async () => {
    const outside = path.join(h.dir, "secret");
    await fs.writeFile(outside, "SECRET\n");
    await writeJob("alias", `${READ_REQUEST}ln "${outside}" "$out/alias"\necho '{"output":"alias"}'\n`);
    makePool().start();
    const t = await submit("alias", "doc", { maxTries: 1 });
    const done = await waitStatus(t.id, "error");
    assert.match(done.error ?? "", /^job "alias" answered output "alias": has 2 hard links: docq stores only a file with one link/);
    assert.equal(await fs.readFile(outside, "utf8"), "SECRET\n");
    assert.deepEqual(await fs.readdir(path.join(h.blobs.root, t.id)), ["input"], "no output blob");
  });

  it("refuses an output that is a symbolic link, saying why", async () => {
    await writeJob("link", `${READ_REQUEST}echo x > "$out/real"; ln -s real "$out/link"\necho '{"output":"link"}'\n`);
    makePool().start();
    const t = await submit("link", "doc", { maxTries: 1 });
    const done = await waitStatus(t.id, "error");
    assert.match(done.error ?? "", /^job "link" answered output "link": is a symbolic link/);
  });

  it("stores a large output, read in chunks from the opened file", async () => {
    const big = "0123456789abcdef".repeat(64 * 1024); // 1 MiB: over the read-at-once size
    await writeJob("big", `${READ_REQUEST}head -c ${big.length} /dev/zero | tr '\\0' x > "$out/big"\necho '{"output":"big"}'\n`);
    makePool().start();
    const t = await submit("big", "doc");
    const done = await waitStatus(t.id, "output");
    assert.equal(await blobText(done.output ?? ""), "x".repeat(big.length));
    assert.deepEqual(await dirtyWorkDirs(h.workRoot), [], "the work dir is emptied");
  });
});
