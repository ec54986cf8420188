import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { EventBuffer } from "./event-buffer.js";
import { streamEvents, type EventStreamOptions } from "./event-stream.js";
import { sseComment, sseEvent, sseRetry } from "./sse.js";
import type { NumberedEvent } from "./task-event.js";

const entry = (n: number, user = "ann"): NumberedEvent => ({
  eventId: `e-${n}`,
  event: { id: `t-${n}`, status: "input", job: "j", user, parentId: null, progress: null, message: null, time: n },
});

/** A sink that parses what it is sent, as a client would. */
function client(): { sink: PassThrough; messages: EventSourceMessage[]; raw: () => string } {
  const sink = new PassThrough();
  const messages: EventSourceMessage[] = [];
  let raw = "";
  const parser = createParser({ onEvent: (m) => messages.push(m) });
  sink.setEncoding("utf8");
  sink.on("data", (chunk: string) => {
    raw += chunk;
    parser.feed(chunk);
  });
  return { sink, messages, raw: () => raw };
}

const options = (buffer: EventBuffer, over: Partial<EventStreamOptions> = {}): EventStreamOptions => ({
  buffer,
  lastEventId: null,
  filter: (e) => e.user === "ann",
  keepAliveMs: 60_000,
  maxPendingBytes: 1024 * 1024,
  retryMs: 2000,
  ...over,
});
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("SSE framing", () => {
  it("writes id, event and one data line of JSON; a comment; a retry", () => {
    assert.equal(sseEvent("e-1", "task", { a: "x\ny" }), 'id: e-1\nevent: task\ndata: {"a":"x\\ny"}\n\n');
    assert.equal(sseEvent(null, "gap", {}), "event: gap\ndata: {}\n\n");
    assert.throws(() => sseEvent("a\nb", "task", {}));
    assert.equal(sseComment("keep\nalive"), ": keep alive\n\n");
    assert.equal(sseRetry(2000), "retry: 2000\n\n");
  });
});

describe("streamEvents", () => {
  it("replays the kept events after the last id, then streams new ones, only those the filter lets through", async () => {
    const buffer = new EventBuffer();
    buffer.add([entry(1), entry(2), entry(3, "bob"), entry(4)]);
    const c = client();
    const stop = streamEvents(c.sink, options(buffer, { lastEventId: "e-1" }));
    buffer.add([entry(5), entry(6, "bob")]);
    await tick();
    assert.deepEqual(
      c.messages.map((m) => [m.id, m.event, (JSON.parse(m.data) as { id: string }).id]),
      [
        ["e-2", "task", "t-2"],
        ["e-4", "task", "t-4"],
        ["e-5", "task", "t-5"],
      ],
    );
    assert.match(c.raw(), /^retry: 2000\n\n/);
    stop();
    buffer.add([entry(7)]);
    await tick();
    assert.equal(c.messages.length, 3, "nothing after the end");
    assert.equal(c.sink.writableEnded, true);
  });

  it("says gap first when the last id is no longer kept, then sends what is kept", async () => {
    const buffer = new EventBuffer();
    buffer.add([entry(8)]);
    const c = client();
    streamEvents(c.sink, options(buffer, { lastEventId: "gone-1" }));
    await tick();
    assert.deepEqual(
      c.messages.map((m) => [m.id, m.event]),
      [
        [undefined, "gap"],
        ["e-8", "task"],
      ],
    );
    assert.equal((JSON.parse(c.messages[0]!.data) as { lastEventId: string }).lastEventId, "gone-1");
  });

  it("sends a keep-alive comment every keepAliveMs", async (t) => {
    t.mock.timers.enable({ apis: ["setInterval"] });
    const c = client();
    const stop = streamEvents(c.sink, options(new EventBuffer(), { keepAliveMs: 15_000 }));
    t.mock.timers.tick(30_000);
    await tick();
    assert.equal(c.raw().match(/: keep-alive\n\n/g)?.length, 2);
    stop();
  });

  it("drops a client that falls too far behind, and stops listening when the connection closes", async () => {
    const buffer = new EventBuffer();
    // Nobody reads this sink: what is written stays pending.
    const slow = new PassThrough({ highWaterMark: 16 });
    streamEvents(slow, options(buffer, { maxPendingBytes: 1000 }));
    for (let n = 1; n <= 20; n++) buffer.add([entry(n)]);
    await tick();
    assert.equal(slow.destroyed, true);
    const c = client();
    streamEvents(c.sink, options(buffer));
    c.sink.destroy();
    await tick();
    buffer.add([entry(21)]);
    assert.equal(c.messages.length, 0);
  });
});
