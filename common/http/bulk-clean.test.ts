import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isDocqError, ERROR_CODE } from "../model/errors.js";
import { parseCleanQuery } from "./bulk-clean.js";

const NOW = Date.parse("2026-12-02T08:00:00Z");

/** The field a refused query names. */
function refusedField(raw: Record<string, unknown>): string | undefined {
  try {
    parseCleanQuery(raw, NOW);
  } catch (err) {
    assert.ok(isDocqError(err, ERROR_CODE.BadRequest), String(err));
    return (err as { field?: string }).field;
  }
  assert.fail(`accepted ${JSON.stringify(raw)}`);
}

describe("parseCleanQuery", () => {
  it("reads olderThan as an age in ms or as an ISO date", () => {
    assert.deepEqual(parseCleanQuery({ status: "error", olderThan: "60000" }, NOW), { status: "error", endedBefore: NOW - 60_000 });
    assert.deepEqual(parseCleanQuery({ status: "output", olderThan: "2026-12-01T00:00:00Z" }, NOW), {
      status: "output",
      endedBefore: Date.parse("2026-12-01T00:00:00Z"),
    });
    assert.equal(parseCleanQuery({ status: "canceled", olderThan: "2026-12-01" }, NOW).endedBefore, Date.parse("2026-12-01"));
    assert.equal(parseCleanQuery({ status: "error", olderThan: "0", user: "ann" }, NOW).user, "ann");
  });

  it("refuses a status that is not final or missing, a malformed olderThan, and unknown keys, naming the field", () => {
    assert.equal(refusedField({ status: "work", olderThan: "1" }), "status");
    assert.equal(refusedField({ olderThan: "1" }), "status");
    assert.equal(parseCleanQuery({ status: "error" }, NOW).endedBefore, NOW + 1, "no olderThan: every error task that has ended");
    assert.equal(refusedField({ status: "error", olderThan: "yesterday" }), "olderThan");
    assert.equal(refusedField({ status: "error", olderThan: "-5" }), "olderThan");
    assert.equal(refusedField({ status: "error", olderThan: "2026-13-45" }), "olderThan");
    assert.equal(refusedField({ status: "error", olderThan: "1", limit: 3 }), undefined);
  });
});
