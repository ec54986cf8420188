import { randomUUID } from "node:crypto";
import {
  closeSync,
  existsSync,
  fstatSync,
  fsync,
  lstatSync,
  mkdirSync,
  open,
  promises as fs,
  renameSync,
  statSync,
  write,
  writeSync,
} from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import type { AdoptableFile, BlobEntry, BlobStat, BlobStore } from "./blob-store.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { blobNotFound, checkBlobKey, checkExpectedSize, quoteKey, sizeMismatch } from "./blob-key.js";
import { SmallBlobTable } from "./small-blob-table.js";

/** Under the root so a rename into place never crosses filesystems; its name can never be a key's first segment. */
const TEMP_DIR = ".tmp";
/** The folder of the small documents' table (SmallBlobTable), also never a key's first segment. */
const SMALL_DIR = ".small";
const SMALL_FILE = "blobs.sqlite";
/**
 * A new document (putNew) up to this size becomes a row of the small documents' table, not a
 * folder and a file; a larger one, and any blob put() or adopt() stores, is a file.
 */
export const SMALL_BLOB_BYTES = 64 * 1024;
/**
 * Another process may share the folder and be mid-upload; an upload writes its temp file on every
 * chunk, so one untouched this long belongs to a writer that died.
 */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** S3's limit, so a key valid here stays valid for an S3 adapter. */
const KEY_RULES = { maxLength: 1024, reserved: [TEMP_DIR, SMALL_DIR] };
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
 * sees a whole blob or none. A new small document (putNew, up to SMALL_BLOB_BYTES, a key of two
 * segments or more) is a row of `.small/blobs.sqlite` instead, committed as durably; it is read,
 * listed and removed with the files, and has no local path (a worker copies it into its work dir).
 */
export class FsBlobStore implements BlobStore {
  readonly root: string;
  readonly durability: BlobDurability;
  private readonly tempDir: string;
  private tempDirReady: Promise<unknown> | undefined;
  private small: SmallBlobTable | undefined;
  private readonly smallFile: string;

  constructor(opts: { root: string; durability?: BlobDurability }) {
    this.root = path.resolve(opts.root);
    this.durability = opts.durability ?? "power";
    this.tempDir = path.join(this.root, TEMP_DIR);
    this.smallFile = path.join(this.root, SMALL_DIR, SMALL_FILE);
  }

  /** The small documents' table, made on the first small document. */
  private smallTable(): SmallBlobTable {
    this.small ??= SmallBlobTable.open(this.smallFile, this.durability);
    return this.small;
  }

  /** The table when it exists (made here or by another process sharing the folder), else null: reads make nothing. */
  private smallIfAny(): SmallBlobTable | null {
    if (this.small === undefined && existsSync(this.smallFile)) this.smallTable();
    return this.small ?? null;
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
      this.dropRow(key);
      return { size };
    } finally {
      if (!placed) await fs.rm(temp, { force: true });
    }
  }

  /**
   * A small document (SMALL_BLOB_BYTES, a key of two segments or more) becomes a row, committed
   * with the rows asked for in the same turn. A larger one is written in place, no temp file: its
   * folder made and the file created with 'wx', a new inode each and nothing more. A temp file
   * would cost one more creation and a rename, both serialized on the one `.tmp` folder, for a
   * guarantee the caller does not need here (see the port).
   */
  async putNew(key: string, bytes: Uint8Array): Promise<BlobStat> {
    const segments = checkBlobKey(key, "key", KEY_RULES);
    const clash = (err: unknown): Error =>
      docqError(ERROR_CODE.BadRequest, `blob key ${quoteKey(key)} holds a blob already, or a blob is in its path: putNew is for new keys`, {
        field: "key",
        cause: err,
      });
    if (bytes.byteLength <= SMALL_BLOB_BYTES && segments.length > 1) {
      const [folder, rest] = splitKey(key);
      if (!(await this.smallTable().insert(folder, rest, bytes, Date.now()))) throw clash(null);
      return { size: bytes.byteLength };
    }
    const file = path.join(this.root, ...segments);
    const dir = path.dirname(file);
    let madeDir: string | undefined;
    try {
      madeDir = await fs.mkdir(dir, { recursive: true });
    } catch (err) {
      const code = errnoCode(err);
      throw code === "EEXIST" || code === "ENOTDIR" ? clash(err) : err;
    }
    let fd: number;
    try {
      fd = await openNew(file);
    } catch (err) {
      const code = errnoCode(err);
      throw code === "EEXIST" || code === "EISDIR" ? clash(err) : err;
    }
    try {
      // Creating the file is the costly call (the thread pool's); a small write into the page cache
      // and a close cost a few microseconds on this thread, less than a round trip to the pool each.
      if (bytes.byteLength <= SYNC_WRITE_BYTES) writeAllSync(fd, bytes);
      else await writeAll(fd, bytes);
      if (this.durability === "power") await fsyncFd(fd);
    } catch (err) {
      closeSync(fd);
      // A write that failed midway (a full disk) leaves no part of the document behind.
      await fs.rm(file, { force: true }).catch(() => undefined);
      throw err;
    }
    closeSync(fd);
    if (this.durability === "power") {
      // The file's entry in its folder, and each folder this made in its parent.
      await syncDir(dir);
      if (madeDir !== undefined) {
        const top = path.dirname(madeDir);
        for (let parent = path.dirname(dir); ; parent = path.dirname(parent)) {
          await syncDir(parent);
          if (parent === top || parent === path.dirname(parent)) break;
        }
      }
    }
    return { size: bytes.byteLength };
  }

  async get(key: string): Promise<Readable> {
    const file = this.fileFor(key);
    const row = this.rowOf(key);
    if (row !== null) return Readable.from(row.byteLength === 0 ? [] : [row], { objectMode: false });
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
    const small = this.smallIfAny();
    if (small !== null) {
      const size = small.size(...splitKey(key));
      if (size !== null) return { size };
    }
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
    this.dropRow(key);
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

  /** Files and rows together, folder by folder (the union of both, in name order), each folder's keys in key order. */
  async *list(): AsyncIterable<BlobEntry> {
    const walk = async function* (dir: string, prefix: string): AsyncGenerator<BlobEntry> {
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) return;
        throw err;
      }
      for (const entry of entries.sort(byName)) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) {
          yield* walk(full, `${prefix}${entry.name}/`);
        } else if (entry.isFile()) {
          yield* walkFile(full, `${prefix}${entry.name}`);
        }
      }
    };
    const top = await fs.readdir(this.root, { withFileTypes: true }).catch((err: unknown) => (isMissing(err) ? [] : Promise.reject(err)));
    const names = top.filter((e) => e.name !== TEMP_DIR && e.name !== SMALL_DIR).sort(byName);
    const small = this.smallIfAny();
    let rowFolder = small?.nextFolder("") ?? null;
    let i = 0;
    while (i < names.length || rowFolder !== null) {
      const entry = names[i];
      const name = entry === undefined ? rowFolder! : rowFolder === null || entry.name <= rowFolder ? entry.name : rowFolder;
      const folder: BlobEntry[] = [];
      if (entry?.name === name) {
        i++;
        const full = path.join(this.root, name);
        if (entry.isDirectory()) for await (const blob of walk(full, `${name}/`)) folder.push(blob);
        else if (entry.isFile()) for await (const blob of walkFile(full, name)) folder.push(blob);
      }
      if (rowFolder === name) {
        folder.push(...small!.entriesOf(name));
        rowFolder = small!.nextFolder(name);
      }
      yield* folder.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    }
  }

  /** Partial uploads untouched since `before` (their writer died) and empty task folders older than that. */
  async sweepLeftovers(before: number): Promise<number> {
    let removed = await this.removeStaleTemps(before);
    const sweepEmpty = async (dir: string): Promise<boolean> => {
      const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => null);
      if (entries === null) return false;
      let empty = true;
      for (const entry of entries) {
        if (dir === this.root && (entry.name === TEMP_DIR || entry.name === SMALL_DIR)) continue;
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
    this.smallIfAny()?.deletePrefix(prefix);
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
    await Promise.all(
      names
        .filter((n) => n.startsWith(partial) && !(atRoot && (n === TEMP_DIR || n === SMALL_DIR)))
        .map((n) => removeTree(path.join(dir, n))),
    );
  }

  readSmall(key: string): Buffer | null {
    checkBlobKey(key, "key", KEY_RULES);
    return this.rowOf(key);
  }

  /** A file's path; null for a row (whose key has no file, or a file it replaced). */
  localPath(key: string): string | null {
    const file = this.fileFor(key);
    if ((this.smallIfAny()?.size(...splitKey(key)) ?? null) !== null) return null;
    try {
      return statSync(file, { throwIfNoEntry: false })?.isFile() === true ? file : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  /**
   * Moves `source` into place as `key` by one rename, when it is on the root's filesystem (else
   * null: EXDEV). What lands under `key` is then checked to be the file `source.fd` holds, with one
   * link: a process that swapped the name for something else (a link, a folder, another file)
   * after the caller opened it, or linked the file elsewhere, gets that thing moved back where it
   * was and null answered (the caller copies from the fd). With durability "power" the file is
   * fsynced before the rename and the folder after, as put() does.
   *
   * With durability "process" the rename is synchronous: measured here (2 cores, load 5-8), a
   * rename takes 25-30 µs (p99 0.1 ms, worst 1 ms with another process fsyncing in a loop on the
   * same disk), where a thread-pool round trip for it took 0.05 ms typically but 0.5-3.6 ms at p99:
   * on a per-task path whose goal is a few milliseconds, the wait for a pool thread is the cost.
   */
  async adopt(key: string, source: AdoptableFile): Promise<BlobStat | null> {
    const file = this.fileFor(key);
    const opened = fstatSync(source.fd);
    if (!opened.isFile() || opened.nlink !== 1) return null;
    try {
      if (this.durability === "process") {
        placeNow(source.path, file, key);
      } else {
        await new Promise<void>((resolve, reject) => fsync(source.fd, (err) => (err ? reject(err) : resolve())));
        await this.place(source.path, file, key);
      }
    } catch (err) {
      if (errnoCode(err) === "EXDEV") return null;
      throw err;
    }
    const placed = lstatSync(file, { throwIfNoEntry: false });
    const now = fstatSync(source.fd);
    if (placed !== undefined && placed.isFile() && placed.ino === now.ino && placed.dev === now.dev && now.nlink === 1) {
      this.dropRow(key);
      return { size: now.size };
    }
    // Not the file that was opened: it goes back to where it came from (the caller's folder, which it cleans).
    await fs.rename(file, source.path).catch(() => fs.rm(file, { recursive: true, force: true }));
    return null;
  }

  async close(): Promise<void> {
    await this.small?.close();
    this.small = undefined;
  }

  private fileFor(key: string): string {
    return path.join(this.root, ...checkBlobKey(key, "key", KEY_RULES));
  }

  /** The row's bytes when `key` (checked already) is a small document's row. */
  private rowOf(key: string): Buffer | null {
    return this.smallIfAny()?.bytes(...splitKey(key)) ?? null;
  }

  /** Removes the row of `key` (checked already), if any: a blob stored as a file since replaces it. */
  private dropRow(key: string): void {
    this.smallIfAny()?.delete(...splitKey(key));
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
        throw placeError(err, key);
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

/** A key's folder (first segment) and the rest, as the small documents' table keys its rows. */
function splitKey(key: string): [string, string] {
  const slash = key.indexOf("/");
  return slash === -1 ? [key, ""] : [key.slice(0, slash), key.slice(slash + 1)];
}

function byName(a: { name: string }, b: { name: string }): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** A blob file, as list() yields it (none when it went meanwhile). */
async function* walkFile(full: string, key: string): AsyncGenerator<BlobEntry> {
  const stats = await fs.lstat(full).catch((err: unknown) => (isMissing(err) ? null : Promise.reject(err)));
  if (stats !== null) yield { key, modifiedAt: stats.mtimeMs };
}

/** place() in one synchronous rename (its folder made first when missing), for durability "process": nothing to fsync. */
function placeNow(from: string, file: string, key: string): void {
  try {
    renameSync(from, file);
    return;
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw placeError(err, key);
  }
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    renameSync(from, file);
  } catch (err) {
    throw placeError(err, key);
  }
}

/** A rename into place that failed: a key that clashes with the blobs around it is the caller's error (BAD_REQUEST). */
function placeError(err: unknown, key: string): unknown {
  const code = errnoCode(err);
  if (code === "ENOTDIR" || code === "EEXIST" || code === "EISDIR" || code === "ENOTEMPTY") {
    return docqError(
      ERROR_CODE.BadRequest,
      `blob key ${quoteKey(key)} clashes with an existing blob: on a filesystem a key cannot be both a blob and the folder of other blobs`,
      { field: "key", cause: err },
    );
  }
  return err;
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

/** Bytes putNew writes on the calling thread; a larger document goes through the thread pool. */
const SYNC_WRITE_BYTES = 64 * 1024;

function openNew(file: string): Promise<number> {
  return new Promise((resolve, reject) => open(file, "wx", (err, fd) => (err ? reject(err) : resolve(fd))));
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
}

function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let offset = 0; offset < bytes.byteLength;) offset += writeSync(fd, bytes, offset, bytes.byteLength - offset);
}

async function writeAll(fd: number, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.byteLength;) {
    offset += await new Promise<number>((resolve, reject) =>
      write(fd, bytes, offset, bytes.byteLength - offset, null, (err, written) => (err ? reject(err) : resolve(written))),
    );
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** ENOTDIR: a segment of the key is a blob, so nothing can live below it. */
function isMissing(err: unknown): boolean {
  const code = errnoCode(err);
  return code === "ENOENT" || code === "ENOTDIR";
}
