import { createHmac, timingSafeEqual } from "node:crypto";

/** The header of a webhook's signature: `sha256=<hex HMAC-SHA256 of the exact body, keyed by webhooks.secret>`. */
export const SIGNATURE_HEADER = "X-Docq-Signature";

/** The value of SIGNATURE_HEADER for `body` (the exact bytes sent). */
export function signBody(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** Whether `signature` (the header as received) is the one of `body` under `secret`; compared in constant time. */
export function verifySignature(secret: string, body: string | Buffer, signature: string | undefined): boolean {
  if (signature === undefined) return false;
  const expected = Buffer.from(signBody(secret, body));
  const given = Buffer.from(signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
