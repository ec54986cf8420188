import assert from "node:assert/strict";
import { promises as fs, utimesSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";
import { collectBlobGarbage } from "./blob-gc.js";
import { FsBlobStore } from "./fs-blob-store.js";
import { blobKeys, newTaskId, outputKeyOf, type NewTaskSpec } from "../queue/new-task.js";
import { SqliteTaskStore } from "../store/sqlite/sqlite-task-store.js";
import { TaskQueue } from "../queue/task-queue.js";
import { makeSchedule } from "../schedules/schedule-store.contract.js";
import { scheduleBlobKeys } from "../schedules/schedule-model.js";
import type { LeaseClaim } from "../model/claims.js";

const claimOf = (task: { id: string; tries: number }): LeaseClaim => ({ id: task.id, owner: "w1", tries: task.tries });

let dir: string;
let store: SqliteTaskStore;
let blobs: FsBlobStore;
let queue: TaskQueue;
const processedBy = { site: "test", node: "n1" };
const GRACE_MS = 60_000;

function spec(overrides: Partial<NewTaskSpec> = {}): NewTaskSpec {
  const id = newTaskId("test");
  return {
    id,
    site: "test",
    user: "u",
    name: "doc",
    job: "noop",
    params: {},
    priority: 50,
    maxTries: 3,
    input: blobKeys.input(id),
    ...overrides,
  };
}

async function put(key: string, ageMs = 2 * GRACE_MS): Promise<void> {
  await blobs.put(key, Readable.from([Buffer.from(key)]));
  const file = path.join(blobs.root, key);
  const when = (Date.now() - ageMs) / 1000;
  utimesSync(file, when, when);
}

async function keys(): Promise<string[]> {
  const all: string[] = [];
  for await (const entry of blobs.list()) all.push(entry.key);
  return all.sort();
}

const collect = () => collectBlobGarbage({ blobs, store, graceMs: GRACE_MS });

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-blob-gc-"));
  store = SqliteTaskStore.open(path.join(dir, "tasks.sqlite"));
  blobs = await FsBlobStore.open(path.join(dir, "blobs"));
  queue = new TaskQueue({
    store,
    site: "test",
    leaseMs: 60_000,
    backoffBaseMs: 1,
    backoffMaxMs: 1,
    requeueWorkOnReload: false,
    maxSplitDepth: 2,
  });
});
afterEach(async () => {
  queue.stop();
  await store.close();
  await fs.rm(dir, { recursive: true, force: true });
});

describe("collectBlobGarbage", () => {
  it("keeps the document of a schedule that exists, removes an old one whose schedule is gone", async () => {
    const kept = makeSchedule();
    await store.createSchedule(kept);
    const gone = makeSchedule();
    await put(scheduleBlobKeys.input(kept.id));
    await put(scheduleBlobKeys.input(gone.id));
    const report = await collect();
    assert.deepEqual(await keys(), [scheduleBlobKeys.input(kept.id)]);
    assert.equal(report.removed, 1);
  });

  it("removes an old input whose task was never created, and keeps a young one (an upload about to become a task)", async () => {
    await put("test-01JAAAAAAAAAAAAAAAAAAAAAAA/input");
    await put("test-01JBBBBBBBBBBBBBBBBBBBBBBB/input", 1000);
    const report = await collect();
    assert.deepEqual(await keys(), ["test-01JBBBBBBBBBBBBBBBBBBBBBBB/input"]);
    assert.equal(report.removed, 1);
    assert.deepEqual(
      await fs.readdir(blobs.root).then((names) => names.sort()),
      [".tmp", "test-01JBBBBBBBBBBBBBBBBBBBBBBB"],
      "no empty folder left",
    );
  });

  it("keeps what tasks refer to and the current attempt's blobs; removes outputs of attempts that lost", async () => {
    const done = await queue.submit(spec());
    const running = await queue.submit(spec());
    await put(done.input!);
    await put(running.input!);
    const [first] = await queue.pull("w1", 1);
    // The first attempt stored its output and died before reporting; the second one won.
    await put(blobKeys.output(first!.id, 1));
    await queue.sweepExpiredLeases();
    await store.requeue(
      { id: first!.id, owner: "w1", tries: 1 },
      { error: "lost", processedBy: null, ranAt: { site: null, node: null } },
      0,
      0,
    );
    queue.stop();
    const again = new TaskQueue({
      store,
      site: "test",
      leaseMs: 60_000,
      backoffBaseMs: 1,
      backoffMaxMs: 1,
      requeueWorkOnReload: false,
      maxSplitDepth: 2,
    });
    await again.reload();
    const [second] = await again.pull("w1", 1);
    assert.equal(second?.tries, 2);
    await put(blobKeys.output(second!.id, 2));
    assert.equal(
      await again.succeed({ id: second!.id, owner: "w1", tries: 2 }, { output: blobKeys.output(second!.id, 2), processedBy }),
      true,
    );
    // The other task runs now, its attempt storing an output (old on disk: a long script).
    const [third] = await again.pull("w2", 1);
    await put(blobKeys.output(third!.id, third!.tries));
    again.stop();
    await collect();
    assert.deepEqual(await keys(), [done.input!, blobKeys.output(done.id, 2), running.input!, blobKeys.output(running.id, 1)].sort());
  });

  it("removes the parts of an abandoned split, keeps the parts the children were made from, and a canceled task's late output", async () => {
    const parent = await queue.submit(spec());
    await put(parent.input!);
    const [first] = await queue.pull("w1", 1);
    // Attempt 1 wrote its parts and was lost; attempt 2 split for real.
    await put(blobKeys.splitPart(parent.id, 1, 0));
    await put(blobKeys.splitPart(parent.id, 1, 1));
    await store.requeue(
      { id: first!.id, owner: "w1", tries: 1 },
      { error: "lost", processedBy: null, ranAt: { site: null, node: null } },
      0,
      0,
    );
    await store.claim([first!.id], { owner: "w1", expiresAt: Date.now() + 60_000 }, Date.now());
    const parts = [blobKeys.splitPart(parent.id, 2, 0), blobKeys.splitPart(parent.id, 2, 1)];
    for (const part of parts) await put(part);
    assert.equal(
      await queue.split(
        { id: parent.id, owner: "w1", tries: 2 },
        parts.map((input) => ({ input })),
        processedBy,
      ),
      true,
    );
    const canceled = await queue.submit(spec());
    const [leased] = (await queue.pull("w1", 3)).filter((t) => t.id === canceled.id);
    await queue.cancel(canceled.id);
    // The canceled task's run finished anyway and stored its output after the cancel removed the folder.
    await put(blobKeys.output(canceled.id, leased!.tries));
    await collect();
    assert.deepEqual(await keys(), [parent.input!, ...parts].sort());
  });

  it("judges a part's outputs in its parent's folder by the part: keeps the accepted and the running attempts', removes the rest", async () => {
    const parent = await queue.submit(spec());
    await put(parent.input!);
    const [leased] = await queue.pull("w1", 1);
    const parts = [0, 1, 2].map((i) => blobKeys.splitPart(parent.id, 1, i));
    for (const part of parts) await put(part);
    assert.equal(
      await queue.split(
        claimOf(leased!),
        parts.map((input) => ({ input })),
        processedBy,
      ),
      true,
    );
    const [won, running, canceled] = await store.children(parent.id);
    const pulled = await queue.pull("w1", 3);
    assert.equal(pulled.length, 3);
    for (const child of pulled) await put(outputKeyOf(child, child.tries));
    // `won`'s first attempt stored its output and was lost; its second one won.
    await store.requeue(claimOf({ ...won!, tries: 1 }), { error: "lost", processedBy: null, ranAt: { site: null, node: null } }, 0, 0);
    await store.claim([won!.id], { owner: "w1", expiresAt: Date.now() + 60_000 }, Date.now());
    await put(outputKeyOf(won!, 2));
    assert.equal(await queue.succeed({ id: won!.id, owner: "w1", tries: 2 }, { output: outputKeyOf(won!, 2), processedBy }), true);
    // One of a part whose record is gone.
    await put(blobKeys.partOutput(parent.id, newTaskId("test"), 1));
    await collect();
    const kept = [parent.input!, ...parts, outputKeyOf(won!, 2)];
    assert.deepEqual(await keys(), [...kept, outputKeyOf(running!, 1), outputKeyOf(canceled!, 1)].sort());
    // A canceled part fails its parent and cancels its siblings: what they had not reported goes, what a retried parent reuses stays.
    await queue.cancel(canceled!.id);
    await collect();
    assert.deepEqual(await keys(), kept.sort());
    assert.equal(outputKeyOf(won!, 2), `${parent.id}/part-output-2-${won!.id}`);
  });

  it("removes partial uploads and empty folders nobody touched within the grace period", async () => {
    const stale = path.join(blobs.root, ".tmp", "stale-upload");
    const fresh = path.join(blobs.root, ".tmp", "fresh-upload");
    await fs.writeFile(stale, "partial");
    await fs.writeFile(fresh, "partial");
    const old = (Date.now() - 2 * GRACE_MS) / 1000;
    utimesSync(stale, old, old);
    const emptyFolder = path.join(blobs.root, "test-01JCCCCCCCCCCCCCCCCCCCCCCC");
    await fs.mkdir(emptyFolder);
    utimesSync(emptyFolder, old, old);
    const report = await collect();
    assert.equal(report.leftovers, 2);
    assert.deepEqual(await fs.readdir(path.join(blobs.root, ".tmp")), ["fresh-upload"]);
    assert.deepEqual(await fs.readdir(blobs.root), [".tmp"]);
  });
});
