import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { listAll, mapLimit, startEmbeddedApp, waitAllFinal, type EmbeddedApp } from "./helpers.js";
import { storedBlobKeys } from "./stored-blobs.js";

/** What `wc` prints for a text: newlines, whitespace-separated words, bytes. */
function wc(text: string): { lines: number; words: number; bytes: number } {
  return {
    lines: (text.match(/\n/g) ?? []).length,
    words: text.split(/\s+/).filter((w) => w !== "").length,
    bytes: Buffer.byteLength(text),
  };
}

/** About 1 KB of text, different for each i. */
function documentOf(i: number): string {
  const words = ["alpha", "beta", "gamma", "délta", "epsilon", "z"];
  const lines = Array.from({ length: 10 + (i % 7) }, (_, l) =>
    Array.from({ length: 8 + ((i + l) % 9) }, (_, w) => words[(i * 3 + l + w) % words.length]).join(" "),
  );
  return `doc ${i}\n${lines.join("\n")}\n`;
}

/** Every document of the data dir (a file or a small document's row) and every partial upload. */
async function storedFiles(dataDir: string): Promise<string[]> {
  const partial = await fs.readdir(path.join(dataDir, "blobs", ".tmp")).catch(() => [] as string[]);
  return [...(await storedBlobKeys(dataDir)), ...partial.map((name) => `.tmp/${name}`)].sort();
}

/**
 * POSTs a form the way a client that keeps sending does (http.request): a refusal can come before
 * the whole body is sent, and the server then stops reading; the answer is what counts.
 */
async function postForm(url: string, form: FormData): Promise<{ status: number; body: { error: string; field: string } }> {
  const encoded = new Response(form);
  const contentType = encoded.headers.get("content-type") ?? "";
  const bytes = Buffer.from(await encoded.arrayBuffer());
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request(
      `${url}/api/tasks/batch`,
      { method: "POST", headers: { "content-type": contentType, "content-length": String(bytes.length) }, agent: false },
      (res) => {
        answered = true;
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("error", reject);
        res.on("end", () => {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(parts).toString()) as { error: string; field: string } });
        });
      },
    );
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    req.end(bytes);
  });
}

/** A batch form: `fields`, then one file per document, then `after` (fields given after the files). */
function batchForm(docs: readonly string[], fields: Record<string, string>, after: Record<string, string> = {}): FormData {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.set(name, value);
  docs.forEach((doc, i) => form.append("file", new Blob([doc]), `doc${i}.txt`));
  for (const [name, value] of Object.entries(after)) form.set(name, value);
  return form;
}

describe("POST /api/tasks/batch", () => {
  let app: EmbeddedApp;
  /** The limit of one request's documents together: a little over the 1,000-document batch. */
  const MAX_BODY = 2_000_000;
  before(async () => {
    app = await startEmbeddedApp({ slots: 2, configYaml: `maxBodyBytes: ${MAX_BODY}\n` });
  });
  after(async () => {
    await app?.stop();
  });

  it("takes 1,000 documents in one request, answers their ids in file order, and every output is right", async () => {
    const docs = Array.from({ length: 1000 }, (_, i) => documentOf(i));
    // Every task named by its position, and a few with a priority of their own.
    const tasks = docs.map((_, i) => ({ name: `doc${i}`, ...(i % 100 === 0 ? { priority: 90 } : {}) }));
    const res = await fetch(`${app.url}/api/tasks/batch`, {
      method: "POST",
      body: batchForm(docs, { job: "wordcount-warm", priority: "40", tasks: JSON.stringify(tasks) }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { ids } = (await res.json()) as { ids: string[] };
    assert.equal(ids.length, 1000);
    assert.equal(new Set(ids).size, 1000);
    const done = await waitAllFinal(app.url, ids, 120_000);
    for (const [i, task] of done.entries()) {
      assert.equal(task.status, "output", `task ${i}: ${task.error}`);
      assert.equal(task.name, `doc${i}`);
      assert.equal(task.priority, i % 100 === 0 ? 90 : 40);
      assert.equal(task.job, "wordcount-warm");
    }
    const outputs = await mapLimit(ids, 16, async (id) => (await fetch(`${app.url}/api/tasks/${id}/result`)).json());
    outputs.forEach((output, i) => assert.deepEqual(output, wc(docs[i]!), `task ${i}`));
  });

  it("runs each file's own job from tasks when the form gives no shared job", async () => {
    const docs = ["one two\n", "three\n", "four five six\n"];
    const tasks = [{ job: "wordcount-warm" }, { job: "noop" }, { job: "wordcount-warm", priority: 70 }];
    const res = await fetch(`${app.url}/api/tasks/batch`, {
      method: "POST",
      body: batchForm(docs, { priority: "30", tasks: JSON.stringify(tasks) }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { ids } = (await res.json()) as { ids: string[] };
    const done = await waitAllFinal(app.url, ids, 60_000);
    assert.deepEqual(
      done.map((task) => [task.job, task.priority, task.status]),
      [
        ["wordcount-warm", 30, "output"],
        ["noop", 30, "output"],
        ["wordcount-warm", 70, "output"],
      ],
    );
    assert.deepEqual(await (await fetch(`${app.url}/api/tasks/${ids[2]}/result`)).json(), wc(docs[2]!));
  });

  it("applies fields given after the files to every task, tasks' entries over them", async () => {
    const docs = ["one two\n", "three\n", "four five six\n"];
    const res = await fetch(`${app.url}/api/tasks/batch`, {
      method: "POST",
      body: batchForm(docs, { name: "early" }, { job: "wordcount-warm", priority: "20", tasks: '[{}, {"job": "noop"}, {"priority": 80}]' }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { ids } = (await res.json()) as { ids: string[] };
    const done = await waitAllFinal(app.url, ids, 60_000);
    assert.deepEqual(
      done.map((task) => [task.job, task.priority, task.name, task.status]),
      [
        ["wordcount-warm", 20, "early", "output"],
        ["noop", 20, "early", "output"],
        ["wordcount-warm", 80, "early", "output"],
      ],
    );
    assert.deepEqual(await (await fetch(`${app.url}/api/tasks/${ids[0]}/result`)).json(), wc(docs[0]!));
  });

  it("refuses the whole batch for one bad part, naming its position, and stores nothing", async () => {
    const docs = Array.from({ length: 1000 }, (_, i) => documentOf(i));
    const before = { tasks: (await listAll(app.url, "")).length, files: await storedFiles(app.dataDir) };
    const refusals: Array<{ form: FormData; status: number; field: string; message?: string }> = [];

    const badPriority = docs.map(() => ({}) as Record<string, unknown>);
    badPriority[500] = { priority: 500 };
    refusals.push({
      form: batchForm(docs, { job: "wordcount-warm", tasks: JSON.stringify(badPriority) }),
      status: 400,
      field: "tasks[500].priority",
    });

    const badJob = docs.map(() => ({}) as Record<string, unknown>);
    badJob[700] = { job: "no-such-job" };
    refusals.push({
      form: batchForm(docs, { job: "wordcount-warm", tasks: JSON.stringify(badJob) }),
      status: 400,
      field: "tasks[700].job",
      message: 'tasks[700].job: unknown job "no-such-job"',
    });

    // Last: documents are counted as they are stored, several at once, so a file after it could be the one seen to cross.
    const oversize = [...docs.slice(0, 7), "x".repeat(MAX_BODY)];
    refusals.push({ form: batchForm(oversize, { job: "wordcount-warm" }), status: 413, field: "file[7]" });

    refusals.push({ form: batchForm(docs.slice(0, 3), { job: "wordcount-warm", tasks: "[{}, {}]" }), status: 400, field: "file[2]" });
    refusals.push({
      form: batchForm(docs.slice(0, 3), { job: "wordcount-warm", tasks: '[{"user": "eve"}]' }),
      status: 400,
      field: "tasks[0].user",
    });
    refusals.push({ form: batchForm(docs.slice(0, 3), { priority: "7" }), status: 400, field: "job" });
    // No shared job: the entry that gives none is named by its file.
    refusals.push({
      form: batchForm(docs.slice(0, 3), { tasks: '[{"job": "wordcount-warm"}, {}, {"job": "noop"}]' }),
      status: 400,
      field: "job",
      message: "file[1]: job: is required",
    });
    refusals.push({
      form: batchForm(docs.slice(0, 3), { priority: "900", tasks: '[{"job": "noop"}, {"job": "noop"}, {"job": "noop"}]' }),
      status: 400,
      field: "priority",
    });
    refusals.push({ form: batchForm([...docs.slice(0, 3), ""], { job: "wordcount-warm" }), status: 400, field: "file[3]" });
    // Fields after the files: checked once the form has ended, the documents stored meanwhile then dropped.
    refusals.push({ form: batchForm(docs, {}, { priority: "7" }), status: 400, field: "job" });
    refusals.push({ form: batchForm(docs.slice(0, 3), {}, { job: "noop", tasks: "[{}, {}]" }), status: 400, field: "tasks" });
    refusals.push({
      form: batchForm(docs, {}, { job: "noop", tasks: JSON.stringify(badJob) }),
      status: 400,
      field: "tasks[700].job",
      message: 'tasks[700].job: unknown job "no-such-job"',
    });
    refusals.push({ form: batchForm(docs.slice(0, 3), { job: "noop" }, { priority: "high" }), status: 400, field: "priority" });

    for (const { form, status, field, message } of refusals) {
      const answer = await postForm(app.url, form);
      assert.equal(answer.status, status, `${field}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.field, field, answer.body.error);
      if (message !== undefined) assert.ok(answer.body.error.startsWith(message), answer.body.error);
    }
    const raw = await fetch(`${app.url}/api/tasks/batch?job=wordcount-warm`, { method: "POST", body: "just text" });
    assert.equal(raw.status, 400);
    assert.equal(((await raw.json()) as { field: string }).field, "body");

    assert.equal((await listAll(app.url, "")).length, before.tasks, "no task was recorded");
    assert.deepEqual(await storedFiles(app.dataDir), before.files, "no document was left on disk");
  });
});
