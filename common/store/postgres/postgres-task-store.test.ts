import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { startPostgresServer, type PostgresServer } from "../../testing/postgres-server.js";
import { waitUntil } from "../../testing/wait-until.js";
import { TASK_STATUS } from "../../model/task-model.js";
import { ERROR_CODE, isDocqError } from "../../model/errors.js";
import { makeTask, taskStoreContract } from "../task-store.contract.js";
import { SCHEMA_VERSION } from "./postgres-schema.js";
import { PostgresTaskStore } from "./postgres-task-store.js";

/*
 * One private server for the file (initdb takes seconds). The contract's tests run one after the
 * other on one migrated schema, emptied by each test's cleanup (far cheaper than a schema and its
 * indexes made per test); the tests of this file that need a schema of their own
 * make one.
 */

let server: PostgresServer | undefined;
let schemas = 0;
const CONTRACT_SCHEMA = "contract";

async function serverUrl(): Promise<string> {
  server ??= await startPostgresServer({ database: "docq_store_test" });
  return server.url;
}

async function run(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function dropSchema(url: string, schema: string): Promise<void> {
  await run(url, `DROP SCHEMA "${schema}" CASCADE`);
}

/** A store on a new schema of its own, dropped by cleanup. */
async function openFresh(): Promise<{ store: PostgresTaskStore; schema: string; cleanup(): Promise<void> }> {
  const url = await serverUrl();
  const schema = `test_${process.pid}_${++schemas}`;
  const store = await PostgresTaskStore.open({ url, schema });
  return {
    store,
    schema,
    async cleanup() {
      await store.close();
      await dropSchema(url, schema);
    },
  };
}

/** The connection that empties the contract's schema between its tests (one for the file: a connection is a server process). */
let emptier: pg.Client | undefined;

/** A store on the contract's schema, emptied by cleanup. */
async function openEmptied(): Promise<{ store: PostgresTaskStore; cleanup(): Promise<void> }> {
  const url = await serverUrl();
  const store = await PostgresTaskStore.open({ url, schema: CONTRACT_SCHEMA });
  return {
    store,
    async cleanup() {
      await store.close();
      if (emptier === undefined) {
        const client = new pg.Client({ connectionString: url });
        // A test that kills the server ends this connection too: the next cleanup opens another.
        client.on("error", () => {
          if (emptier === client) emptier = undefined;
        });
        await client.connect();
        emptier = client;
      }
      // DELETE, not TRUNCATE: a few rows each, and TRUNCATE makes new files for every table and index.
      await emptier.query(
        ["tasks", "api_keys", "usage", "schedules"].map((table) => `DELETE FROM "${CONTRACT_SCHEMA}".${table}`).join("; "),
      );
    },
  };
}

after(async () => {
  await emptier?.end();
  await server?.stop();
});

taskStoreContract("PostgresTaskStore", openEmptied);

describe("PostgresTaskStore", () => {
  let url = "";
  before(async () => {
    url = await serverUrl();
  });

  it("migrates once, whoever starts: two stores opening one new schema at once, then a third, find one version row", async () => {
    const schema = `race_${process.pid}`;
    const stores = await Promise.all([PostgresTaskStore.open({ url, schema }), PostgresTaskStore.open({ url, schema })]);
    stores.push(await PostgresTaskStore.open({ url, schema }));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT version FROM "${schema}".schema_migrations ORDER BY version`);
      assert.deepEqual(
        rows.map((row: { version: number }) => row.version),
        Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1),
      );
    } finally {
      await client.end();
      await Promise.all(stores.map((store) => store.close()));
      await dropSchema(url, schema);
    }
  });

  it("refuses a schema newer than it knows, naming both versions", async () => {
    const { store, schema, cleanup } = await openFresh();
    try {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      await client.query(`INSERT INTO "${schema}".schema_migrations (version, applied_at) VALUES ($1, 0)`, [SCHEMA_VERSION + 1]);
      await client.end();
      await assert.rejects(PostgresTaskStore.open({ url, schema }), (err: unknown) => {
        assert.ok(isDocqError(err, ERROR_CODE.Config), String(err));
        assert.match(err.message, new RegExp(`schema version ${SCHEMA_VERSION + 1} is newer`));
        return true;
      });
      assert.equal((await store.countByStatus()).input, 0);
    } finally {
      await cleanup();
    }
  });

  it("two stores (two processes) claiming the same tasks at once: each task is leased exactly once", async () => {
    const first = await openFresh();
    const second = await PostgresTaskStore.open({ url, schema: first.schema });
    try {
      const tasks = Array.from({ length: 200 }, () => makeTask());
      await first.store.createMany(tasks);
      const ids = tasks.map((task) => task.id);
      const reversed = [...ids].reverse();
      const now = Date.now();
      const claims = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          (i % 2 === 0 ? first.store : second).claim(i % 4 < 2 ? ids : reversed, { owner: `owner-${i}`, expiresAt: now + 60_000 }, now),
        ),
      );
      const leased = claims.flat();
      assert.equal(leased.length, tasks.length);
      assert.equal(new Set(leased.map((task) => task.id)).size, tasks.length);
      for (const task of leased) assert.equal(task.tries, 1);
      assert.equal((await first.store.countByStatus()).work, tasks.length);
    } finally {
      await second.close();
      await first.cleanup();
    }
  });

  it("a step racing another on one task: one succeeds, the other misses and says why", async () => {
    const { store, cleanup } = await openFresh();
    try {
      const task = makeTask();
      await store.create(task);
      const now = Date.now();
      const [leased] = await store.claim([task.id], { owner: "w1", expiresAt: now + 60_000 }, now);
      assert.equal(leased?.status, TASK_STATUS.work);
      const claim = { id: task.id, owner: "w1", tries: 1 };
      const place = { site: "s", node: "n" };
      const results = await Promise.all([
        store.succeed(claim, { output: "out", processedBy: place }, now + 1),
        store.giveUp(claim, { error: "boom", processedBy: place, ranAt: place }, now + 1),
      ]);
      assert.deepEqual(results.map((r) => r.ok).sort(), [false, true]);
      const won = results.find((r) => r.ok);
      const miss = results.find((r) => !r.ok);
      assert.ok(won?.ok === true && miss !== undefined && !miss.ok);
      // The row as committed after the winner, not as the loser's statement first saw it.
      assert.deepEqual([miss.why, miss.task?.status], ["not-in-state", won.task.status]);
    } finally {
      await cleanup();
    }
  });

  it("keeps a text with U+0000 (a script's stderr may hold it; PostgreSQL refuses it) as U+FFFD instead of failing the step", async () => {
    const { store, cleanup } = await openFresh();
    try {
      const task = makeTask({ name: "a\u0000b.pdf" });
      await store.create(task);
      const now = Date.now();
      await store.claim([task.id], { owner: "w", expiresAt: now + 60_000 }, now);
      const place = { site: "s", node: "n\u0000" };
      const result = await store.giveUp(
        { id: task.id, owner: "w", tries: 1 },
        { error: "bad\u0000byte", processedBy: place, ranAt: place },
        now,
      );
      assert.ok(result.ok);
      assert.deepEqual(
        [result.task.name, result.task.error, result.task.processedBy?.node, result.task.attempts[0]?.error],
        ["a\uFFFDb.pdf", "bad\uFFFDbyte", "n\uFFFD", "bad\uFFFDbyte"],
      );
      assert.equal((await store.list({ name: "a\u0000b.pdf" }, { limit: 5 })).items.length, 1);
    } finally {
      await cleanup();
    }
  });

  it("loadNonFinal pages through many tasks in batches without reading them all at once", async () => {
    const { store, cleanup } = await openFresh();
    try {
      const tasks = Array.from({ length: 6_000 }, (_, i) => makeTask({ status: i % 3 === 0 ? TASK_STATUS.output : TASK_STATUS.input }));
      await store.createMany(tasks);
      const sizes: number[] = [];
      for await (const batch of store.loadNonFinal(1_500)) sizes.push(batch.length);
      assert.deepEqual(sizes, [1_500, 1_500, 1_000]);
    } finally {
      await cleanup();
    }
  });

  it("answers STORE_UNAVAILABLE while the server is down (killed) and serves again once it is back, with what it had committed", async () => {
    const { store, cleanup } = await openFresh();
    try {
      const task = makeTask();
      await store.create(task);
      await server!.kill();
      await assert.rejects(store.get(task.id), (err: unknown) => isDocqError(err, ERROR_CODE.StoreUnavailable));
      await server!.start();
      // The pool drops the connections the server closed and opens new ones.
      assert.deepEqual(await waitUntil("the store serving again", () => store.get(task.id).catch(() => undefined)), task);
      const now = Date.now();
      assert.equal((await store.claim([task.id], { owner: "w", expiresAt: now + 60_000 }, now)).length, 1);
    } finally {
      await cleanup();
    }
  });

  it("turns synchronous_commit back on for its sessions where the database has it off; leaves it as set otherwise", async () => {
    const { store, cleanup } = await openFresh();
    const url = await server!.createDatabase(`lax_${process.pid}`);
    await run(url, `ALTER DATABASE "lax_${process.pid}" SET synchronous_commit = off`);
    const lax = await PostgresTaskStore.open({ url });
    try {
      assert.equal(await lax.synchronousCommit(), "on");
      assert.equal(await store.synchronousCommit(), "on");
    } finally {
      await lax.close();
      await cleanup();
    }
  });

  it("says STORE_UNAVAILABLE naming the server, without its password, when it cannot connect", async () => {
    const port = server!.port;
    await assert.rejects(
      PostgresTaskStore.open({ url: `postgresql://postgres:secret@127.0.0.1:${port}/no_such_database` }),
      (err: unknown) => {
        assert.ok(isDocqError(err, ERROR_CODE.StoreUnavailable), String(err));
        assert.ok(err.message.includes(`127.0.0.1:${port}/no_such_database`), err.message);
        assert.ok(!err.message.includes("secret"), err.message);
        return true;
      },
    );
  });
});
