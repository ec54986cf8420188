import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createParser } from "eventsource-parser";
import type { Task } from "../common/model/task-model.js";
import { freePort, getTask, ownChild, REPO, startEmbeddedApp, submit, tempDir, waitUntil, type EmbeddedApp } from "./helpers.js";
import { SiteProcesses } from "./site-processes.js";
import { startNats, type NatsServer } from "./nats.js";

/*
 * The operations issue's script failures, progress and events, against the real app: a script's
 * `retry: false`, progress lines in the record and in GET /api/events, resuming the stream with
 * Last-Event-ID across a dropped connection, and `docq wait`'s exit codes, across a restart too.
 */

interface StreamedEvent {
  eventId: string | undefined;
  type: string | undefined;
  data: { id: string; status: string; job: string; user: string; parentId: string | null; progress: number | null; message: string | null };
}

/** An open GET /api/events: what it received so far, and how to drop the connection. */
interface EventClient {
  events: StreamedEvent[];
  close(): void;
}

async function openEvents(url: string, opts: { task?: string; lastEventId?: string; key?: string } = {}): Promise<EventClient> {
  const abort = new AbortController();
  const query = opts.task === undefined ? "" : `?task=${opts.task}`;
  const res = await fetch(`${url}/api/events${query}`, {
    headers: {
      ...(opts.lastEventId === undefined ? {} : { "last-event-id": opts.lastEventId }),
      ...(opts.key === undefined ? {} : { authorization: `Bearer ${opts.key}` }),
    },
    signal: abort.signal,
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
  const events: StreamedEvent[] = [];
  const parser = createParser({
    onEvent: (m) => events.push({ eventId: m.id, type: m.event, data: JSON.parse(m.data) as StreamedEvent["data"] }),
  });
  const body = res.body;
  assert.ok(body !== null);
  void (async () => {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of body) parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
    } catch {
      // Aborted: the test dropped the connection.
    }
  })();
  return { events, close: () => abort.abort() };
}

const statusesOf = (events: readonly StreamedEvent[], id: string): string[] =>
  events.filter((e) => e.type === "task" && e.data.id === id).map((e) => e.data.status);

async function waitStatus(url: string, id: string, status: Task["status"], timeoutMs = 60_000): Promise<Task> {
  await waitUntil(`task ${id} to be ${status}`, async () => (await getTask(url, id)).status === status, timeoutMs);
  return getTask(url, id);
}

/** Runs `docq wait` against `url`; answers its exit code and output. */
function docqWait(url: string, id: string, extra: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", url, "wait", id, ...extra], (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

describe("script failures, progress and the event stream", () => {
  let app: EmbeddedApp;

  before(async () => {
    app = await startEmbeddedApp({ slots: 2 });
  });
  after(async () => {
    await app?.stop();
  });

  it('a script answering {"error", "retry": false} ends its task in error after one try, whatever maxTries', async () => {
    const id = await submit(app.url, "this is not a PDF", { job: "pdfcheck", maxTries: 5 });
    const done = await waitStatus(app.url, id, "error");
    assert.equal(done.tries, 1);
    assert.match(
      done.error ?? "",
      /^job "pdfcheck" failed: not a PDF: the document does not start with %PDF- \(the script asked for no retry\)/,
    );
    const ok = await submit(app.url, "%PDF-1.7 a tiny one", { job: "pdfcheck", maxTries: 5 });
    assert.equal((await waitStatus(app.url, ok, "output")).tries, 1);
  });

  it("shows a running script's progress in its record and in the event stream", async () => {
    const id = await submit(app.url, "doc", { job: "progress", params: { steps: 4, ms: 700 } });
    const stream = await openEvents(app.url, { task: id });
    try {
      // While it runs: a progress below 1 with its message, the task still in work.
      await waitUntil(
        "a progress in the record",
        async () => {
          const t = await getTask(app.url, id);
          return t.status === "work" && t.progress !== null && t.progress > 0;
        },
        60_000,
      );
      const running = await getTask(app.url, id);
      assert.match(running.progressMessage ?? "", /^step [2-4] of 4$/);
      await waitStatus(app.url, id, "output");
      await waitUntil("the output event", () => statusesOf(stream.events, id).includes("output"), 30_000);
      const progress = stream.events.filter((e) => e.data.id === id && e.data.status === "work" && e.data.progress !== null);
      assert.ok(progress.length >= 2, `progress events: ${JSON.stringify(progress.map((e) => e.data))}`);
      assert.deepEqual(progress.at(-1)?.data.message, "step 4 of 4");
      const values = progress.map((e) => e.data.progress ?? -1);
      assert.deepEqual(
        values,
        [...values].sort((a, b) => a - b),
        "in order",
      );
      assert.ok(
        stream.events.every((e) => e.data.id === id),
        "?task= streams that task only",
      );
    } finally {
      stream.close();
    }
  });

  it("resumes with Last-Event-ID after a dropped connection: no event lost, none twice", async () => {
    const first = await openEvents(app.url);
    const a = await submit(app.url, "first document", { job: "wordcount" });
    await waitUntil("a's output event", () => statusesOf(first.events, a).includes("output"), 60_000);
    const lastEventId = first.events.at(-1)?.eventId;
    assert.ok(lastEventId !== undefined);
    first.close();
    // Meanwhile, with nobody listening:
    const b = await submit(app.url, "second document", { job: "wordcount" });
    const c = await submit(app.url, "third document", { job: "wordcount" });
    await waitStatus(app.url, b, "output");
    await waitStatus(app.url, c, "output");
    const second = await openEvents(app.url, { lastEventId });
    try {
      await waitUntil(
        "b's and c's events replayed",
        () => statusesOf(second.events, b).includes("output") && statusesOf(second.events, c).includes("output"),
        30_000,
      );
      assert.deepEqual(statusesOf(second.events, b), ["input", "work", "output"]);
      assert.deepEqual(statusesOf(second.events, c), ["input", "work", "output"]);
      assert.deepEqual(statusesOf(second.events, a), [], "nothing the first connection had already");
      assert.ok(
        second.events.every((e) => e.type === "task"),
        "no gap: the id was still kept",
      );
      const ids = [...first.events, ...second.events].map((e) => e.eventId);
      assert.equal(new Set(ids).size, ids.length, "no event id twice");
      // An id the server no longer keeps: a gap event first, then what is kept.
      const stale = await openEvents(app.url, { lastEventId: "zzzz-1" });
      await waitUntil("the gap event", () => stale.events.length > 0, 30_000);
      stale.close();
      assert.equal(stale.events[0]?.type, "gap");
    } finally {
      second.close();
    }
  });

  it("refuses a malformed ?task= with 400 naming it", async () => {
    const res = await fetch(`${app.url}/api/events?task=nope`);
    assert.equal(res.status, 400);
    assert.deepEqual(((await res.json()) as { field: string }).field, "task");
  });

  it("docq wait exits 0 for output, 1 for error, 2 for canceled, 4 for an unknown task, 3 when nothing answers", async () => {
    const ok = await submit(app.url, "a few words", { job: "wordcount" });
    const failed = await submit(app.url, "x", { job: "fail", maxTries: 1 });
    const slow = await submit(app.url, "x", { job: "sleep", params: { ms: 60_000 } });
    const [okWait, failedWait] = await Promise.all([docqWait(app.url, ok), docqWait(app.url, failed)]);
    assert.equal(okWait.code, 0, okWait.stderr);
    assert.equal(okWait.stdout, `${ok} output\n`);
    assert.equal(failedWait.code, 1, failedWait.stderr);
    assert.match(failedWait.stderr, /this job always fails/);
    const canceled = docqWait(app.url, slow);
    await waitStatus(app.url, slow, "work");
    await fetch(`${app.url}/api/tasks/${slow}`, { method: "DELETE" });
    const canceledWait = await canceled;
    assert.equal(canceledWait.code, 2, canceledWait.stderr);
    assert.equal(canceledWait.stdout, `${slow} canceled\n`);
    const unknown = await docqWait(app.url, "local-01ARZ3NDEKTSV4RRFFQ69G5FAV");
    assert.equal(unknown.code, 4, unknown.stderr);
    assert.match(unknown.stderr, /404/);
    const nobody = `http://127.0.0.1:${await freePort()}`;
    const unreachable = await docqWait(nobody, ok, ["--timeout", "2"]);
    assert.equal(unreachable.code, 3, unreachable.stderr);
    assert.match(unreachable.stderr, /cannot reach docq at .* for 2 s/);
  });
});

describe("who sees which events, with authentication on", () => {
  const ADMIN = "events-admin-key-0123456789";
  let app: EmbeddedApp;

  before(async () => {
    app = await startEmbeddedApp({ slots: 2, env: { DOCQ_ADMIN_KEY: ADMIN, DOCQ_METRICS_KEY: "events-metrics-key-0123456789" } });
  });
  after(async () => {
    await app?.stop();
  });

  const post = async (key: string, query: string): Promise<string> => {
    const res = await fetch(`${app.url}/api/tasks?${query}`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/octet-stream" },
      body: "some words",
    });
    assert.equal(res.status, 201, await res.clone().text());
    return ((await res.json()) as { id: string }).id;
  };

  it("a user key sees its own user's tasks only, the admin all; no key 401, the metrics key 403", async () => {
    assert.equal((await fetch(`${app.url}/api/events`)).status, 401);
    const metrics = await fetch(`${app.url}/api/events`, { headers: { authorization: "Bearer events-metrics-key-0123456789" } });
    assert.equal(metrics.status, 403);
    const made = await fetch(`${app.url}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ user: "alice" }),
    });
    const alice = ((await made.json()) as { key: string }).key;
    const asAdmin = await openEvents(app.url, { key: ADMIN });
    const asAlice = await openEvents(app.url, { key: alice });
    try {
      const bobs = await post(ADMIN, "job=wordcount&user=bob");
      const alices = await post(alice, "job=wordcount");
      await waitUntil(
        "both outputs on the admin's stream",
        () => statusesOf(asAdmin.events, bobs).includes("output") && statusesOf(asAdmin.events, alices).includes("output"),
        60_000,
      );
      await waitUntil("alice's output on her stream", () => statusesOf(asAlice.events, alices).includes("output"), 30_000);
      assert.deepEqual(statusesOf(asAlice.events, bobs), [], "never another user's task");
      assert.ok(asAlice.events.every((e) => e.data.user === "alice"));
    } finally {
      asAdmin.close();
      asAlice.close();
    }
  });
});

describe("docq wait across a restart of the app", () => {
  it("keeps waiting while the app is down and exits 0 once the task, run again after the restart, ends output", async () => {
    const dataDir = await tempDir("events-restart");
    const port = await freePort();
    let app = await startEmbeddedApp({ slots: 1, dataDir, port });
    try {
      const id = await submit(app.url, "a document", { job: "sleep", params: { ms: 4000 } });
      const waiter = ownChild(
        spawn(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", app.url, "wait", id, "--timeout", "120"], {
          stdio: ["ignore", "pipe", "pipe"],
        }),
      );
      let out = "";
      waiter.stdout.on("data", (d: Buffer) => (out += d.toString()));
      waiter.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => waiter.once("exit", (code) => resolve(code)));
      await waitStatus(app.url, id, "work");
      // The waiter is connected to the stream before the app goes.
      await waitUntil("docq wait to show the task running", () => out.includes(`${id} work`), 30_000);
      await app.kill();
      app = await startEmbeddedApp({ slots: 1, dataDir, port });
      const code = await exited;
      assert.equal(code, 0, out);
      assert.match(out, new RegExp(`${id} output\\n`));
      assert.match(out, /lost the server/);
      assert.equal((await getTask(app.url, id)).status, "output");
    } finally {
      await app.stop();
    }
  });
});

describe("cluster mode: the queuer's events reach every controller of the site", () => {
  let nats: NatsServer;
  const urls: string[] = [];
  const site = new SiteProcesses();

  before(async () => {
    nats = await startNats();
    const dataDir = await tempDir("events-cluster");
    const env = { DOCQ_NATS_URL: nats.url, DATA_DIR: dataDir, DOCQ_SLOTS: "2", DOCQ_LOG_LEVEL: "info" };
    for (const name of ["controller 1", "controller 2"]) {
      const port = await freePort();
      urls.push(`http://127.0.0.1:${port}`);
      site.start(name, "controller", { ...env, PORT: String(port) });
    }
    site.start("queuer", "queuer", env);
    site.start("worker", "worker", env);
    await waitUntil(
      "both controllers to answer with a queuer and a worker",
      async () => {
        if (site.gone().length > 0) return true;
        for (const url of urls) {
          const health = await fetch(`${url}/api/health`).catch(() => null);
          if (health?.status !== 200) return false;
          const stats = (await (await fetch(`${url}/api/stats`)).json()) as { workers: unknown[] };
          if (stats.workers.length !== 1) return false;
        }
        return true;
      },
      90_000,
      250,
    );
    if (site.gone().length > 0) throw new Error(`a process of the site exited during start-up:\n${site.gone().join("\n")}`);
  });

  after(async () => {
    await site.stopAll();
    await nats?.stop();
  });

  it("streams the same numbered events on both controllers, and an id from one resumes on the other", async () => {
    const [one, two] = urls as [string, string];
    const onOne = await openEvents(one);
    const onTwo = await openEvents(two);
    try {
      // A queuer broadcasts to the controllers it has discovered: a controller that started a moment
      // ago may not be known to it yet. A first task seen on both streams shows that both are.
      const warmUp = await submit(one, "a first document", { job: "wordcount" });
      await waitUntil(
        "a first task's output on both streams",
        () => statusesOf(onOne.events, warmUp).includes("output") && statusesOf(onTwo.events, warmUp).includes("output"),
        60_000,
      ).catch(async (err: unknown) => {
        // What each side saw, for a failure that only a loaded machine shows.
        const record = await fetch(`${one}/api/tasks/${warmUp}`).then((res) => res.text(), String);
        const seen = `on one: ${statusesOf(onOne.events, warmUp).join(",")}; on two: ${statusesOf(onTwo.events, warmUp).join(",")}`;
        throw new Error(`${String(err)}\n${seen}\ntask: ${record}\n${site.outputs()}`);
      });
      const a = await submit(one, "a document", { job: "wordcount" });
      await waitUntil(
        "a's output on both streams",
        () => statusesOf(onOne.events, a).includes("output") && statusesOf(onTwo.events, a).includes("output"),
        60_000,
      );
      const idsOf = (events: readonly StreamedEvent[]): (string | undefined)[] =>
        events.filter((e) => e.data.id === a).map((e) => e.eventId);
      assert.deepEqual(idsOf(onOne.events), idsOf(onTwo.events));
      assert.deepEqual(statusesOf(onOne.events, a), ["input", "work", "output"]);
      const lastEventId = onOne.events.at(-1)?.eventId;
      onOne.close();
      const b = await submit(one, "another document", { job: "wordcount" });
      await waitStatus(one, b, "output");
      const resumed = await openEvents(two, { lastEventId });
      try {
        await waitUntil("b's events replayed on the other controller", () => statusesOf(resumed.events, b).includes("output"), 30_000);
        assert.deepEqual(statusesOf(resumed.events, b), ["input", "work", "output"]);
        assert.deepEqual(statusesOf(resumed.events, a), []);
        assert.ok(
          resumed.events.every((e) => e.type === "task"),
          "no gap",
        );
      } finally {
        resumed.close();
      }
      // docq wait against the other controller than the one that took the task.
      const c = await submit(one, "x", { job: "sleep", params: { ms: 1000 } });
      const waited = await docqWait(two, c);
      assert.equal(waited.code, 0, waited.stderr);
    } finally {
      onOne.close();
      onTwo.close();
    }
  });
});
