import { randomUUID } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type { BlobEntry, BlobStat, BlobStore } from "./blob-store.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { blobNotFound, checkBlobKey, checkExpectedSize, quoteKey, sizeMismatch } from "./blob-key.js";

/** Under the root so a rename into place never crosses filesystems; its name can never be a key's first segment. */
const TEMP_DIR = ".tmp";
/**
 * Another process may share the folder and be mid-upload; an upload writes its temp file on every
 * chunk, so one untouched this long belongs to a writer that died.
 */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** S3's limit, so a key valid here stays valid for an S3 adapter. */
const KEY_RULES = { maxLength: 1024, reserved: TEMP_DIR };
/** Attempts to place a finished blob while a concurrent deletePrefix keeps removing its folder. */
const PLACE_ATTEMPTS = 3;

/**
 * What a blob that put() acknowledged survives: "process", a crash of any process (the bytes are in
 * the kernel's page cache once written: no fsync); "power", an OS crash or power loss too (the file
 * and its folder fsynced before put() resolves: two fsyncs, about 10 ms per blob on a loaded disk).
 */
export type BlobDurability = "process" | "power";

/**
 * Blobs as files under one folder, key `a/b` at `<root>/a/b`. A blob is written to `.tmp/` (fsynced
 * when `durability` is "power"), then renamed into place, so a reader (or a restart after a crash)
 * sees a whole blob or none.
 */
export class FsBlobStore implements BlobStore {
  readonly root: string;
  readonly durability: BlobDurability;
  private readonly tempDir: string;
  private tempDirReady: Promise<unknown> | undefined;

  constructor(opts: { root: string; durability?: BlobDurability }) {
    this.root = path.resolve(opts.root);
    this.durability = opts.durability ?? "power";
    this.tempDir = path.join(this.root, TEMP_DIR);
  }

  /** Creates the folder and removes temp files left by writers that died mid-upload. Default durability: "power". */
  static async open(root: string, durability?: BlobDurability): Promise<FsBlobStore> {
    const store = new FsBlobStore({ root, ...(durability === undefined ? {} : { durability }) });
    await store.ensureTempDir();
    await store.removeStaleTemps(Date.now() - STALE_TEMP_MS);
    return store;
  }

  /** Consumes `body`; on any failure it is destroyed and nothing is written under `key`. */
  async put(key: string, body: Readable, opts: { size?: number } = {}): Promise<BlobStat> {
    let file: string;
    let temp: string;
    let handle: FileHandle;
    try {
      file = this.fileFor(key);
      checkExpectedSize(opts.size);
      await this.ensureTempDir();
      temp = path.join(this.tempDir, randomUUID());
      handle = await fs.open(temp, "wx");
    } catch (err) {
      body.destroy();
      throw err;
    }

    let placed = false;
    try {
      let size: number;
      try {
        size = await writeBody(handle, body, key, opts.size);
        if (this.durability === "power") await handle.sync();
      } catch (err) {
        // The write failed: that error is the one to report; a failing close adds nothing to it.
        await handle.close().catch(() => undefined);
        throw err;
      }
      await handle.close();
      await this.place(temp, file, key);
      placed = true;
      return { size };
    } finally {
      if (!placed) await fs.rm(temp, { force: true });
    }
  }

  async get(key: string): Promise<Readable> {
    const file = this.fileFor(key);
    let handle: FileHandle;
    try {
      handle = await fs.open(file, "r");
    } catch (err) {
      if (isMissing(err)) throw blobNotFound(key);
      throw err;
    }
    try {
      // Opening a folder for reading succeeds on Linux; `a` is not a blob just because `a/x` is.
      if (!(await handle.stat()).isFile()) throw blobNotFound(key);
    } catch (err) {
      await handle.close();
      throw err;
    }
    return handle.createReadStream();
  }

  async stat(key: string): Promise<BlobStat | null> {
    const file = this.fileFor(key);
    try {
      const stats = await fs.stat(file);
      return stats.isFile() ? { size: stats.size } : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.fileFor(key);
    try {
      await fs.unlink(file);
    } catch (err) {
      // EISDIR: the key names a folder of other blobs, not a blob.
      if (isMissing(err) || errnoCode(err) === "EISDIR") return;
      throw err;
    }
    await this.removeEmptyFolders(path.dirname(file));
  }

  /** Removes `dir` and its parents up to the root while they are empty (a folder with no blob is no task's). */
  private async removeEmptyFolders(dir: string): Promise<void> {
    for (let current = dir; current !== this.root && current.startsWith(this.root + path.sep); current = path.dirname(current)) {
      try {
        await fs.rmdir(current);
      } catch {
        // Not empty (another blob of the task, or one being placed), or gone already: stop here.
        return;
      }
    }
  }

  async *list(): AsyncIterable<BlobEntry> {
    const walk = async function* (dir: string, prefix: string): AsyncGenerator<BlobEntry> {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) return;
        throw err;
      }
      for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
        if (prefix === "" && entry.name === TEMP_DIR) continue;
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) {
          yield* walk(full, `${prefix}${entry.name}/`);
        } else if (entry.isFile()) {
          const stats = await fs.lstat(full).catch((err: unknown) => (isMissing(err) ? null : Promise.reject(err)));
          if (stats !== null) yield { key: `${prefix}${entry.name}`, modifiedAt: stats.mtimeMs };
        }
      }
    };
    yield* walk(this.root, "");
  }

  /** Partial uploads untouched since `before` (their writer died) and empty task folders older than that. */
  async sweepLeftovers(before: number): Promise<number> {
    let removed = await this.removeStaleTemps(before);
    const sweepEmpty = async (dir: string): Promise<boolean> => {
      const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => null);
      if (entries === null) return false;
      let empty = true;
      for (const entry of entries) {
        if (dir === this.root && entry.name === TEMP_DIR) continue;
        if (!entry.isDirectory() || !(await sweepEmpty(path.join(dir, entry.name)))) empty = false;
      }
      if (!empty || dir === this.root) return false;
      const stats = await fs.stat(dir).catch(() => null);
      // A folder just made is about to receive a blob (place() makes it, then renames into it).
      if (stats === null || stats.mtimeMs >= before) return false;
      const gone = await fs.rmdir(dir).then(
        () => true,
        () => false,
      );
      if (gone) removed++;
      return gone;
    };
    await sweepEmpty(this.root);
    return removed;
  }

  async deletePrefix(prefix: string): Promise<void> {
    const segments = checkBlobKey(prefix, "prefix", KEY_RULES);
    const partial = segments.pop() ?? "";
    const dir = path.join(this.root, ...segments);
    const removeTree = (target: string): Promise<void> => fs.rm(target, { recursive: true, force: true, maxRetries: 3 });

    if (partial === "") {
      // `task/` is a whole folder; check it is one, since rm would also take a blob named `task`.
      const stats = await fs.stat(dir).catch((err: unknown) => (isMissing(err) ? null : Promise.reject(err)));
      if (stats?.isDirectory() === true) await removeTree(dir);
      return;
    }
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    const atRoot = segments.length === 0;
    await Promise.all(names.filter((n) => n.startsWith(partial) && !(atRoot && n === TEMP_DIR)).map((n) => removeTree(path.join(dir, n))));
  }

  localPath(key: string): string | null {
    const file = this.fileFor(key);
    try {
      return statSync(file, { throwIfNoEntry: false })?.isFile() === true ? file : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async close(): Promise<void> {}

  private fileFor(key: string): string {
    return path.join(this.root, ...checkBlobKey(key, "key", KEY_RULES));
  }

  private ensureTempDir(): Promise<unknown> {
    this.tempDirReady ??= fs.mkdir(this.tempDir, { recursive: true }).catch((err: unknown) => {
      this.tempDirReady = undefined;
      throw err;
    });
    return this.tempDirReady;
  }

  private async removeStaleTemps(olderThanMs: number): Promise<number> {
    let removed = 0;
    const names = await fs.readdir(this.tempDir).catch((err: unknown) => (isMissing(err) ? [] : Promise.reject(err)));
    for (const name of names) {
      const temp = path.join(this.tempDir, name);
      const stats = await fs.lstat(temp).catch((err: unknown) => (isMissing(err) ? null : Promise.reject(err)));
      if (stats !== null && stats.mtimeMs < olderThanMs) {
        await fs.rm(temp, { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  private async place(temp: string, file: string, key: string): Promise<void> {
    const dir = path.dirname(file);
    for (let attempt = 0; ; attempt++) {
      try {
        // The folder is usually there already (a task's output goes beside its input): the rename
        // is tried first, and the folder made only when it is missing (one thread-pool call less).
        if (attempt > 0) await fs.mkdir(dir, { recursive: true });
        await fs.rename(temp, file);
        break;
      } catch (err) {
        const code = errnoCode(err);
        // A concurrent deletePrefix can remove the folder between mkdir and rename.
        if (code === "ENOENT" && attempt < PLACE_ATTEMPTS) continue;
        if (code === "ENOTDIR" || code === "EEXIST" || code === "EISDIR" || code === "ENOTEMPTY") {
          throw docqError(
            ERROR_CODE.BadRequest,
            `blob key ${quoteKey(key)} clashes with an existing blob: on a filesystem a key cannot be both a blob and the folder of other blobs`,
            { field: "key", cause: err },
          );
        }
        throw err;
      }
    }
    // A process crash cannot undo a rename that returned; an OS crash can, unless the folder is synced.
    if (this.durability === "process") return;
    // Without this the rename itself may be lost in a crash, and put() would have lied.
    const dirHandle = await fs.open(dir, "r");
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }
}

/**
 * Streams `body` into `handle` chunk by chunk; other errors of the body itself are wrapped so the caller can
 * tell them from write errors.
 */
async function writeBody(handle: FileHandle, body: Readable, key: string, expectedSize: number | undefined): Promise<number> {
  let size = 0;
  let failedWriting = false;
  try {
    for await (const chunk of body as AsyncIterable<unknown>) {
      try {
        const bytes = asBytes(chunk);
        size += bytes.byteLength;
        if (expectedSize !== undefined && size > expectedSize) throw sizeMismatch(key, expectedSize, `more than ${expectedSize}`);
        await writeFully(handle, bytes);
      } catch (err) {
        failedWriting = true;
        throw err;
      }
    }
  } catch (err) {
    // A DocqError from the body is the caller's own verdict (an upload limit's PAYLOAD_TOO_LARGE): keep its code.
    if (failedWriting || isDocqError(err)) throw err;
    throw new Error(`blob ${quoteKey(key)}: reading the body failed: ${errorMessage(err)}`, { cause: err });
  }
  if (expectedSize !== undefined && size !== expectedSize) throw sizeMismatch(key, expectedSize, String(size));
  return size;
}

async function writeFully(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.byteLength - offset);
    offset += bytesWritten;
  }
}

function asBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === "string") return Buffer.from(chunk, "utf8");
  throw new TypeError(`blob body must yield bytes or strings, got ${typeof chunk}`);
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** ENOTDIR: a segment of the key is a blob, so nothing can live below it. */
function isMissing(err: unknown): boolean {
  const code = errnoCode(err);
  return code === "ENOENT" || code === "ENOTDIR";
}
