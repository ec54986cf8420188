import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { endedCleanly, endOfRun, StderrTail } from "./job-process.mjs";

describe("endOfRun: how a run ended, in one sentence", () => {
  it("says what docq stopped it for first", () => {
    assert.equal(endOfRun({ stoppedFor: "cancel", exitCode: 137 }), "was canceled");
    assert.equal(endOfRun({ stoppedFor: "timeout", timeoutMs: 500, signal: "SIGKILL" }), "timed out after 500 ms");
    assert.equal(endOfRun({ stoppedFor: "stop" }), "was stopped: the worker is shutting down");
  });

  it("then too much stdout, a failed start, a signal, an exit code, with the last stderr line", () => {
    assert.equal(endOfRun({ stdoutOverflowBytes: 10, exitCode: 0 }), "printed more than 10 bytes on stdout");
    assert.equal(endOfRun({ startError: "spawn nope ENOENT" }), "could not start: spawn nope ENOENT");
    assert.equal(endOfRun({ signal: "SIGSEGV", stderrTail: "boom\n\n" }), "was killed by SIGSEGV: boom");
    assert.equal(endOfRun({ exitCode: 3, stderrTail: "first\nlast\n" }), "exited with code 3: last");
    assert.equal(endOfRun({ exitCode: 0, beforeAnswering: true }), "exited with code 0 before answering");
  });

  it("a run ended cleanly only when it exited by itself with code 0", () => {
    assert.equal(endedCleanly({ exitCode: 0, signal: null, stderrTail: "chatter" }), true);
    assert.equal(endedCleanly({ exitCode: 0, stoppedFor: "timeout" }), false);
    assert.equal(endedCleanly({ exitCode: 1 }), false);
  });
});

describe("StderrTail", () => {
  it("keeps the last characters only, and forgets on clear()", () => {
    const tail = new StderrTail(4);
    for (const chunk of ["abc", "defgh", "ij"]) tail.add(chunk);
    assert.equal(tail.text, "ghij");
    tail.clear();
    assert.equal(tail.text, "");
  });
});
