import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isDocqError } from "../model/errors.js";
import { parseStealMessage, type Backlog } from "./steal-messages.js";
import { chooseVictim, plateAllowed, stealCount, type StealPolicy } from "./steal-policy.js";

const policy: StealPolicy = {
  site: "aa",
  enabled: true,
  onlyWhenIdle: true,
  minVictimBacklog: 2,
  minPriority: 10,
  maxInFlight: 5,
  allow: null,
  backlogTtlMs: 1000,
  plate: "fr",
  crossPlate: false,
};
const backlog = (
  site: string,
  queued: number,
  highestPriority: number | null,
  at = 1000,
  plate = "fr",
  crossPlate: boolean | string[] = false,
): Backlog => ({
  site,
  queued,
  highestPriority,
  idleSlots: 0,
  slots: 2,
  plate,
  crossPlate,
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

  it("steals within its plate first, crosses only when its plate has no backlog worth stealing and both sides allow it", () => {
    const mate = backlog("bb", 3, 50);
    const foreign = backlog("ny1", 90, 99, 1000, "ny", true);
    assert.equal(
      chooseVictim({ ...policy, crossPlate: true }, [mate, foreign], 1500)?.site,
      "bb",
      "the plate-mate, though the other is busier",
    );
    assert.equal(chooseVictim(policy, [foreign], 1500), null, "crossPlate off");
    assert.equal(chooseVictim({ ...policy, crossPlate: true }, [foreign], 1500)?.site, "ny1");
    assert.equal(chooseVictim({ ...policy, crossPlate: ["ny"] }, [foreign], 1500)?.site, "ny1", "a list naming the plate");
    assert.equal(chooseVictim({ ...policy, crossPlate: ["us"] }, [foreign], 1500), null, "a list not naming it");
    const closed = backlog("ny2", 90, 99, 1000, "ny", false);
    assert.equal(chooseVictim({ ...policy, crossPlate: true }, [closed], 1500), null, "the victim's plate does not lend across");
    // A plate-mate whose backlog is below the threshold is not worth stealing: then the other plate is.
    assert.equal(chooseVictim({ ...policy, crossPlate: true }, [backlog("bb", 1, 50), foreign], 1500)?.site, "ny1");
    assert.equal(plateAllowed("fr", false, "fr"), true, "its own plate always");
  });

  it("asks for what the idle slots take, within maxInFlight, and nothing when disabled", () => {
    assert.equal(stealCount(policy, 3, 0), 3);
    assert.equal(stealCount(policy, 9, 2), 3);
    assert.equal(stealCount(policy, 9, 7), 0);
    assert.equal(stealCount({ ...policy, enabled: false }, 9, 0), 0);
  });

  it("refuses malformed messages from other sites, naming the problem", () => {
    const offer = { thief: "bb", plate: "fr", max: 3, minPriority: 0, link: { rttMs: 5, bytesPerMs: 100 }, heldByUser: { u: 1 } };
    assert.deepEqual(parseStealMessage("offerRequest", offer), offer);
    assert.throws(() => parseStealMessage("offerRequest", { ...offer, link: { rttMs: 5, bytesPerMs: 0 } }), /link\.bytesPerMs/);
    assert.throws(
      () => parseStealMessage("offerRequest", { ...offer, thief: "BAD SITE" }),
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
