import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AttemptRecord } from "../model/task-model.js";
import { failedAttemptLine } from "./attempt-log.js";

const task = { id: "local-01J0000000000000000000000A", job: "pdf", maxTries: 10 };
const attempt = (outcome: AttemptRecord["outcome"], error: string | null): AttemptRecord => ({
  n: 3,
  site: "local",
  node: "worker@n1",
  start: 1,
  end: 2,
  outcome,
  error,
});

describe("failedAttemptLine", () => {
  it("names the task, job, attempt and the error's first line for retry, error and lease_lost", () => {
    assert.equal(
      failedAttemptLine(task, attempt("retry", "exit code 1: bad xref\n--- stderr (tail) ---\nTraceback ...")),
      "task local-01J0000000000000000000000A (job pdf) attempt 3/10 failed on worker@n1 [retry, will retry]: exit code 1: bad xref",
    );
    assert.match(failedAttemptLine(task, attempt("error", "broken"))!, /\[error, gave up\]: broken$/);
    assert.match(failedAttemptLine(task, attempt("lease_lost", null))!, /\[lease_lost, will retry\]: \(no error text\)$/);
  });

  it("says nothing of an attempt that did not fail", () => {
    for (const outcome of ["output", "split", "canceled", "released"] as const)
      assert.equal(failedAttemptLine(task, attempt(outcome, null)), null);
  });

  it("cuts a very long first line", () => {
    const line = failedAttemptLine(task, attempt("retry", "x".repeat(1000)))!;
    assert.ok(line.length < 450 && line.endsWith("…"));
  });
});
