import assert from "node:assert/strict";
import { documentedAnswer } from "../common/http/api-schema/documented-answer.js";
import { after, before, describe, it } from "node:test";
import { getTask, mapLimit, startEmbeddedApp, submit, waitAllFinal, waitUntil, type EmbeddedApp } from "./helpers.js";

/** What `wc` prints for a text: newlines, whitespace-separated words, bytes. */
function wc(text: string): { lines: number; words: number; bytes: number } {
  return {
    lines: (text.match(/\n/g) ?? []).length,
    words: text.split(/\s+/).filter((w) => w !== "").length,
    bytes: Buffer.byteLength(text),
  };
}

function randomDocument(i: number): string {
  const words = ["alpha", "beta", "gamma", "délta", "epsilon", "z", "  ", "\t"];
  const lines: string[] = [];
  for (let l = 0; l < 1 + (i % 17); l++) {
    lines.push(Array.from({ length: (i * 7 + l) % 13 }, (_, w) => words[(i + l * 3 + w) % words.length]).join(" "));
  }
  // Never empty: a zero-byte body is refused as a missing document.
  return `doc ${i}\n` + lines.join("\n") + (i % 3 === 0 ? "" : "\n");
}

describe("embedded docq over REST", () => {
  let app: EmbeddedApp;
  before(async () => {
    app = await startEmbeddedApp({ slots: 2, configYaml: "maxBodyBytes: 100000\n" });
  });
  after(async () => {
    await app?.stop();
  });

  it("runs 100 wordcount tasks with correct outputs", async () => {
    const docs = Array.from({ length: 100 }, (_, i) => randomDocument(i));
    const ids = await mapLimit(docs, 16, (doc, i) => submit(app.url, doc, { job: "wordcount", name: `doc${i}` }));
    const tasks = await waitAllFinal(app.url, ids);
    for (const [i, task] of tasks.entries()) {
      assert.equal(task.status, "output", `task ${i}: ${task.error}`);
      assert.equal(task.name, `doc${i}`);
      assert.equal(task.processedBy?.site, "local");
      const res = await fetch(`${app.url}/api/tasks/${task.id}/result`);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), wc(docs[i]!), `task ${i}`);
    }
  });

  it("accepts a multipart form with the document in the field file", async () => {
    const form = new FormData();
    form.set("job", "wordcount");
    form.set("priority", "70");
    form.set("name", "form-doc");
    form.set("file", new Blob(["one two\nthree\n"]), "doc.txt");
    const res = await fetch(`${app.url}/api/tasks`, { method: "POST", body: form });
    assert.equal(res.status, 201);
    const { id, status } = (await res.json()) as { id: string; status: string };
    assert.equal(status, "input");
    const [task] = await waitAllFinal(app.url, [id]);
    assert.equal(task?.priority, 70);
    assert.equal(task?.name, "form-doc");
    assert.deepEqual(await (await fetch(`${app.url}/api/tasks/${id}/result`)).json(), { lines: 2, words: 3, bytes: 14 });
  });

  it("answers 4xx naming the problem, never a 500", async () => {
    const post = (query: string, body?: string, headers: Record<string, string> = {}) =>
      fetch(`${app.url}/api/tasks?${query}`, {
        method: "POST",
        headers: { "content-type": "application/octet-stream", ...headers },
        ...(body === undefined ? {} : { body }),
      });
    const expect = async (res: Response | Promise<Response>, status: number, pattern: RegExp, field?: string) => {
      const r = await res;
      const body = (await r.json()) as { error: string; field?: string };
      assert.equal(r.status, status, JSON.stringify(body));
      assert.match(body.error, pattern);
      if (field !== undefined) assert.equal(body.field, field);
    };
    await expect(post("job=nosuchjob", "x"), 400, /unknown job "nosuchjob"/, "job");
    await expect(post("job=Bad..name", "x"), 400, /job: must match/, "job");
    await expect(post("priority=5", "x"), 400, /job: is required/, "job");
    await expect(post("job=wordcount&priority=101", "x"), 400, /priority: must be an integer 0\.\.100/, "priority");
    await expect(post("job=wordcount&priority=high", "x"), 400, /priority: must be an integer/, "priority");
    await expect(post("job=wordcount&priority=0x10", "x"), 400, /priority: must be an integer/, "priority");
    await expect(post("job=wordcount", ""), 400, /missing body/, "body");
    await expect(post("job=wordcount"), 400, /missing body/, "body");
    await expect(post("job=wordcount", "x".repeat(100_001)), 413, /larger than the limit of 100000 bytes/, "body");
    await expect(post("job=sleep&params=notjson", "x"), 400, /params: is not valid JSON/, "params");
    await expect(post("job=sleep&params=%7B%7D", "x"), 400, /param "ms" is required/, "params");
    await expect(post("job=sleep&params=%7B%22ms%22%3A-1%7D", "x"), 400, /param "ms"/, "params");
    await expect(fetch(`${app.url}/api/tasks/not-an-id`), 400, /malformed task id/, "id");
    await expect(fetch(`${app.url}/api/tasks/local-01JAAAAAAAAAAAAAAAAAAAAAAA`), 404, /not found/, "id");
    await expect(fetch(`${app.url}/api/tasks/local-01JAAAAAAAAAAAAAAAAAAAAAAA/result`), 404, /not found/);
    await expect(fetch(`${app.url}/api/tasks/../../etc/passwd`), 404, /./);
    await expect(fetch(`${app.url}/api/nothing-here`), 404, /./);
    await expect(fetch(`${app.url}/api/tasks?limit=0`), 400, /limit/, "limit");
    await expect(fetch(`${app.url}/api/tasks?status=bogus`), 400, /status/, "status");
    // The app is still healthy after all that.
    assert.equal((await fetch(`${app.url}/api/health`)).status, 200);
  });

  it("answers 409 with the status while a result is not ready, and cancels on DELETE", async () => {
    const id = await submit(app.url, "slow", { job: "sleep", params: { ms: 20_000 } });
    const early = await fetch(`${app.url}/api/tasks/${id}/result`);
    assert.equal(early.status, 409);
    const body = (await early.json()) as { error: string; status: string };
    assert.match(body.error, /has no result yet/);
    assert.ok(["input", "work"].includes(body.status));
    await waitUntil("the sleep task to start", async () => (await getTask(app.url, id)).status === "work");
    const del = await fetch(`${app.url}/api/tasks/${id}`, { method: "DELETE" });
    assert.equal(del.status, 200);
    assert.deepEqual(await del.json(), { id, status: "canceled" });
    const task = await getTask(app.url, id);
    assert.equal(task.status, "canceled");
    // A second DELETE removes the record of a task that is over.
    assert.deepEqual(await (await fetch(`${app.url}/api/tasks/${id}`, { method: "DELETE" })).json(), { id, status: "deleted" });
    assert.equal((await fetch(`${app.url}/api/tasks/${id}`)).status, 404);
  });

  it("lists tasks with a cursor and reports stats", async () => {
    const seen = new Set<string>();
    let cursor: string | null = null;
    do {
      const res: Response = await fetch(`${app.url}/api/tasks?job=wordcount&limit=30${cursor === null ? "" : `&cursor=${cursor}`}`);
      assert.equal(res.status, 200);
      const page = (await res.json()) as { items: { id: string; job: string }[]; nextCursor: string | null };
      for (const t of page.items) {
        assert.equal(t.job, "wordcount");
        assert.ok(!seen.has(t.id), "each task once");
        seen.add(t.id);
      }
      cursor = page.nextCursor;
    } while (cursor !== null);
    assert.equal(seen.size, 101);
    const stats = (await (await fetch(`${app.url}/api/stats`)).json()) as { byStatus: Record<string, number>; slots: number };
    assert.ok(stats.byStatus.output >= 101);
    await waitUntil(
      "the worker to report its slots",
      async () => ((await (await fetch(`${app.url}/api/stats`)).json()) as { slots: number }).slots === 2,
      15_000,
      200,
    );
  });
});

describe("priority order with one worker slot", () => {
  let app: EmbeddedApp;
  before(async () => {
    app = await startEmbeddedApp({ slots: 1 });
  });
  after(async () => {
    await app?.stop();
  });

  it("starts queued tasks highest priority first, FIFO within a priority", async () => {
    const blocker = await submit(app.url, "b", { job: "sleep", params: { ms: 1500 }, priority: 0 });
    await waitUntil("the blocker to start", async () => (await getTask(app.url, blocker)).status === "work");
    const priorities = [10, 90, 50, 90, 10, 100, 0, 50, 90, 10];
    const ids: string[] = [];
    for (const [i, priority] of priorities.entries())
      ids.push(await submit(app.url, `doc ${i}`, { job: "wordcount", priority, name: `n${i}` }));
    const tasks = await waitAllFinal(app.url, ids);
    const started = [...tasks].sort((a, b) => (a.startTime ?? 0) - (b.startTime ?? 0) || a.id.localeCompare(b.id));
    const expected = priorities
      .map((priority, i) => ({ priority, i }))
      .sort((a, b) => b.priority - a.priority || a.i - b.i)
      .map(({ i }) => `n${i}`);
    assert.deepEqual(
      started.map((t) => t.name),
      expected,
    );
  });
});

describe("a failing job", () => {
  let app: EmbeddedApp;
  before(async () => {
    app = await startEmbeddedApp({ slots: 2, configYaml: "queue:\n  backoffBaseMs: 100\n  backoffMaxMs: 1000\n" });
  });
  after(async () => {
    await app?.stop();
  });

  it("is retried with backoff and ends in error after maxTries, with the stderr tail", async () => {
    const id = await submit(app.url, "x", { job: "fail", maxTries: 4 });
    const [task] = await waitAllFinal(app.url, [id], 30_000);
    assert.ok(task);
    assert.equal(task.status, "error");
    assert.equal(task.tries, 4);
    assert.equal(task.maxTries, 4);
    assert.match(task.error ?? "", /exited with code 1/);
    assert.match(task.error ?? "", /stderr \(tail\)[\s\S]*this job always fails/);
    // Backoffs of 100, 200 and 400 ms separate the four attempts.
    assert.ok((task.endTime ?? 0) - task.submitTime >= 700, `took ${(task.endTime ?? 0) - task.submitTime} ms`);
    assert.equal((await fetch(`${app.url}/api/tasks/${id}/result`)).status, 409);
  });
});

describe("metrics and the API description", () => {
  let app: EmbeddedApp;
  before(async () => {
    app = await startEmbeddedApp({ slots: 1 });
  });
  after(async () => {
    await app?.stop();
  });

  it("serves Prometheus metrics at /metrics and the OpenAPI document at /api/openapi.json", async () => {
    const id = await submit(app.url, "a b c\n", { job: "wordcount" });
    await waitAllFinal(app.url, [id]);
    const metrics = await fetch(`${app.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain/);
    const text = await metrics.text();
    // The API's own action; in embedded mode the controller calls its queuer directly (no queuer.submit request).
    assert.match(text, /^moleculer_request_total\{.*action="controller\.createTask".*\} \d+/m);
    assert.match(text, /^moleculer_request_time_count\{/m);
    // Open, like its Swagger UI page; every route in it is checked against the controller's in openapi-document.test.ts.
    const doc = (await (await fetch(`${app.url}/api/openapi.json`)).json()) as { openapi: string; paths: Record<string, unknown> };
    assert.equal(doc.openapi, "3.1.0");
    assert.ok(doc.paths["/api/tasks"] !== undefined && doc.paths["/api/docs"] !== undefined);
    // What the API really answers is what the document says it answers.
    const answers: [path: string, documented: string][] = [
      [`/api/tasks/${id}`, "/api/tasks/{id}"],
      ["/api/tasks?limit=5", "/api/tasks"],
      ["/api/stats", "/api/stats"],
      ["/api/overview", "/api/overview"],
      ["/api/jobs", "/api/jobs"],
      ["/api/health", "/api/health"],
      ["/api/tasks?status=bogus", "/api/tasks"],
    ];
    for (const [url, path] of answers) {
      const res = await fetch(`${app.url}${url}`);
      const parsed = documentedAnswer(doc, "get", path, res.status).safeParse(await res.json());
      assert.ok(parsed.success, `${url} (${res.status}): ${JSON.stringify(parsed.error?.issues)}`);
    }
  });

  it("serves Swagger UI at /api/docs from the app itself, every file it loads, under a CSP that allows nothing external", async () => {
    const page = await fetch(`${app.url}/api/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const csp = page.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-/, "no inline script or style, no eval");
    assert.doesNotMatch(csp, /https?:|\*/, "no other origin is allowed");
    const html = await page.text();
    const loaded = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(loaded.length >= 3, html);
    for (const url of loaded) {
      assert.ok(url.startsWith("/api/docs/"), `${url} is served by the app`);
      const asset = await fetch(`${app.url}${url}`);
      assert.equal(asset.status, 200, url);
      assert.ok((await asset.arrayBuffer()).byteLength > 0, url);
    }
    const init = await (await fetch(`${app.url}/api/docs/docs-init.js`)).text();
    assert.match(init, /url: "\/api\/openapi\.json"/, "the page shows docq's document, not the petstore");
    const missing = await fetch(`${app.url}/api/docs/package.json`);
    assert.equal(missing.status, 404, "nothing else of node_modules is served");
    await missing.body?.cancel();
  });
});
