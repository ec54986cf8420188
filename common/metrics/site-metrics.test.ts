import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Registry } from "prom-client";
import { registerControllerMetrics, registerQueuerMetrics, registerStealerMetrics, registerWorkerMetrics } from "./definitions.js";
import { parsePrometheusText, sampleKey } from "./prometheus-text.js";
import { gatherSnapshots, mergeSnapshots, parseSnapshot } from "./site-metrics.js";

/** The processes of a cluster site: an active queuer, a controller and two workers, each with its own registry. */
function clusterSite() {
  const queuer = new Registry();
  const queuerMetrics = registerQueuerMetrics(
    queuer,
    {
      countByStatus: async () => ({ input: 2, output: 5 }),
      queueCounts: () => ({ ready: 2, delayed: 0, highestPriority: 70 }),
      onCollectError: () => undefined,
    },
    ["input", "work", "output"],
  );
  queuerMetrics.taskRuns.inc({ job: "wordcount", outcome: "output" }, 5);
  queuerMetrics.taskRunSeconds.observe({ job: "wordcount" }, 0.2);
  const controller = new Registry();
  registerControllerMetrics(controller).submitted(1234);
  const workerA = new Registry();
  registerWorkerMetrics(workerA, () => ({ slots: 2, busy: 1 }));
  const workerB = new Registry();
  registerWorkerMetrics(workerB, () => ({ slots: 3, busy: 0 }));
  registerStealerMetrics(workerB).stolen("in", "b", 2);
  return { queuer, controller, workerA, workerB };
}

/** A node's answer as it arrives over the broker: JSON and back. */
async function overTheWire(registry: Registry): Promise<unknown> {
  return JSON.parse(JSON.stringify(await registry.getMetricsAsJSON())) as unknown;
}

describe("the site's metrics", () => {
  it("sum the processes' figures: each reports what it alone knows, so nothing is counted twice", async () => {
    const site = clusterSite();
    const nodes: Record<string, Registry> = site;
    const gathered = await gatherSnapshots(Object.keys(nodes), (nodeID) => overTheWire(nodes[nodeID]!), 1000);
    assert.deepEqual(gathered.missing, []);
    const m = parsePrometheusText(await mergeSnapshots(gathered));
    assert.equal(m.get(sampleKey("docq_slots", { state: "busy" })), 1);
    assert.equal(m.get(sampleKey("docq_slots", { state: "idle" })), 4);
    assert.equal(m.get(sampleKey("docq_tasks", { status: "input" })), 2);
    assert.equal(m.get(sampleKey("docq_tasks", { status: "work" })), 0);
    assert.equal(m.get(sampleKey("docq_tasks", { status: "output" })), 5);
    assert.equal(m.get("docq_queue_ready"), 2);
    assert.equal(m.get("docq_queue_highest_priority"), 70);
    assert.equal(m.get(sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "output" })), 5);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_bucket", { job: "wordcount", le: "0.25" })), 1);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_count", { job: "wordcount" })), 1);
    assert.equal(m.get(sampleKey("docq_stolen_total", { direction: "in", site: "b" })), 2);
    assert.equal(m.get("docq_submitted_bytes_total"), 1234);
    assert.equal(m.get("docq_metrics_nodes_missing"), 0);
  });

  it("leave out a node that fails, answers nonsense or does not answer in time, and count it missing", async () => {
    const site = clusterSite();
    const gathered = await gatherSnapshots(
      ["queuer", "dead", "garbled", "silent"],
      async (nodeID) => {
        if (nodeID === "queuer") return overTheWire(site.queuer);
        if (nodeID === "dead") throw new Error("node dead is not available");
        if (nodeID === "garbled") return [{ name: "x", values: "no" }];
        return new Promise(() => undefined);
      },
      50,
    );
    assert.deepEqual(
      gathered.missing.map((m) => m.nodeID),
      ["dead", "garbled", "silent"],
    );
    assert.match(gathered.missing[1]!.why, /malformed/);
    assert.match(gathered.missing[2]!.why, /no answer within 50 ms/);
    const m = parsePrometheusText(await mergeSnapshots(gathered));
    assert.equal(m.get("docq_metrics_nodes_missing"), 3);
    assert.equal(m.get(sampleKey("docq_tasks", { status: "output" })), 5);
  });

  it("take a value JSON could not carry (NaN arrives as null) as no sample", () => {
    const parsed = parseSnapshot([
      {
        name: "g",
        help: "h",
        type: "gauge",
        values: [
          { value: null, labels: {} },
          { value: 2, labels: { a: "b" } },
        ],
      },
    ]);
    assert.deepEqual(parsed[0]?.values, [{ value: 2, labels: { a: "b" } }]);
    assert.equal(parsed[0]?.aggregator, "sum");
  });

  it("register a role again in the same process without a duplicate-name failure", async () => {
    const registry = new Registry();
    registerWorkerMetrics(registry, () => ({ slots: 1, busy: 1 }));
    registerWorkerMetrics(registry, () => ({ slots: 4, busy: 1 }));
    const m = parsePrometheusText(await registry.metrics());
    assert.equal(m.get(sampleKey("docq_slots", { state: "idle" })), 3);
  });

  it("count nothing stolen for an empty round", async () => {
    const registry = new Registry();
    const steal = registerStealerMetrics(registry);
    steal.stolen("out", "a", 0);
    steal.stolen("out", "a", 3);
    steal.stolen("out", "c", 1);
    const m = parsePrometheusText(await registry.metrics());
    assert.equal(m.get(sampleKey("docq_stolen_total", { direction: "out", site: "a" })), 3);
    assert.equal(m.get(sampleKey("docq_stolen_total", { direction: "out", site: "c" })), 1);
  });
});

describe("parsePrometheusText", () => {
  it("reads samples with and without labels, and refuses a line that is none", () => {
    const m = parsePrometheusText('# HELP x y\n# TYPE x gauge\nx 3\ny{b="2",a="q\\"x"} 1.5\n\n');
    assert.equal(m.get("x"), 3);
    assert.equal(m.get(sampleKey("y", { a: 'q"x', b: "2" })), 1.5);
    assert.throws(() => parsePrometheusText("what is this"), /not a Prometheus sample line/);
  });
});
