import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PriorityIndex } from "./priority-index.js";

const entry = (id: string, priority: number, submitTime: number, availableAt = submitTime) => ({ id, priority, submitTime, availableAt, lendable: true });

describe("PriorityIndex", () => {
  it("takes highest priority first, FIFO by submit time within a priority", () => {
    const index = new PriorityIndex();
    index.add(entry("a", 10, 1), 100);
    index.add(entry("b", 50, 3), 100);
    index.add(entry("c", 50, 2), 100);
    index.add(entry("d", 100, 4), 100);
    index.add(entry("e", 0, 0), 100);
    assert.deepEqual(index.take(10, 100).map((e) => e.id), ["d", "c", "b", "a", "e"]);
    assert.equal(index.size, 0);
  });

  it("keeps insertion order for equal submit times", () => {
    const index = new PriorityIndex();
    for (const id of ["x", "y", "z"]) index.add(entry(id, 5, 7), 10);
    assert.deepEqual(index.take(3, 10).map((e) => e.id), ["x", "y", "z"]);
  });

  it("takes at most N and leaves the rest", () => {
    const index = new PriorityIndex();
    for (let i = 0; i < 10; i++) index.add(entry(`t${i}`, i, i), 100);
    assert.deepEqual(index.take(3, 100).map((e) => e.id), ["t9", "t8", "t7"]);
    assert.equal(index.size, 7);
    assert.equal(index.peek(100)?.id, "t6");
  });

  it("removes lazily and re-adding replaces the old position", () => {
    const index = new PriorityIndex();
    index.add(entry("a", 1, 1), 10);
    index.add(entry("b", 2, 2), 10);
    assert.equal(index.remove("b"), true);
    assert.equal(index.remove("b"), false);
    index.add(entry("a", 90, 1), 10);
    index.add(entry("c", 50, 1), 10);
    assert.deepEqual(index.take(5, 10).map((e) => e.id), ["a", "c"]);
  });

  it("holds back delayed entries until their backoff elapses", () => {
    const index = new PriorityIndex();
    index.add(entry("late", 100, 1, 500), 100);
    index.add(entry("now", 1, 2), 100);
    assert.equal(index.nextAvailableAt(100), 500);
    assert.deepEqual(index.counts(100), { ready: 1, delayed: 1, highestPriority: 1 });
    assert.deepEqual(index.countsByPriority(), { 100: 1, 1: 1 });
    assert.deepEqual(index.take(5, 100).map((e) => e.id), ["now"]);
    assert.deepEqual(index.take(5, 499), []);
    assert.equal(index.nextAvailableAt(500), null, "a due entry is no longer waiting");
    assert.deepEqual(index.take(5, 500).map((e) => e.id), ["late"]);
  });

  it("skips entries refused by the accept filter and keeps them queued", () => {
    const index = new PriorityIndex();
    index.add(entry("a", 9, 1), 10);
    index.add(entry("b", 8, 1), 10);
    assert.deepEqual(index.take(5, 10, (e) => e.id !== "a").map((e) => e.id), ["b"]);
    assert.equal(index.peek(10)?.id, "a");
  });

  it("refuses a priority outside 0..100", () => {
    const index = new PriorityIndex();
    assert.throws(() => index.add(entry("a", 101, 1)), /priority of a must be an integer 0\.\.100/);
    assert.throws(() => index.add(entry("a", 1.5, 1)), RangeError);
  });

  it("handles a million entries with logarithmic pulls", () => {
    const index = new PriorityIndex();
    const n = 1_000_000;
    for (let i = 0; i < n; i++) index.add(entry(`t${i}`, i % 101, i), n);
    assert.equal(index.size, n);
    const best = index.take(3, n);
    assert.deepEqual(best.map((e) => e.priority), [100, 100, 100]);
    assert.deepEqual(best.map((e) => e.submitTime), [100, 201, 302]);
  });
});
