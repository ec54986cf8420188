import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { SmallBlobTable } from "./small-blob-table.js";

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const bytes = (text: string): Buffer => Buffer.from(text, "utf8");

describe("SmallBlobTable commits", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "docq-small-blobs-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const openTable = (name: string): { table: SmallBlobTable } => ({ table: SmallBlobTable.open(path.join(dir, name), "process") });

  it("commits a row at the end of its turn", async () => {
    const { table } = openTable("isolated.db");
    try {
      let answered = false;
      const answer = table.insert("t1", "output-1", bytes("alone"), 1).then((inserted) => (answered = inserted));
      await nextTurn();
      await nextTurn();
      assert.equal(answered, true, "answered within two turns, no timer waited for");
      await answer;
    } finally {
      await table.close();
    }
  });

  it("does not bring back a row that was deleted while it waited for its commit", async () => {
    const { table } = openTable("deleted.db");
    try {
      await table.insert("t0", "output-1", bytes("first"), 1);
      const waiting = table.insert("t1", "output-1", bytes("gone soon"), 1);
      table.deletePrefix("t1/");
      await waiting;
      await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(table.bytes("t1", "output-1"), null);
      const again = table.insert("t2", "output-1", bytes("also gone"), 1);
      table.delete("t2", "output-1");
      await again;
      assert.equal(table.bytes("t2", "output-1"), null);
    } finally {
      await table.close();
    }
  });

  it("writes the rows still waiting when it is closed", async () => {
    const { table } = openTable("closed.db");
    await table.insert("t0", "output-1", bytes("first"), 1);
    const waiting = table.insert("t1", "output-1", bytes("last"), 1);
    await table.close();
    assert.equal(await waiting, true);
    const reopened = SmallBlobTable.open(path.join(dir, "closed.db"), "process");
    try {
      assert.equal(reopened.bytes("t1", "output-1")?.toString(), "last");
    } finally {
      await reopened.close();
    }
  });
});
