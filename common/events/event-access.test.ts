import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DocqError } from "../model/errors.js";
import { eventFilter, parseEventsQuery } from "./event-access.js";
import type { TaskEvent } from "./task-event.js";

const ID = "local-01ARZ3NDEKTSV4RRFFQ69G5FAV";
const event = (over: Partial<TaskEvent>): TaskEvent => ({
  id: "local-01ARZ3NDEKTSV4RRFFQ69G5FAA",
  status: "work",
  job: "j",
  user: "ann",
  parentId: null,
  progress: null,
  message: null,
  time: 1,
  ...over,
});
const limits = { offload: true };

describe("events query and access", () => {
  it("reads Last-Event-ID from the header first, else ?lastEventId=; an empty one is none", () => {
    assert.deepEqual(parseEventsQuery({ lastEventId: "a-1" }, "b-2"), { lastEventId: "b-2", task: null });
    assert.deepEqual(parseEventsQuery({ lastEventId: "a-1", task: ID }, undefined), { lastEventId: "a-1", task: ID });
    assert.deepEqual(parseEventsQuery({}, ""), { lastEventId: null, task: null });
  });

  it("refuses a malformed task id or an unknown field with 400 naming it", () => {
    for (const [query, field] of [
      [{ task: "nope" }, "task"],
      [{ lastEventId: "x".repeat(101) }, "lastEventId"],
      [{ tsak: ID }, "tsak"],
    ] as const) {
      assert.throws(
        () => parseEventsQuery(query, undefined),
        (err: unknown) => err instanceof DocqError && err.field === field,
        JSON.stringify(query),
      );
    }
  });

  it("shows a user key its own user's tasks only, the admin all; ?task= that task and its children", () => {
    const user = eventFilter({ kind: "user", user: "ann", keyId: "key-1", limits }, { task: null });
    assert.equal(user(event({})), true);
    assert.equal(user(event({ user: "bob" })), false);
    assert.equal(eventFilter({ kind: "admin" }, { task: null })(event({ user: "bob" })), true);
    assert.equal(eventFilter({ kind: "open" }, { task: null })(event({ user: "bob" })), true);
    const one = eventFilter({ kind: "admin" }, { task: ID });
    assert.equal(one(event({ id: ID })), true);
    assert.equal(one(event({ parentId: ID })), true);
    assert.equal(one(event({})), false);
    const ownOne = eventFilter({ kind: "user", user: "ann", keyId: "key-1", limits }, { task: ID });
    assert.equal(ownOne(event({ id: ID, user: "bob" })), false);
  });
});
