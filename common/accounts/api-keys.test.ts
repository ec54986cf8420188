import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkSubmission, parseUsageQuery } from "../http/api-access.js";
import { bearerToken, callerOf, hashKey, newApiKey, sameSecret, type Caller } from "./api-keys.js";
import { isDocqError } from "../model/errors.js";

const ADMIN = "the-admin-key-of-this-test";

describe("API keys", () => {
  it("makes a random key, stored as its SHA-256 hash only", () => {
    const a = newApiKey("alice", { offload: true }, 1_700_000_000_000);
    const b = newApiKey("alice", { offload: true }, 1_700_000_000_000);
    assert.match(a.secret, /^dq_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a.secret, b.secret);
    assert.equal(a.record.hash, hashKey(a.secret));
    assert.ok(!JSON.stringify(a.record).includes(a.secret));
    assert.match(a.record.id, /^key-[0-9A-HJKMNP-TV-Z]{26}$/);
  });

  it("compares secrets whatever their lengths", () => {
    assert.equal(sameSecret(ADMIN, ADMIN), true);
    assert.equal(sameSecret(ADMIN, `${ADMIN}x`), false);
    assert.equal(sameSecret("", ADMIN), false);
  });

  it("reads only Bearer tokens of printable ASCII and bounded length", () => {
    assert.deepEqual(bearerToken("Bearer abc"), { token: "abc" });
    assert.deepEqual(bearerToken("bearer abc"), { token: "abc" });
    for (const bad of [
      undefined,
      "",
      "Bearer",
      "Bearer ",
      "Basic abc",
      "Bearer a b",
      `Bearer ${"x".repeat(513)}`,
      "Bearer clé",
      ["Bearer a", "Bearer b"],
    ]) {
      assert.ok("missing" in bearerToken(bad), JSON.stringify(bad));
    }
  });

  it("tells admin, metrics and user keys apart; unknown keys are UNAUTHORIZED; no admin key means open", async () => {
    const user = newApiKey("bob", { offload: false, maxPriority: 10 }, 1);
    const check = {
      adminKey: ADMIN,
      metricsKey: "the-metrics-key-of-this-test",
      lookup: async (hash: string) => (hash === user.record.hash ? { id: user.record.id, user: "bob", limits: user.record.limits } : null),
    };
    assert.deepEqual(await callerOf(`Bearer ${ADMIN}`, check), { kind: "admin" });
    assert.deepEqual(await callerOf("Bearer the-metrics-key-of-this-test", check), { kind: "metrics" });
    assert.deepEqual(await callerOf(`Bearer ${user.secret}`, check), {
      kind: "user",
      user: "bob",
      keyId: user.record.id,
      limits: { offload: false, maxPriority: 10 },
    });
    await assert.rejects(callerOf("Bearer nope", check), (err: unknown) => isDocqError(err, "UNAUTHORIZED"));
    await assert.rejects(callerOf(undefined, check), (err: unknown) => isDocqError(err, "UNAUTHORIZED"));
    assert.deepEqual(await callerOf(undefined, { ...check, adminKey: null }), { kind: "open" });
  });

  it("keeps a user key to its own user and below its priority cap", () => {
    const bob: Caller = { kind: "user", user: "bob", keyId: "k", limits: { offload: true, maxPriority: 50 } };
    checkSubmission(bob, { givenUser: undefined, priority: 50 });
    checkSubmission(bob, { givenUser: "bob", priority: 0 });
    assert.throws(
      () => checkSubmission(bob, { givenUser: "alice", priority: 1 }),
      (err: unknown) => isDocqError(err, "FORBIDDEN"),
    );
    assert.throws(() => checkSubmission(bob, { givenUser: undefined, priority: 51 }), /maxPriority of 50/);
    checkSubmission({ kind: "admin" }, { givenUser: "anyone", priority: 100 });
  });

  it("reads a usage query: days inclusive, today by default, bounded", () => {
    const now = Date.parse("2026-12-02T10:00:00Z");
    assert.deepEqual(parseUsageQuery({}, now), { from: "2026-12-02", to: "2026-12-02" });
    assert.deepEqual(parseUsageQuery({ user: "a", from: "2026-11-01" }, now), { user: "a", from: "2026-11-01", to: "2026-11-01" });
    assert.deepEqual(parseUsageQuery({ from: "2026-11-01", to: "2026-11-30" }, now), { from: "2026-11-01", to: "2026-11-30" });
    for (const bad of [
      { from: "2026-13-01" },
      { from: "2026-12-02", to: "2026-12-01" },
      { from: "2020-01-01", to: "2026-01-01" },
      { other: 1 },
      { user: ["a", "b"] },
    ]) {
      assert.throws(
        () => parseUsageQuery(bad, now),
        (err: unknown) => isDocqError(err, "BAD_REQUEST"),
        JSON.stringify(bad),
      );
    }
  });
});
