import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";

/*
 * multipart/form-data as a client writes it: the part headers (shared with the bench's forms built
 * in memory), and a form streamed from files for the CLI's batch submit.
 */

/** A name or file name inside its header's quotes, escaped as the HTML spec's form encoding does. */
function quoted(name: string): string {
  return name.replace(/\r/g, "%0D").replace(/\n/g, "%0A").replace(/"/g, "%22");
}

/** A new boundary, which no document's bytes are expected to hold. */
export function newBoundary(): string {
  return `----docq-${randomBytes(16).toString("hex")}`;
}

/** The header of a part: a field's when `filename` is undefined, else a file's (no content type given: octet-stream). */
export function partHeader(boundary: string, name: string, filename?: string): string {
  const disposition = `--${boundary}\r\nContent-Disposition: form-data; name="${quoted(name)}"`;
  return filename === undefined
    ? `${disposition}\r\n\r\n`
    : `${disposition}; filename="${quoted(filename)}"\r\nContent-Type: application/octet-stream\r\n\r\n`;
}

/** What ends a part's value: a new line before the next boundary. */
export const PART_END = "\r\n";

/** The last boundary, which ends the form. */
export function formEnd(boundary: string): string {
  return `--${boundary}--\r\n`;
}

/** A multipart/form-data body read from files as the request sends it. */
export interface StreamedForm {
  contentType: string;
  body: Readable;
}

/**
 * The form of `fields` and then one part named `fileField` per file, each file read only as the
 * request takes its bytes: `onFileSent(i)` is called once the request has taken file i whole, so a
 * progress bar moves with the upload, not with the answer to it.
 */
export function multipartFromFiles(
  fields: ReadonlyArray<readonly [string, string]>,
  fileField: string,
  files: readonly string[],
  onFileSent: (index: number) => void,
): StreamedForm {
  const boundary = newBoundary();
  async function* parts(): AsyncGenerator<Buffer> {
    for (const [name, value] of fields) yield Buffer.from(partHeader(boundary, name) + value + PART_END);
    for (const [i, file] of files.entries()) {
      yield Buffer.from(partHeader(boundary, fileField, path.basename(file)));
      for await (const chunk of createReadStream(file)) yield chunk as Buffer;
      // Resumed once the request took the file's last chunk.
      onFileSent(i);
      yield Buffer.from(PART_END);
    }
    yield Buffer.from(formEnd(boundary));
  }
  return { contentType: `multipart/form-data; boundary=${boundary}`, body: Readable.from(parts(), { objectMode: false }) };
}
