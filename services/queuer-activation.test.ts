import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { LoggerInstance } from "moleculer";
import type { HeldQueuerLock, QueuerLockAdapter } from "../common/queue/lock/queuer-lock.js";
import { waitUntil } from "../common/testing/wait-until.js";
import { runQueuerActivation } from "./queuer-activation.js";

/** A lock held by whoever asked first while `free`; each held lock can be lost on demand. */
class FakeLock implements QueuerLockAdapter {
  readonly where = "fake";
  free = true;
  unreachable = false;
  held: { lose(): void; released: boolean }[] = [];

  async tryAcquire(): Promise<HeldQueuerLock | null> {
    if (this.unreachable) throw new Error("store down");
    if (!this.free) return null;
    this.free = false;
    const loss = new AbortController();
    const entry = { lose: () => loss.abort(new Error("connection dropped")), released: false };
    this.held.push(entry);
    return {
      lost: loss.signal,
      release: async () => {
        entry.released = true;
        this.free = true;
      },
    };
  }

  async close(): Promise<void> {}
}

function recordingLog(): { log: LoggerInstance; lines: string[] } {
  const lines: string[] = [];
  const say = (...args: unknown[]): void => void lines.push(args.map(String).join(" "));
  const log = { info: say, warn: say, error: say, fatal: say, debug: say, trace: say } as unknown as LoggerInstance;
  return { log, lines };
}

describe("runQueuerActivation", () => {
  it("serves while it holds the lock, stops serving at once when the lock is lost, and serves again when it gets it back", async () => {
    const lock = new FakeLock();
    const { log, lines } = recordingLog();
    const events: string[] = [];
    const activation = runQueuerActivation({
      site: "s",
      lock,
      leaseMs: 200,
      log,
      serve: async () => {
        events.push("serve");
        return async () => void events.push("stop serving");
      },
    });
    await activation.ready;
    assert.deepEqual(events, ["serve"]);

    lock.unreachable = true;
    lock.held[0]!.lose();
    await waitUntil("it to stop serving", () => events.includes("stop serving"), 5_000, 5);
    assert.equal(lock.held[0]!.released, true);
    assert.ok(lines.some((l) => /lost the queuer lock .*connection dropped.*stops serving at once/.test(l)));
    await waitUntil("it to try the unreachable store", () => lines.some((l) => /cannot be reached: standing by/.test(l)), 5_000, 5);

    lock.unreachable = false;
    await waitUntil("it to serve again", () => events.filter((e) => e === "serve").length === 2, 5_000, 5);
    assert.ok(lines.some((l) => /took over as the active queuer of site "s" after \d+ ms standing by/.test(l)));

    await activation.stop();
    assert.deepEqual(events, ["serve", "stop serving", "serve", "stop serving"]);
    assert.equal(lock.free, true, "released at stop");
  });

  it("stands by while another holds the lock, and gives up waiting when stopped", async () => {
    const lock = new FakeLock();
    lock.free = false;
    const { log, lines } = recordingLog();
    let served = false;
    const activation = runQueuerActivation({
      site: "s",
      lock,
      leaseMs: 200,
      log,
      serve: async () => {
        served = true;
        return async () => undefined;
      },
    });
    await waitUntil("it to stand by", () => lines.some((l) => /holds the queuer lock fake: standing by/.test(l)), 5_000, 5);
    await activation.stop();
    assert.equal(served, false);
  });

  it("rejects ready when its first start fails, letting the lock go", async () => {
    const lock = new FakeLock();
    const { log } = recordingLog();
    const activation = runQueuerActivation({
      site: "s",
      lock,
      leaseMs: 200,
      log,
      serve: async () => {
        throw new Error("store refused");
      },
    });
    await assert.rejects(activation.ready, /store refused/);
    assert.equal(lock.free, true);
    await activation.stop();
  });
});
