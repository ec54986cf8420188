import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { ulid } from "ulid";
import { z } from "zod";
import type { ApiKeyLimits, ApiKeyRecord } from "./account-records.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import { MAX_PRIORITY, MIN_PRIORITY } from "../model/task-model.js";

/*
 * API keys. The admin key comes from the environment (DOCQ_ADMIN_KEY); user keys are made by the
 * admin through POST /api/keys, shown once, and stored only as a SHA-256 hash. A plain hash is
 * enough: a key is 32 random bytes, so there is no dictionary to try, unlike a password.
 */

/** `dq_` and 43 characters of base64url: 32 random bytes. */
const KEY_PREFIX = "dq_";
/** `key-<ulid>`: the id of a user key (newApiKey). */
export const KEY_ID_PATTERN = /^key-[0-9A-HJKMNP-TV-Z]{26}$/;
/** A bearer token as a client may send it: printable ASCII, bounded, so a huge header costs nothing. */
const TOKEN_PATTERN = /^[\x21-\x7e]{1,512}$/;

export function hashKey(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** A new user key: its secret (for the client, once) and the record to store. */
export function newApiKey(user: string, limits: ApiKeyLimits, now: number): { secret: string; record: ApiKeyRecord } {
  const secret = KEY_PREFIX + randomBytes(32).toString("base64url");
  return { secret, record: { id: `key-${ulid(now)}`, user, hash: hashKey(secret), limits, createdAt: now, revokedAt: null } };
}

/** Equal secrets, compared in constant time (over their hashes, so their lengths leak nothing either). */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(Buffer.from(hashKey(given), "hex"), Buffer.from(hashKey(expected), "hex"));
}

/** The token of `Authorization: Bearer <token>`, or why there is none (for the 401). */
export function bearerToken(header: string | string[] | undefined): { token: string } | { missing: string } {
  if (header === undefined || header === "") return { missing: "no Authorization header: send Authorization: Bearer <key>" };
  if (Array.isArray(header)) return { missing: "more than one Authorization header" };
  const match = /^Bearer ([^\s]+)$/i.exec(header.trim());
  if (match === null) return { missing: "the Authorization header is not of the form Bearer <key>" };
  const token = match[1]!;
  if (!TOKEN_PATTERN.test(token)) return { missing: "the key is not a key docq made (printable ASCII, at most 512 characters)" };
  return { token };
}

/**
 * Who is calling: the admin, a user's key, the metrics key (which may read /metrics only), or
 * anyone (authentication off: no admin key set, and docq then listens on loopback only).
 */
export type Caller =
  { kind: "admin" } | { kind: "user"; user: string; keyId: string; limits: ApiKeyLimits } | { kind: "metrics" } | { kind: "open" };

/** The secrets a request's key is checked against; `lookup` finds a user key by the hash of its secret. */
export interface KeyCheck {
  adminKey: string | null;
  metricsKey: string | null;
  lookup(hash: string): Promise<{ id: string; user: string; limits: ApiKeyLimits } | null>;
}

/** The caller of a request with this Authorization header; UNAUTHORIZED naming what is wrong. */
export async function callerOf(header: string | string[] | undefined, check: KeyCheck): Promise<Caller> {
  if (check.adminKey === null) return { kind: "open" };
  const bearer = bearerToken(header);
  if ("missing" in bearer) throw docqError(ERROR_CODE.Unauthorized, bearer.missing, { field: "authorization" });
  if (sameSecret(bearer.token, check.adminKey)) return { kind: "admin" };
  if (check.metricsKey !== null && sameSecret(bearer.token, check.metricsKey)) return { kind: "metrics" };
  const key = await check.lookup(hashKey(bearer.token));
  if (key === null) throw docqError(ERROR_CODE.Unauthorized, "unknown or revoked key", { field: "authorization" });
  return { kind: "user", user: key.user, keyId: key.id, limits: key.limits };
}

/** Refuses the metrics key everywhere but /metrics. */
export function requireApiCaller(caller: Caller): void {
  if (caller.kind === "metrics") throw docqError(ERROR_CODE.Forbidden, "this key may read /metrics only");
}

/** The user a caller may act for, or null for one who may act for everyone. */
export function ownUser(caller: Caller): string | null {
  return caller.kind === "user" ? caller.user : null;
}

export function requireAdmin(caller: Caller, what: string): void {
  if (caller.kind === "user" || caller.kind === "metrics") throw docqError(ERROR_CODE.Forbidden, `${what} needs the admin key`);
}

const UserNameSchema = z.string().min(1, "must not be empty").max(200, "is longer than 200 characters");

const Limit = (what: string) => z.int(`${what} must be a whole number`).min(1, `${what} must be at least 1`).optional();

/** The body of POST /api/keys: every limit optional (absent: unlimited). */
export const CreateKeySchema = z.strictObject({
  user: UserNameSchema,
  maxPriority: z.int().min(MIN_PRIORITY).max(MAX_PRIORITY).optional(),
  maxQueued: Limit("maxQueued"),
  maxPerDay: Limit("maxPerDay"),
  maxBytesPerDay: Limit("maxBytesPerDay"),
  offload: z.boolean().default(true),
});
export type CreateKeyRequest = z.infer<typeof CreateKeySchema>;

export function limitsOf(request: CreateKeyRequest): ApiKeyLimits {
  const { user: _user, ...limits } = request;
  return limits;
}

/** A key as GET /api/keys shows it: everything but the hash. */
export function publicKey(record: ApiKeyRecord): Omit<ApiKeyRecord, "hash"> {
  const { hash: _hash, ...shown } = record;
  return shown;
}
