import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Task } from "../common/model/task-model.js";
import { getTask, listAll, result, startEmbeddedApp, submit, testJobsDir, waitAllFinal, waitUntil, type EmbeddedApp } from "./helpers.js";

/** A stamp line (scripts-job/stamp): which step ran, and when. */
interface Stamp {
  step: string;
  start: number;
  end: number;
}

/*
 * Workflows run by the real app (embedded, 2 slots): the example diamond (scripts-job/diamond,
 * a -> [b, c] -> d, each step a stamp) and a workflow whose middle step fails
 * (testFunctional/jobs/midfail). One app for both.
 */
describe("workflows in the real app", () => {
  let app: EmbeddedApp;
  before(async () => {
    app = await startEmbeddedApp({ slots: 2, env: { DOCQ_JOBS_DIR: await testJobsDir() } });
  });
  after(async () => {
    await app.stop();
  });

  const stepsOf = async (id: string): Promise<Map<string, Task>> =>
    new Map((await listAll(app.url, `parentId=${id}`)).map((step) => [step.name, step]));

  it("runs the diamond: every step after its upstreams, b and c side by side, d merging them; the workflow's output is d's", async () => {
    const id = await submit(app.url, "the document", { job: "diamond" });
    const [workflow] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(workflow?.status, "output", JSON.stringify(workflow));
    const text = await result(app.url, id);
    assert.ok(text.startsWith("the document\n"), text);
    const stamps = new Map(
      text
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Stamp)
        .map((stamp) => [stamp.step, stamp]),
    );
    const [a, b, c, d] = ["a", "b", "c", "d"].map((step) => stamps.get(step));
    assert.ok(a && b && c && d, text);
    assert.ok(b.start >= a.end && c.start >= a.end, "b and c start after a ends");
    assert.ok(d.start >= Math.max(b.end, c.end), "d starts after b and c end");
    const steps = await stepsOf(id);
    assert.deepEqual([...steps.keys()].sort(), ["a", "b", "c", "d"]);
    for (const step of steps.values()) assert.equal(step.status, "output", step.name);
    // Side by side: each was leased (its record's startTime) before the other's script ended (its
    // stamp). Not by the stamps' starts: a stamp's start comes after its process has started up,
    // and on a loaded machine (CI runs three test lanes at once) b's and c's were seen apart. With
    // one slot, the second is leased only once the first's script is over.
    const [leasedB, leasedC] = [steps.get("b")?.startTime, steps.get("c")?.startTime];
    assert.ok(typeof leasedB === "number" && typeof leasedC === "number", JSON.stringify([leasedB, leasedC]));
    assert.ok(
      leasedB < c.end && leasedC < b.end,
      `b and c overlapped: b leased ${leasedB}, ended ${b.end}; c leased ${leasedC}, ended ${c.end}`,
    );
    assert.deepEqual([workflow.childrenTotal, workflow.childrenCompleted], [4, 4]);
  });

  it("a failing middle step: its downstream canceled, the other branch finished, the workflow in error naming it", async () => {
    const id = await submit(app.url, "the document", { job: "midfail" });
    const [workflow] = await waitAllFinal(app.url, [id], 60_000);
    assert.equal(workflow?.status, "error");
    assert.match(workflow.error ?? "", /^step "b" failed: /);
    const steps = await stepsOf(id);
    assert.deepEqual(
      ["a", "b", "c", "d"].map((name) => steps.get(name)?.status),
      ["output", "error", "output", "canceled"],
    );
    assert.equal(steps.get("d")?.error, "upstream failed: b");
    assert.ok((steps.get("c")?.endTime ?? 0) > (steps.get("b")?.endTime ?? Infinity), "c finished after b failed");

    // A retry runs b again (it fails again: its job always does), keeps a and c, and makes d anew.
    const retry = await fetch(`${app.url}/api/tasks/${id}/retry`, { method: "POST" });
    assert.equal(retry.status, 200, await retry.clone().text());
    await waitUntil("the retried workflow to end again", async () => (await getTask(app.url, id)).status === "error", 60_000, 100);
    const again = await stepsOf(id);
    assert.deepEqual(
      ["a", "b", "c", "d"].map((name) => [again.get(name)?.status, again.get(name)?.tries]),
      [
        ["output", 1],
        ["error", 1],
        ["output", 1],
        ["canceled", 0],
      ],
    );
    assert.deepEqual(
      (again.get("b")?.attempts ?? []).map((attempt) => attempt.outcome),
      ["error", "error"],
      "b ran once more, its first attempt kept",
    );
  });
});
