import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventBuffer } from "./event-buffer.js";
import type { NumberedEvent } from "./task-event.js";

const entry = (n: number, epoch = "e"): NumberedEvent => ({
  eventId: `${epoch}-${n}`,
  event: { id: `t-${n}`, status: "input", job: "j", user: "u", parentId: null, progress: null, message: null, time: n },
});
const ids = (events: readonly NumberedEvent[]): string[] => events.map((e) => e.eventId);

describe("EventBuffer", () => {
  it("replays the events after a known id, none for no id, all with a gap for an unknown one", () => {
    const buffer = new EventBuffer();
    buffer.add([entry(1), entry(2), entry(3)]);
    assert.deepEqual(ids(buffer.since("e-1").events), ["e-2", "e-3"]);
    assert.equal(buffer.since("e-1").gap, false);
    assert.deepEqual(buffer.since("e-3"), { events: [], gap: false });
    assert.deepEqual(buffer.since(null), { events: [], gap: false });
    const unknown = buffer.since("other-9");
    assert.deepEqual([ids(unknown.events), unknown.gap], [["e-1", "e-2", "e-3"], true]);
  });

  it("keeps at most maxEvents (an evicted id resumes with a gap) and ignores an event seen twice", () => {
    const buffer = new EventBuffer({ maxEvents: 3, maxAgeMs: 60_000 });
    buffer.add([entry(1), entry(2)]);
    buffer.add([entry(2), entry(3), entry(4)]);
    assert.equal(buffer.size, 3);
    assert.deepEqual(ids(buffer.since("e-2").events), ["e-3", "e-4"]);
    assert.equal(buffer.since("e-1").gap, true);
    // Many more: compaction keeps the positions right.
    for (let n = 5; n < 3000; n++) buffer.add([entry(n)]);
    assert.deepEqual(ids(buffer.since("e-2997").events), ["e-2998", "e-2999"]);
  });

  it("drops events older than maxAgeMs", () => {
    let now = 0;
    const buffer = new EventBuffer({ maxEvents: 100, maxAgeMs: 1000 }, () => now);
    buffer.add([entry(1)]);
    now = 600;
    buffer.add([entry(2)]);
    now = 1500;
    assert.deepEqual(ids(buffer.since("e-2").events), []);
    assert.equal(buffer.since("e-1").gap, true);
    assert.equal(buffer.size, 1);
  });

  it("tells subscribers each new event in order, until they unsubscribe", () => {
    const buffer = new EventBuffer();
    const seen: string[] = [];
    const stop = buffer.subscribe((e) => seen.push(e.eventId));
    buffer.add([entry(1), entry(2)]);
    stop();
    buffer.add([entry(3)]);
    assert.deepEqual(seen, ["e-1", "e-2"]);
  });
});
