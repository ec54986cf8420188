import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkAnswer, parseAnswerLine, parseProgressLine, progressOf } from "./script-answer.js";
import { LineSplitter } from "./launch/job-process.mjs";

describe("script answers", () => {
  it("reads an output, children, or the script's own failure with its retry wish (default: retry)", () => {
    assert.deepEqual(checkAnswer({ output: "r.json" }), { output: "r.json" });
    assert.deepEqual(checkAnswer({ children: [{ input: "p1" }] }), { children: [{ input: "p1" }] });
    assert.deepEqual(checkAnswer({ error: "not a PDF", retry: false }), { error: "not a PDF", retry: false });
    assert.deepEqual(checkAnswer({ error: "busy" }), { error: "busy", retry: true });
    assert.deepEqual(checkAnswer({ error: "busy", retry: true }), { error: "busy", retry: true });
    // An error wins over any output beside it: the script said it failed.
    assert.deepEqual(checkAnswer({ error: "x", output: "r.json" }), { error: "x", retry: true });
  });

  it("says what is wrong with a malformed answer", () => {
    assert.equal(checkAnswer({ error: 3 }), "error: must be a string");
    assert.equal(checkAnswer({ error: "x", retry: "no" }), "retry: must be true or false");
    assert.match(String(checkAnswer({ progress: 0.5 })), /exactly one of output or children/);
    assert.equal(parseAnswerLine(""), "stdout is empty");
    assert.match(String(parseAnswerLine("done!")), /^last line is not JSON: done!/);
  });

  it("cuts a very long error answer", () => {
    const answer = checkAnswer({ error: "e".repeat(10_000) });
    assert.ok(typeof answer === "object" && "error" in answer && answer.error.length === 4000);
  });
});

describe("progress lines", () => {
  it("reads the fraction (clamped into 0..1) and the message (cut at 500 characters, null when absent)", () => {
    assert.deepEqual(parseProgressLine('{"progress": 0.4, "message": "page 4 of 10"}'), { progress: 0.4, message: "page 4 of 10" });
    assert.deepEqual(parseProgressLine('  {"progress": 3}'), { progress: 1, message: null });
    assert.deepEqual(parseProgressLine('{"progress": -0.5, "message": null}'), { progress: 0, message: null });
    assert.equal(parseProgressLine(`{"progress": 1, "message": "${"m".repeat(600)}"}`)?.message?.length, 500);
  });

  it("ignores what is not a progress line: chatter, a non-number, an answer", () => {
    for (const line of ["progress 50%", '{"progress": "half"}', '{"progress": null}', "[1]", '{"progress": 0.5', '{"other": 1}']) {
      assert.equal(parseProgressLine(line), null, line);
    }
    assert.equal(progressOf({ progress: 1, output: "r.json" }), null);
    assert.equal(progressOf({ progress: 1, error: "x" }), null);
  });
});

describe("LineSplitter", () => {
  it("calls back with each complete line across chunks, and drops a line longer than its limit", () => {
    const lines: string[] = [];
    const split = new LineSplitter((l) => lines.push(l), 10);
    split.add("ab");
    split.add("c\nde");
    split.add("f\n0123456789ABC");
    split.add("DEF\nok\nrest");
    assert.deepEqual(lines, ["abc", "def", "ok"]);
  });
});
