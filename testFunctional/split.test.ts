import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  getTask,
  listAll,
  mapLimit,
  processesWith,
  result,
  startEmbeddedApp,
  submit,
  testJobsDir,
  waitAllFinal,
  waitUntil,
  type EmbeddedApp,
} from "./helpers.js";
import { storedUnder } from "./stored-blobs.js";

/** 20 lines, some empty, so the expected result (non-empty lines, upper-cased) is not the input. */
function document(i: number): string {
  return Array.from({ length: 20 }, (_, l) => (l % 7 === 3 ? "" : `doc ${i} line ${l} mixed Case`)).join("\n") + "\n";
}

function expectedPages(text: string): string {
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.toUpperCase() + "\n")
    .join("");
}

describe("split and merge", () => {
  let app: EmbeddedApp;
  before(async () => {
    // More slots than the widest split below, so a failing child's retry never waits behind a sleeping sibling.
    app = await startEmbeddedApp({ slots: 6, env: { DOCQ_JOBS_DIR: await testJobsDir() }, configYaml: "queue:\n  backoffBaseMs: 50\n" });
  });
  after(async () => {
    await app?.stop();
  });

  it("runs 50 documents of 20 lines through pages, every result correct", async () => {
    const docs = Array.from({ length: 50 }, (_, i) => document(i));
    const ids = await mapLimit(docs, 8, (doc, i) => submit(app.url, doc, { job: "pages", name: `pages-${i}`, priority: 60 }));
    const tasks = await waitAllFinal(app.url, ids, 300_000);
    for (const [i, task] of tasks.entries()) {
      assert.equal(task.status, "output", `${task.id}: ${task.error}`);
      const lines = docs[i]!.split("\n").filter((l) => l !== "").length;
      assert.equal(task.childrenTotal, lines);
      assert.equal(task.childrenCompleted, lines);
      assert.equal(task.children.length, lines);
      assert.equal(await result(app.url, task.id), expectedPages(docs[i]!), `result of document ${i}`);
    }
    const children = await listAll(app.url, `parentId=${ids[0]}`);
    assert.equal(children.length, tasks[0]!.childrenTotal);
    for (const child of children) {
      assert.equal(child.status, "output");
      assert.equal(child.name, "pages-0", "children inherit the name");
      assert.equal(child.priority, 60, "children inherit the priority");
      assert.equal(child.depth, 1);
    }
  });

  it("splits recursively up to the configured depth", async () => {
    const text = Array.from({ length: 9 }, (_, l) => `line ${l}\n`).join("");
    const id = await submit(app.url, text, { job: "halves" });
    const [task] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(task?.status, "output", task?.error ?? "");
    assert.equal(await result(app.url, id), text.toUpperCase());
    const children = await listAll(app.url, `parentId=${id}`);
    assert.equal(children.length, 2);
    const grandchildren = (await Promise.all(children.map((c) => listAll(app.url, `parentId=${c.id}`)))).flat();
    assert.equal(grandchildren.length, 4);
    assert.ok(grandchildren.every((g) => g.depth === 2 && g.status === "output"));
  });

  it("fails a split deeper than queue.maxSplitDepth, failing the whole tree", async () => {
    const id = await submit(app.url, "a\nb\nc\nd\ne\nf\ng\nh\ni\n", { job: "halves", params: { depth: 5 } });
    const [task] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(task?.status, "error");
    assert.match(task?.error ?? "", /deeper than queue\.maxSplitDepth \(2\)/);
  });

  it("fails the parent when a child fails for good, and cancels its siblings", async () => {
    const marker = "31.0271";
    const id = await submit(app.url, "one\nfail\ntwo\nthree\n", { job: "splitfail", params: { sleep: marker } });
    const [task] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(task?.status, "error");
    assert.match(task?.error ?? "", /child .* failed: .*exited with code 1[\s\S]*fails on purpose/);
    const children = await listAll(app.url, `parentId=${id}`);
    assert.equal(children.length, 4);
    const failed = children.filter((c) => c.status === "error");
    assert.equal(failed.length, 1);
    assert.equal(failed[0]?.tries, 2, "the failing child used its tries");
    assert.deepEqual(
      children.filter((c) => c.status !== "error").map((c) => c.status),
      ["canceled", "canceled", "canceled"],
    );
    await waitUntil("the siblings' scripts to be killed", async () => (await processesWith("sleep", marker)).length === 0, 10_000);
  });

  it("cancels a running parent: no child left running, no process, no documents", async () => {
    const marker = "32.0271";
    const id = await submit(app.url, "a\nb\nc\nd\n", { job: "splitfail", params: { sleep: marker } });
    await waitUntil("children to run", async () => (await processesWith("sleep", marker)).length >= 2, 30_000);
    assert.equal((await getTask(app.url, id)).status, "wait");
    const res = await fetch(`${app.url}/api/tasks/${id}`, { method: "DELETE" });
    assert.deepEqual(await res.json(), { id, status: "canceled" });
    const children = await listAll(app.url, `parentId=${id}`);
    assert.equal(children.length, 4);
    assert.ok(
      children.every((c) => c.status === "canceled"),
      JSON.stringify(children.map((c) => c.status)),
    );
    await waitUntil("no child script left", async () => (await processesWith("sleep", marker)).length === 0, 10_000);
    assert.deepEqual(await storedUnder(app.dataDir, id), [], "the parent's documents are removed");
    for (const c of children) assert.deepEqual(await storedUnder(app.dataDir, c.id), []);
    // Nothing of it runs later either.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await processesWith("sleep", marker), []);
  });

  it("refuses to delete a finished part while its parent waits, and the merge has every part", async () => {
    const lines = Array.from({ length: 20 }, (_, i) => `part ${i}`);
    const id = await submit(app.url, lines.join("\n") + "\n", { job: "splitfail", params: { sleep: 0.3 } });
    const part = await waitUntil(
      "a finished part while the parent waits",
      async () => {
        const parent = await getTask(app.url, id);
        if (parent.status !== "wait") return false;
        return (await listAll(app.url, `parentId=${id}&status=output`))[0];
      },
      60_000,
      20,
    );
    const res = await fetch(`${app.url}/api/tasks/${part.id}`, { method: "DELETE" });
    const body = (await res.json()) as { error: string; parentId?: string };
    assert.equal(res.status, 409, JSON.stringify(body));
    assert.match(body.error, new RegExp(`part of task ${id}`));
    assert.equal((await getTask(app.url, part.id)).status, "output", "the part stays");
    const [done] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(done?.status, "output", done?.error ?? "");
    assert.equal(await result(app.url, id), lines.join("\n"), "all 20 parts merged, in order");
    // Once the parent is over, its parts may go.
    assert.equal((await fetch(`${app.url}/api/tasks/${part.id}`, { method: "DELETE" })).status, 200);
  });
});
