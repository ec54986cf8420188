import { createHash } from "node:crypto";
import pg from "pg";
import { errorMessage } from "../../model/errors.js";
import { lockLost, type HeldQueuerLock, type QueuerLockAdapter } from "./queuer-lock.js";

/*
 * The queuer lock in PostgreSQL: a session-level advisory lock (pg_try_advisory_lock) held on a
 * connection of its own (a pg.Client, never one of the store's pooled connections, which come and
 * go). The server releases it when that connection ends, however the holder dies, so there is no
 * stale lock to clean up.
 *
 * Timing, all from queue.leaseMs (L):
 * - A standby tries the lock every lockPollMs(L) on its own connection (kept across tries).
 * - The holder pings its lock connection every L/4; a ping failing or unanswered within
 *   pingTimeoutMs(L) (L/4, at least 1 s: a loaded machine's slow answer is not a dead server), or
 *   the connection reporting an error or its end (PostgreSQL restarted, network cut), and the lock
 *   is lost: the holder stops serving at most L/4 plus the ping timeout after its connection
 *   died (L/2 for a lease of 4 s or more).
 * - On the server the lock connection gets TCP keep-alives (idle L/3, then 2 probes L/6 apart,
 *   whole seconds rounded up) and tcp_user_timeout 2L/3: a holder whose machine vanished without
 *   closing its socket is dropped, and its lock freed, about 2L/3 later, after the holder itself
 *   (if alive behind a cut network) has stopped serving. A holder killed on a live machine has its
 *   socket closed by the kernel: the lock is free at once and a standby takes over at its next try.
 */

/** PostgreSQL's SQLSTATE for an unknown setting. */
const UNDEFINED_OBJECT = "42704";

/**
 * The advisory lock's key: 64 bits of a hash of the site's name (and the store's schema, when it
 * has one), so sites sharing a database have their own locks.
 */
export function advisoryLockKey(site: string, schema: string | null = null): string {
  const name = schema === null ? site : `${schema}/${site}`;
  return createHash("sha256").update(`docq queuer lock: ${name}`).digest().readBigInt64BE(0).toString();
}

/** How long the holder waits for a ping's answer before it counts its lock connection dead. */
export function pingTimeoutMs(leaseMs: number): number {
  return Math.max(1000, Math.floor(leaseMs / 4));
}

/** The server-side settings of the lock connection that make the server notice a holder that vanished. */
export function lockSessionSettings(leaseMs: number): Record<string, number> {
  const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));
  return {
    tcp_keepalives_idle: seconds(leaseMs / 3),
    tcp_keepalives_interval: seconds(leaseMs / 6),
    tcp_keepalives_count: 2,
    tcp_user_timeout: Math.max(1000, Math.round((leaseMs * 2) / 3)),
  };
}

export interface PostgresQueuerLockOptions {
  /** The store's URL (may hold a password: never logged). */
  url: string;
  /** What the logs call the server (the URL without credentials). */
  where: string;
  site: string;
  /** The store's schema, when it has one (sites sharing a database in schemas of their own). */
  schema?: string | null;
  leaseMs: number;
}

export function postgresQueuerLock(opts: PostgresQueuerLockOptions): QueuerLockAdapter {
  const key = advisoryLockKey(opts.site, opts.schema ?? null);
  // A standby keeps its connection between tries; it is dropped when it fails, and made anew.
  let standby: pg.Client | null = null;
  let standbyBroken = false;

  const connect = async (): Promise<pg.Client> => {
    const client = new pg.Client({
      connectionString: opts.url,
      application_name: `docq queuer lock (${opts.site})`,
      connectionTimeoutMillis: Math.max(1000, opts.leaseMs),
      keepAlive: true,
      keepAliveInitialDelayMillis: Math.max(1000, Math.floor(opts.leaseMs / 4)),
    });
    // Without a listener a dropped connection's error would end the process.
    client.on("error", () => {
      if (client === standby) standbyBroken = true;
    });
    try {
      await client.connect();
      for (const [name, value] of Object.entries(lockSessionSettings(opts.leaseMs))) {
        // A server too old for one of them (tcp_user_timeout: PostgreSQL 12) keeps the others.
        await client.query(`SET ${name} = ${value}`).catch((err: unknown) => {
          if ((err as { code?: unknown }).code !== UNDEFINED_OBJECT) throw err;
        });
      }
      return client;
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
  };

  return {
    where: `${opts.where} (advisory lock ${key})`,
    async tryAcquire() {
      if (standby !== null && standbyBroken) {
        const broken = standby;
        standby = null;
        await broken.end().catch(() => undefined);
      }
      if (standby === null) {
        standby = await connect();
        standbyBroken = false;
      }
      const client = standby;
      let held: boolean;
      try {
        const result = await client.query<{ held: boolean }>("SELECT pg_try_advisory_lock($1::bigint) AS held", [key]);
        held = result.rows[0]?.held === true;
      } catch (err) {
        standby = null;
        await client.end().catch(() => undefined);
        throw err;
      }
      if (!held) return null;
      standby = null;
      client.removeAllListeners("error");
      return new HeldAdvisoryLock(client, key, opts.leaseMs);
    },
    async close() {
      const client = standby;
      standby = null;
      await client?.end().catch(() => undefined);
    },
  };
}

class HeldAdvisoryLock implements HeldQueuerLock {
  private readonly loss = new AbortController();
  private readonly pingTimer: NodeJS.Timeout;
  private pinging = false;
  private released = false;

  constructor(
    private readonly client: pg.Client,
    private readonly key: string,
    leaseMs: number,
  ) {
    client.on("error", (err) => this.lose(lockLost("the connection holding the queuer lock failed", err)));
    client.on("end", () => this.lose(lockLost("the connection holding the queuer lock ended")));
    const everyMs = Math.max(50, Math.floor(leaseMs / 4));
    this.pingTimer = setInterval(() => void this.ping(pingTimeoutMs(leaseMs)), everyMs);
    this.pingTimer.unref();
  }

  get lost(): AbortSignal {
    return this.loss.signal;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.pingTimer);
    // Ending the session frees its advisory locks; an unlock first would only add a round trip.
    await Promise.race([this.client.end().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
  }

  /** One ping; an answer later than timeoutMs counts as a dead connection. */
  private async ping(timeoutMs: number): Promise<void> {
    if (this.pinging || this.loss.signal.aborted) return;
    this.pinging = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      await Promise.race([this.client.query("SELECT 1"), late]);
    } catch (err) {
      this.lose(lockLost(`the connection holding the queuer lock (key ${this.key}) did not answer a ping`, err));
    } finally {
      clearTimeout(timer);
      this.pinging = false;
    }
  }

  private lose(reason: Error): void {
    if (this.released || this.loss.signal.aborted) return;
    clearInterval(this.pingTimer);
    this.loss.abort(reason);
    // The session may still be alive on the server (a late ping): end it so the lock is surely freed.
    this.client.end().catch((err: unknown) => void errorMessage(err));
  }
}
