import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { docqError, ERROR_CODE } from "./errors.js";
import { isTransient, retryTransient } from "./transient-retry.js";

function named(name: string): Error {
  const err = new Error(name);
  err.name = name;
  return err;
}

describe("retryTransient", () => {
  it("tells transient errors from refusals", () => {
    assert.equal(isTransient(named("ServiceNotAvailableError")), true);
    assert.equal(isTransient(named("RequestTimeoutError")), true);
    assert.equal(isTransient(docqError(ERROR_CODE.StoreUnavailable, "db gone")), true);
    assert.equal(isTransient(docqError(ERROR_CODE.BadRequest, "no")), false);
    assert.equal(isTransient(new Error("boom")), false);
    assert.equal(isTransient("text"), false);
  });

  it("retries while the other side is unreachable, then answers", async () => {
    let calls = 0;
    const retried: number[] = [];
    const value = await retryTransient(
      async () => {
        calls++;
        if (calls < 4) throw named("ServiceNotFoundError");
        return "ok";
      },
      { maxMs: 5000, firstDelayMs: 1, onRetry: (_e, n) => retried.push(n) },
    );
    assert.equal(value, "ok");
    assert.deepEqual(retried, [1, 2, 3]);
  });

  it("rethrows a refusal at once and gives up after maxMs", async () => {
    let calls = 0;
    await assert.rejects(
      retryTransient(
        async () => {
          calls++;
          throw new Error("refused");
        },
        { maxMs: 5000 },
      ),
      /refused/,
    );
    assert.equal(calls, 1);
    const started = Date.now();
    await assert.rejects(
      retryTransient(async () => Promise.reject(named("ServiceNotFoundError")), { maxMs: 100, firstDelayMs: 10 }),
      /ServiceNotFoundError/,
    );
    assert.ok(Date.now() - started < 1000);
  });
});
