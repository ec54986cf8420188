import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isDocqError } from "../model/errors.js";
import { parseStealMessage } from "./steal-messages.js";
import { chooseVictim, stealCount, type StealPolicy } from "./steal-policy.js";

const policy: StealPolicy = {
  site: "aa",
  enabled: true,
  onlyWhenIdle: true,
  minVictimBacklog: 2,
  minPriority: 10,
  maxInFlight: 5,
  allow: null,
  backlogTtlMs: 1000,
};
const backlog = (site: string, queued: number, highestPriority: number | null, at = 1000) => ({
  site,
  queued,
  highestPriority,
  idleSlots: 0,
  at,
});

describe("steal policy", () => {
  it("picks the highest queued priority, then the largest backlog", () => {
    const bl = [backlog("bb", 50, 40), backlog("cc", 3, 90), backlog("dd", 9, 90)];
    assert.equal(chooseVictim(policy, bl, 1500)?.site, "dd");
  });

  it("skips itself, sites outside the allow-list, stale, small and low-priority backlogs", () => {
    assert.equal(chooseVictim(policy, [backlog("aa", 99, 99)], 1500), null, "itself");
    assert.equal(chooseVictim({ ...policy, allow: ["bb"] }, [backlog("cc", 99, 99)], 1500), null, "not allowed");
    assert.equal(chooseVictim(policy, [backlog("bb", 99, 99, 100)], 1500), null, "stale");
    assert.equal(chooseVictim(policy, [backlog("bb", 1, 99)], 1500), null, "below minVictimBacklog");
    assert.equal(chooseVictim(policy, [backlog("bb", 99, 5)], 1500), null, "below minPriority");
    assert.equal(chooseVictim(policy, [backlog("bb", 99, null)], 1500), null, "nothing ready");
    assert.equal(chooseVictim({ ...policy, allow: ["bb"] }, [backlog("bb", 3, 50), backlog("cc", 99, 99)], 1500)?.site, "bb");
  });

  it("asks for what the idle slots take, within maxInFlight, and nothing when disabled", () => {
    assert.equal(stealCount(policy, 3, 0), 3);
    assert.equal(stealCount(policy, 9, 2), 3);
    assert.equal(stealCount(policy, 9, 7), 0);
    assert.equal(stealCount({ ...policy, enabled: false }, 9, 0), 0);
  });

  it("refuses malformed messages from other sites, naming the problem", () => {
    assert.deepEqual(parseStealMessage("offerRequest", { thief: "bb", max: 3, minPriority: 0 }), { thief: "bb", max: 3, minPriority: 0 });
    assert.throws(
      () => parseStealMessage("offerRequest", { thief: "BAD SITE", max: 3, minPriority: 0 }),
      (e: unknown) => isDocqError(e, "BAD_REQUEST") && /thief/.test(e.message),
    );
    assert.throws(() => parseStealMessage("offerAnswer", { tasks: [{ id: "../etc", site: "bb" }] }), /tasks\.0\.id/);
    assert.throws(
      () =>
        parseStealMessage("complete", {
          id: "bb-01JAAAAAAAAAAAAAAAAAAAAAAA",
          thief: "aa",
          tries: 0,
          processedBy: { site: "aa", node: "n" },
        }),
      /tries/,
    );
  });
});
