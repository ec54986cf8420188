import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, describe, it } from "node:test";
import { SqliteTaskStore } from "../common/store/sqlite/sqlite-task-store.js";
import { storedBlobKeys, storedUnder } from "./stored-blobs.js";
import {
  getTask,
  listAll,
  mapLimit,
  result,
  startEmbeddedApp,
  submit,
  tempDir,
  waitAllFinal,
  waitUntil,
  type EmbeddedApp,
} from "./helpers.js";

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

/** Starts an upload that sends half its body and then waits: in flight when the app is killed. */
function startHalfUpload(url: string): http.ClientRequest {
  const req = http.request(`${url}/api/tasks?job=pages`, {
    method: "POST",
    headers: { "content-type": "text/plain", "content-length": "2000000" },
  });
  req.on("error", () => undefined);
  req.write("line\n".repeat(200_000));
  return req;
}

/** Every document of the data dir (files and small documents' rows, but partial uploads), and every blob folder with nothing in it. */
async function blobFiles(dataDir: string): Promise<{ files: string[]; emptyFolders: string[]; partial: string[] }> {
  const root = path.join(dataDir, "blobs");
  const emptyFolders: string[] = [];
  const walk = async (dir: string, prefix: string): Promise<void> => {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    if (entries.length === 0 && prefix !== "") emptyFolders.push(prefix);
    for (const entry of entries) {
      if (prefix === "" && (entry.name === ".tmp" || entry.name === ".small")) continue;
      if (entry.isDirectory()) await walk(path.join(dir, entry.name), `${prefix}${entry.name}/`);
    }
  };
  await walk(root, "");
  return { files: await storedBlobKeys(dataDir), emptyFolders, partial: await fs.readdir(path.join(root, ".tmp")) };
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
      await waitUntil(
        `progress before kill ${kill}`,
        async () => {
          const done = (await listAll(current.url, "status=output")).length;
          const working = (await listAll(current.url, "status=work")).length;
          return done >= doneBefore + 20 && working > 0;
        },
        60_000,
        20,
      );
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
      const files = await storedUnder(dataDir, task.id, "output-");
      assert.deepEqual(files, [`output-${task.tries}`], `one output on record for ${task.id}`);
      assert.equal(await result(app.url, task.id), docs[i]);
    }
    for (const id of interrupted) {
      const task = tasks[ids.indexOf(id)]!;
      assert.ok(task.tries >= 2, `${id} was interrupted, so it took more than one try (tries ${task.tries})`);
    }
    assert.ok(interrupted.size >= 3);
    // Stopped here: the file's end would SIGKILL it, and nothing started after it would remove its work dirs.
    await app.stop();
  });

  it("keeps in the data dir only what tasks refer to, after kills mid-upload and mid-split", async () => {
    const dataDir = await tempDir("crash-gc");
    const config = `${CONFIG}  gcIntervalMs: 300\n  gcGraceMs: 1000\n`;
    app = await startEmbeddedApp({ dataDir, configYaml: config });
    const port = app.port;
    const doc = (i: number): string => Array.from({ length: 20 }, (_, line) => `doc ${i} line ${line}`).join("\n") + "\n";
    const ids = await mapLimit(
      Array.from({ length: 36 }, (_, i) => i),
      8,
      (i) => submit(app!.url, doc(i), { job: "pages", name: `gc-${i}` }),
    );
    for (let kill = 1; kill <= 2; kill++) {
      const current = app;
      await waitUntil(
        `splits under way before kill ${kill}`,
        async () => (await listAll(current.url, "status=work")).length > 0,
        60_000,
        10,
      );
      const uploads = [startHalfUpload(current.url), startHalfUpload(current.url)];
      // Let the half bodies reach the disk before the kill.
      await waitUntil(
        "the uploads to be written",
        async () => (await fs.readdir(path.join(dataDir, "blobs", ".tmp"))).length >= 2,
        10_000,
        10,
      );
      await current.kill();
      for (const upload of uploads) upload.destroy();
      app = await startEmbeddedApp({ dataDir, port, configYaml: config });
    }
    const tasks = await waitAllFinal(app.url, ids, 180_000);
    for (const task of tasks) assert.equal(task.status, "output", `${task.id}: ${task.error}`);
    const current = app;
    // What the tasks refer to: their inputs (a child's input is a part its parent's split stored) and outputs.
    const referenced = async (): Promise<Set<string>> => {
      const all = await listAll(current.url, "user=anonymous");
      const keys = all.flatMap((t) => [t.input, t.output]).filter((k): k is string => k !== null);
      return new Set(keys);
    };
    const last = await waitUntil(
      "the data dir to hold only what tasks refer to",
      async () => {
        const refs = await referenced();
        const found = await blobFiles(dataDir);
        const unreferenced = found.files.filter((f) => !refs.has(f));
        return unreferenced.length === 0 && found.emptyFolders.length === 0 && found.partial.length === 0 ? found : false;
      },
      30_000,
      200,
    ).catch(async (err: unknown) => {
      const refs = await referenced();
      const found = await blobFiles(dataDir);
      throw new Error(
        `${String(err)}: unreferenced ${JSON.stringify(found.files.filter((f) => !refs.has(f)).slice(0, 10))}, empty ${JSON.stringify(found.emptyFolders.slice(0, 10))}, partial ${JSON.stringify(found.partial)}`,
      );
    });
    // And nothing a task needs went with the rest.
    for (const id of ids.slice(0, 5)) assert.ok(last.files.includes((await getTask(current.url, id)).output!));
  });
});
