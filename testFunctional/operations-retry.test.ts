import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import {
  getTask,
  listAll,
  REPO,
  result,
  startEmbeddedApp,
  submit,
  tempDir,
  testJobsDir,
  waitAllFinal,
  waitUntil,
  useKey,
  type EmbeddedApp,
} from "./helpers.js";
import { storedBlobKeys } from "./stored-blobs.js";

const run = promisify(execFile);
const ADMIN = "admin-key-for-the-operations-test-0123456789";

/** The documents of one task: the keys under its folder in the blob store. */
async function documentsOf(app: EmbeddedApp, id: string): Promise<string[]> {
  return (await storedBlobKeys(app.dataDir)).filter((key) => key.includes(id));
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** A request with `key` (the admin's by default), its JSON answer. */
async function call(app: EmbeddedApp, method: string, route: string, key = ADMIN): Promise<Answer> {
  const res = await fetch(`${app.url}${route}`, { method, headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const retry = (app: EmbeddedApp, id: string, key?: string): Promise<Answer> => call(app, "POST", `/api/tasks/${id}/retry`, key);
const clean = (app: EmbeddedApp, query: string, key?: string): Promise<Answer> => call(app, "DELETE", `/api/tasks?${query}`, key);

describe("operations: failure control, retry, attempts, bulk clean", () => {
  let app: EmbeddedApp;
  let flags: string;
  before(async () => {
    flags = await tempDir("flags");
    // Retention off: the tasks these tests leave in error must stay until the tests look at them.
    app = await startEmbeddedApp({
      slots: 4,
      env: { DOCQ_JOBS_DIR: await testJobsDir(), DOCQ_ADMIN_KEY: ADMIN },
      configYaml: "queue:\n  backoffBaseMs: 50\nretention:\n  outputMs: null\n  errorMs: null\n  canceledMs: null\n",
    });
    useKey(app.url, ADMIN);
  });
  after(async () => {
    await app?.stop();
  });

  it("retries a task in error: it runs again with a fresh try count, its attempts kept and shown", async () => {
    const flag = path.join(flags, "plain");
    const id = await submit(app.url, "a document", { job: "flaky", params: { flag } });
    const [failed] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(failed?.status, "error");
    assert.equal(failed?.tries, 1);
    assert.equal(failed?.attempts.length, 1);
    const [attempt] = failed!.attempts;
    assert.equal(attempt?.n, 1);
    assert.equal(attempt?.outcome, "error");
    assert.match(attempt?.error ?? "", /does not exist yet/);
    assert.equal(attempt?.site, "local");
    assert.equal(typeof attempt?.node, "string");
    assert.ok(attempt!.start! <= attempt!.end, "start and end times");

    await fs.writeFile(flag, "");
    // The CLI: docq retry ID prints the status after.
    const { stdout } = await run(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", app.url, "--key", ADMIN, "retry", id]);
    assert.equal(stdout.trim(), `${id} input`);
    const [done] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(done?.status, "output", done?.error ?? "");
    assert.equal(done?.tries, 1, "a fresh try count");
    assert.equal(await result(app.url, id), "A DOCUMENT");
    assert.deepEqual(
      done?.attempts.map((a) => [a.n, a.outcome]),
      [
        [1, "error"],
        [1, "output"],
      ],
    );

    const again = await retry(app, id);
    assert.equal(again.status, 409, "an output task is not retried");
    assert.match(String(again.body.error), /only a task in error or canceled/);
    assert.equal((await retry(app, "local-01ARZ3NDEKTSV4RRFFQ69G5FAV")).status, 404);
    assert.equal((await retry(app, "not-an-id")).status, 400);
  });

  it("retries a failed split parent: only its failed part runs again, then the merge", async () => {
    const flag = path.join(flags, "split");
    const id = await submit(app.url, "one\nflaky\nthree\n", { job: "flaky", params: { flag, split: true } });
    const [failed] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(failed?.status, "error");
    await waitUntil(
      "every part to be over",
      async () => (await listAll(app.url, `parentId=${id}`)).every((c) => ["output", "error", "canceled"].includes(c.status)),
      60_000,
    );
    const before = await listAll(app.url, `parentId=${id}`);
    const flaky = before.find((c) => c.status === "error");
    assert.ok(flaky !== undefined, `a part in error: ${before.map((c) => c.status).join(", ")}`);
    const refused = await retry(app, flaky.id);
    assert.equal(refused.status, 409, "a part is retried through its parent");
    assert.equal(refused.body.parentId, id);

    await fs.writeFile(flag, "");
    assert.deepEqual((await retry(app, id)).body, { id, status: "wait" });
    const [done] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(done?.status, "output", done?.error ?? "");
    assert.equal(await result(app.url, id), "ONE\nFLAKY\nTHREE");
    const after = new Map((await listAll(app.url, `parentId=${id}`)).map((c) => [c.id, c]));
    for (const child of before) {
      const now = after.get(child.id)!;
      assert.equal(now.status, "output");
      // A part that was output never ran again; one that failed (or was canceled by the failure) ran once more.
      if (child.status === "output") assert.deepEqual(now.attempts, child.attempts, `${child.id} ran again`);
      else assert.equal(now.attempts.at(-1)?.outcome, "output");
    }
    assert.equal(after.get(flaky.id)?.attempts.length, 2);
  });

  it("DELETE /api/tasks?status=&olderThan= removes finished tasks with their documents and leaves the others", async () => {
    const flag = path.join(flags, "never");
    const failing = await Promise.all([1, 2].map((i) => submit(app.url, `doc ${i}`, { job: "flaky", params: { flag } })));
    const running = await submit(app.url, "still running", { job: "sleep", params: { ms: 60_000 } });
    await waitAllFinal(app.url, failing, 60_000);
    await waitUntil("the sleeping task to run", async () => (await getTask(app.url, running)).status === "work", 30_000);
    for (const id of failing) assert.ok((await documentsOf(app, id)).length > 0, `${id} has documents`);

    assert.equal((await clean(app, "status=work&olderThan=0")).body.field, "status");
    assert.equal((await clean(app, "status=error&olderThan=last-week")).body.field, "olderThan");
    assert.equal((await clean(app, "olderThan=0")).body.field, "status");
    assert.deepEqual((await clean(app, "status=error&olderThan=2000-01-01T00:00:00Z")).body, { deleted: 0, more: false });

    // Without olderThan: every error task, whenever it ended.
    const cleaned = await clean(app, "status=error");
    assert.equal(cleaned.status, 200);
    assert.ok(Number(cleaned.body.deleted) >= 2, JSON.stringify(cleaned.body));
    for (const id of failing) {
      assert.equal((await call(app, "GET", `/api/tasks/${id}`)).status, 404);
      assert.deepEqual(await documentsOf(app, id), [], `${id}'s documents are gone`);
    }
    assert.equal((await getTask(app.url, running)).status, "work", "a running task is left alone");
    await call(app, "DELETE", `/api/tasks/${running}`);
  });

  it("a user key retries and cleans its own tasks only", async () => {
    const makeKey = async (user: string): Promise<string> => {
      const res = await fetch(`${app.url}/api/keys`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
        body: JSON.stringify({ user }),
      });
      assert.equal(res.status, 201);
      return ((await res.json()) as { key: string }).key;
    };
    const [alice, bob] = [await makeKey("alice"), await makeKey("bob")];
    const flag = path.join(flags, "users");
    const res = await fetch(`${app.url}/api/tasks?job=flaky&params=${encodeURIComponent(JSON.stringify({ flag }))}`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice}`, "content-type": "application/octet-stream" },
      body: "alice's document",
    });
    const id = ((await res.json()) as { id: string }).id;
    assert.equal((await waitAllFinal(app.url, [id], 60_000))[0]?.status, "error");
    assert.equal((await retry(app, id, bob)).status, 404, "another user's task is answered as missing");
    assert.equal((await clean(app, "status=error&olderThan=0&user=alice", bob)).status, 403);
    assert.deepEqual((await clean(app, "status=error&olderThan=0", bob)).body, { deleted: 0, more: false }, "bob has none");
    assert.equal((await getTask(app.url, id)).status, "error");
    assert.deepEqual((await retry(app, id, alice)).body, { id, status: "input" });
    await waitAllFinal(app.url, [id], 60_000);
    assert.deepEqual((await clean(app, "status=error&olderThan=0", alice)).body, { deleted: 1, more: false });
    assert.equal((await call(app, "GET", `/api/tasks/${id}`)).status, 404);
  });
});

describe("operations: retention", () => {
  let app: EmbeddedApp;
  before(async () => {
    app = await startEmbeddedApp({
      slots: 2,
      env: { DOCQ_JOBS_DIR: await testJobsDir() },
      configYaml: "retention:\n  errorMs: 1000\n  outputMs: 1000\n  sweepMs: 200\n",
    });
  });
  after(async () => {
    await app?.stop();
  });

  it("removes records and documents of tasks finished longer than the window ago, and leaves a running task alone", async () => {
    const running = await submit(app.url, "still running", { job: "sleep", params: { ms: 60_000 } });
    const flags = await tempDir("flags");
    const failed = await submit(app.url, "broken", { job: "flaky", params: { flag: path.join(flags, "never") } });
    const done = await submit(app.url, "fine", { job: "wordcount" });
    // Counted now, while their inputs are surely there: 1 s after they end they may be gone already.
    for (const id of [failed, done, running]) assert.ok((await documentsOf(app, id)).length > 0, `${id} has documents`);
    const documentsBefore = (await storedBlobKeys(app.dataDir)).length;
    await waitUntil("the sleeping task to run", async () => (await getTask(app.url, running)).status === "work", 30_000);

    await waitUntil(
      "the finished tasks to be removed",
      async () => {
        const statuses = await Promise.all([failed, done].map(async (id) => (await fetch(`${app.url}/api/tasks/${id}`)).status));
        return statuses.every((s) => s === 404);
      },
      30_000,
    );
    // The records go first, their documents right after (a crash in between leaves them to the blob GC).
    await waitUntil(
      "the finished tasks' documents to be removed",
      async () => (await Promise.all([failed, done].map((id) => documentsOf(app, id)))).every((docs) => docs.length === 0),
      30_000,
    );
    const documentsAfter = (await storedBlobKeys(app.dataDir)).length;
    assert.ok(documentsAfter < documentsBefore, `${documentsBefore} documents before, ${documentsAfter} after`);
    const still = await getTask(app.url, running);
    assert.equal(still.status, "work", "a running task is never swept");
    assert.ok((await documentsOf(app, running)).length > 0, "nor are its documents");
    await fetch(`${app.url}/api/tasks/${running}`, { method: "DELETE" });
  });
});
