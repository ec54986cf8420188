import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import path from "node:path";
import { after, describe, it } from "node:test";
import { SqliteTaskStore } from "../common/sqlite-task-store.js";
import { listAll, mapLimit, result, startEmbeddedApp, submit, tempDir, waitAllFinal, waitUntil, type EmbeddedApp } from "./helpers.js";

const CONFIG = "queue:\n  backoffBaseMs: 20\n  backoffMaxMs: 200\n";

/** The ids of tasks the store holds in `work`: what a kill interrupts. */
async function runningOnRecord(dataDir: string): Promise<string[]> {
  const store = SqliteTaskStore.open(path.join(dataDir, "tasks.sqlite"));
  try {
    return (await store.list({ status: "work" }, { limit: 1000 })).items.map((t) => t.id);
  } finally {
    await store.close();
  }
}

describe("crash: SIGKILL of the embedded app", () => {
  let app: EmbeddedApp | undefined;
  after(async () => {
    await app?.stop();
  });

  it("loses nothing and records each task done exactly once across three kills", async () => {
    const dataDir = await tempDir("crash");
    app = await startEmbeddedApp({ dataDir, configYaml: CONFIG });
    const port = app.port;
    const docs = Array.from({ length: 300 }, (_, i) => `document ${i}\n`);
    const ids = await mapLimit(docs, 16, (doc, i) => submit(app!.url, doc, { job: "sleep", params: { ms: 20 }, name: `t${i}` }));
    const interrupted = new Set<string>();

    for (let kill = 1; kill <= 3; kill++) {
      const current = app;
      // Kill while work is under way: after some progress, with tasks leased.
      const doneBefore = (await listAll(current.url, "status=output")).length;
      await waitUntil(`progress before kill ${kill}`, async () => {
        const done = (await listAll(current.url, "status=output")).length;
        const working = (await listAll(current.url, "status=work")).length;
        return done >= doneBefore + 20 && working > 0;
      }, 60_000, 20);
      await current.kill();
      const running = await runningOnRecord(dataDir);
      assert.ok(running.length > 0, `kill ${kill} interrupted running tasks`);
      for (const id of running) interrupted.add(id);
      app = await startEmbeddedApp({ dataDir, port, configYaml: CONFIG });
    }

    const tasks = await waitAllFinal(app.url, ids, 180_000);
    for (const [i, task] of tasks.entries()) {
      assert.equal(task.status, "output", `${task.id}: ${task.error}`);
      // The output is the one of the attempt that completed, and no other attempt left one.
      assert.equal(task.output, `${task.id}/output-${task.tries}`);
      const files = (await fs.readdir(path.join(dataDir, "blobs", task.id))).filter((f) => f.startsWith("output-"));
      assert.deepEqual(files, [`output-${task.tries}`], `one output on record for ${task.id}`);
      assert.equal(await result(app.url, task.id), docs[i]);
    }
    for (const id of interrupted) {
      const task = tasks[ids.indexOf(id)]!;
      assert.ok(task.tries >= 2, `${id} was interrupted, so it took more than one try (tries ${task.tries})`);
    }
    assert.ok(interrupted.size >= 3);
  });
});
