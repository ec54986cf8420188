import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import { Registry } from "prom-client";
import { TASK_STATUSES, type AttemptRecord, type Task, type TaskStatus } from "../model/task-model.js";
import { newTask } from "../queue/new-task.js";
import type { TaskQueueEvents } from "../queue/task-queue.js";
import { NO_QUEUED_PRIORITY } from "./definitions.js";
import { parsePrometheusText, sampleKey } from "./prometheus-text.js";
import { feedQueuerMetrics } from "./queuer-feed.js";

/** A queue that says what the test makes it say, with counts the test sets. */
class FakeQueue extends EventEmitter<TaskQueueEvents> {
  counts = { ready: 0, delayed: 0, highestPriority: null as number | null };
  queueCounts(): { ready: number; delayed: number; highestPriority: number | null } {
    return this.counts;
  }
}

const T0 = 1_000_000;

function task(over: Partial<Task> = {}): Task {
  const base = newTask(
    {
      id: "local-01JD3AAAAAAAAAAAAAAAAAAAAA",
      site: "local",
      user: "u",
      name: "n",
      job: "wordcount",
      params: {},
      priority: 50,
      maxTries: 3,
      input: "in",
    },
    T0,
  );
  return { ...base, ...over };
}

function attempt(over: Partial<AttemptRecord>): AttemptRecord {
  return { n: 1, site: "local", node: "w1", start: T0, end: T0 + 1500, outcome: "output", error: null, ...over };
}

function setUp(countByStatus: () => Promise<Record<TaskStatus, number>> = async () => ({}) as Record<TaskStatus, number>) {
  const registry = new Registry();
  const queue = new FakeQueue();
  const errors: unknown[] = [];
  const unsubscribe = feedQueuerMetrics(registry, { queue, countByStatus, onCollectError: (err) => errors.push(err), now: () => T0 });
  const scrape = async (): Promise<Map<string, number>> => parsePrometheusText(await registry.metrics());
  return { registry, queue, errors, unsubscribe, scrape };
}

describe("the queuer's metrics", () => {
  it("count each ended attempt once per job and outcome, lapsed leases apart, with run times in seconds", async () => {
    const { queue, scrape } = setUp();
    const t = task();
    queue.emit("attempt:ended", { task: t, attempt: attempt({ outcome: "retry", error: "boom" }) });
    queue.emit("attempt:ended", { task: t, attempt: attempt({ outcome: "error", end: T0 + 20 }) });
    queue.emit("attempt:ended", { task: { ...t, job: "pages" }, attempt: attempt({ outcome: "split" }) });
    queue.emit("attempt:ended", { task: t, attempt: attempt({ outcome: "lease_lost", end: T0 + 30_000 }) });
    queue.emit("attempt:ended", { task: t, attempt: attempt({ outcome: "canceled", start: null }) });
    const m = await scrape();
    assert.equal(m.get(sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "retry" })), 1);
    assert.equal(m.get(sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "error" })), 1);
    assert.equal(m.get(sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "lease_lost" })), 1);
    assert.equal(m.get(sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "canceled" })), 1);
    assert.equal(m.get(sampleKey("docq_task_runs_total", { job: "pages", outcome: "split" })), 1);
    assert.equal(m.get("docq_leases_expired_total"), 1);
    // retry (1.5 s) and error (0.02 s) of wordcount; the lapsed lease and the never-started cancel have no run time.
    assert.equal(m.get(sampleKey("docq_task_run_seconds_count", { job: "wordcount" })), 2);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_sum", { job: "wordcount" })), 1.52);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_bucket", { job: "wordcount", le: "0.025" })), 1);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_bucket", { job: "wordcount", le: "2.5" })), 2);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_bucket", { job: "wordcount", le: "+Inf" })), 2);
    assert.equal(m.get(sampleKey("docq_task_run_seconds_count", { job: "pages" })), 1);
  });

  it("measure a queue wait once per claim, from when the task became available to its start", async () => {
    const { queue, scrape } = setUp();
    const queued = task({ availableAt: T0 + 1000 });
    queue.emit("task:changed", queued);
    const claimed = { ...queued, status: "work" as const, tries: 1, startTime: T0 + 3500 };
    queue.emit("task:changed", claimed);
    // A progress report of the same attempt: the same start, no second wait.
    queue.emit("task:changed", { ...claimed, progress: 0.5 });
    // Retried after a backoff, claimed again: a second wait.
    const requeued = { ...claimed, status: "input" as const, startTime: T0 + 3500, availableAt: T0 + 6000 };
    queue.emit("task:changed", requeued);
    queue.emit("task:changed", { ...requeued, status: "work" as const, tries: 2, startTime: T0 + 6250 });
    const m = await scrape();
    assert.equal(m.get(sampleKey("docq_queue_wait_seconds_count", { job: "wordcount" })), 2);
    assert.equal(m.get(sampleKey("docq_queue_wait_seconds_sum", { job: "wordcount" })), 2.75);
  });

  it("leave out a claim made before the feed began (a task already running when this queuer took over)", async () => {
    const { queue, scrape } = setUp();
    queue.emit("task:changed", task({ status: "work", tries: 1, startTime: T0 - 5000, availableAt: T0 - 9000, progress: 0.1 }));
    const m = await scrape();
    assert.equal(m.get(sampleKey("docq_queue_wait_seconds_count", { job: "wordcount" })), undefined);
  });

  it("read every status, 0 included, and the queue's counts when scraped; -1 for the highest priority of an empty queue", async () => {
    const { queue, scrape } = setUp(async () => ({ input: 3, output: 2 }) as Record<TaskStatus, number>);
    let m = await scrape();
    for (const status of TASK_STATUSES) {
      assert.equal(m.get(sampleKey("docq_tasks", { status })), status === "input" ? 3 : status === "output" ? 2 : 0, status);
    }
    assert.equal(m.get("docq_queue_ready"), 0);
    assert.equal(m.get("docq_queue_delayed"), 0);
    assert.equal(m.get("docq_queue_highest_priority"), NO_QUEUED_PRIORITY);
    queue.counts = { ready: 4, delayed: 1, highestPriority: 80 };
    m = await scrape();
    assert.equal(m.get("docq_queue_ready"), 4);
    assert.equal(m.get("docq_queue_delayed"), 1);
    assert.equal(m.get("docq_queue_highest_priority"), 80);
  });

  it("show no status counts, and say why, when the store cannot be read", async () => {
    let fail = false;
    const { scrape, errors } = setUp(async () => {
      if (fail) throw new Error("database is locked");
      return { input: 1 } as Record<TaskStatus, number>;
    });
    assert.equal((await scrape()).get(sampleKey("docq_tasks", { status: "input" })), 1);
    fail = true;
    const m = await scrape();
    assert.equal(m.get(sampleKey("docq_tasks", { status: "input" })), undefined);
    assert.equal(m.get("docq_queue_ready"), 0);
    assert.match(String(errors[0]), /database is locked/);
  });

  it("stop counting once unsubscribed", async () => {
    const { queue, scrape, unsubscribe } = setUp();
    unsubscribe();
    queue.emit("attempt:ended", { task: task(), attempt: attempt({}) });
    assert.equal((await scrape()).get(sampleKey("docq_task_runs_total", { job: "wordcount", outcome: "output" })), undefined);
    assert.equal(queue.listenerCount("attempt:ended") + queue.listenerCount("task:changed"), 0);
  });
});
