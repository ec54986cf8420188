import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { QueueEntry } from "../model/task-model.js";
import { bufferSlots, fairShares, LinkMeter, moveCostMs, MovingAverages, planLend, type LendRequest } from "./steal-cost.js";

const entry = (n: number, opts: Partial<QueueEntry> = {}): QueueEntry => ({
  id: `a-${String(n).padStart(3, "0")}`,
  priority: 50,
  submitTime: n,
  availableAt: n,
  lendable: true,
  user: "u",
  job: "j",
  inputBytes: 100,
  ...opts,
});

/** A victim with 2 busy slots and 200 ms runs; a fast link (1 ms round trip, 10 MB/s). */
const request = (opts: Partial<LendRequest> = {}): LendRequest => ({
  max: 3,
  minPriority: 0,
  homePrefix: "a-",
  ownerSlots: 2,
  ownerBusy: 2,
  runMs: () => 200,
  inputBytes: (e) => e.inputBytes ?? 0,
  link: { rttMs: 1, bytesPerMs: 10_000 },
  heldByUser: {},
  ...opts,
});

describe("steal cost", () => {
  it("a move costs the round trip, the document there and the result back", () => {
    assert.equal(moveCostMs(0, { rttMs: 7, bytesPerMs: 100 }), 7);
    assert.equal(moveCostMs(10_000, { rttMs: 7, bytesPerMs: 100 }), 207);
  });

  it("measures a link: round trips from small exchanges, throughput from large ones (net of the round trip)", () => {
    const links = new LinkMeter({ rttMs: 20, bytesPerMs: 1000 });
    assert.deepEqual(links.figures("b"), { rttMs: 20, bytesPerMs: 1000 }, "the prior until measured");
    links.record("b", 100, 4);
    assert.equal(links.figures("b").rttMs, 4);
    links.record("b", 1_000_000, 104);
    assert.equal(links.figures("b").bytesPerMs, 10_000);
    // Moving averages: a second sample moves the figure part of the way.
    links.record("b", 1_000_000, 1004);
    assert.ok(links.figures("b").bytesPerMs < 10_000 && links.figures("b").bytesPerMs > 1000);
    assert.deepEqual(links.figures("c"), { rttMs: 20, bytesPerMs: 1000 }, "each link on its own");
  });

  it("keeps per-key moving averages, falling back to the average over all keys, then to a prior", () => {
    const avg = new MovingAverages();
    assert.equal(avg.get("j", 123), 123);
    avg.add("j", 200);
    assert.equal(avg.get("j", 0), 200);
    assert.equal(avg.get("other", 0), 200, "a job not seen: the average of all");
    avg.add("j", 100);
    assert.ok(avg.get("j", 0) < 200 && avg.get("j", 0) > 100);
  });

  it("buffers one task per slot (slots filled together free together), more when runs are shorter than the round trip", () => {
    assert.equal(bufferSlots(2, 20, 200), 2);
    assert.equal(bufferSlots(2, 150, 200), 3, "2 × 2 × 150 / 200 = 3");
    assert.equal(bufferSlots(4, 30, 200), 4);
    assert.equal(bufferSlots(4, 10_000, 200), 16, "at most 4 per slot");
    assert.equal(bufferSlots(0, 20, 200), 0);
  });

  it("shares slots max-min fair: equal shares, the unused part of a small user's share to the others", () => {
    assert.deepEqual(
      Object.fromEntries(
        fairShares(
          new Map([
            ["x", 50],
            ["y", 50],
          ]),
          4,
        ),
      ),
      { x: 2, y: 2 },
    );
    assert.deepEqual(
      Object.fromEntries(
        fairShares(
          new Map([
            ["x", 50],
            ["y", 1],
          ]),
          4,
        ),
      ),
      { x: 3, y: 1 },
    );
    assert.deepEqual(
      Object.fromEntries(
        fairShares(
          new Map([
            ["x", 50],
            ["y", 50],
            ["z", 50],
          ]),
          4,
        ),
      ),
      { x: 2, y: 1, z: 1 },
    );
    assert.deepEqual(Object.fromEntries(fairShares(new Map([["x", 1]]), 4)), { x: 1 });
  });

  it("lends the best tasks that wait longer at the owner than their move costs", () => {
    const entries = Array.from({ length: 10 }, (_, i) => entry(i));
    assert.deepEqual([...planLend(entries, request())], ["a-000", "a-001", "a-002"], "all slots busy: even the first waits 100 ms");
  });

  it("never lends a task the owner would start sooner itself", () => {
    const entries = Array.from({ length: 10 }, (_, i) => entry(i));
    // Two idle slots: the first two start at once; the next two wait 200 ms.
    assert.deepEqual([...planLend(entries, request({ ownerBusy: 0 }))], ["a-002", "a-003", "a-004"]);
  });

  it("makes no steal that does not pay: a large document over a slow link stays home", () => {
    // 1 MB over 100 bytes/ms: 20 s to move, more than any wait in a queue of 10 × 200 ms on 2 slots.
    const entries = Array.from({ length: 10 }, (_, i) => entry(i, { inputBytes: 1_000_000 }));
    assert.equal(planLend(entries, request({ link: { rttMs: 1, bytesPerMs: 100 } })).size, 0);
    // Small documents behind large ones are still worth it.
    const mixed = [...entries, entry(10, { inputBytes: 10 })];
    assert.deepEqual([...planLend(mixed, request({ link: { rttMs: 1, bytesPerMs: 100 } }))], ["a-010"]);
    // A slow round trip alone: only the tasks that wait longer than it.
    const waits = [
      ...planLend(
        entries.map((e) => ({ ...e, inputBytes: 0 })),
        request({ ownerBusy: 0, link: { rttMs: 450, bytesPerMs: 1e6 } }),
      ),
    ];
    assert.deepEqual(waits, ["a-006", "a-007", "a-008"], "a-006 waits 600 ms, a-004 and a-005 400 ms");
  });

  it("with no live slot at the owner any lendable task pays", () => {
    assert.equal(planLend([entry(0, { inputBytes: 1e9 })], request({ ownerSlots: 0, ownerBusy: 0 })).size, 1);
  });

  it("lends only the owner's own lendable tasks at or above the minimum priority, and they still wait their turn", () => {
    const entries = [entry(0, { id: "b-000" }), entry(1, { lendable: false }), entry(2, { priority: 5 }), entry(3)];
    assert.deepEqual([...planLend(entries, request({ minPriority: 10 }))], ["a-003"]);
  });

  it("keeps each user within its share of the thief's slots, counting what the thief holds", () => {
    const entries = [...Array.from({ length: 8 }, (_, i) => entry(i, { user: "x" })), entry(8, { user: "y" }), entry(9, { user: "y" })];
    // 4 slots: 2 each, though x's tasks come first.
    assert.deepEqual([...planLend(entries, request({ max: 4 }))], ["a-000", "a-001", "a-008", "a-009"]);
    // The thief holds 2 of x's: of 2 more slots (4 in all), both go to y.
    assert.deepEqual([...planLend(entries, request({ max: 2, heldByUser: { x: 2 } }))], ["a-008", "a-009"]);
    // y has nothing left to lend: x takes the slots.
    const onlyX = entries.slice(0, 8);
    assert.deepEqual([...planLend(onlyX, request({ max: 2, heldByUser: { y: 2 } }))], ["a-000", "a-001"]);
  });
});
