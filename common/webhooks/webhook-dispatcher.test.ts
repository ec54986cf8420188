import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { newTask } from "../queue/new-task.js";
import type { CallbackDelivery, Task } from "../model/task-model.js";
import { waitUntil } from "../testing/wait-until.js";
import { CallbackUrlSchema } from "./callback-url.js";
import { signBody, verifySignature } from "./signature.js";
import { webhookBackoffMs, WebhookDispatcher, type WebhookSettings } from "./webhook-dispatcher.js";

const SECRET = "a-webhook-secret-for-tests";

interface Received {
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** A local receiver answering each request with the next of `answers` (the last one repeats); "hang" never answers. */
class Receiver {
  readonly received: Received[] = [];
  answers: (number | "hang")[] = [200];
  inFlight = 0;
  maxInFlight = 0;
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    res.once("close", () => this.inFlight--);
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      this.received.push({ body: Buffer.concat(chunks).toString("utf8"), headers: req.headers });
      const answer = this.answers.length > 1 ? this.answers.shift()! : this.answers[0]!;
      if (answer === "hang") return;
      res.writeHead(answer).end("ok");
    });
  });
  url = "";

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook?token=t`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function endedTask(url: string, callback: CallbackDelivery | null = null): Task {
  const task = newTask(
    {
      id: `test-${"0".repeat(20)}${String(Math.floor(Math.random() * 1e6)).padStart(6, "0")}`,
      site: "test",
      user: "u",
      name: "n",
      job: "j",
      params: {},
      priority: 50,
      maxTries: 3,
      input: null,
      callbackUrl: url,
    },
    1_000,
  );
  return { ...task, status: "output", output: "x/output-1", endTime: 2_000, callback };
}

function settings(overrides: Partial<WebhookSettings> = {}): WebhookSettings {
  return { maxTries: 3, backoffBaseMs: 20, backoffMaxMs: 100, timeoutMs: 2_000, concurrency: 4, secret: SECRET, ...overrides };
}

/** A dispatcher whose recorded states and log lines the test reads. */
function dispatcher(overrides: Partial<WebhookSettings> = {}) {
  const recorded: { id: string; delivery: CallbackDelivery }[] = [];
  const logs: string[] = [];
  const d = new WebhookDispatcher({
    settings: settings(overrides),
    record: async (id, delivery) => void recorded.push({ id, delivery }),
    log: { info: (m) => logs.push(`info ${m}`), warn: (m) => logs.push(`warn ${m}`) },
  });
  return { d, recorded, logs };
}

describe("WebhookDispatcher", () => {
  const receiver = new Receiver();
  before(() => receiver.start());
  after(() => receiver.close());

  it("POSTs the ended record as JSON, signed with the HMAC of the exact body, and records it delivered", async () => {
    receiver.received.length = 0;
    receiver.answers = [200];
    const { d, recorded } = dispatcher();
    const task = endedTask(receiver.url);
    d.deliver(task);
    await waitUntil("the delivery recorded", () => recorded.length === 1);
    const [got] = receiver.received;
    assert.ok(got !== undefined);
    assert.equal(got.headers["content-type"], "application/json");
    assert.equal(got.headers["x-docq-task"], task.id);
    assert.ok(verifySignature(SECRET, got.body, got.headers["x-docq-signature"] as string));
    const { callback: _none, ...record } = task;
    assert.deepEqual(JSON.parse(got.body), record);
    assert.equal(recorded[0]?.delivery.state, "delivered");
    assert.equal(recorded[0]?.delivery.tries, 1);
    assert.equal(recorded[0]?.delivery.lastStatus, 200);
    assert.equal(d.pending, 0);
    await d.stop();
  });

  it("retries a 500 after its backoff with the same signed body, then records the 2xx", async () => {
    receiver.received.length = 0;
    receiver.answers = [500, 200];
    const { d, recorded, logs } = dispatcher();
    d.deliver(endedTask(receiver.url));
    await waitUntil("two tries recorded", () => recorded.length === 2);
    assert.deepEqual(
      recorded.map((r) => [r.delivery.state, r.delivery.tries, r.delivery.lastStatus]),
      [
        ["pending", 1, 500],
        ["delivered", 2, 200],
      ],
    );
    assert.equal(receiver.received[0]?.body, receiver.received[1]?.body);
    assert.equal(receiver.received[1]?.headers["x-docq-delivery-try"], "2");
    assert.ok(
      logs.some((l) => /try 1 failed \(answered 500\)/.test(l) && !l.includes("token")),
      logs.join("\n"),
    );
    await d.stop();
  });

  it("gives up after maxTries, recording failed, and resumes a pending delivery from its try count", async () => {
    receiver.answers = [503];
    const first = dispatcher({ maxTries: 2 });
    first.d.deliver(endedTask(receiver.url));
    await waitUntil("the delivery over", () => first.recorded.some((r) => r.delivery.state === "failed"));
    assert.deepEqual(
      first.recorded.map((r) => r.delivery.state),
      ["pending", "failed"],
    );
    assert.ok(first.logs.some((l) => l.startsWith("warn") && /failed for good after 2 tries: answered 503/.test(l)));

    // A record left pending at try 2 (a queuer that stopped): the next try is the third, and the last.
    const resumed = dispatcher({ maxTries: 3 });
    resumed.d.deliver(
      endedTask(receiver.url, {
        state: "pending",
        tries: 2,
        lastStatus: 503,
        lastError: "answered 503",
        lastTryAt: 3_000,
        deliveredAt: null,
      }),
    );
    await waitUntil("the resumed delivery over", () => resumed.recorded.length === 1);
    assert.deepEqual([resumed.recorded[0]?.delivery.state, resumed.recorded[0]?.delivery.tries], ["failed", 3]);
    // Over already: nothing more is tried.
    const over = endedTask(receiver.url, resumed.recorded[0]!.delivery);
    resumed.d.deliver(over);
    assert.equal(resumed.d.pending, 0);
    // The same task retried and ended again after that delivery: its new end is delivered afresh.
    receiver.answers = [200];
    resumed.d.deliver({ ...over, endTime: (over.callback?.lastTryAt ?? 0) + 1 });
    await waitUntil("the new end delivered", () => resumed.recorded.length === 2);
    assert.deepEqual([resumed.recorded[1]?.delivery.state, resumed.recorded[1]?.delivery.tries], ["delivered", 1]);
    await first.d.stop();
    await resumed.d.stop();
  });

  it("records a receiver that cannot be reached, or does not answer in time, with no status and why", async () => {
    const closed = new Receiver();
    await closed.start();
    const unreachableUrl = closed.url;
    await closed.close();
    const { d, recorded } = dispatcher({ maxTries: 1, timeoutMs: 200 });
    d.deliver(endedTask(unreachableUrl));
    receiver.answers = ["hang"];
    d.deliver(endedTask(receiver.url));
    await waitUntil("both recorded", () => recorded.length === 2, 10_000);
    const errors = recorded.map((r) => [r.delivery.lastStatus, r.delivery.lastError]);
    assert.ok(
      errors.some(([s, e]) => s === null && /ECONNREFUSED/.test(String(e))),
      JSON.stringify(errors),
    );
    assert.ok(
      errors.some(([s, e]) => s === null && /no answer within 200 ms/.test(String(e))),
      JSON.stringify(errors),
    );
    await d.stop();
  });

  it("keeps at most `concurrency` tries in flight, and stop cuts them off without recording", async () => {
    receiver.answers = ["hang"];
    receiver.maxInFlight = 0;
    const { d, recorded } = dispatcher({ concurrency: 2 });
    for (let i = 0; i < 5; i++) d.deliver(endedTask(receiver.url));
    await waitUntil("two tries in flight", () => receiver.inFlight === 2);
    // Give a third a chance to start, were the bound broken.
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(receiver.maxInFlight, 2);
    await d.stop();
    assert.equal(recorded.length, 0);
    assert.equal(d.pending, 0);
    await waitUntil("the receiver's requests closed", () => receiver.inFlight === 0);
  });

  it("sends no signature without a secret, and warns once", async () => {
    receiver.received.length = 0;
    receiver.answers = [204];
    const { d, recorded, logs } = dispatcher({ secret: null });
    d.deliver(endedTask(receiver.url));
    await waitUntil("delivered", () => recorded.length === 1);
    assert.equal(receiver.received[0]?.headers["x-docq-signature"], undefined);
    assert.equal(logs.filter((l) => l.startsWith("warn") && l.includes("DOCQ_WEBHOOK_SECRET")).length, 1);
    assert.equal(recorded[0]?.delivery.state, "delivered");
    await d.stop();
  });
});

describe("webhook helpers", () => {
  it("backs off exponentially from the base, capped", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 10, 100].map((n) => webhookBackoffMs(n, 1000, 5000)),
      [1000, 2000, 4000, 5000, 5000, 5000],
    );
  });

  it("signs as sha256=<hex HMAC-SHA256>, and verifies only the exact body", () => {
    assert.equal(
      signBody("key", "The quick brown fox jumps over the lazy dog"),
      "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
    );
    assert.ok(verifySignature("key", "body", signBody("key", "body")));
    assert.ok(!verifySignature("key", "body ", signBody("key", "body")));
    assert.ok(!verifySignature("other", "body", signBody("key", "body")));
    assert.ok(!verifySignature("key", "body", undefined));
  });

  it("accepts http and https callback URLs only, without credentials", () => {
    assert.ok(CallbackUrlSchema.safeParse("https://example.com/hooks/docq?x=1").success);
    assert.ok(CallbackUrlSchema.safeParse("http://127.0.0.1:8080/").success);
    for (const bad of [
      "ftp://example.com/",
      "file:///etc/passwd",
      "javascript:alert(1)",
      "/relative",
      "http://u:p@example.com/",
      `https://e.com/${"a".repeat(2100)}`,
    ]) {
      assert.ok(!CallbackUrlSchema.safeParse(bad).success, bad);
    }
  });
});
