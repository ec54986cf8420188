import { docqError, ERROR_CODE } from "../model/errors.js";

/** The key rules and errors every BlobStore adapter shares, so a key valid in one store is valid in all. */
export const BLOB_KEY_CHARS = /^[A-Za-z0-9._/-]*$/;

/**
 * The key's segments; throws BAD_REQUEST unless it is a safe relative name. A prefix may end in
 * `/` or mid-segment. `reserved` names first segments the adapter keeps for itself.
 */
export function checkBlobKey(key: string, field: "key" | "prefix", opts: { maxLength: number; reserved?: readonly string[] }): string[] {
  // Called for every key a task touches: the error is made only on a refusal, no closure per call.
  if (typeof key !== "string") return refuseKey(key, field, "must be a string");
  if (key === "") return refuseKey(key, field, "must not be empty");
  if (key.length > opts.maxLength) return refuseKey(key, field, `longer than ${opts.maxLength} characters`);
  if (!BLOB_KEY_CHARS.test(key)) return refuseKey(key, field, "only letters, digits and . _ - / are allowed");
  if (key.startsWith("/")) return refuseKey(key, field, "must be relative");
  const segments = key.split("/");
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string;
    const last = i === segments.length - 1;
    if (segment === "" && !(last && field === "prefix")) refuseKey(key, field, "has an empty segment");
    if (segment === "." || segment === "..") refuseKey(key, field, `has a "${segment}" segment`);
    if (i === 0 && opts.reserved?.includes(segment) === true && !(last && field === "prefix"))
      refuseKey(key, field, `"${segment}" is reserved`);
  }
  return segments;
}

function refuseKey(key: string, field: "key" | "prefix", why: string): never {
  throw docqError(ERROR_CODE.BadRequest, `invalid blob ${field} ${quoteKey(key)}: ${why}`, { field });
}

export function checkExpectedSize(size: number | undefined): void {
  if (size === undefined || (Number.isSafeInteger(size) && size >= 0)) return;
  throw docqError(ERROR_CODE.BadRequest, `invalid blob size ${String(size)}: must be a non-negative integer`, { field: "size" });
}

export function sizeMismatch(key: string, expected: number, actual: string): Error {
  return docqError(ERROR_CODE.BadRequest, `blob ${quoteKey(key)}: body has ${actual} bytes, expected ${expected}`, { field: "size" });
}

export function blobNotFound(key: string): Error {
  return docqError(ERROR_CODE.BlobNotFound, `blob ${quoteKey(key)} not found`, { field: "key" });
}

/** Keys reach messages from untrusted callers: escape control characters and bound the length. */
export function quoteKey(key: string): string {
  return JSON.stringify(typeof key === "string" && key.length > 200 ? `${key.slice(0, 200)}…` : key);
}
