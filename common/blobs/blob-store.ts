import type { Readable } from "node:stream";

export interface BlobStat {
  size: number;
}

export interface BlobEntry {
  key: string;
  /** Milliseconds since the epoch. */
  modifiedAt: number;
}

/**
 * Where documents live: inputs, outputs, children's parts. Keys are `/`-separated
 * relative names (`<taskId>/input`). Every adapter passes `blob-store.contract.ts`.
 */
export interface BlobStore {
  /** Streams `body` under `key`; the blob appears under its final name only once complete. */
  put(key: string, body: Readable, opts?: { size?: number }): Promise<BlobStat>;
  /** Streams the blob; rejects with DocqError BLOB_NOT_FOUND when missing. */
  get(key: string): Promise<Readable>;
  /** Size of the blob, or null when missing. */
  stat(key: string): Promise<BlobStat | null>;
  /** Removes the blob; missing is not an error. */
  delete(key: string): Promise<void>;
  /** Removes every blob whose key starts with `prefix` (a task's folder). */
  deletePrefix(prefix: string): Promise<void>;
  /**
   * Every blob with the time it was last written, the keys of a folder together (in key order):
   * for the garbage collector, which compares them with the task store.
   */
  list(): AsyncIterable<BlobEntry>;
  /**
   * Removes what the adapter keeps aside and nobody has touched since `before` (the fs store's
   * partial uploads and empty folders); answers how many. Optional: S3 keeps nothing aside.
   */
  sweepLeftovers?(before: number): Promise<number>;
  /** A local file path holding the blob when the adapter has one (saves a copy for local workers). */
  localPath?(key: string): string | null;
  close(): Promise<void>;
}
