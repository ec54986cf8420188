import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MongoClient, MongoServerError } from "mongodb";
import { leaseId, MongoLeaseRecords } from "./mongo-queuer-lock.js";

/** The calls a MongoLeaseRecords makes, answered as a server holding one lease document would. */
class FakeLeases {
  readonly calls: { op: string; filter?: unknown; update?: unknown }[] = [];
  inserted = false;
  /** What the next updateOne matches. */
  matches = 1;

  async insertOne(doc: unknown): Promise<unknown> {
    this.calls.push({ op: "insertOne", update: doc });
    if (this.inserted) throw new MongoServerError({ message: "E11000 duplicate key", code: 11000 });
    this.inserted = true;
    return { acknowledged: true };
  }

  async updateOne(filter: unknown, update: unknown): Promise<{ matchedCount: number }> {
    this.calls.push({ op: "updateOne", filter, update });
    return { matchedCount: this.matches };
  }
}

function recordsOver(fake: FakeLeases): MongoLeaseRecords {
  return new MongoLeaseRecords(
    new MongoClient("mongodb://127.0.0.1:1"),
    fake as unknown as ConstructorParameters<typeof MongoLeaseRecords>[1],
    leaseId("s"),
  );
}

describe("MongoLeaseRecords", () => {
  it("makes the lease document once, then takes it only when lapsed or already the owner's, by the server's clock", async () => {
    const fake = new FakeLeases();
    fake.inserted = true; // another queuer made it
    const records = recordsOver(fake);
    assert.equal(await records.take("me", 1500), true);
    fake.matches = 0;
    assert.equal(await records.take("me", 1500), false, "held by another, unexpired");
    assert.deepEqual(
      fake.calls.map((c) => c.op),
      ["insertOne", "updateOne", "updateOne"],
      "a duplicate key is the document existing; it is not inserted again",
    );
    assert.deepEqual(fake.calls[1]!.filter, {
      _id: "queuer:s",
      $expr: { $or: [{ $eq: ["$owner", "me"] }, { $lte: ["$expiresAt", "$$NOW"] }] },
    });
    assert.deepEqual(fake.calls[1]!.update, [{ $set: { owner: "me", expiresAt: { $add: ["$$NOW", 1500] } } }]);
  });

  it("renews and releases only the owner's lease", async () => {
    const fake = new FakeLeases();
    const records = recordsOver(fake);
    assert.equal(await records.renew("me", 1500), true);
    fake.matches = 0;
    assert.equal(await records.renew("me", 1500), false, "another owner now");
    await records.release("me");
    assert.deepEqual(fake.calls[0]!.filter, { _id: "queuer:s", owner: "me" });
    assert.deepEqual(fake.calls[0]!.update, [{ $set: { expiresAt: { $add: ["$$NOW", 1500] } } }]);
    assert.deepEqual(fake.calls[2]!.filter, { _id: "queuer:s", owner: "me" });
    await records.close();
  });

  it("passes on any error but a duplicate key when making the document", async () => {
    const fake = new FakeLeases();
    fake.insertOne = async () => {
      throw new Error("not primary");
    };
    await assert.rejects(recordsOver(fake).take("me", 1500), /not primary/);
  });
});
