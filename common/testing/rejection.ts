import assert from "node:assert/strict";
import { DocqError, type ErrorCode } from "../model/errors.js";

export interface ExpectedRejection {
  code?: ErrorCode;
  field?: string;
  message?: RegExp;
  /** Prefixed to every failure message: which case of a table failed. */
  label?: string;
}

/**
 * The DocqError `promise` rejects with, checked against `expected`; fails the test when it resolves
 * or rejects with anything else.
 */
export async function rejection(promise: Promise<unknown>, expected: ExpectedRejection = {}): Promise<DocqError> {
  const label = expected.label === undefined ? "" : `${expected.label}: `;
  const caught = await promise.then(
    (value: unknown) => assert.fail(`${label}expected a rejection, got ${JSON.stringify(value)}`),
    (err: unknown) => err,
  );
  assert.ok(caught instanceof DocqError, `${label}expected a DocqError, got ${String(caught)}`);
  if (expected.code !== undefined) assert.equal(caught.code, expected.code, `${label}${caught.message}`);
  if (expected.field !== undefined) assert.equal(caught.field, expected.field, `${label}${caught.message}`);
  if (expected.message !== undefined) assert.match(caught.message, expected.message, label);
  return caught;
}
