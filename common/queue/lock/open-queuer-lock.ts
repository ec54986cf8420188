import path from "node:path";
import type { DocqConfig } from "../../config/config.js";
import { redactPostgresUrl, redactUrl } from "../../store/redact-url.js";
import { leaseQueuerLock } from "./lease-queuer-lock.js";
import type { QueuerLockAdapter } from "./queuer-lock.js";
import { sqliteQueuerLock } from "./sqlite-queuer-lock.js";

/** The lock file beside the SQLite store (queuers sharing a data dir: one machine). */
export const SQLITE_LOCK_FILE = "queuer.lock";

/**
 * The site's queuer lock, where its task store is: the lock follows `store.type`, so queuers that
 * share the store (on any machine) share the lock, and nothing else has to be shared.
 * `owner` names this process in a lease (unique per process and run). The PostgreSQL and MongoDB
 * locks are imported only when chosen, like their stores (open-stores.ts).
 */
export async function openQueuerLock(
  config: Pick<DocqConfig, "store" | "dataDir" | "site" | "queue">,
  owner: string,
): Promise<QueuerLockAdapter> {
  const { store } = config;
  const leaseMs = config.queue.leaseMs;
  switch (store.type) {
    case "sqlite":
      return sqliteQueuerLock(path.join(config.dataDir, SQLITE_LOCK_FILE));
    case "postgres":
      return (await import("./postgres-queuer-lock.js")).postgresQueuerLock({
        url: store.url,
        where: `PostgreSQL ${redactPostgresUrl(store.url)}${store.schema === null ? "" : `, schema "${store.schema}"`}`,
        site: config.site,
        schema: store.schema,
        leaseMs,
      });
    case "mongodb":
      return leaseQueuerLock({
        records: (await import("./mongo-queuer-lock.js")).MongoLeaseRecords.connect({ ...store, site: config.site, leaseMs }),
        owner,
        leaseMs,
        where: `MongoDB ${redactUrl(store.url)}, database "${store.database}", lease "queuer:${config.site}"`,
      });
  }
}
