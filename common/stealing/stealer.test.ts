import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { blobKeys, newTaskId } from "../queue/new-task.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import type { StealPolicy } from "./steal-policy.js";
import { Stealer, type OtherSites, type StealerOptions } from "./stealer.js";
import { TaskQueue } from "../queue/task-queue.js";
import { directQueuerClient } from "../queue/queue-client.js";
import { KeyRing } from "../accounts/key-ring.js";
import type { Task } from "../model/task-model.js";
import { Registry } from "prom-client";
import { registerStealerMetrics } from "../metrics/definitions.js";
import { parsePrometheusText, sampleKey } from "../metrics/prometheus-text.js";

/** One site: its store, queue, blobs and stealer; the stealers call each other directly. */
interface TestSite {
  name: string;
  store: SqliteTaskStore;
  queue: TaskQueue;
  blobs: FsBlobStore;
  stealer: Stealer;
  /** The site's docq metrics (docq_stolen_total). */
  metrics: Registry;
  /** The site's queuer as its stealer reaches it: a worker's heartbeat through it tells the site's slots. */
  local: ReturnType<typeof directQueuerClient>;
}

const quiet = { info: (): void => undefined, warn: (): void => undefined };
let dir: string;
let sites: Map<string, TestSite>;

function others(): OtherSites {
  const at = (name: string): Stealer => {
    const s = sites.get(name);
    if (s === undefined) throw Object.assign(new Error(`no site ${name}`), { name: "ServiceNotFoundError" });
    return s.stealer;
  };
  return {
    offer: (victim, request) => at(victim).handleOffer(request),
    input: (victim, request) => at(victim).handleInput(request),
    probe: async (victim, request) => at(victim).handleProbe(request),
    heartbeat: (owner, request) => at(owner).handleHeartbeat(request),
    complete: (owner, output, meta) => at(owner).handleComplete(output, meta),
    fail: (owner, request) => at(owner).handleFail(request),
    cancel: (thief, request) => at(thief).onCancel(request),
    publishBacklog: (backlog) => {
      for (const s of sites.values()) s.stealer.onBacklog(backlog);
    },
  };
}

async function addSite(name: string, policy: Partial<StealPolicy> = {}, extra: Partial<StealerOptions> = {}): Promise<TestSite> {
  const store = SqliteTaskStore.open(path.join(dir, name, "tasks.sqlite"));
  const queue = new TaskQueue({
    store,
    site: name,
    leaseMs: 10_000,
    backoffBaseMs: 0,
    backoffMaxMs: 0,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
  });
  const blobs = await FsBlobStore.open(path.join(dir, name, "blobs"));
  const site = {} as TestSite;
  const metrics = new Registry();
  const local = directQueuerClient({ queue, store, keys: new KeyRing(store), site: name, heartbeatMs: 1000, blobs, log: quiet });
  const stealer = new Stealer({
    policy: {
      site: name,
      enabled: true,
      onlyWhenIdle: true,
      minVictimBacklog: 1,
      minPriority: 0,
      maxInFlight: 4,
      allow: null,
      backlogTtlMs: 60_000,
      plate: "default",
      crossPlate: false,
      ...policy,
    },
    // The site's queuer as the stealer reaches it, each message checked as the service checks it.
    local,
    others: others(),
    blobs,
    heartbeatMs: 1000,
    reportRetryMs: 100,
    log: quiet,
    metrics: registerStealerMetrics(metrics),
    ...extra,
  });
  Object.assign(site, { name, store, queue, blobs, stealer, metrics, local });
  sites.set(name, site);
  return site;
}

/** Waits (briefly: everything here is in-process) until `check` holds. */
async function eventually(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function submitWithInput(site: TestSite, body: string, priority: number): Promise<Task> {
  const id = newTaskId(site.name);
  await site.blobs.put(blobKeys.input(id), Readable.from([body]));
  // Through the queuer's action, as the controller submits: the input's size comes with it.
  return site.local.submit({
    inputBytes: Buffer.byteLength(body),
    id,
    site: site.name,
    user: "u",
    name: body,
    job: "noop",
    params: {},
    priority,
    maxTries: 3,
    input: blobKeys.input(id),
  });
}

/** Runs a proxy at the thief as a worker would: leases it, writes an output, completes it. */
async function runProxy(thief: TestSite, output: string): Promise<Task> {
  const [proxy] = await thief.queue.pull("worker@b", 1);
  assert.ok(proxy, "a proxy is queued at the thief");
  const key = blobKeys.output(proxy.id, proxy.tries);
  await thief.blobs.put(key, Readable.from([output]));
  const claim = { id: proxy.id, owner: "worker@b", tries: proxy.tries };
  assert.equal(await thief.queue.succeed(claim, { output: key, processedBy: { site: thief.name, node: "b-node" } }), true);
  return (await thief.store.get(proxy.id))!;
}

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-stealer-test-"));
  sites = new Map();
});
afterEach(async () => {
  for (const s of sites.values()) {
    s.queue.stop();
    await s.store.close();
  }
  await fs.rm(dir, { recursive: true, force: true });
});

describe("Stealer", () => {
  it("counts the tasks it takes in from each site and lends out to each (docq_stolen_total)", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    const c = await addSite("c");
    for (const p of [10, 20, 30]) await submitWithInput(a, `doc ${p}`, p);
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(2), 2);
    assert.equal(await c.stealer.stealRound(4), 1);
    const stolen = async (site: TestSite, direction: string, other: string): Promise<number | undefined> =>
      parsePrometheusText(await site.metrics.metrics()).get(sampleKey("docq_stolen_total", { direction, site: other }));
    assert.equal(await stolen(a, "out", "b"), 2);
    assert.equal(await stolen(a, "out", "c"), 1);
    assert.equal(await stolen(b, "in", "a"), 2);
    assert.equal(await stolen(c, "in", "a"), 1);
    assert.equal(await stolen(a, "in", "b"), undefined);
  });

  it("steals the victim's best tasks when idle, runs them as proxies and sends the results home", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    await submitWithInput(a, "low", 10);
    const high = await submitWithInput(a, "high", 90);
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(1), 1);

    const lent = (await a.store.get(high.id))!;
    assert.equal(lent.status, "work");
    assert.equal(lent.lease?.owner, "site:b");
    const proxy = (await b.store.get(high.id))!;
    assert.equal(proxy.site, "a");
    assert.equal(proxy.maxTries, 1, "retries are the owner's business");
    assert.equal(await text(await b.blobs.get(proxy.input!)), "high", "the input came across");

    const done = await runProxy(b, "HIGH");
    await b.stealer.onProxyDone(done);
    const home = (await a.store.get(high.id))!;
    assert.equal(home.status, "output");
    assert.deepEqual(home.processedBy, { site: "b", node: "b-node" });
    assert.equal(await text(await a.blobs.get(home.output!)), "HIGH");
    assert.equal(await b.blobs.stat(proxy.input!), null, "the thief cleans up");
    assert.equal(b.stealer.inFlightCount, 0);
  });

  it("hands a failure home, where the owner's retry rule applies", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    const task = await submitWithInput(a, "x", 50);
    await a.stealer.publishBacklog();
    await b.stealer.stealRound(1);
    const [proxy] = await b.queue.pull("worker@b", 1);
    await b.queue.fail({ id: proxy!.id, owner: "worker@b", tries: proxy!.tries }, "script broke", { retryable: true });
    await b.stealer.onProxyDone((await b.store.get(task.id))!);
    const home = (await a.store.get(task.id))!;
    assert.equal(home.status, "input", "queued at home again");
    assert.equal(home.tries, 1);
    assert.equal(home.error, "script broke");
  });

  it("gives a stolen task back to its owner at once when its document stops coming (no bytes for transferStallMs)", async () => {
    const a = await addSite("a");
    const warnings: string[] = [];
    /** Sends 5 bytes of the document, then nothing, without ending or failing: a stream whose sender's node was dropped. */
    const stalling = (): Readable => {
      let sent = false;
      return new Readable({
        read() {
          if (sent) return;
          sent = true;
          this.push("12345");
        },
      });
    };
    const b = await addSite(
      "b",
      {},
      {
        transferStallMs: 150,
        others: { ...others(), input: async () => stalling() },
        log: { info: () => undefined, warn: (m) => void warnings.push(m) },
      },
    );
    const task = await submitWithInput(a, "a document that never arrives", 50);
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(1), 0, "nothing queued at the thief");
    const home = (await a.store.get(task.id))!;
    assert.equal(home.status, "input", "queued at home again at once, not after its lease");
    assert.equal(home.lease, null);
    assert.match(home.error ?? "", /stalled: no bytes for 0 s after 5 byte\(s\)/);
    assert.equal(await b.store.get(task.id), null, "no proxy at the thief");
    assert.equal(b.stealer.inFlightCount, 0);
    assert.ok(
      warnings.some((w) => /document of stolen task .* stalled.*given up/.test(w)),
      warnings.join("\n"),
    );
  });

  it("the owner gives a task back at once when its result stops coming from the thief", async () => {
    const a = await addSite("a", {}, { transferStallMs: 150 });
    const b = await addSite("b");
    const task = await submitWithInput(a, "doc", 50);
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(1), 1);
    const lent = (await a.store.get(task.id))!;
    const stalled = new Readable({ read() {} });
    const meta = { id: task.id, thief: "b", tries: lent.tries, processedBy: { site: "b", node: "b-node" } };
    await assert.rejects(a.stealer.handleComplete(stalled, meta), /result of task .* from site b stalled/);
    const home = (await a.store.get(task.id))!;
    assert.equal(home.status, "input", "queued at home again");
    assert.equal(home.output, null);
    assert.equal(stalled.destroyed, true);
  });

  it("stops a proxy whose task the owner canceled or took back", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    const first = await submitWithInput(a, "one", 50);
    const second = await submitWithInput(a, "two", 50);
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(2), 2);
    const report = await a.queue.cancel(first.id);
    assert.equal(report.task.status, "canceled");
    await a.stealer.onLocalCanceled(first.id, "site:b");
    assert.equal((await b.store.get(first.id))?.status, "canceled");
    // The owner's lease on the other one lapses (as if b had been silent): b's next heartbeat learns it.
    await a.store.renew("site:b", [second.id], 0);
    await a.queue.sweepExpiredLeases();
    await b.stealer.heartbeat();
    assert.equal((await b.store.get(second.id))?.status, "canceled");
    assert.equal(b.stealer.inFlightCount, 0);
  });

  it("keeps its slots and a buffer filled with stolen work, and steals the next one as each ends", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    for (let i = 0; i < 10; i++) await submitWithInput(a, `doc ${i}`, 50);
    // b's worker: 2 slots, idle.
    await b.local.heartbeat("worker@b", [], { slots: 2, busy: 0 });
    // a's backlog reaching b is enough: b fills its 2 slots and one more task per slot, in one request.
    await a.stealer.publishBacklog();
    await eventually("b to queue 4 stolen tasks", () => b.queue.queueCounts().ready === 4);
    assert.equal(b.stealer.inFlightCount, 4);
    assert.equal((await a.queue.queueCounts()).ready, 6);
    const done = await runProxy(b, "out");
    await b.stealer.onProxyDone(done);
    // Its replacement: 2 slots and 2 buffered again (a run of a few ms here could ask for more, at most 4 per slot).
    await eventually("b to steal the replacement", () => b.queue.queueCounts().ready >= 4);
    assert.ok(b.queue.queueCounts().ready <= 10, "slots + buffer: at most 2 + 8");
    assert.equal((await a.store.countByStatus()).output, 1);
  });

  it("does not steal for slots busy with its own tasks: a stolen task would wait there while its owner could run it", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    for (let i = 0; i < 5; i++) await submitWithInput(a, `doc ${i}`, 50);
    const own = [await submitWithInput(b, "own 1", 50), await submitWithInput(b, "own 2", 50)];
    const running = await b.queue.pull("worker@b", 2);
    assert.equal(running.length, 2);
    // b's worker runs its own two tasks in both its slots: its queue is empty, but it has nothing to steal for.
    await b.local.heartbeat(
      "worker@b",
      own.map((t) => t.id),
      { slots: 2, busy: 2 },
    );
    await a.stealer.publishBacklog();
    b.stealer.refill();
    await eventually("b's refill to end", () => !(b.stealer as unknown as { stealing: boolean }).stealing);
    assert.equal(b.stealer.inFlightCount, 0);
    // Both ended, and its workers find the queue empty before their next heartbeat says so: 2 slots and a buffer of one per slot.
    b.stealer.onQueueEmpty(2);
    await eventually("b to steal for its idle slots", () => b.queue.queueCounts().ready === 4);
  });

  it("never lends a task its owner would start sooner itself, nor one whose move costs more than its wait", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    // a has 2 idle slots: its first 2 tasks start there at once; the third would wait a run.
    await a.local.heartbeat("worker@a", [], { slots: 2, busy: 0 });
    const tasks = [];
    for (const p of [90, 80, 70]) tasks.push(await submitWithInput(a, `doc ${p}`, p));
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(3), 1);
    assert.equal((await a.store.get(tasks[2]!.id))?.lease?.owner, "site:b", "the one that would wait");
    // Over a link of 1 byte/ms, a document of 10 kB costs 20 s to move: more than any wait here.
    const big = await submitWithInput(a, "x".repeat(10_000), 10);
    const offer = { thief: "c", plate: "default", max: 5, minPriority: 0, link: { rttMs: 1, bytesPerMs: 1 }, heldByUser: {} };
    assert.deepEqual(await a.stealer.handleOffer(offer), { tasks: [] });
    assert.equal((await a.store.get(big.id))?.status, "input");
  });

  it("lets its plate-mates pick first: a thief of another plate gets what they leave", async () => {
    // A hold of 1.5 s: the plate-mate's backlog and request below must land within it on a loaded CI machine too.
    const a = await addSite("a", { plate: "fr", crossPlate: true }, { crossPlateHoldMs: 1500 });
    const b = await addSite("b", { plate: "fr", crossPlate: true });
    await a.local.heartbeat("worker@a", [], { slots: 1, busy: 1 });
    for (let i = 0; i < 4; i++) await submitWithInput(a, `doc ${i}`, 50);
    const offer = (thief: string, plate: string, max: number) =>
      a.stealer.handleOffer({ thief, plate, max, minPriority: 0, link: { rttMs: 1, bytesPerMs: 1000 }, heldByUser: {} });
    // No plate-mate of a's steals yet: a thief of ny is answered at once.
    const started = Date.now();
    assert.equal((await offer("c", "ny", 1)).tasks.length, 1);
    assert.ok(Date.now() - started < 1000, "no hold without a plate-mate stealing");
    // b's backlog tells a that b steals: ny's request, though it came first, waits while b picks.
    await b.stealer.publishBacklog();
    const across = offer("d", "ny", 3);
    const mate = await offer("b", "fr", 2);
    assert.equal(mate.tasks.length, 2);
    assert.equal((await across).tasks.length, 1, "what b left");
  });

  it("probes a link before its first steal there: the steal is weighed on the measured throughput, not the prior", async () => {
    const a = await addSite("a");
    await a.local.heartbeat("worker@a", [], { slots: 1, busy: 1 });
    for (let i = 0; i < 3; i++) await submitWithInput(a, "x".repeat(100_000), 50);
    await a.stealer.publishBacklog();
    // Assumed at 1 byte/ms, 100 kB would cost 200 s to move: no steal without a probe.
    const unprobed = await addSite("b", {}, { linkPrior: { rttMs: 1, bytesPerMs: 1 } });
    await a.stealer.publishBacklog();
    assert.equal(await unprobed.stealer.stealRound(1), 0);
    // In this process the link is fast: measured, the move is worth it.
    const probing = await addSite("c", {}, { linkPrior: { rttMs: 1, bytesPerMs: 1 }, probeBytes: 256 * 1024 });
    await a.stealer.publishBacklog();
    assert.equal(await probing.stealer.stealRound(1), 1);
    let streamed = 0;
    for await (const chunk of a.stealer.handleProbe({ thief: "c", bytes: 100_000 })) streamed += (chunk as Buffer).length;
    assert.equal(streamed, 100_000);
  });

  it("steals small documents at once while the probe runs, and the large ones only once the link is measured", async () => {
    const a = await addSite("a");
    await a.local.heartbeat("worker@a", [], { slots: 1, busy: 1 });
    // First in line, 100 kB: 1.6 s to move at the cautious 125 bytes/ms, more than its wait (half a run).
    const large = await submitWithInput(a, "x".repeat(100_000), 50);
    const small = [await submitWithInput(a, "s1", 50), await submitWithInput(a, "s2", 50)];
    // A probe that sends its bytes only when the test says so.
    let releaseProbe = (): void => undefined;
    const slowProbe: OtherSites = {
      ...others(),
      probe: async () => {
        const stream = new Readable({ read() {} });
        releaseProbe = () => {
          stream.push(Buffer.alloc(256 * 1024));
          stream.push(null);
        };
        return stream;
      },
    };
    const b = await addSite("b", {}, { others: slowProbe, probeBytes: 256 * 1024 });
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(3), 2, "the two small ones, without waiting for the probe");
    for (const task of small) assert.equal((await a.store.get(task.id))?.lease?.owner, "site:b");
    assert.equal((await a.store.get(large.id))?.status, "input", "the large one waits for the measured figure");
    // Its slots ask for more while the probe still runs: that steal waits for the measured figure,
    // in-process a fast one, over which the large one's move pays.
    b.stealer.onQueueEmpty(3);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal((await a.store.get(large.id))?.status, "input", "not before the probe ends");
    releaseProbe();
    await eventually(
      "the large task stolen once the link is measured",
      async () => (await a.store.get(large.id))?.lease?.owner === "site:b",
    );
    // And queued at b, its document stored there: the test's folders are removed only after that write.
    await eventually("the large task queued at b", async () => (await b.store.get(large.id)) !== null);
  });

  it("cuts a stalled probe short and takes the link for as slow as it showed, without stalling the steal", async () => {
    const a = await addSite("a");
    await a.local.heartbeat("worker@a", [], { slots: 1, busy: 1 });
    for (let i = 0; i < 3; i++) await submitWithInput(a, "x".repeat(1_000_000), 50);
    // 100 kB, then nothing more: a link that stalls.
    const stalling: OtherSites = {
      ...others(),
      probe: async () => {
        const chunks = async function* (): AsyncGenerator<Buffer> {
          yield Buffer.alloc(100_000);
          await new Promise(() => undefined);
        };
        return Readable.from(chunks());
      },
    };
    const b = await addSite("b", {}, { others: stalling, probeBytes: 256 * 1024, probeTimeoutMs: 200 });
    await a.stealer.publishBacklog();
    // At most 100 kB in 200 ms: a 1 MB document's move costs seconds, more than its wait.
    assert.equal(await b.stealer.stealRound(1), 0);
    assert.equal((await a.store.countByStatus()).work, 0);
  });

  it("looks past a queue head of tasks that may not be lent", async () => {
    const a = await addSite("a");
    const b = await addSite("b");
    for (let i = 0; i < 70; i++) {
      const id = newTaskId("a");
      await a.local.submit({
        id,
        site: "a",
        user: "u",
        name: "home",
        job: "noop",
        params: {},
        priority: 50,
        maxTries: 1,
        input: null,
        offload: false,
      });
    }
    const lendable = await submitWithInput(a, "may go", 50);
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(1), 1);
    assert.equal((await a.store.get(lendable.id))?.lease?.owner, "site:b");
  });

  it("keeps to the policy: the allow-list, the minimum priority, the in-flight limit, and own tasks only", async () => {
    const a = await addSite("a", { allow: ["b"] });
    const b = await addSite("b", { minPriority: 50, maxInFlight: 2 });
    const c = await addSite("c");
    for (const p of [10, 60, 70, 80]) await submitWithInput(a, `p${p}`, p);
    await a.stealer.publishBacklog();
    assert.equal(await c.stealer.stealRound(4), 0, "c is not on a's allow-list");
    assert.equal(await b.stealer.stealRound(4), 2, "b takes at most maxInFlight");
    assert.deepEqual(
      (await b.queue.pull("worker@b", 5)).map((t) => t.priority),
      [80, 70],
    );
    await a.stealer.publishBacklog();
    assert.equal(await b.stealer.stealRound(4), 0, "nothing more while two are in flight");
    // b lends nothing of a's: the proxies are not its own tasks.
    await b.stealer.publishBacklog();
    const offer = { thief: "c", plate: "default", max: 5, minPriority: 0, link: { rttMs: 1, bytesPerMs: 1000 }, heldByUser: {} };
    assert.deepEqual(await b.stealer.handleOffer(offer), { tasks: [] });
    const left = (await a.queue.pull("worker@a", 5)).map((t) => t.priority);
    assert.deepEqual(left, [60, 10], "the rest stays home, 10 below b's minimum");
  });
});
