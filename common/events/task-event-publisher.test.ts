import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newTask } from "../queue/new-task.js";
import { PUBLISH_MAX_BATCH, TaskEventPublisher } from "./task-event-publisher.js";
import { TaskEventBatchSchema, type TaskEventBatch } from "./task-event.js";

const task = newTask(
  {
    id: "local-01ARZ3NDEKTSV4RRFFQ69G5FAV",
    site: "local",
    user: "ann",
    name: "n",
    job: "pages",
    params: {},
    priority: 50,
    maxTries: 3,
    input: null,
  },
  1000,
);

describe("TaskEventPublisher", () => {
  it("numbers the changes <epoch>-<seq> and publishes them in order in one batch per burst", async () => {
    const batches: TaskEventBatch[] = [];
    const publisher = new TaskEventPublisher(
      (b) => batches.push(b),
      () => 36 ** 3,
    );
    publisher.changed(task);
    publisher.changed({ ...task, status: "work", progress: 0.5, progressMessage: "half" });
    assert.equal(batches.length, 0, "gathered, not yet sent");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(batches.length, 1);
    const [batch] = batches;
    assert.ok(TaskEventBatchSchema.safeParse(batch).success, "the batch passes the controllers' check");
    assert.deepEqual(
      batch?.events.map((e) => [e.eventId, e.event.status, e.event.progress, e.event.message]),
      [
        ["1000-1", "input", null, null],
        ["1000-2", "work", 0.5, "half"],
      ],
    );
    assert.deepEqual(batch?.events[0]?.event, {
      id: task.id,
      status: "input",
      job: "pages",
      user: "ann",
      parentId: null,
      progress: null,
      message: null,
      time: 36 ** 3,
    });
  });

  it("publishes a full batch at once, and what is left on stop", () => {
    const batches: TaskEventBatch[] = [];
    const publisher = new TaskEventPublisher((b) => batches.push(b));
    for (let i = 0; i < PUBLISH_MAX_BATCH + 1; i++) publisher.changed(task);
    assert.deepEqual(
      batches.map((b) => b.events.length),
      [PUBLISH_MAX_BATCH],
    );
    publisher.stop();
    assert.deepEqual(
      batches.map((b) => b.events.length),
      [PUBLISH_MAX_BATCH, 1],
    );
  });
});
