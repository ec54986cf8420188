import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChildIdLists } from "./child-id-lists.js";

const idList = (prefix: string, count: number): string[] =>
  Array.from({ length: count }, (_, i) => `${prefix}-01KBXYZ${String(i).padStart(13, "0")}`);

describe("ChildIdLists", () => {
  it("answers a parent's list from its last whole read, a copy each time, without reading the column", () => {
    const lists = new ChildIdLists();
    const ids = idList("a", 100);
    assert.deepEqual(lists.fromColumn("p", JSON.stringify(ids)), ids);
    const first = lists.byParent("p", 100, () => assert.fail("the column is not read"));
    assert.deepEqual(first, ids);
    first.push("changed by a caller");
    assert.deepEqual(
      lists.byParent("p", 100, () => assert.fail("the column is not read")),
      ids,
    );
  });

  it("reads the column when nothing is remembered, when the count differs, or after forgetAll", () => {
    const lists = new ChildIdLists();
    const ids = idList("a", 100);
    let reads = 0;
    const read = (): string => (reads++, JSON.stringify(ids));
    assert.deepEqual(lists.byParent("p", 100, read), ids);
    assert.deepEqual(lists.byParent("p", 100, read), ids);
    assert.equal(reads, 1, "remembered after the first read");
    const more = idList("b", 101);
    assert.deepEqual(
      lists.byParent("p", 101, () => JSON.stringify(more)),
      more,
    );
    lists.forgetAll();
    assert.deepEqual(lists.byParent("p", 101, read), ids, "read again");
    assert.deepEqual(
      lists.byParent("gone", 3, () => null),
      [],
      "no row: no children",
    );
  });

  it("replaces a parent's list when its column changes, and keeps a few parents' lists", () => {
    const lists = new ChildIdLists();
    lists.fromColumn("p", JSON.stringify(idList("a", 100)));
    const changed = idList("b", 100);
    lists.fromColumn("p", JSON.stringify(changed));
    assert.deepEqual(
      lists.byParent("p", 100, () => assert.fail("remembered")),
      changed,
    );
    for (const parent of ["q", "r", "s", "t"]) lists.fromColumn(parent, JSON.stringify(idList(parent, 100)));
    let read = false;
    lists.byParent("p", 100, () => ((read = true), JSON.stringify(changed)));
    assert.ok(read, "the oldest parent's list was dropped");
    assert.deepEqual(JSON.parse(JSON.stringify(lists.fromColumn("x", '["short"]'))), ["short"], "a short list is parsed, not kept");
  });
});
