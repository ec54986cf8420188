/*
 * The small documents this process stored last, kept in memory so that reading one back costs no
 * SQLite read: a task's input is read by its run moments after its submit stored it (a warm task's
 * read was 25-45 µs of its 500 on the event loop). Only rows this process inserted are kept, and
 * every removal the process makes goes through here too, so a kept row is one the table holds.
 * Another process sharing the folder (a worker of the same data dir) may remove a row this one
 * keeps: a read then answers the bytes the key held, which no key ever changes (each names one
 * task's input, or one attempt's output).
 *
 * Two generations: rows go into the young one; when it holds half the bounds it becomes the old
 * one and the old one is dropped. Every step is O(1) (a Map used as a queue of the oldest is not:
 * V8 walks past every entry deleted at its front).
 */

/** folder → rest → bytes. */
type Generation = Map<string, Map<string, Buffer>>;

export class RecentRows {
  private readonly maxBytes: number;
  private readonly maxRows: number;
  private young: Generation = new Map();
  private old: Generation = new Map();
  private youngBytes = 0;
  private youngRows = 0;
  private oldBytes = 0;
  private oldRows = 0;

  /** At most about `maxBytes` and `maxRows` are kept (half of each in each generation). */
  constructor(opts: { maxBytes: number; maxRows: number }) {
    this.maxBytes = opts.maxBytes;
    this.maxRows = opts.maxRows;
  }

  /** Keeps a copy of `bytes` as `folder/rest` (replacing a kept one). A row larger than a tenth of the bound is not kept. */
  add(folder: string, rest: string, bytes: Uint8Array): void {
    this.addAll([{ folder, rest, bytes }]);
  }

  /**
   * Keeps a copy of each row, as add() does. The rows' bytes are copied into one buffer: a batch's
   * thousand 1 KB documents copied one by one made a Buffer each and 125 pool blocks of 8 KB (5 % of
   * a batch submit's event loop, and its collections). One row is copied as before (into the pool).
   */
  addAll(rows: readonly { folder: string; rest: string; bytes: Uint8Array }[]): void {
    let total = 0;
    for (const { bytes } of rows) if (this.keeps(bytes)) total += bytes.byteLength;
    const copies = rows.length > 1 ? Buffer.allocUnsafeSlow(total) : null;
    let offset = 0;
    for (const { folder, rest, bytes } of rows) {
      this.delete(folder, rest);
      if (!this.keeps(bytes)) continue;
      let copy: Buffer;
      if (copies === null) copy = Buffer.from(bytes);
      else {
        copy = copies.subarray(offset, offset + bytes.byteLength);
        copy.set(bytes);
        offset += bytes.byteLength;
      }
      this.keep(folder, rest, copy);
    }
  }

  private keeps(bytes: Uint8Array): boolean {
    return bytes.byteLength * 10 <= this.maxBytes;
  }

  private keep(folder: string, rest: string, bytes: Buffer): void {
    if (this.youngBytes + bytes.byteLength > this.maxBytes / 2 || this.youngRows + 1 > this.maxRows / 2) {
      this.old = this.young;
      this.oldBytes = this.youngBytes;
      this.oldRows = this.youngRows;
      this.young = new Map();
      this.youngBytes = 0;
      this.youngRows = 0;
    }
    let rests = this.young.get(folder);
    if (rests === undefined) this.young.set(folder, (rests = new Map()));
    rests.set(rest, bytes);
    this.youngBytes += bytes.byteLength;
    this.youngRows++;
  }

  /** A copy of the kept row, or null when it is not kept (the table may still hold it). */
  get(folder: string, rest: string): Buffer | null {
    const bytes = this.young.get(folder)?.get(rest) ?? this.old.get(folder)?.get(rest);
    return bytes === undefined ? null : Buffer.from(bytes);
  }

  delete(folder: string, rest: string): void {
    this.drop(this.young, folder, rest);
    this.drop(this.old, folder, rest);
  }

  /** Drops the kept rows of `folder` whose rest starts with `restPrefix` ("" for the whole folder). */
  deleteWithPrefix(folder: string, restPrefix: string): void {
    for (const generation of [this.young, this.old])
      for (const rest of [...(generation.get(folder)?.keys() ?? [])]) if (rest.startsWith(restPrefix)) this.drop(generation, folder, rest);
  }

  /** Drops the kept rows of every folder whose name starts with `folderPrefix`. */
  deleteFolders(folderPrefix: string): void {
    const folders = new Set([...this.young.keys(), ...this.old.keys()]);
    for (const folder of folders) if (folder.startsWith(folderPrefix)) this.deleteWithPrefix(folder, "");
  }

  /** Rows kept now. */
  get size(): number {
    return this.youngRows + this.oldRows;
  }

  /** Bytes kept now. */
  get keptBytes(): number {
    return this.youngBytes + this.oldBytes;
  }

  /** Removes `folder/rest` from `generation`, and its bytes from that generation's totals. */
  private drop(generation: Generation, folder: string, rest: string): void {
    const rests = generation.get(folder);
    const bytes = rests?.get(rest);
    if (rests === undefined || bytes === undefined) return;
    rests.delete(rest);
    if (rests.size === 0) generation.delete(folder);
    if (generation === this.young) {
      this.youngBytes -= bytes.byteLength;
      this.youngRows--;
    } else {
      this.oldBytes -= bytes.byteLength;
      this.oldRows--;
    }
  }
}
