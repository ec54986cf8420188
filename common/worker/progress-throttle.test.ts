import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ProgressReport } from "../jobs/script-answer.js";
import { ProgressThrottle } from "./progress-throttle.js";

const at = (progress: number): ProgressReport => ({ progress, message: null });

describe("ProgressThrottle", () => {
  it("sends the first at once, then at most one per interval, always the latest", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
    const sent: number[] = [];
    const throttle = new ProgressThrottle((r) => sent.push(r.progress), 250, Date.now);
    throttle.offer(at(0.1));
    throttle.offer(at(0.2));
    throttle.offer(at(0.3));
    assert.deepEqual(sent, [0.1]);
    t.mock.timers.tick(250);
    assert.deepEqual(sent, [0.1, 0.3], "the latest held back goes when the interval ends; 0.2 was replaced");
    t.mock.timers.tick(1000);
    throttle.offer(at(0.5));
    assert.deepEqual(sent, [0.1, 0.3, 0.5], "after a quiet interval, at once again");
  });

  it("flush sends what is held back now; after stop nothing goes", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
    const sent: number[] = [];
    const throttle = new ProgressThrottle((r) => sent.push(r.progress), 250, Date.now);
    throttle.offer(at(0.1));
    throttle.offer(at(0.9));
    throttle.flush();
    assert.deepEqual(sent, [0.1, 0.9]);
    throttle.offer(at(1));
    throttle.stop();
    t.mock.timers.tick(1000);
    throttle.offer(at(1));
    throttle.flush();
    assert.deepEqual(sent, [0.1, 0.9]);
  });
});
