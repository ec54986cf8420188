import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseWorkflow, WorkflowDefinitionError } from "./parse-workflow.js";
import { WorkflowDefinitionSchema } from "./workflow-definition.js";

const stepsOf = (...names: string[]): Record<string, { job: string }> => Object.fromEntries(names.map((n) => [n, { job: "noop" }]));

function refused(raw: unknown, message: RegExp): void {
  assert.throws(
    () => parseWorkflow(raw),
    (err: unknown) => {
      assert.ok(err instanceof WorkflowDefinitionError, `a WorkflowDefinitionError, got ${String(err)}`);
      assert.match(err.message, message);
      return true;
    },
  );
}

describe("parseWorkflow", () => {
  it("reads the issue's example: steps in the order written, upstreams in the order the flow writes them, one final step", () => {
    const { definition, flow } = parseWorkflow({
      steps: {
        extract: { job: "pdftotext" },
        count: { job: "wordcount" },
        upper: { job: "pages", priority: 80, maxTries: 3 },
        report: { job: "concat", params: { sep: "\n" } },
      },
      flow: ["extract -> count", "extract -> upper", "[count, upper] -> report"],
    });
    assert.deepEqual(
      definition.steps.map((s) => s.name),
      ["extract", "count", "upper", "report"],
    );
    assert.deepEqual(definition.steps[2], { name: "upper", job: "pages", priority: 80, maxTries: 3 });
    assert.deepEqual(definition.steps[3], { name: "report", job: "concat", params: { sep: "\n" } });
    assert.deepEqual(definition.upstreams, { extract: [], count: ["extract"], upper: ["extract"], report: ["count", "upper"] });
    assert.equal(definition.final, "report");
    assert.deepEqual(flow, ["extract -> count", "extract -> upper", "[count, upper] -> report"]);
    assert.ok(WorkflowDefinitionSchema.safeParse(definition).success);
  });

  it("reads chains, fan-out and fan-in on one line, whitespace tolerant", () => {
    const { definition } = parseWorkflow({ steps: stepsOf("a", "b", "c", "d"), flow: ["  a->[ b ,c ]  ->   d "] });
    assert.deepEqual(definition.upstreams, { a: [], b: ["a"], c: ["a"], d: ["b", "c"] });
    assert.equal(definition.final, "d");
    const chain = parseWorkflow({ steps: stepsOf("x", "y", "z"), flow: ["x -> y -> z"] }).definition;
    assert.deepEqual(chain.upstreams, { x: [], y: ["x"], z: ["y"] });
  });

  it("keeps a merge step's upstreams in the order written, across lines too", () => {
    const { definition } = parseWorkflow({ steps: stepsOf("a", "b", "c", "d"), flow: ["c -> d", "[b, a] -> d"] });
    assert.deepEqual(definition.upstreams.d, ["c", "b", "a"]);
  });

  it("takes a single step without any flow line", () => {
    const { definition } = parseWorkflow({ steps: stepsOf("only") });
    assert.deepEqual(definition, { steps: [{ name: "only", job: "noop" }], upstreams: { only: [] }, final: "only" });
  });

  it("refuses a cycle, naming its steps and the line that closes it", () => {
    refused(
      { steps: stepsOf("a", "b", "c", "d"), flow: ["a -> b", "b -> c", "c -> a", "c -> d"] },
      /^flow line 3 "c -> a": cycle: a -> b -> c -> a$/,
    );
    refused({ steps: stepsOf("a", "b"), flow: ["a -> a -> b"] }, /^flow line 1 "a -> a -> b": cycle: a -> a$/);
  });

  it("refuses an unknown step, naming the line", () => {
    refused(
      { steps: stepsOf("count", "upper", "report"), flow: ["count -> report", "[count, upper] -> reprot"] },
      /^flow line 2 "\[count, upper\] -> reprot": unknown step "reprot" \(the steps are count, upper, report\)$/,
    );
  });

  it("refuses bad arrow lines, naming the line", () => {
    const steps = stepsOf("a", "b", "c");
    refused({ steps, flow: ["a -> b", "a b"] }, /^flow line 2 "a b": no "->"/);
    refused({ steps, flow: ["a -> "] }, /^flow line 1 "a -> ": a step name is missing after an "->"/);
    refused({ steps, flow: ["-> a"] }, /^flow line 1 "-> a": a step name is missing before the first "->"/);
    refused({ steps, flow: ["[a, b -> c"] }, /^flow line 1 "\[a, b -> c": unbalanced brackets in "\[a, b"/);
    refused({ steps, flow: ["[a,] -> c"] }, /^flow line 1 "\[a,\] -> c": an empty name in "\[a,\]"/);
    refused({ steps, flow: ["[a, a] -> c"] }, /^flow line 1 "\[a, a\] -> c": step "a" is written twice/);
    refused({ steps, flow: ["a => b"] }, /^flow line 1 "a => b": no "->"/);
    refused({ steps, flow: ["A -> b"] }, /^flow line 1 "A -> b": "A" is not a step name/);
    // YAML reads an unquoted `- [a, b] -> c` as an error or a list: the line must be a string.
    refused({ steps, flow: ["a -> c", ["a", "b"]] }, /^flow line 2: not a text line \(YAML read a list\): quote it/);
  });

  it("refuses an edge written twice", () => {
    refused({ steps: stepsOf("a", "b"), flow: ["a -> b", "a -> b"] }, /^flow line 2 "a -> b": a -> b is written already in flow line 1$/);
    refused({ steps: stepsOf("a", "b"), flow: ["a -> b -> a"] }, /cycle/);
  });

  it("refuses two final steps, naming them", () => {
    refused({ steps: stepsOf("a", "b", "c"), flow: ["a -> b", "a -> c"] }, /^workflow: 2 final steps \(b, c\)/);
  });

  it("refuses a step in no line when there are several", () => {
    refused({ steps: stepsOf("a", "b", "lonely"), flow: ["a -> b"] }, /^workflow: step "lonely" in no flow line/);
  });

  it("refuses a bad steps map: none, a bad name, a digit-only name, a bad field", () => {
    refused({ steps: {}, flow: [] }, /at least one step/);
    refused({ steps: { Bad: { job: "noop" } } }, /"Bad" is not a step name/);
    refused({ steps: { "1": { job: "noop" } } }, /"1": a step name must not be only digits/);
    refused({ steps: { a: { job: "noop", entry: "x" } } }, /^workflow: steps\.a: /);
    refused({ steps: { a: {} } }, /^workflow: steps\.a\.job: /);
    refused({ steps: { a: { job: "noop", priority: 1000 } } }, /^workflow: steps\.a\.priority: /);
    refused({ steps: stepsOf("a"), flow: [], extra: 1 }, /^workflow: /);
    refused("a -> b", /^workflow: /);
  });
});
