/*
 * The small documents this process stored last, kept in memory so that reading one back costs no
 * SQLite read: a task's input is read by its run moments after its submit stored it (a warm task's
 * read was 25-45 µs of its 500 on the event loop). Only rows this process inserted are kept, and
 * every removal the process makes goes through here too, so a kept row is one the table holds.
 * Another process sharing the folder (a worker of the same data dir) may remove a row this one
 * keeps: a read then answers the bytes the key held, which no key ever changes (each names one
 * task's input, or one attempt's output). Bounded by bytes and by count; the oldest go first.
 */

/** A row's key in `rows`: a folder never holds a slash, so folder and rest are told apart. */
const keyOf = (folder: string, rest: string): string => `${folder}/${rest}`;

export class RecentRows {
  private readonly maxBytes: number;
  private readonly maxRows: number;
  /** Every kept row, oldest first (a Map keeps the order of insertion). */
  private readonly rows = new Map<string, Buffer>();
  /** The rests kept of each folder, for removals by folder. */
  private readonly folders = new Map<string, Set<string>>();
  private bytes = 0;

  constructor(opts: { maxBytes: number; maxRows: number }) {
    this.maxBytes = opts.maxBytes;
    this.maxRows = opts.maxRows;
  }

  /** Keeps a copy of `bytes` as `folder/rest` (replacing a kept one). A row larger than a tenth of the bound is not kept. */
  add(folder: string, rest: string, bytes: Uint8Array): void {
    this.delete(folder, rest);
    if (bytes.byteLength * 10 > this.maxBytes) return;
    this.rows.set(keyOf(folder, rest), Buffer.from(bytes));
    let rests = this.folders.get(folder);
    if (rests === undefined) this.folders.set(folder, (rests = new Set()));
    rests.add(rest);
    this.bytes += bytes.byteLength;
    while (this.bytes > this.maxBytes || this.rows.size > this.maxRows) {
      const oldest = this.rows.keys().next();
      if (oldest.done === true) break;
      const slash = oldest.value.indexOf("/");
      this.delete(oldest.value.slice(0, slash), oldest.value.slice(slash + 1));
    }
  }

  /** A copy of the kept row, or null when it is not kept (the table may still hold it). */
  get(folder: string, rest: string): Buffer | null {
    const bytes = this.rows.get(keyOf(folder, rest));
    return bytes === undefined ? null : Buffer.from(bytes);
  }

  delete(folder: string, rest: string): void {
    const key = keyOf(folder, rest);
    const bytes = this.rows.get(key);
    if (bytes === undefined) return;
    this.rows.delete(key);
    this.bytes -= bytes.byteLength;
    const rests = this.folders.get(folder);
    rests?.delete(rest);
    if (rests?.size === 0) this.folders.delete(folder);
  }

  /** Drops the kept rows of `folder` whose rest starts with `restPrefix` ("" for the whole folder). */
  deleteInFolder(folder: string, restPrefix: string): void {
    const rests = this.folders.get(folder);
    if (rests === undefined) return;
    for (const rest of [...rests]) if (rest.startsWith(restPrefix)) this.delete(folder, rest);
  }

  /** Drops the kept rows of every folder whose name starts with `folderPrefix`. */
  deleteFolders(folderPrefix: string): void {
    for (const folder of [...this.folders.keys()]) if (folder.startsWith(folderPrefix)) this.deleteInFolder(folder, "");
  }

  /** Rows kept now. */
  get size(): number {
    return this.rows.size;
  }

  /** Bytes kept now. */
  get keptBytes(): number {
    return this.bytes;
  }
}
