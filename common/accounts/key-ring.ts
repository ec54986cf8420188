import type { AccountRecords, ApiKeyLimits, ApiKeyRecord } from "./account-records.js";
import { newApiKey, publicKey } from "./api-keys.js";
import { docqError, ERROR_CODE } from "../model/errors.js";

/** What a key proves when it is known: whose it is and its limits. */
export interface KnownKey {
  id: string;
  user: string;
  limits: ApiKeyLimits;
}

/**
 * The site's user keys, held by the queuer: the store keeps them (as hashes), this keeps the live
 * ones in memory so that checking a request's key is a map lookup, and a revoke takes effect on
 * the next request.
 */
export class KeyRing {
  private readonly live = new Map<string, ApiKeyRecord>();

  constructor(
    private readonly store: AccountRecords,
    private readonly now: () => number = Date.now,
  ) {}

  async load(): Promise<number> {
    this.live.clear();
    for (const key of await this.store.listKeys()) if (key.revokedAt === null) this.live.set(key.hash, key);
    return this.live.size;
  }

  /** A new key for `user`: the secret is in this answer only. */
  async create(
    user: string,
    limits: ApiKeyLimits,
  ): Promise<{ id: string; key: string; user: string; limits: ApiKeyLimits; createdAt: number }> {
    const { secret, record } = newApiKey(user, limits, this.now());
    await this.store.createKey(record);
    this.live.set(record.hash, record);
    return { id: record.id, key: secret, user, limits, createdAt: record.createdAt };
  }

  async list(): Promise<Omit<ApiKeyRecord, "hash">[]> {
    return (await this.store.listKeys()).map(publicKey);
  }

  async revoke(id: string): Promise<Omit<ApiKeyRecord, "hash">> {
    const revoked = await this.store.revokeKey(id, this.now());
    if (revoked === null) throw docqError(ERROR_CODE.KeyNotFound, `key ${id} not found`, { field: "id" });
    this.live.delete(revoked.hash);
    return publicKey(revoked);
  }

  /** The key whose secret hashes to `hash`, unless unknown or revoked. */
  authenticate(hash: string): KnownKey | null {
    const key = this.live.get(hash);
    return key === undefined ? null : { id: key.id, user: key.user, limits: key.limits };
  }
}
