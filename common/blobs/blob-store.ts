import type { Readable } from "node:stream";

export interface BlobStat {
  size: number;
}

/** A local file offered to BlobStore.adopt. */
export interface AdoptableFile {
  /**
   * A name of the file that rename(2) takes as its source: it may go through an opened folder
   * (`/proc/self/fd/<n>/<name>`), so a folder swapped for a link cannot lead the move elsewhere.
   */
  path: string;
  /** The file, opened for reading: what is adopted must be this very file (same inode, one link), else nothing is. */
  fd: number;
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
  /**
   * Stores `bytes` under a key that holds no blob and that nothing refers to yet (a new task's
   * document, before the task is recorded), in fewer steps than put. Unlike put, the blob may be
   * seen partly written until this resolves, and a crash meanwhile may leave part of it: garbage
   * the blob GC removes, since no task refers to it. As durable as put once it resolves. A key that
   * holds a blob already is refused (BAD_REQUEST) or replaced, as the adapter can.
   */
  putNew(key: string, bytes: Uint8Array): Promise<BlobStat>;
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
  /**
   * The blob's bytes when the adapter holds it small and at hand (the fs store's rows of small
   * documents), else null: then get() it, or use localPath. Optional.
   */
  readSmall?(key: string): Buffer | null;
  /** A local file path holding the blob when the adapter has one (saves a copy for local workers). */
  localPath?(key: string): string | null;
  /**
   * Takes a local file over as the blob `key`, moved rather than copied (a worker's answered
   * output: the copy was most of what storing it cost). Answers null, the file left where it was,
   * when the adapter cannot (another filesystem, not the very file `source.fd` holds); the caller
   * then puts a copy. Optional, as localPath: only an adapter that keeps blobs as local files has it.
   */
  adopt?(key: string, source: AdoptableFile): Promise<BlobStat | null>;
  close(): Promise<void>;
}
