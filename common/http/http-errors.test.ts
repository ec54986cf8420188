import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Errors, ServiceBroker } from "moleculer";
import { DocqError, docqError, ERROR_CODE, type ErrorCode } from "../model/errors.js";
import { httpErrorLogLevel, httpErrorOf } from "./http-errors.js";

const EXPECTED_STATUS: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  TASK_NOT_FOUND: 404,
  TASK_EXISTS: 409,
  TASK_NOT_IN_STATE: 409,
  LEASE_LOST: 409,
  JOB_NOT_FOUND: 400,
  BLOB_NOT_FOUND: 404,
  PAYLOAD_TOO_LARGE: 413,
  STORE_UNAVAILABLE: 503,
  QUEUE_UNAVAILABLE: 503,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  QUOTA_EXCEEDED: 429,
  KEY_NOT_FOUND: 404,
  SCHEDULE_NOT_FOUND: 404,
  CONFIG: 500,
};

/** The error as it arrives after a broker hop: Moleculer's own serialize/restore round trip. */
function overTheBroker(err: Error): unknown {
  const regenerator = new Errors.Regenerator();
  regenerator.init(new ServiceBroker({ logger: false, nodeID: "test-node" }));
  return regenerator.restore(regenerator.extractPlainError(err), { sender: "other-node" });
}

describe("httpErrorOf", () => {
  it("answers a DocqError with its status, message and field", () => {
    const err = docqError(ERROR_CODE.BadRequest, "priority: must be an integer 0..100", { field: "priority" });
    assert.deepEqual(httpErrorOf(err), {
      status: 400,
      body: { error: "priority: must be an integer 0..100", field: "priority" },
      internal: false,
    });
  });

  it("puts a DocqError's details in the body", () => {
    const err = docqError(ERROR_CODE.TaskNotInState, "task local-1 is already output", { details: { status: "output" } });
    assert.deepEqual(httpErrorOf(err), {
      status: 409,
      body: { error: "task local-1 is already output", status: "output" },
      internal: false,
    });
  });

  it("maps every error code to its documented status, 5xx being internal but a 503 (retry shortly)", () => {
    assert.deepEqual(new Set(Object.keys(EXPECTED_STATUS)), new Set(Object.values(ERROR_CODE)));
    for (const code of Object.values(ERROR_CODE)) {
      const answer = httpErrorOf(new DocqError(code, `a ${code}`));
      assert.equal(answer.status, EXPECTED_STATUS[code], code);
      assert.equal(answer.status, new DocqError(code, "").httpStatus, code);
      assert.equal(answer.internal, answer.status >= 500 && answer.status !== 503, code);
      assert.equal(answer.body.error, `a ${code}`);
    }
  });

  it("recognises a DocqError rebuilt after a broker hop: name, message, code string and data {field, status}", () => {
    const rebuilt = Object.assign(new Error("task local-1 is already error"), {
      name: "DocqError",
      code: "TASK_NOT_IN_STATE",
      data: { field: "id", status: "error" },
    });
    assert.deepEqual(httpErrorOf(rebuilt), {
      status: 409,
      body: { error: "task local-1 is already error", field: "id", status: "error" },
      internal: false,
    });

    const plain = { name: "DocqError", message: "body is larger than the limit", code: "PAYLOAD_TOO_LARGE", data: { field: "body" } };
    assert.deepEqual(httpErrorOf(plain), { status: 413, body: { error: "body is larger than the limit", field: "body" }, internal: false });

    const noData = { name: "DocqError", message: "task local-2 not found", code: "TASK_NOT_FOUND" };
    assert.deepEqual(httpErrorOf(noData), { status: 404, body: { error: "task local-2 not found" }, internal: false });
  });

  it("answers the same for a DocqError and for what Moleculer's regenerator makes of it", () => {
    for (const err of [
      docqError(ERROR_CODE.BadRequest, "job: must match", { field: "job" }),
      docqError(ERROR_CODE.TaskNotInState, "task x is already canceled", { details: { status: "canceled" } }),
      docqError(ERROR_CODE.TaskNotFound, "task x not found", { field: "id" }),
      docqError(ERROR_CODE.StoreUnavailable, "database is locked"),
    ]) {
      const rebuilt = overTheBroker(err);
      assert.ok(!(rebuilt instanceof DocqError), "the hop loses the class");
      assert.deepEqual(httpErrorOf(rebuilt), httpErrorOf(err), err.code);
    }
  });

  it("answers a client error with a numeric 4xx code (Moleculer's own) with that status", () => {
    assert.deepEqual(httpErrorOf(new Errors.MoleculerClientError("Not found", 404, "NOT_FOUND")), {
      status: 404,
      body: { error: "Not found" },
      internal: false,
    });
    assert.deepEqual(httpErrorOf({ message: "Payload too large", code: 413 }), {
      status: 413,
      body: { error: "Payload too large" },
      internal: false,
    });
    assert.equal(httpErrorOf({ message: "x", code: 400 }).status, 400);
    assert.equal(httpErrorOf({ message: "x", code: 499 }).status, 499);
  });

  it("names the body for the JSON body parser's refusals (as moleculer-web passes them on)", () => {
    const badJson = new Errors.MoleculerError("Unexpected token b in JSON at position 1", 400, "entity.parse.failed");
    assert.deepEqual(httpErrorOf(badJson), {
      status: 400,
      body: { error: "Unexpected token b in JSON at position 1", field: "body" },
      internal: false,
    });
    assert.deepEqual(httpErrorOf(new Errors.MoleculerError("request entity too large", 413, "entity.too.large")).body, {
      error: "request entity too large",
      field: "body",
    });
  });

  it("answers 400 for a 422 (Moleculer's validation error)", () => {
    const validation = new Errors.ValidationError("Parameters validation error!", "VALIDATION_ERROR", [{ field: "x", type: "required" }]);
    assert.equal(validation.code, 422);
    assert.deepEqual(httpErrorOf(validation), { status: 400, body: { error: "Parameters validation error!" }, internal: false });
  });

  it("answers anything else with 500, internal, saying it is an internal error", () => {
    assert.deepEqual(httpErrorOf(new Error("boom")), { status: 500, body: { error: "internal error: boom" }, internal: true });
    assert.deepEqual(httpErrorOf(new TypeError("x is undefined")), {
      status: 500,
      body: { error: "internal error: x is undefined" },
      internal: true,
    });
    assert.deepEqual(httpErrorOf("a thrown string"), { status: 500, body: { error: "internal error: a thrown string" }, internal: true });
    assert.deepEqual(httpErrorOf(null), { status: 500, body: { error: "internal error: null" }, internal: true });
    assert.deepEqual(httpErrorOf(undefined), { status: 500, body: { error: "internal error: undefined" }, internal: true });
    for (const code of ["ECONNRESET", "NOT_A_DOCQ_CODE", 500, 302, 600]) {
      const answer = httpErrorOf({ message: "m", code });
      assert.deepEqual(answer, { status: 500, body: { error: "internal error: m" }, internal: true }, String(code));
    }
  });
});

describe("httpErrorLogLevel", () => {
  it("logs a client's 4xx at info without a stack, a 503 at warn, any other 5xx at error with its stack", () => {
    assert.deepEqual(httpErrorLogLevel(400), { level: "info", stack: false });
    assert.deepEqual(httpErrorLogLevel(404), { level: "info", stack: false });
    assert.deepEqual(httpErrorLogLevel(429), { level: "info", stack: false });
    assert.deepEqual(httpErrorLogLevel(503), { level: "warn", stack: false });
    assert.deepEqual(httpErrorLogLevel(500), { level: "error", stack: true });
  });
});
