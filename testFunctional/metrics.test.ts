import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { parsePrometheusText, sampleKey } from "../common/metrics/prometheus-text.js";
import { TASK_STATUSES } from "../common/model/task-model.js";
import { freePort, getTask, startEmbeddedApp, submit, tempDir, waitAllFinal, waitUntil, type EmbeddedApp } from "./helpers.js";
import { SiteProcesses } from "./site-processes.js";
import { startNats, type NatsServer } from "./nats.js";

/** Quick retries, so the failing task's two attempts take well under a second. */
const CONFIG = `
queue:
  backoffBaseMs: 50
  backoffMaxMs: 100
`;

const DOCS = ["one two three\n", "four five\nsix\n", "seven\n"];
const FAIL_DOC = "this one fails\n";
const SLEEP_DOC = "canceled while it sleeps\n";

async function scrape(url: string): Promise<{ text: string; samples: Map<string, number> }> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  return { text, samples: parsePrometheusText(text) };
}

/**
 * A known mix: 3 wordcount outputs, a task of job fail with maxTries 2 (one retry, then error),
 * and a sleep canceled while it runs. Answers the bytes submitted.
 */
async function runTheMix(url: string): Promise<number> {
  const sleeper = await submit(url, SLEEP_DOC, { job: "sleep", params: { ms: 60_000 } });
  await waitUntil("the sleep task to run", async () => (await getTask(url, sleeper)).status === "work", 60_000, 100);
  const ids = [];
  for (const doc of DOCS) ids.push(await submit(url, doc, { job: "wordcount" }));
  ids.push(await submit(url, FAIL_DOC, { job: "fail", maxTries: 2 }));
  const ended = await waitAllFinal(url, ids);
  assert.deepEqual(
    ended.map((t) => t.status),
    ["output", "output", "output", "error"],
  );
  const res = await fetch(`${url}/api/tasks/${sleeper}`, { method: "DELETE" });
  assert.equal(res.status, 200, await res.text());
  await waitAllFinal(url, [sleeper]);
  return [...DOCS, FAIL_DOC, SLEEP_DOC].reduce((sum, doc) => sum + Buffer.byteLength(doc), 0);
}

/** The figures the mix must leave, whatever the number of processes: each attempt counted once. */
async function assertTheMix(url: string, submittedBytes: number, slots: number): Promise<void> {
  // The canceled attempt's report and the slot it frees arrive shortly after the cancel's answer.
  await waitUntil(
    "the canceled attempt to be counted and every slot idle",
    async () => {
      const { samples } = await scrape(url);
      return (
        samples.get(sampleKey("docq_task_runs_total", { job: "sleep", outcome: "canceled" })) === 1 &&
        samples.get(sampleKey("docq_slots", { state: "idle" })) === slots
      );
    },
    30_000,
    200,
  );
  const { text, samples: m } = await scrape(url);
  const runs = [...m].filter(([key]) => key.startsWith("docq_task_runs_total{"));
  assert.deepEqual(
    new Map(runs),
    new Map([
      [sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "output" }), 3],
      [sampleKey("docq_task_runs_total", { job: "fail", outcome: "retry" }), 1],
      [sampleKey("docq_task_runs_total", { job: "fail", outcome: "error" }), 1],
      [sampleKey("docq_task_runs_total", { job: "sleep", outcome: "canceled" }), 1],
    ]),
  );
  const expected: Record<string, number> = { output: 3, error: 1, canceled: 1 };
  for (const status of TASK_STATUSES)
    assert.equal(m.get(sampleKey("docq_tasks", { status })), expected[status] ?? 0, `docq_tasks ${status}`);
  assert.equal(m.get("docq_queue_ready"), 0);
  assert.equal(m.get("docq_queue_delayed"), 0);
  assert.equal(m.get("docq_queue_highest_priority"), -1);
  for (const [job, attempts] of [
    ["wordcount", 3],
    ["fail", 2],
    ["sleep", 1],
  ] as const) {
    assert.equal(m.get(sampleKey("docq_task_run_seconds_count", { job })), attempts, `run seconds of ${job}`);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_bucket", { job, le: "+Inf" })), attempts);
    assert.equal(m.get(sampleKey("docq_queue_wait_seconds_count", { job })), attempts, `queue waits of ${job}`);
  }
  assert.ok((m.get(sampleKey("docq_task_run_seconds_sum", { job: "sleep" })) ?? 0) > 0);
  assert.equal(m.get(sampleKey("docq_slots", { state: "busy" })), 0);
  assert.equal(m.get(sampleKey("docq_slots", { state: "idle" })), slots);
  assert.equal(m.get("docq_leases_expired_total"), 0);
  assert.equal(m.get("docq_submitted_bytes_total"), submittedBytes);
  assert.equal(m.get("docq_metrics_nodes_missing"), 0);
  // Prometheus conventions: each docq metric typed once; Moleculer's own figures follow.
  assert.match(text, /^# TYPE docq_task_runs_total counter$/m);
  assert.match(text, /^# TYPE docq_task_run_seconds histogram$/m);
  assert.match(text, /^# TYPE docq_tasks gauge$/m);
  assert.equal(text.match(/^# TYPE docq_slots /gm)?.length, 1);
  assert.ok(text.indexOf("docq_tasks") < text.indexOf("moleculer_"), "docq's metrics come before Moleculer's");
}

describe("/metrics: the queue's figures", () => {
  describe("embedded mode", () => {
    let app: EmbeddedApp;
    before(async () => {
      app = await startEmbeddedApp({ slots: 2, configYaml: CONFIG });
    });
    after(async () => app?.stop());

    it("starts with every status at 0 and an empty queue", async () => {
      const { samples } = await scrape(app.url);
      for (const status of TASK_STATUSES) assert.equal(samples.get(sampleKey("docq_tasks", { status })), 0);
      assert.equal(samples.get("docq_queue_highest_priority"), -1);
      assert.equal(samples.get(sampleKey("docq_slots", { state: "idle" })), 2);
    });

    it("counts a known mix of tasks exactly", async () => {
      const bytes = await runTheMix(app.url);
      await assertTheMix(app.url, bytes, 2);
    });
  });

  describe("cluster mode: queuer, controller and two workers over NATS", () => {
    let nats: NatsServer;
    let url: string;
    const site = new SiteProcesses();

    before(async () => {
      nats = await startNats();
      const configFile = path.join(await tempDir("metrics-config"), "docq.yaml");
      await fs.writeFile(configFile, CONFIG);
      const port = await freePort();
      url = `http://127.0.0.1:${port}`;
      const env = {
        DOCQ_NATS_URL: nats.url,
        PORT: String(port),
        DATA_DIR: await tempDir("metrics-cluster-data"),
        DOCQ_CONFIG: configFile,
        DOCQ_SLOTS: "2",
        DOCQ_LOG_LEVEL: "warn",
      };
      site.start("queuer", "queuer", env);
      site.start("controller", "controller", env);
      site.start("worker 1", "worker", env);
      site.start("worker 2", "worker", env);
      await waitUntil(
        "the site's four processes to report their metrics, and the controller to see the queuer's actions",
        async () => {
          // A process that died will never report: stop waiting (a throw would be retried).
          if (site.gone().length > 0) return true;
          // The queuer reports its metrics before the controller may have its actions (a submit then answers 503).
          const health = await fetch(`${url}/api/health`).catch(() => null);
          if (health?.ok !== true) return false;
          const res = await fetch(`${url}/metrics`).catch(() => null);
          if (res?.status !== 200) return false;
          const m = parsePrometheusText(await res.text());
          return m.get(sampleKey("docq_slots", { state: "idle" })) === 4 && m.get("docq_queue_ready") === 0;
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

    it("sums the processes' figures: every attempt counted once, the slots of both workers", async () => {
      const bytes = await runTheMix(url);
      await assertTheMix(url, bytes, 4);
    });

    it("counts the slots of the workers still there once one stops, and keeps the queuer's counts", async () => {
      const before = (await scrape(url)).samples;
      const worker = site.named("worker 2").child;
      const exited = new Promise((resolve) => worker.once("exit", resolve));
      worker.kill("SIGTERM");
      await exited;
      await waitUntil(
        "the stopped worker's slots to leave the sums",
        async () => (await scrape(url)).samples.get(sampleKey("docq_slots", { state: "idle" })) === 2,
        30_000,
        200,
      );
      const m = (await scrape(url)).samples;
      assert.equal(m.get("docq_metrics_nodes_missing"), 0, "a process that left is no longer asked");
      for (const [key, value] of before) {
        if (key.startsWith("docq_task_runs_total") || key.startsWith("docq_tasks{") || key === "docq_submitted_bytes_total")
          assert.equal(m.get(key), value, key);
      }
    });
  });
});
