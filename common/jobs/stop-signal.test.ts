import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunStop, type StopSignal } from "./stop-signal.js";

describe("RunStop", () => {
  it("calls each listener once, in the order added, when stopped; later stops do nothing", () => {
    const stop = new RunStop();
    const calls: string[] = [];
    const first = (): void => void calls.push("first");
    stop.addEventListener("abort", first);
    stop.addEventListener("abort", first, { once: true });
    stop.addEventListener("abort", () => calls.push("second"));
    assert.equal(stop.aborted, false);
    stop.abort();
    stop.abort();
    assert.equal(stop.aborted, true);
    assert.deepEqual(calls, ["first", "second"]);
  });

  it("never calls a listener removed before the stop, nor one added after it", () => {
    const stop = new RunStop();
    let called = 0;
    const listener = (): void => void called++;
    stop.addEventListener("abort", listener);
    stop.removeEventListener("abort", listener);
    stop.abort();
    stop.addEventListener("abort", listener);
    assert.equal(called, 0);
  });

  it("is a StopSignal as an AbortSignal is", () => {
    const signals: StopSignal[] = [new RunStop(), new AbortController().signal];
    assert.deepEqual(
      signals.map((s) => s.aborted),
      [false, false],
    );
  });
});
