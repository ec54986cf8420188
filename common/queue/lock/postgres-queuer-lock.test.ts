import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { startPostgresServer, type PostgresServer } from "../../testing/postgres-server.js";
import { waitUntil } from "../../testing/wait-until.js";
import { advisoryLockKey, lockSessionSettings, postgresQueuerLock } from "./postgres-queuer-lock.js";
import { acquireQueuerLock } from "./queuer-lock.js";

/** Long: no ping of a slow, loaded machine counts as a lost connection here (the cuts below are real). */
const LEASE_MS = 8_000;

describe("lockSessionSettings and advisoryLockKey", () => {
  it("make the server drop a vanished holder after the holder itself stops (ping every L/4, unanswered for L/4)", () => {
    for (const leaseMs of [1_500, 30_000, 120_000]) {
      const s = lockSessionSettings(leaseMs);
      const serverDropsAfterMs = (s.tcp_keepalives_idle! + s.tcp_keepalives_count! * s.tcp_keepalives_interval!) * 1000;
      assert.ok(serverDropsAfterMs >= leaseMs / 2, `${leaseMs}: keep-alives ${serverDropsAfterMs} ms`);
      assert.ok(s.tcp_user_timeout! >= leaseMs / 2);
    }
    assert.deepEqual(lockSessionSettings(30_000), {
      tcp_keepalives_idle: 10,
      tcp_keepalives_interval: 5,
      tcp_keepalives_count: 2,
      tcp_user_timeout: 20_000,
    });
  });

  it("gives each site its own 64-bit key", () => {
    assert.equal(advisoryLockKey("a"), advisoryLockKey("a"));
    assert.notEqual(advisoryLockKey("a"), advisoryLockKey("b"));
    assert.match(advisoryLockKey("a"), /^-?\d+$/);
  });
});

describe("postgresQueuerLock", () => {
  let server: PostgresServer;
  const lockOf = (site = "s1") => postgresQueuerLock({ url: server.url, where: "test", site, leaseMs: LEASE_MS });
  before(async () => {
    server = await startPostgresServer();
  });
  after(async () => {
    await server?.stop();
  });

  it("lets one holder per site at a time, and a standby in once the holder releases", async () => {
    const a = lockOf();
    const b = lockOf();
    const other = lockOf("s2");
    const held = await a.tryAcquire();
    assert.ok(held);
    assert.equal(await b.tryAcquire(), null);
    const otherSite = await other.tryAcquire();
    assert.ok(otherSite, "another site's lock is another lock");
    const waiting = acquireQueuerLock(b, { pollMs: 20 });
    await held.release();
    const next = await waiting;
    assert.equal(held.lost.aborted, false, "a release is not a loss");
    await next.release();
    await otherSite.release();
    await Promise.all([a.close(), b.close(), other.close()]);
  });

  it("is lost when its connection is cut, and freed for a standby at once", async () => {
    const a = lockOf();
    const b = lockOf();
    const held = await a.tryAcquire();
    assert.ok(held);
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'docq queuer lock%'");
    } finally {
      await admin.end();
    }
    await waitUntil("the holder to notice", () => held.lost.aborted, 10_000, 10);
    const next = await acquireQueuerLock(b, { pollMs: 20 });
    await held.release();
    await next.release();
    await Promise.all([a.close(), b.close()]);
  });

  it("is lost when PostgreSQL stops; a standby polls through the outage and takes it when the server is back", async () => {
    const a = lockOf();
    const held = await a.tryAcquire();
    assert.ok(held);
    await server.kill();
    await waitUntil("the holder to notice", () => held.lost.aborted, 10_000, 10);
    await held.release();
    const unreachable: unknown[] = [];
    const waiting = acquireQueuerLock(a, { pollMs: 50, onUnreachable: (err) => unreachable.push(err) });
    await waitUntil("a failed try", () => unreachable.length > 0, 10_000, 10);
    await server.start();
    const again = await waiting;
    assert.equal(again.lost.aborted, false);
    await again.release();
    await a.close();
  });
});
