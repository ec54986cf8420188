import { finished, type Readable } from "node:stream";

/** What readHead read: the whole body when `ended`, else its first chunks, the body paused after them. */
export interface BodyHead {
  chunks: Buffer[];
  size: number;
  ended: boolean;
}

/**
 * Reads `body` up to just past `max` bytes. A small document is then written at once (the blob
 * store's putNew: no stream between, no temp file); a larger one goes on as a stream, its first
 * chunks written before the rest. Rejects when the body fails or stops before its end.
 */
export function readHead(body: Readable, max: number): Promise<BodyHead> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (): void => {
      body.off("data", onData);
      stopWatching();
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= max) return;
      body.pause();
      stop();
      resolve({ chunks, size, ended: false });
    };
    const stopWatching = finished(body, { writable: false }, (err) => {
      stop();
      if (err) reject(err);
      else resolve({ chunks, size, ended: true });
    });
    body.on("data", onData);
  });
}

/** The head's bytes as one buffer (no copy for a body that came in one chunk). */
export function headBytes(head: BodyHead): Buffer {
  return head.chunks.length === 1 ? head.chunks[0]! : Buffer.concat(head.chunks, head.size);
}
