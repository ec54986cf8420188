import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DocqError, ERROR_CODE } from "../model/errors.js";
import { LocalQueuer } from "./local-queuer.js";
import type { QueuerHandlers } from "./queuer-actions.js";

/** Handlers for pull and succeed that record the message they were handed. */
function recordingHandlers(seen: unknown[]): QueuerHandlers {
  const handlers: Partial<QueuerHandlers> = {
    pull: async (message) => {
      seen.push(message);
      return [];
    },
    succeed: async (message) => {
      seen.push(message);
      return true;
    },
  };
  return handlers as QueuerHandlers;
}

const CLAIM = { id: "site-01JABCDEFGHJKMNPQRSTVWXYZ0", owner: "worker@n1", tries: 1 };

describe("LocalQueuer", () => {
  it("goes through the broker while no queuer serves here", async () => {
    const local = new LocalQueuer();
    const viaBroker: [string, object][] = [];
    const call = local.call(async (name, message) => {
      viaBroker.push([name, message]);
      return [];
    });
    await call("pull", { owner: "worker@n1", max: 2 });
    assert.deepEqual(viaBroker, [["queuer.pull", { owner: "worker@n1", max: 2 }]]);
  });

  it("checks a message as the queuer service does, unless the caller built it itself (builtHere)", async () => {
    const local = new LocalQueuer();
    const seen: unknown[] = [];
    local.serve(recordingHandlers(seen));
    const broker = async (): Promise<unknown> => assert.fail("no broker call while a queuer serves here");

    const checked = local.call(broker);
    await assert.rejects(
      checked("pull", { owner: "worker@n1", max: 0 }),
      (err: unknown) => err instanceof DocqError && err.code === ERROR_CODE.BadRequest && err.field === "max",
    );
    const succeed = { ...CLAIM, output: "out", processedBy: { site: "a", node: "n1" } };
    await checked("succeed", succeed);
    assert.notEqual(seen[0], succeed, "a checked message reaches the handler as zod's copy");

    const own = local.call(broker, ["succeed"]);
    await own("succeed", succeed);
    assert.equal(seen[1], succeed, "a message built here reaches the handler as it is");
    await assert.rejects(own("pull", { owner: "worker@n1", max: 0 }), (err: unknown) => err instanceof DocqError);
  });
});
