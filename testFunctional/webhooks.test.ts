import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import type { Task } from "../common/model/task-model.js";
import { getTask, startEmbeddedApp, submit, tempDir, waitAllFinal, waitUntil, type EmbeddedApp } from "./helpers.js";

/*
 * Webhooks against the real app: a task created with callbackUrl has its record POSTed to a local
 * receiver when it ends, signed with the HMAC of the body, retried after a 500, and the delivery's
 * outcome kept in the record. And the logs an operator reads: a failed attempt at WARN, a client's
 * 400 at INFO in one line.
 */

const SECRET = "functional-test-webhook-secret";
const CONFIG = "webhooks:\n  backoffBaseMs: 200\n  backoffMaxMs: 1000\n  maxTries: 4\nqueue:\n  backoffBaseMs: 50\n  backoffMaxMs: 100\n";

interface Delivery {
  body: string;
  signature: string | undefined;
  tryHeader: string | undefined;
}

/** A receiver of webhooks that answers 500 to the first try of each task and 200 after (or 503 to all while `down`). */
class Receiver {
  readonly deliveries = new Map<string, Delivery[]>();
  down = false;
  url = "";
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const id = String(req.headers["x-docq-task"]);
      const got = this.deliveries.get(id) ?? [];
      got.push({
        body: Buffer.concat(chunks).toString("utf8"),
        signature: req.headers["x-docq-signature"] as string | undefined,
        tryHeader: req.headers["x-docq-delivery-try"] as string | undefined,
      });
      this.deliveries.set(id, got);
      res.writeHead(this.down ? 503 : got.length === 1 ? 500 : 200).end();
    });
  });

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/docq-hook`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Creates a task with the raw query string `query` (job and callbackUrl among it); answers the HTTP status and body. */
async function create(
  url: string,
  query: URLSearchParams,
  body = "a document\n",
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${url}/api/tasks?${query}`, { method: "POST", headers: { "content-type": "application/octet-stream" }, body });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe("webhooks and operator logs (embedded app)", () => {
  const receiver = new Receiver();
  let app: EmbeddedApp;

  before(async () => {
    await receiver.start();
    app = await startEmbeddedApp({ configYaml: CONFIG, env: { DOCQ_WEBHOOK_SECRET: SECRET, DOCQ_LOG_LEVEL: "info" } });
  });
  after(async () => {
    await app?.stop();
    await receiver.close();
  });

  it("POSTs the ended record, signed with the HMAC of the exact body, retried after a 500, the outcome in the record", async () => {
    const created = await create(
      app.url,
      new URLSearchParams({ job: "sleep", params: JSON.stringify({ ms: 0 }), callbackUrl: receiver.url }),
    );
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const id = String(created.json.id);
    const [ended] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(ended?.status, "output");
    assert.equal(ended?.callbackUrl, receiver.url);

    const task = await waitUntil(
      "the delivery to be recorded as delivered",
      async () => {
        const t = await getTask(app.url, id);
        return t.callback?.state === "delivered" ? t : false;
      },
      60_000,
      100,
    );
    assert.equal(task.callback?.tries, 2);
    assert.equal(task.callback?.lastStatus, 200);
    assert.equal(task.callback?.lastError, null);
    assert.ok((task.callback?.deliveredAt ?? 0) >= (task.endTime ?? Infinity));

    const got = receiver.deliveries.get(id) ?? [];
    assert.equal(got.length, 2, "one try answered 500, the next 200");
    assert.deepEqual(
      got.map((d) => d.tryHeader),
      ["1", "2"],
    );
    for (const delivery of got) {
      const expected = `sha256=${createHmac("sha256", SECRET).update(delivery.body).digest("hex")}`;
      assert.equal(delivery.signature, expected, "X-Docq-Signature is the HMAC-SHA256 of the body with webhooks.secret");
      const record = JSON.parse(delivery.body) as Task;
      assert.equal(record.id, id);
      assert.equal(record.status, "output");
      assert.equal(record.output, ended?.output);
    }
    assert.match(app.output(), new RegExp(`webhook of task ${id} to http://127\\.0\\.0\\.1:\\d+: try 1 failed \\(answered 500\\)`));
  });

  it("refuses a callbackUrl that is not http or https with a 400 naming callbackUrl, logged at INFO without a stack", async () => {
    for (const bad of ["ftp://example.com/hook", "file:///etc/passwd", "not a url"]) {
      const created = await create(app.url, new URLSearchParams({ job: "sleep", params: JSON.stringify({ ms: 0 }), callbackUrl: bad }));
      assert.equal(created.status, 400, bad);
      assert.equal(created.json.field, "callbackUrl", JSON.stringify(created.json));
    }
    const lines = await waitUntil("the 400 to be logged", () => {
      const all = app.output().split("\n");
      const at = all.findIndex((l) => /POST \/api\/tasks\?\S* answered 400: /.test(l));
      return at === -1 ? false : all.slice(at, at + 2);
    });
    assert.match(lines[0] ?? "", /\bINFO\b/, lines.join("\n"));
    assert.doesNotMatch(lines[1] ?? "", /^\s+at /, "no stack trace follows the line");
    assert.doesNotMatch(app.output(), /Request error!/, "moleculer-web's own error log of a 4xx is gone");
  });

  it("logs each request at INFO: moleculer-web's line per answer (built only when the level prints it)", async () => {
    const res = await fetch(`${app.url}/api/jobs`);
    assert.equal(res.status, 200);
    await waitUntil("the request to be logged", () => /\bINFO\b.*<= 200 GET \/api\/jobs/.test(app.output()));
  });

  it("logs a failed attempt at WARN with the task id, job, attempt number and the first line of the error", async () => {
    const id = await submit(app.url, "x", { job: "fail", maxTries: 2 });
    const [failed] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(failed?.status, "error");
    for (const [n, next] of [
      [1, "will retry"],
      [2, "gave up"],
    ] as const) {
      const logged = (): string | undefined =>
        app
          .output()
          .split("\n")
          .find((l) => l.includes(`task ${id} (job fail) attempt ${n}/2 failed`));
      // The app logs the attempt once its end is stored, and its stdout reaches this process through
      // a pipe: the line may come a moment after the task reads as ended.
      const line = await waitUntil(`attempt ${n} to be logged`, () => logged() ?? false, 10_000).catch(() => undefined);
      assert.ok(line !== undefined, `attempt ${n} is logged:\n${app.output()}`);
      assert.match(line, /\bWARN\b/);
      assert.match(line, new RegExp(`\\[(retry|error), ${next}\\]: \\S`));
      assert.doesNotMatch(line, /--- stderr/, "only the first line of the error");
    }
  });
});

describe("webhooks across a restart (embedded app, JSON logs)", () => {
  const receiver = new Receiver();
  const apps: EmbeddedApp[] = [];
  before(() => receiver.start());
  after(async () => {
    for (const app of apps) await app.stop();
    await receiver.close();
  });

  /** Waits until the task's delivery record satisfies `ok`; answers the task. */
  const deliveryOf = (url: string, id: string, what: string, ok: (t: Task) => boolean): Promise<Task> =>
    waitUntil(
      what,
      async () => {
        const t = await getTask(url, id);
        return ok(t) ? t : false;
      },
      60_000,
      100,
    );

  it("goes on with a delivery left pending by a stopped app, and writes one JSON object per log line", async () => {
    receiver.down = true;
    const dataDir = await tempDir("webhook-restart");
    // The next try would be 10 minutes later: only the restart can make it.
    const config = "webhooks:\n  backoffBaseMs: 600000\n  backoffMaxMs: 600000\n";
    const env = { DOCQ_WEBHOOK_SECRET: SECRET, DOCQ_LOG_LEVEL: "info", DOCQ_LOG_FORMAT: "json" };
    const first = await startEmbeddedApp({ dataDir, configYaml: config, env });
    apps.push(first);
    const created = await create(
      first.url,
      new URLSearchParams({ job: "sleep", params: JSON.stringify({ ms: 0 }), callbackUrl: receiver.url }),
    );
    const id = String(created.json.id);
    const pending = await deliveryOf(first.url, id, "the first try recorded", (t) => t.callback?.tries === 1);
    assert.deepEqual([pending.callback?.state, pending.callback?.lastStatus], ["pending", 503]);
    await first.stop();

    const lines = first
      .output()
      .split("\n")
      .filter((l) => l.trim() !== "");
    assert.ok(lines.length > 10);
    for (const line of lines) {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      assert.equal(typeof entry.level, "string", line);
      assert.equal(typeof entry.msg, "string", line);
    }
    assert.ok(lines.some((l) => l.includes(`webhook of task ${id}`)));

    receiver.down = false;
    const second = await startEmbeddedApp({ dataDir, configYaml: config, env });
    apps.push(second);
    const delivered = await deliveryOf(second.url, id, "the delivery resumed and delivered", (t) => t.callback?.state === "delivered");
    assert.equal(delivered.callback?.tries, 2);
    assert.equal(delivered.callback?.lastStatus, 200);
    const got = receiver.deliveries.get(id) ?? [];
    assert.equal(got.length, 2);
    assert.equal(got[0]?.body, got[1]?.body, "the same record, signed the same, after the restart");
    assert.equal(
      got[1]?.signature,
      `sha256=${createHmac("sha256", SECRET)
        .update(got[1]?.body ?? "")
        .digest("hex")}`,
    );
  });
});
