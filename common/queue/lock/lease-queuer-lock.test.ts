import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { waitUntil } from "../../testing/wait-until.js";
import { leaseQueuerLock, type LeaseRecords } from "./lease-queuer-lock.js";
import { acquireQueuerLock } from "./queuer-lock.js";

/** The lease document in memory, expiry by this process's clock (the store's, in MongoDB). */
class MemoryLease implements LeaseRecords {
  owner = "";
  expiresAt = 0;
  /** Owners whose calls fail as if the store were unreachable from their machine. */
  readonly cutOff = new Set<string>();

  async take(owner: string, leaseMs: number): Promise<boolean> {
    this.reach(owner);
    if (this.owner !== owner && this.expiresAt > Date.now()) return false;
    this.owner = owner;
    this.expiresAt = Date.now() + leaseMs;
    return true;
  }

  async renew(owner: string, leaseMs: number): Promise<boolean> {
    this.reach(owner);
    if (this.owner !== owner) return false;
    this.expiresAt = Date.now() + leaseMs;
    return true;
  }

  async release(owner: string): Promise<void> {
    this.reach(owner);
    if (this.owner === owner) this.expiresAt = 0;
  }

  async close(): Promise<void> {}

  private reach(owner: string): void {
    if (this.cutOff.has(owner)) throw new Error(`store unreachable from ${owner}`);
  }
}

const LEASE_MS = 300;
const adapter = (records: LeaseRecords, owner: string, leaseMs = LEASE_MS) => leaseQueuerLock({ records, owner, leaseMs, where: "memory" });
/** Long enough that a loaded machine's late timers (a few hundred ms) cannot lapse a lease renewed every quarter of it. */
const SLOW_LEASE_MS = 1_500;

describe("leaseQueuerLock", () => {
  it("keeps the lease renewed for as long as it is held, and lets one holder at a time", async () => {
    const records = new MemoryLease();
    const held = await adapter(records, "a", SLOW_LEASE_MS).tryAcquire();
    assert.ok(held);
    assert.equal(await adapter(records, "b", SLOW_LEASE_MS).tryAcquire(), null);
    await new Promise((resolve) => setTimeout(resolve, SLOW_LEASE_MS * 2));
    assert.equal(held.lost.aborted, false, "renewed, never lost");
    assert.equal(await adapter(records, "b", SLOW_LEASE_MS).tryAcquire(), null, "still held after two leases");
    await held.release();
  });

  it("lets a standby in at once when the holder releases", async () => {
    const records = new MemoryLease();
    const held = await adapter(records, "a").tryAcquire();
    assert.ok(held);
    const waiting = acquireQueuerLock(adapter(records, "b"), { pollMs: 10 });
    await held.release();
    const next = await waiting;
    assert.equal(records.owner, "b");
    await next.release();
  });

  it("stops the holder that cannot renew before a standby can take the lease", async () => {
    const records = new MemoryLease();
    const held = await adapter(records, "a").tryAcquire();
    assert.ok(held);
    let lostAt = 0;
    held.lost.addEventListener("abort", () => (lostAt = Date.now()));
    records.cutOff.add("a");
    const next = await acquireQueuerLock(adapter(records, "b"), { pollMs: 10 });
    const takenAt = Date.now();
    assert.ok(held.lost.aborted, "the cut-off holder gave up first");
    assert.ok(lostAt <= takenAt);
    assert.match(String(held.lost.reason), /not renewed/);
    await held.release();
    await next.release();
  });

  it("stops the holder at its next renewal when another owner has the lease", async () => {
    const records = new MemoryLease();
    const held = await adapter(records, "a").tryAcquire();
    assert.ok(held);
    records.owner = "intruder";
    await waitUntil("the holder to notice", () => held.lost.aborted, 5_000, 10);
    assert.match(String(held.lost.reason), /taken by another queuer/);
    await held.release();
    assert.equal(records.owner, "intruder", "a lost lease is not released for its new owner");
  });
});
