import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newTaskId } from "./new-task.js";
import { PriorityIndex } from "./priority-index.js";

const entry = (id: string, priority: number, submitTime: number, availableAt = submitTime) => ({
  id,
  priority,
  submitTime,
  availableAt,
  lendable: true,
});

describe("PriorityIndex", () => {
  it("takes highest priority first, FIFO by submit time within a priority", () => {
    const index = new PriorityIndex();
    index.add(entry("a", 10, 1), 100);
    index.add(entry("b", 50, 3), 100);
    index.add(entry("c", 50, 2), 100);
    index.add(entry("d", 100, 4), 100);
    index.add(entry("e", 0, 0), 100);
    assert.deepEqual(
      index.take(10, 100).map((e) => e.id),
      ["d", "c", "b", "a", "e"],
    );
    assert.equal(index.size, 0);
  });

  it("takes a site's own tasks before stolen ones of the same priority, never before a higher priority", () => {
    const index = new PriorityIndex({ isHome: (id) => id.startsWith("b-") });
    index.add(entry("a-stolen-early", 50, 1), 100);
    index.add(entry("b-own-late", 50, 9), 100);
    index.add(entry("a-stolen-high", 60, 5), 100);
    index.add(entry("b-own-low", 40, 0), 100);
    index.add(entry("b-own-delayed", 50, 2, 500), 100);
    assert.equal(index.readyHome(100), 2, "own ready: b-own-late and b-own-low");
    assert.equal(index.readyHome(600), 3, "and the delayed one once due");
    assert.deepEqual(
      index.take(10, 600).map((e) => e.id),
      ["a-stolen-high", "b-own-delayed", "b-own-late", "a-stolen-early", "b-own-low"],
    );
    assert.equal(index.readyHome(600), 0);
  });

  it("takes the entries a choice names among the best ones, leaving the others in their order", () => {
    const index = new PriorityIndex();
    for (let i = 0; i < 5; i++) index.add(entry(`t${i}`, 50, i), 10);
    index.add({ ...entry("t5", 50, 5), inputBytes: 1234 }, 10);
    index.remove("t1");
    let seen: string[] = [];
    const taken = index.takeChosen(4, 10, (best) => {
      seen = best.map((e) => e.id);
      return new Set(["t3", "t4"]);
    });
    assert.deepEqual(seen, ["t0", "t2", "t3", "t4"], "the 4 best live entries, in order");
    assert.deepEqual(
      taken.map((e) => e.id),
      ["t3", "t4"],
    );
    assert.deepEqual(
      index.take(10, 10).map((e) => [e.id, e.inputBytes]),
      [
        ["t0", undefined],
        ["t2", undefined],
        ["t5", 1234],
      ],
    );
  });

  it("keeps insertion order for equal submit times", () => {
    const index = new PriorityIndex();
    for (const id of ["x", "y", "z"]) index.add(entry(id, 5, 7), 10);
    assert.deepEqual(
      index.take(3, 10).map((e) => e.id),
      ["x", "y", "z"],
    );
  });

  it("takes at most N and leaves the rest", () => {
    const index = new PriorityIndex();
    for (let i = 0; i < 10; i++) index.add(entry(`t${i}`, i, i), 100);
    assert.deepEqual(
      index.take(3, 100).map((e) => e.id),
      ["t9", "t8", "t7"],
    );
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
    assert.deepEqual(
      index.take(5, 10).map((e) => e.id),
      ["a", "c"],
    );
  });

  it("finds, replaces and removes task ids (site-ULID, held as numbers) as any id, mixed with ids of other forms", () => {
    const index = new PriorityIndex({ isHome: (id) => id.startsWith("home-") });
    const ids = Array.from({ length: 300 }, (_, i) => (i % 5 === 0 ? `plain-${i}` : newTaskId(i % 2 === 0 ? "home" : "away")));
    ids.forEach((id, i) => index.add(entry(id, i % 3, i), 1000));
    for (let i = 0; i < ids.length; i += 4) assert.equal(index.remove(ids[i]!), true);
    for (let i = 1; i < ids.length; i += 4) index.add(entry(ids[i]!, 100, i), 1000);
    assert.equal(index.size, 225);
    for (const [i, id] of ids.entries()) assert.equal(index.has(id), i % 4 !== 0, id);
    const taken = index.take(1000, 1000).map((e) => e.id);
    const expected = ids
      .map((id, i) => ({ id, i, priority: i % 4 === 1 ? 100 : i % 3, home: id.startsWith("home-") }))
      .filter(({ i }) => i % 4 !== 0)
      .sort((a, b) => b.priority - a.priority || Number(b.home) - Number(a.home) || a.i - b.i)
      .map(({ id }) => id);
    assert.deepEqual(taken, expected);
    assert.equal(index.size, 0);
    assert.ok(ids.every((id) => !index.has(id)));
  });

  it("holds back delayed entries until their backoff elapses", () => {
    const index = new PriorityIndex();
    index.add(entry("late", 100, 1, 500), 100);
    index.add(entry("now", 1, 2), 100);
    assert.equal(index.nextAvailableAt(100), 500);
    assert.deepEqual(index.counts(100), { ready: 1, delayed: 1, highestPriority: 1 });
    assert.deepEqual(index.countsByPriority(), { 100: 1, 1: 1 });
    assert.deepEqual(
      index.take(5, 100).map((e) => e.id),
      ["now"],
    );
    assert.deepEqual(index.take(5, 499), []);
    assert.equal(index.nextAvailableAt(500), null, "a due entry is no longer waiting");
    assert.deepEqual(
      index.take(5, 500).map((e) => e.id),
      ["late"],
    );
  });

  it("skips entries refused by the accept filter and keeps them queued", () => {
    const index = new PriorityIndex();
    index.add(entry("a", 9, 1), 10);
    index.add(entry("b", 8, 1), 10);
    assert.deepEqual(
      index.take(5, 10, (e) => e.id !== "a").map((e) => e.id),
      ["b"],
    );
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
    assert.deepEqual(
      best.map((e) => e.priority),
      [100, 100, 100],
    );
    assert.deepEqual(
      best.map((e) => e.submitTime),
      [100, 201, 302],
    );
  });

  it("keeps every entry and its order when room was reserved, with fewer or more entries than reserved", () => {
    for (const [reserved, added] of [
      [5_000, 3_000],
      [2_000, 7_000],
    ] as const) {
      const index = new PriorityIndex();
      index.add(entry(newTaskId("s"), 50, 0), 10);
      index.reserve(reserved);
      const ids = Array.from({ length: added }, () => newTaskId("s"));
      ids.forEach((id, i) => index.addAbsent(entry(id, i % 3, i + 1, i % 10 === 0 ? 20 : 0), 10));
      index.settle();
      assert.equal(index.size, added + 1);
      for (const id of ids) assert.ok(index.has(id), id);
      const taken = index.take(added + 1, 30);
      assert.equal(taken.length, added + 1);
      for (let i = 1; i < taken.length; i++) {
        const [a, b] = [taken[i - 1]!, taken[i]!];
        assert.ok(a.priority > b.priority || (a.priority === b.priority && a.submitTime < b.submitTime), `${i}: out of order`);
      }
    }
  });

  it("keeps its counts right through adds, replacements, removals, takes and backoffs elapsing, without walking the entries", () => {
    const index = new PriorityIndex();
    const model = new Map<string, { priority: number; availableAt: number }>();
    let seed = 7;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let step = 0, now = 1000; step < 5000; step++, now += random(3)) {
      const id = `t${random(300)}`;
      const op = random(10);
      if (op < 5) {
        const entry = { id, priority: random(101), submitTime: now, availableAt: random(2) === 0 ? now : now + random(50), lendable: true };
        index.add(entry, now);
        model.set(id, entry);
      } else if (op < 7) {
        assert.equal(index.remove(id), model.delete(id));
      } else {
        for (const taken of index.take(random(4), now)) {
          assert.ok(model.get(taken.id)!.availableAt <= now, "only available entries are taken");
          model.delete(taken.id);
        }
      }
      const counts = index.counts(now);
      const delayed = [...model.values()].filter((e) => e.availableAt > now).length;
      assert.deepEqual([counts.ready, counts.delayed], [model.size - delayed, delayed], `step ${step}`);
      const byPriority: Record<number, number> = {};
      for (const e of model.values()) byPriority[e.priority] = (byPriority[e.priority] ?? 0) + 1;
      assert.deepEqual(index.countsByPriority(), byPriority, `step ${step}`);
    }
  });
});
