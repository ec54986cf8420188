import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IdColumns } from "./id-columns.js";
import { newTaskId } from "./new-task.js";

function columns(capacity: number): IdColumns {
  const ids = new IdColumns();
  ids.grow(capacity);
  return ids;
}

describe("IdColumns", () => {
  it("gives back every id as it was given, task ids and ids of any other form alike", () => {
    const given = [
      newTaskId("site-a"),
      newTaskId("b"),
      "-01JE5Q1XQ0ZZZZZZZZZZZZZZZZ",
      "site-01je5q1xq0abcdefghjkmnpqrs",
      "site-01JE5Q1XQ0ABCDEFGHJKMNPQRI",
      "t1",
      "",
      "ünï-cødé",
      "7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
      "x-7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    ];
    const ids = columns(given.length);
    given.forEach((id, handle) => ids.link(handle, id));
    given.forEach((id, handle) => {
      assert.equal(ids.get(handle), id);
      assert.equal(ids.find(id), handle, id);
    });
    assert.equal(ids.find("site-a-00000000000000000000000000"), -1, "an id never given");
    assert.equal(ids.find("other-" + given[0]!.slice(-26)), -1, "a prefix never given");
  });

  it("finds every linked id and none unlinked, through collisions, growth and reused handles", () => {
    const count = 20_000;
    const ids = columns(count);
    const given = Array.from({ length: count }, (_, i) => (i % 7 === 0 ? `plain-${i}` : newTaskId(i % 3 === 0 ? "a" : "b")));
    given.forEach((id, handle) => ids.link(handle, id));
    for (let handle = 0; handle < count; handle += 2) {
      ids.unlink(handle);
      ids.release(handle);
    }
    given.forEach((id, handle) => assert.equal(ids.find(id), handle % 2 === 0 ? -1 : handle, id));
    // Even handles reused for new ids.
    const again = new Map<number, string>();
    for (let handle = 0; handle < count; handle += 2) {
      const id = handle % 4 === 0 ? newTaskId("a") : `again-${handle}`;
      again.set(handle, id);
      ids.link(handle, id);
    }
    for (const [handle, id] of again) {
      assert.equal(ids.find(id), handle);
      assert.equal(ids.get(handle), id);
    }
    for (let handle = 1; handle < count; handle += 2) assert.equal(ids.find(given[handle]!), handle);
  });

  it("reads an unlinked id until its handle is released", () => {
    const ids = columns(2);
    ids.link(0, "a-01JE5Q1XQ0ABCDEFGHJKMNPQRS");
    ids.link(1, "plain");
    ids.unlink(0);
    ids.unlink(1);
    assert.equal(ids.find("a-01JE5Q1XQ0ABCDEFGHJKMNPQRS"), -1);
    assert.equal(ids.find("plain"), -1);
    assert.equal(ids.get(0), "a-01JE5Q1XQ0ABCDEFGHJKMNPQRS");
    assert.equal(ids.get(1), "plain");
  });

  it("makes ids linked in bulk findable in one settle, and unlinks one not yet settled", () => {
    const count = 50_000;
    const ids = columns(count + 1);
    const given = Array.from({ length: count }, (_, i) => (i % 11 === 0 ? `plain-${i}` : newTaskId("bulk")));
    given.forEach((id, handle) => ids.link(handle, id));
    // Unlinked before any lookup: still pending then.
    ids.unlink(count - 1);
    ids.settle();
    given.forEach((id, handle) => assert.equal(ids.find(id), handle === count - 1 ? -1 : handle, id));
    ids.link(count, "late");
    ids.clear();
    assert.equal(ids.find("late"), -1);
    assert.equal(ids.find(given[0]!), -1);
  });
});
