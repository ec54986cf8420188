import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canTransition, CANCELABLE, sourcesOf, STORE_STEP_NAMES, STORE_STEPS } from "./state-machine.js";
import { TASK_STATUSES } from "./task-model.js";

describe("state machine", () => {
  it("allows every arrow of the design's diagram", () => {
    const arrows: [string, string][] = [
      ["input", "work"],
      ["work", "output"],
      ["work", "input"],
      ["work", "error"],
      ["work", "wait"],
      ["wait", "complete"],
      ["complete", "work"],
      ["wait", "error"],
      ["wait", "output"],
      ["work", "complete"],
      ["input", "canceled"],
      ["work", "canceled"],
      ["wait", "canceled"],
      ["complete", "canceled"],
      ["error", "input"],
      ["error", "wait"],
      ["error", "complete"],
      ["canceled", "input"],
      ["canceled", "wait"],
      ["canceled", "complete"],
    ];
    for (const [from, to] of arrows) assert.ok(canTransition(from as never, to as never), `${from} -> ${to}`);
  });

  it("has no other arrow: every other pair of statuses is refused; output leads nowhere, error and canceled only to a retry", () => {
    let refused = 0;
    for (const from of TASK_STATUSES) for (const to of TASK_STATUSES) if (!canTransition(from, to)) refused++;
    assert.equal(refused, 49 - 20);
    for (const to of TASK_STATUSES) assert.ok(!canTransition("output", to));
    for (const failed of ["error", "canceled"] as const) assert.deepEqual(STORE_STEPS.retry.from.includes(failed), true);
  });

  it("derives guards from the diagram", () => {
    assert.deepEqual(sourcesOf("work"), ["input", "complete"]);
    assert.deepEqual(sourcesOf("complete"), ["work", "wait", "error", "canceled"]);
    assert.deepEqual([...CANCELABLE].sort(), ["complete", "input", "wait", "work"]);
  });

  it("makes every edge of the diagram by some store step, and no edge the diagram lacks", () => {
    const made = new Set<string>();
    for (const step of STORE_STEP_NAMES) {
      for (const from of STORE_STEPS[step].from) {
        for (const to of STORE_STEPS[step].to) {
          assert.ok(canTransition(from, to), `store step ${step} makes ${from} -> ${to}, an edge the diagram lacks`);
          made.add(`${from}->${to}`);
        }
      }
    }
    for (const from of TASK_STATUSES)
      for (const to of TASK_STATUSES) {
        if (canTransition(from, to)) assert.ok(made.has(`${from}->${to}`), `no store step makes the diagram's edge ${from} -> ${to}`);
      }
  });
});
