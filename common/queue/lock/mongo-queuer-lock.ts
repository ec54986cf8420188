import { MongoClient, MongoServerError, type Collection } from "mongodb";
import type { LeaseRecords } from "./lease-queuer-lock.js";

/** The collection of lease documents, beside the task store's collections. */
export const LOCKS_COLLECTION = "locks";

/** A lease document: `owner` holds it until `expiresAt` (the server's clock); "" is nobody. */
interface LeaseDoc {
  _id: string;
  owner: string;
  expiresAt: Date;
}

const DUPLICATE_KEY = 11000;

/** The lease document's id: one per site, so sites sharing a database have their own queuer. */
export function leaseId(site: string): string {
  return `queuer:${site}`;
}

/**
 * The queuer's lease document in MongoDB, every write a single-document update (atomic) guarded
 * by its filter, expiry reckoned by the server's clock ($$NOW, MongoDB 4.2+), written with the
 * store's write concern so a failover keeps the lease it acknowledged.
 */
export class MongoLeaseRecords implements LeaseRecords {
  /** Whether the lease document is known to exist (a standby's tries then skip the insert). */
  private exists = false;

  constructor(
    private readonly client: MongoClient,
    private readonly docs: Collection<LeaseDoc>,
    private readonly id: string,
  ) {}

  static connect(opts: {
    url: string;
    database: string;
    writeConcern: "majority" | number;
    site: string;
    leaseMs: number;
  }): MongoLeaseRecords {
    // A client of its own: its operations fail within about a lease, and the holder's deadline decides anyway.
    const client = new MongoClient(opts.url, {
      appName: "docq queuer lock",
      writeConcern: { w: opts.writeConcern, journal: true, wtimeoutMS: opts.leaseMs },
      serverSelectionTimeoutMS: Math.max(1000, opts.leaseMs),
    });
    return new MongoLeaseRecords(client, client.db(opts.database).collection<LeaseDoc>(LOCKS_COLLECTION), leaseId(opts.site));
  }

  async take(owner: string, leaseMs: number): Promise<boolean> {
    // The document exists from the first try on (lapsed, nobody's); the guarded update below takes it.
    if (!this.exists) {
      try {
        await this.docs.insertOne({ _id: this.id, owner: "", expiresAt: new Date(0) });
      } catch (err) {
        if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw err;
      }
      this.exists = true;
    }
    const result = await this.docs.updateOne(
      { _id: this.id, $expr: { $or: [{ $eq: ["$owner", owner] }, { $lte: ["$expiresAt", "$$NOW"] }] } },
      [{ $set: { owner, expiresAt: { $add: ["$$NOW", leaseMs] } } }],
    );
    return result.matchedCount === 1;
  }

  async renew(owner: string, leaseMs: number): Promise<boolean> {
    const result = await this.docs.updateOne({ _id: this.id, owner }, [{ $set: { expiresAt: { $add: ["$$NOW", leaseMs] } } }]);
    return result.matchedCount === 1;
  }

  async release(owner: string): Promise<void> {
    await this.docs.updateOne({ _id: this.id, owner }, { $set: { owner: "", expiresAt: new Date(0) } });
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
