import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { MongoClient } from "mongodb";
import { ERROR_CODE } from "../../model/errors.js";
import { MongoTaskStore, redactUrl } from "./mongo-task-store.js";
import { TASK_STATUS } from "../../model/task-model.js";
import { makeTask, taskStoreContract } from "../task-store.contract.js";
import { freePort } from "../../testing/free-port.js";
import { rejection } from "../../testing/rejection.js";

/*
 * The MongoDB adapter. The contract suite needs a server, which cannot be installed on this
 * project's machines: it runs when MONGO_URL names one (a single-node replica set gives the
 * transaction path, a standalone server the ordered fallback; both paths run where the server has
 * transactions), in a fresh database per run, dropped at the end:
 *
 *   MONGO_URL=mongodb://127.0.0.1:27017 node --import tsx --test common/store/mongo/mongo-task-store.test.ts
 *
 * Without MONGO_URL the suite shows as skipped. What needs no server (connection failures, URL
 * handling) runs always, through the real driver.
 */

const MONGO_URL = process.env.MONGO_URL ?? "";
const SKIP_MESSAGE = "MONGO_URL is not set: the MongoDB contract suite needs a server (see README)";

if (MONGO_URL === "") {
  describe("TaskStore contract: MongoTaskStore", () => {
    it("runs the TaskStore contract against MongoDB", { skip: SKIP_MESSAGE }, () => undefined);
  });
} else {
  const database = `docq_test_${process.pid}_${Date.now().toString(36)}`;
  let collections = 0;
  const open = (transactions?: boolean) => async () => {
    const n = ++collections;
    const store = await MongoTaskStore.open({
      url: MONGO_URL,
      database,
      writeConcern: "majority",
      // A fresh set of collections per case: the contract expects an empty store.
      collection: `tasks_${n}`,
      apiKeysCollection: `api_keys_${n}`,
      usageCollection: `usage_${n}`,
      ...(transactions === undefined ? {} : { transactions }),
    });
    return { store, cleanup: () => store.close() };
  };

  after(async () => {
    const client = new MongoClient(MONGO_URL, { serverSelectionTimeoutMS: 5_000 });
    try {
      await client.db(database).dropDatabase();
    } finally {
      await client.close();
    }
  });

  taskStoreContract("MongoTaskStore (transactions where the server has them)", open());
  taskStoreContract("MongoTaskStore (standalone ordering, no transactions)", open(false));

  describe("MongoTaskStore on MONGO_URL", () => {
    it("creates the indexes the queries name (tasks, api keys, usage), and says whether it uses transactions", async (t) => {
      const { store, cleanup } = await open()();
      try {
        t.diagnostic(`${store.label}: transactions ${store.transactions ? "on (replica set or mongos)" : "off (standalone server)"}`);
        const client = new MongoClient(MONGO_URL);
        try {
          const names = async (collection: string) =>
            (await client.db(database).collection(`${collection}_${collections}`).listIndexes().toArray())
              .map((index) => String(index.name))
              .sort();
          assert.deepEqual(await names("tasks"), [
            "_id_",
            "job_seq",
            "parent_seq",
            "seq",
            "status_seq",
            "user_active",
            "user_seq",
            "work_lease_expiry",
          ]);
          assert.deepEqual(await names("api_keys"), ["_id_", "hash"]);
          assert.deepEqual(await names("usage"), ["_id_", "day_user", "user_day"]);
        } finally {
          await client.close();
        }
        // Opening again over the same collection finds the same indexes and is fine.
      } finally {
        await cleanup();
      }
    });

    for (const transactions of [undefined, false]) {
      const mode = transactions === false ? "standalone ordering" : "default mode";
      it(`lets exactly one of 10 concurrent splits of one parent win, leaving only its children (${mode})`, async () => {
        const { store, cleanup } = await open(transactions)();
        try {
          const parent = makeTask({ status: TASK_STATUS.work, tries: 1, lease: { owner: "w", expiresAt: Date.now() + 30_000 } });
          await store.create(parent);
          const attempts = Array.from({ length: 10 }, (_, i) => {
            const children = Array.from({ length: 3 }, () => makeTask({ parentId: parent.id, depth: 1, name: `attempt-${i}` }));
            return {
              children,
              done: store.split(
                { id: parent.id, owner: "w", tries: 1 },
                { site: "s", node: "n" },
                children.map((c) => c.id),
                () => children,
                5_000,
              ),
            };
          });
          const results = await Promise.all(attempts.map((a) => a.done));
          const winners = results.flatMap((r, i) => (r.ok ? [i] : []));
          assert.equal(winners.length, 1, `one split wins, got ${winners.length}`);
          const winner = attempts[winners[0]!]!;
          assert.deepEqual(await store.children(parent.id), winner.children);
          assert.deepEqual(
            (await store.get(parent.id))?.children,
            winner.children.map((c) => c.id),
          );
        } finally {
          await cleanup();
        }
      });
    }

    it("lets exactly one of 20 concurrent claims of one task win", async () => {
      const { store, cleanup } = await open()();
      try {
        const task = makeTask();
        await store.create(task);
        const claims = await Promise.all(Array.from({ length: 20 }, (_, i) => store.claim([task.id], { owner: `w${i}`, expiresAt: 1 }, 1)));
        assert.equal(claims.filter((c) => c.length > 0).length, 1);
      } finally {
        await cleanup();
      }
    });

    it("reads a task document written before offload existed as offload true", async () => {
      const { store, cleanup } = await open()();
      const client = new MongoClient(MONGO_URL);
      try {
        const task = makeTask({ offload: false });
        await store.create(task);
        await client
          .db(database)
          .collection<{ _id: string }>(`tasks_${collections}`)
          .updateOne({ _id: task.id }, { $unset: { offload: "" } });
        assert.deepEqual(await store.get(task.id), { ...task, offload: true });
        const entries: { id: string; offload: boolean }[] = [];
        for await (const batch of store.loadNonFinal()) entries.push(...batch);
        assert.deepEqual(
          entries.map((e) => [e.id, e.offload]),
          [[task.id, true]],
        );
      } finally {
        await client.close();
        await cleanup();
      }
    });

    it("stores params with keys MongoDB could not hold as field names", async () => {
      const { store, cleanup } = await open()();
      try {
        const task = makeTask({ params: { $where: "x", "a.b": 1, "nul\u0000key": [null, { $gt: 1 }] } });
        await store.create(task);
        assert.deepEqual(await store.get(task.id), task);
        const [claimed] = await store.claim([task.id], { owner: "w", expiresAt: 1 }, 1);
        assert.deepEqual(claimed?.params, task.params);
      } finally {
        await cleanup();
      }
    });
  });
}

describe("MongoTaskStore without a server", () => {
  it("fails to open with STORE_UNAVAILABLE naming the server and database, never the password", async () => {
    const port = await freePort();
    const started = Date.now();
    const err = await rejection(
      MongoTaskStore.open({
        url: `mongodb://docq:hunter2@127.0.0.1:${port}/?serverSelectionTimeoutMS=300`,
        database: "docq",
        writeConcern: "majority",
      }),
    );
    assert.equal(err.code, ERROR_CODE.StoreUnavailable, err.message);
    assert.match(err.message, new RegExp(`^MongoDB mongodb://127\\.0\\.0\\.1:${port}, database "docq": cannot connect: `));
    assert.match(err.message, /ECONNREFUSED/);
    assert.doesNotMatch(err.message, /hunter2/);
    assert.ok(err.cause !== undefined);
    assert.ok(Date.now() - started < 10_000, "gave up after the server selection timeout");
  });

  it("uses its own server selection timeout unless the URL sets one", async () => {
    const port = await freePort();
    const started = Date.now();
    await rejection(
      MongoTaskStore.open({ url: `mongodb://127.0.0.1:${port}`, database: "docq", writeConcern: 1, serverSelectionTimeoutMs: 200 }),
    );
    assert.ok(Date.now() - started < 5_000);
  });

  it("fails to open with CONFIG on a malformed URL", async () => {
    for (const url of [
      "mongodb://db:notaport",
      "mongodb://docq:s3cret@db/?replicaSet=rs0&foo",
      "mongodb://docq:s3cret@db/?authMechanism=NOPE",
    ]) {
      const err = await rejection(MongoTaskStore.open({ url, database: "docq", writeConcern: "majority" }));
      assert.equal(err.code, ERROR_CODE.Config, err.message);
      assert.match(err.message, /^MongoDB mongodb:\/\/db(:notaport)?, database "docq": invalid connection settings: /);
      assert.doesNotMatch(err.message, /s3cret/);
    }
  });

  it("redacts URLs to scheme and hosts", () => {
    assert.equal(
      redactUrl("mongodb://user:pw@h1:27017,h2:27018/docq?replicaSet=rs0&tlsCertificateKeyFilePassword=x"),
      "mongodb://h1:27017,h2:27018",
    );
    assert.equal(redactUrl("mongodb+srv://u:p@cluster0.example.net/?retryWrites=true"), "mongodb+srv://cluster0.example.net");
    assert.equal(redactUrl("mongodb://127.0.0.1"), "mongodb://127.0.0.1");
    assert.equal(redactUrl("postgres://x"), "(unparsable URL)");
  });
});
