import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { describe, it } from "node:test";
import { TransferStalledError, watchTransfer } from "./transfer-watchdog.js";

/** A stream that sends `chunks` of 10 bytes, `gapMs` apart, then ends, or, with `stallAfter`, sends that many and then nothing, for good. */
function trickle(opts: { chunks: number; gapMs: number; stallAfter?: number }): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (opts.stallAfter !== undefined && sent >= opts.stallAfter) return;
      if (sent >= opts.chunks) return void this.push(null);
      sent++;
      setTimeout(() => this.push(Buffer.alloc(10)), opts.gapMs);
    },
  });
}

describe("watchTransfer", () => {
  it("gives up a stream that stops sending without ending: the stream errors, `stalled` rejects, the source is destroyed", async () => {
    const source = trickle({ chunks: 100, gapMs: 1, stallAfter: 3 });
    const watched = watchTransfer(source, "the document of t1", 150);
    const read = buffer(watched.stream);
    await assert.rejects(watched.stalled, (err: unknown) => {
      assert.ok(err instanceof TransferStalledError);
      assert.equal(err.bytes, 30);
      assert.match(err.message, /^the document of t1 stalled: no bytes for 0 s after 30 byte\(s\)$/);
      return true;
    });
    await assert.rejects(read, TransferStalledError);
    assert.equal(source.destroyed, true);
    assert.equal(watched.bytes(), 30);
  });

  it("gives up a stream that never sends a byte", async () => {
    const watched = watchTransfer(trickle({ chunks: 1, gapMs: 1, stallAfter: 0 }), "the result of t2", 100);
    await assert.rejects(watched.stalled, (err: unknown) => err instanceof TransferStalledError && err.bytes === 0);
  });

  it("passes on a slow transfer whose bytes keep coming, however long it takes in all", async () => {
    // 12 chunks 30 ms apart: about 360 ms in all, far past the 150 ms watch, never a gap that long.
    const watched = watchTransfer(trickle({ chunks: 12, gapMs: 30 }), "the document of t3", 150);
    let stalled = false;
    watched.stalled.catch(() => (stalled = true));
    assert.equal((await buffer(watched.stream)).length, 120);
    // The watch ended with the stream: no stall comes later.
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(stalled, false);
  });

  it("passes on the source's own error", async () => {
    const source = new Readable({ read() {} });
    const watched = watchTransfer(source, "the document of t4", 10_000);
    const read = buffer(watched.stream);
    source.destroy(new Error("disk gone"));
    await assert.rejects(read, /disk gone/);
  });
});
