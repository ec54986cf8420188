// The body of a reload reader thread (threaded-reload.ts): plain JavaScript, so the thread needs no
// TypeScript loader. It holds a read-only connection of its own to the SQLite file and reads the
// seq ranges it is given with the statement it was given (a batch of rows as one JSON array of
// [seq, id, submit_time, available_at, packed]), in batches, handing each batch over as
// the ids (an array of strings) and one Float64Array of three numbers a row (submit_time,
// available_at, the packed integer; NaN when the row came as JSON, whose text is in `unpacked`).
// What costs a reload most is better-sqlite3 turning a million rows into JavaScript values: here
// it is done beside the event loop, by as many threads as the machine has cores.
//   workerData: {file, select, batchSize}   select's parameters: after seq, up to seq, limit
//   in:  {range, after, upTo}   {stop: true} (closes the connection; the thread then ends)
//   out: {range, ids, numbers, unpacked, last}   {range, error}
import { parentPort, workerData } from "node:worker_threads";
import Database from "better-sqlite3";

const { file, select, batchSize } = workerData;
/** The connection's page cache, in KiB (better-sqlite3's build sets 16,000). */
const CACHE_KIB = 256;
/** Opened at the first range, inside its try: an error then reaches the process as a message naming its cause. */
let statement = null;
let db = null;

function prepared() {
  if (statement === null) {
    db = new Database(file, { readonly: true, fileMustExist: true });
    // Each row is read once, so a page cache is of no use; the 16 MB one filled in the thread's
    // malloc arena stayed with the process after the thread ended (33 MB for 2 threads here).
    db.pragma(`cache_size = -${CACHE_KIB}`);
    statement = db.prepare(select).pluck();
  }
  return statement;
}

const bySeq = (a, b) => a[0] - b[0];

function readRange(range, after, upTo) {
  let from = after;
  for (;;) {
    const rows = JSON.parse(prepared().get(from, upTo, batchSize));
    const count = rows.length;
    // SQLite aggregates the rows in the order the subquery gives them, which it does not promise.
    for (let i = 1; i < count; i++) {
      if (rows[i][0] < rows[i - 1][0]) {
        rows.sort(bySeq);
        break;
      }
    }
    const ids = new Array(count);
    const numbers = new Float64Array(3 * count);
    const unpacked = [];
    for (let i = 0; i < count; i++) {
      const row = rows[i];
      ids[i] = row[1];
      numbers[3 * i] = row[2];
      numbers[3 * i + 1] = row[3];
      const packed = row[4];
      if (typeof packed === "number") numbers[3 * i + 2] = packed;
      else {
        numbers[3 * i + 2] = NaN;
        // The columns' JSON array comes as text or, kept as JSON by json_array, as an array.
        unpacked.push(typeof packed === "string" ? packed : JSON.stringify(packed));
      }
    }
    const last = count < batchSize;
    parentPort.postMessage({ range, ids, numbers, unpacked, last }, [numbers.buffer]);
    if (last) return;
    from = rows[count - 1][0];
  }
}

parentPort.on("message", ({ range, after, upTo, stop }) => {
  if (stop === true) {
    db?.close();
    parentPort.close();
    return;
  }
  try {
    readRange(range, after, upTo);
  } catch (err) {
    parentPort.postMessage({ range, error: err instanceof Error ? err.message : String(err) });
  }
});
