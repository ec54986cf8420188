import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecentRows } from "./recent-rows.js";

const bytes = (text: string): Buffer => Buffer.from(text, "utf8");

describe("RecentRows", () => {
  it("answers a copy of a kept row, and null for one it does not keep", () => {
    const rows = new RecentRows({ maxBytes: 1_000, maxRows: 10 });
    const source = bytes("hello");
    rows.add("t1", "input", source);
    source.write("HELLO");
    const read = rows.get("t1", "input");
    assert.equal(read?.toString(), "hello", "kept as it was added, not as its caller changed it after");
    read?.write("xx");
    assert.equal(rows.get("t1", "input")?.toString(), "hello", "a reader's changes stay in its copy");
    assert.equal(rows.get("t1", "output-1"), null);
    assert.equal(rows.get("t2", "input"), null);
  });

  it("keeps the rows of one call as copies, within its bounds, the last of a key repeated in the call", () => {
    const rows = new RecentRows({ maxBytes: 1_000, maxRows: 6 });
    const sources = ["one", "two", "three", "four", "five"].map(bytes);
    rows.addAll([
      ...sources.map((source, i) => ({ folder: `t${i}`, rest: "input", bytes: source })),
      { folder: "t0", rest: "input", bytes: bytes("uno") },
      { folder: "big", rest: "input", bytes: Buffer.alloc(101) },
    ]);
    for (const source of sources) source.fill(0);
    assert.equal(rows.get("t0", "input")?.toString(), "uno");
    assert.equal(rows.get("t4", "input")?.toString(), "five", "kept as added, not as its caller changed it after");
    assert.equal(rows.get("big", "input"), null, "a row over a tenth of the byte bound is not kept");
    assert.ok(rows.size <= 6, `${rows.size} rows kept`);
    for (const [i, text] of ["two", "three", "four"].entries()) assert.equal(rows.get(`t${i + 1}`, "input")?.toString(), text);
    assert.equal(rows.keptBytes, "unotwothreefourfive".length);
  });

  it("keeps within its bounds of bytes and of rows, the oldest rows going first and the newest half always kept", () => {
    const byBytes = new RecentRows({ maxBytes: 100, maxRows: 100 });
    for (let i = 0; i <= 20; i++) {
      byBytes.add(`t${i}`, "input", Buffer.alloc(10, i));
      assert.ok(byBytes.keptBytes <= 100, `${byBytes.keptBytes} bytes kept after ${i + 1} rows`);
    }
    assert.equal(byBytes.get("t0", "input"), null);
    for (let i = 16; i <= 20; i++) assert.deepEqual(byBytes.get(`t${i}`, "input"), Buffer.alloc(10, i), `t${i}`);
    const byRows = new RecentRows({ maxBytes: 1_000, maxRows: 4 });
    const names = ["a", "b", "c", "d", "e", "f", "g"];
    for (const name of names) {
      byRows.add(name, "input", bytes(name));
      assert.ok(byRows.size <= 4);
    }
    assert.equal(byRows.get("a", "input"), null);
    assert.equal(byRows.get("f", "input")?.toString(), "f");
    assert.equal(byRows.get("g", "input")?.toString(), "g");
  });

  it("keeps no row larger than a tenth of its byte bound, and forgets the one it replaced", () => {
    const rows = new RecentRows({ maxBytes: 100, maxRows: 10 });
    rows.add("t1", "input", bytes("small"));
    rows.add("t1", "input", Buffer.alloc(11));
    assert.equal(rows.get("t1", "input"), null);
    assert.equal(rows.keptBytes, 0);
  });

  it("replacing a row makes it the newest", () => {
    const rows = new RecentRows({ maxBytes: 1_000, maxRows: 2 });
    rows.add("a", "input", bytes("a1"));
    rows.add("b", "input", bytes("b"));
    rows.add("a", "input", bytes("a2"));
    rows.add("c", "input", bytes("c"));
    assert.equal(rows.get("b", "input"), null);
    assert.equal(rows.get("a", "input")?.toString(), "a2");
  });

  it("removes a row, the rows of a folder starting so, and the folders starting so", () => {
    const rows = new RecentRows({ maxBytes: 1_000, maxRows: 100 });
    for (const [folder, rest] of [
      ["t1", "input"],
      ["t1", "output-1"],
      ["t1", "output-2"],
      ["t12", "input"],
      ["t2", "input"],
      ["u1", "input"],
    ] as const)
      rows.add(folder, rest, bytes(`${folder}/${rest}`));
    rows.delete("t2", "input");
    assert.equal(rows.get("t2", "input"), null);
    rows.deleteWithPrefix("t1", "output");
    assert.deepEqual(
      ["input", "output-1", "output-2"].map((rest) => rows.get("t1", rest)?.toString() ?? null),
      ["t1/input", null, null],
    );
    rows.deleteFolders("t1");
    assert.equal(rows.get("t1", "input"), null);
    assert.equal(rows.get("t12", "input"), null, "t12 starts with t1");
    assert.equal(rows.get("u1", "input")?.toString(), "u1/input");
    assert.equal(rows.size, 1);
    assert.equal(rows.keptBytes, "u1/input".length);
  });
});
