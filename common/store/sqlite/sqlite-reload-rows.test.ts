import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_PRIORITY, MIN_PRIORITY, TASK_STATUS } from "../../model/task-model.js";
import type { ReloadEntry } from "../task-store.js";
import { makeTask, reloadFields } from "../task-store.contract.js";
import { SqliteTaskStore } from "./sqlite-task-store.js";

describe("SQLite reload rows", () => {
  it("give every reload field back, packed or not: the bounds of each packed field, leases, counts too large to pack", async () => {
    const store = SqliteTaskStore.open(":memory:");
    try {
      const tasks = [
        makeTask({ status: TASK_STATUS.input, priority: MIN_PRIORITY, tries: 0, maxTries: 1, offload: false }),
        makeTask({ status: TASK_STATUS.input, priority: MAX_PRIORITY, tries: 2 ** 20 - 1, maxTries: 2 ** 20 - 1, offload: true }),
        makeTask({ status: TASK_STATUS.complete, priority: 37, tries: 3, maxTries: 5, availableAt: Date.now() + 60_000 }),
        makeTask({ status: TASK_STATUS.wait, priority: 99, tries: 1, maxTries: 3, offload: false }),
        makeTask({ status: TASK_STATUS.input, priority: 50, tries: 2 ** 20, maxTries: 2 ** 40 }),
        makeTask({ status: TASK_STATUS.complete, priority: 50, tries: 7, maxTries: 2 ** 20 }),
        makeTask({ status: TASK_STATUS.work, priority: 12, tries: 2, maxTries: 3, lease: { owner: "worker-1", expiresAt: 123_456 } }),
        makeTask({ status: TASK_STATUS.output, priority: 1 }),
      ];
      await store.createMany(tasks);
      const entries: ReloadEntry[] = [];
      for await (const batch of store.loadNonFinal(3)) entries.push(...batch);
      assert.deepEqual(entries, tasks.filter((task) => task.status !== TASK_STATUS.output).map(reloadFields));
    } finally {
      await store.close();
    }
  });
});
