import { formEnd, newBoundary, PART_END, partHeader } from "../common/http/multipart-files.js";

/*
 * A multipart/form-data body built as one buffer. The bench built its batch forms as a FormData of
 * one Blob per document and encoded them through a Response: each Blob is a native object, and a
 * thousand of them per form left the bench's garbage collector tens of thousands to finalize.
 * `perf` of the bench process caught it doing that (freeing Blobs, 100-170 ms of its main thread)
 * during the first request of a timed round, while the app waited for the client: the figure was
 * the client's cost. Plain bytes leave nothing native behind.
 */

/** A form's body and its content type (with the boundary). */
export interface EncodedForm {
  body: Uint8Array<ArrayBuffer>;
  contentType: string;
}

/** A file part: its form field name, the file name the client gives it, and its bytes. */
export interface FilePart {
  field: string;
  filename: string;
  bytes: Uint8Array | string;
}

/** The form: its fields first (in order), then its files, as a browser's FormData encodes them (no content type given: octet-stream). */
export function multipartBody(fields: ReadonlyArray<readonly [string, string]>, files: readonly FilePart[]): EncodedForm {
  const boundary = newBoundary();
  const pieces: Uint8Array[] = [];
  for (const [name, value] of fields) pieces.push(Buffer.from(partHeader(boundary, name) + value + PART_END));
  for (const file of files) {
    pieces.push(
      Buffer.from(partHeader(boundary, file.field, file.filename)),
      typeof file.bytes === "string" ? Buffer.from(file.bytes) : file.bytes,
      CRLF,
    );
  }
  pieces.push(Buffer.from(formEnd(boundary)));
  const joined = Buffer.concat(pieces);
  // A body of its own (not a slice of Node's shared pool), as fetch and http.request take it.
  const body = new Uint8Array(new ArrayBuffer(joined.byteLength));
  body.set(joined);
  return { body, contentType: `multipart/form-data; boundary=${boundary}` };
}

const CRLF = Buffer.from(PART_END);
