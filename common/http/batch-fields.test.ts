import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isDocqError } from "../model/errors.js";
import { parseBatchOverrides, taskFieldsOf } from "./batch-fields.js";

/** The field a refusal of `text` names. */
function refusedField(text: string): string | undefined {
  try {
    parseBatchOverrides(text);
  } catch (err) {
    assert.ok(isDocqError(err, "BAD_REQUEST"), String(err));
    return err.field;
  }
  assert.fail(`${text} was accepted`);
}

describe("a batch's tasks field", () => {
  it("takes one object per file with the fields a task sets", () => {
    assert.deepEqual(parseBatchOverrides('[{}, {"priority": 7, "name": "b", "params": {"x": 1}}]'), [
      {},
      { priority: 7, name: "b", params: { x: 1 } },
    ]);
  });

  it("names the entry and the key of what it refuses", () => {
    assert.equal(refusedField("[{}, "), "tasks");
    assert.equal(refusedField('{"a": 1}'), "tasks");
    assert.equal(refusedField("[{}, 3]"), "tasks[1]");
    assert.equal(refusedField('[{}, {}, {"colour": "red"}]'), "tasks[2].colour");
    assert.equal(refusedField('[{"user": "eve"}]'), "tasks[0].user");
    assert.equal(refusedField(JSON.stringify(Array.from({ length: 1001 }, () => ({})))), "tasks");
  });

  it("merges an entry over the shared fields, checked as a single task's are", () => {
    const fields = taskFieldsOf({ job: "noop", priority: "20" }, { name: "shared", tasks: "[]" }, { priority: 90, params: { a: 1 } });
    assert.equal(fields.job, "noop");
    assert.equal(fields.priority, 90);
    assert.equal(fields.name, "shared");
    assert.deepEqual(fields.params, { a: 1 });
    assert.throws(
      () => taskFieldsOf({ job: "noop" }, {}, { priority: 500 }),
      (err: unknown) => isDocqError(err, "BAD_REQUEST") && err.field === "priority",
    );
  });
});
