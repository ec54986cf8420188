import path from "node:path";
import type { BlobStore } from "../blobs/blob-store.js";
import type { DocqConfig } from "../config/config.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError, type DocqError } from "../model/errors.js";
import { FsBlobStore } from "../blobs/fs-blob-store.js";
import { redactPostgresUrl, redactUrl } from "./redact-url.js";
import { SqliteTaskStore } from "./sqlite/sqlite-task-store.js";
import type { TaskStore } from "./task-store.js";

/*
 * The stores a process starts with, chosen by the config: `store.type` (sqlite | mongodb | postgres) and
 * `blobs.type` (fs | s3). A store that cannot be opened stops start-up with DocqError CONFIG whose
 * message names the adapter, its endpoint (file, URL without credentials, or S3 endpoint and
 * bucket) and the cause; `details` carries them too, with the adapter's own error code (`reason`:
 * STORE_UNAVAILABLE for an endpoint that did not answer, CONFIG for one that refused the settings).
 * The MongoDB, PostgreSQL and S3 adapters are imported only when chosen: their drivers cost an
 * embedded process tens of megabytes it would never use.
 */

/** Where the SQLite file and the fs blobs live under the data folder. */
const SQLITE_FILE = "tasks.sqlite";
const BLOBS_FOLDER = "blobs";

export async function openTaskStore(
  config: Pick<DocqConfig, "store" | "dataDir"> & Partial<Pick<DocqConfig, "durability">>,
): Promise<TaskStore> {
  const { store } = config;
  switch (store.type) {
    case "sqlite": {
      const file = path.join(config.dataDir, SQLITE_FILE);
      return opening("task", "sqlite", file, async () => SqliteTaskStore.open(file, { durability: config.durability ?? "process" }));
    }
    case "mongodb": {
      const endpoint = `${redactUrl(store.url)}, database "${store.database}"`;
      return opening("task", "mongodb", endpoint, async () =>
        (await import("./mongo/mongo-task-store.js")).MongoTaskStore.open({
          url: store.url,
          database: store.database,
          writeConcern: store.writeConcern,
        }),
      );
    }
    case "postgres": {
      const endpoint = `${redactPostgresUrl(store.url)}${store.schema === null ? "" : `, schema "${store.schema}"`}`;
      return opening("task", "postgres", endpoint, async () =>
        (await import("./postgres/postgres-task-store.js")).PostgresTaskStore.open({
          url: store.url,
          poolSize: store.poolSize,
          ...(store.schema === null ? {} : { schema: store.schema }),
        }),
      );
    }
  }
}

export async function openBlobStore(
  config: Pick<DocqConfig, "blobs" | "dataDir"> & Partial<Pick<DocqConfig, "durability">>,
): Promise<BlobStore> {
  const { blobs } = config;
  switch (blobs.type) {
    case "fs": {
      const root = path.join(config.dataDir, BLOBS_FOLDER);
      return opening("blob", "fs", root, () => FsBlobStore.open(root, config.durability ?? "process"));
    }
    case "s3": {
      const endpoint = `${blobs.useSSL ? "https" : "http"}://${blobs.endPoint}:${blobs.port}, bucket "${blobs.bucket}"`;
      return opening("blob", "s3", endpoint, async () =>
        (await import("../blobs/s3-blob-store.js")).S3BlobStore.open({
          endPoint: blobs.endPoint,
          port: blobs.port,
          useSSL: blobs.useSSL,
          accessKey: blobs.accessKey,
          secretKey: blobs.secretKey,
          bucket: blobs.bucket,
          prefix: blobs.prefix,
          region: blobs.region,
          partSizeBytes: blobs.partSizeBytes,
        }),
      );
    }
  }
}

async function opening<T>(kind: "task" | "blob", adapter: string, endpoint: string, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (err) {
    const reason = isDocqError(err) ? err.code : undefined;
    // The adapters' own errors name their endpoint; a raw one (a folder that cannot be made) gets it here.
    const detail = isDocqError(err) ? err.message : `${endpoint}: ${errorMessage(err)}`;
    const wrapped: DocqError = docqError(
      ERROR_CODE.Config,
      `cannot open the ${kind} store (${kind === "task" ? "store" : "blobs"}.type ${adapter}): ${detail}`,
      {
        cause: err,
        details: { adapter, endpoint, ...(reason === undefined ? {} : { reason }) },
      },
    );
    throw wrapped;
  }
}
