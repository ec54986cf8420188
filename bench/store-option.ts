import path from "node:path";
import type { StartOptions } from "../testFunctional/helpers.js";
import { findPostgresBin, startPostgresServer, type PostgresServer } from "../common/testing/postgres-server.js";

/*
 * `npm run bench -- --store postgres`: the app figures that honour it (2 and 6) run with
 * PostgreSQL as the task store instead of SQLite. The bench starts its own private server (the
 * tests' helper: a fresh cluster in a temp dir, removed at the end) with PostgreSQL's durable
 * defaults (fsync and synchronous_commit on, as the README advises for a site), and gives each
 * app a fresh database.
 */

export const BENCH_STORES = ["sqlite", "postgres"] as const;
export type BenchStoreType = (typeof BENCH_STORES)[number];

export interface BenchStore {
  type: BenchStoreType;
  /** What the report says the figures ran with. */
  label: string;
  /** The options that make an app use this store (a fresh database each call). */
  appOptions(): Promise<StartOptions>;
  close(): Promise<void>;
}

export function parseBenchStore(value: string): BenchStoreType {
  const found = BENCH_STORES.find((s) => s === value);
  if (found === undefined) throw new Error(`--store: unknown store "${value}"; known: ${BENCH_STORES.join(", ")}`);
  return found;
}

export async function openBenchStore(type: BenchStoreType): Promise<BenchStore> {
  if (type === "sqlite") {
    return { type, label: "sqlite (the app's data dir, durability process)", appOptions: async () => ({}), close: async () => undefined };
  }
  const server: PostgresServer = await startPostgresServer({ settings: {} });
  const bin = findPostgresBin();
  const version = `PostgreSQL ${bin === null ? "?" : path.basename(path.dirname(bin))}`;
  let databases = 0;
  return {
    type,
    label: `postgres (${version}, private server on 127.0.0.1:${server.port}, fsync and synchronous_commit on)`,
    async appOptions() {
      const url = await server.createDatabase(`bench_${++databases}`);
      return { configYaml: "store:\n  type: postgres\n", env: { DOCQ_POSTGRES_URL: url } };
    },
    close: () => server.stop(),
  };
}

/** Options of an app run: the store's, then the figure's own (a profiler's env), envs merged. */
export function mergeAppOptions(store: StartOptions, own: StartOptions | undefined): StartOptions {
  if (own === undefined) return store;
  return { ...store, ...own, env: { ...store.env, ...own.env } };
}
