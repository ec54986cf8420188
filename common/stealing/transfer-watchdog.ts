import { PassThrough, type Readable } from "node:stream";

/** A transfer no byte of which came through for too long: it is given up. */
export class TransferStalledError extends Error {
  override readonly name = "TransferStalledError";
  constructor(
    readonly what: string,
    readonly idleMs: number,
    readonly bytes: number,
  ) {
    super(`${what} stalled: no bytes for ${Math.round(idleMs / 1000)} s after ${bytes} byte(s)`);
  }
}

/** A stream watched for progress: what comes through it, and a promise that rejects if it stalls. */
export interface WatchedTransfer {
  /** The bytes of `source`, passed on as they come. */
  stream: Readable;
  /** Rejects with TransferStalledError when no byte came for `idleMs`; never settles otherwise. */
  stalled: Promise<never>;
  /** Bytes passed on so far. */
  bytes(): number;
}

/**
 * Watches a transfer for progress. A stream from another site can stall for good without ending
 * or failing (the other side's node dropped while its heartbeats queued behind the stream on a
 * saturated link): whoever waits on it would wait forever. When no byte comes for `idleMs`
 * (counted from now, so a stream that never starts counts too), `source` and `stream` are
 * destroyed with a TransferStalledError and `stalled` rejects with it, for a caller whose
 * consumer might not notice the stream's error. The watch ends with the stream (end or error).
 */
export function watchTransfer(source: Readable, what: string, idleMs: number): WatchedTransfer {
  const stream = new PassThrough();
  let bytes = 0;
  let rejectStalled: (err: TransferStalledError) => void = () => undefined;
  const stalled = new Promise<never>((_, reject) => (rejectStalled = reject));
  // Nobody need wait on it: a stall is also the stream's error.
  stalled.catch(() => undefined);
  // With no one listening for its error (a consumer that never started reading), an error would be uncaught.
  const endStream = (err: Error): void => void stream.destroy(stream.listenerCount("error") > 0 ? err : undefined);
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => clearTimeout(timer);
  const arm = (): void => {
    stop();
    timer = setTimeout(() => {
      const err = new TransferStalledError(what, idleMs, bytes);
      rejectStalled(err);
      source.destroy(err);
      endStream(err);
    }, idleMs);
  };
  // By hand rather than pipe(): pipe listens for the destination's errors itself, which would
  // hide whether its consumer does.
  source.on("data", (chunk: Buffer | string) => {
    bytes += chunk.length;
    arm();
    if (!stream.write(chunk)) source.pause();
  });
  stream.on("drain", () => source.resume());
  source.once("error", (err) => {
    stop();
    endStream(err);
  });
  source.once("end", () => {
    stop();
    stream.end();
  });
  // Its consumer gave up: so does the source.
  stream.once("close", () => {
    stop();
    if (!source.readableEnded) source.destroy();
  });
  arm();
  return { stream, stalled, bytes: () => bytes };
}
