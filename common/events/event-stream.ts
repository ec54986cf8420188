import type { EventBuffer } from "./event-buffer.js";
import { sseComment, sseEvent, sseRetry } from "./sse.js";
import type { NumberedEvent, TaskEvent } from "./task-event.js";

/** Where a stream writes: an HTTP response (or, in tests, any writable). */
export interface EventSink {
  write(chunk: string): boolean;
  readonly writableLength: number;
  end(): void;
  destroy(): void;
  once(event: "close", listener: () => void): unknown;
}

export interface EventStreamOptions {
  buffer: EventBuffer;
  /** Resume after this event id (null: live events only). */
  lastEventId: string | null;
  /** Which events this client may see (eventFilter). */
  filter: (event: TaskEvent) => boolean;
  /** A comment line this often keeps the connection alive through proxies. */
  keepAliveMs: number;
  /** A client this far behind (bytes not yet sent) is dropped: it reconnects with its Last-Event-ID. */
  maxPendingBytes: number;
  /** The reconnect delay suggested to the client. */
  retryMs: number;
}

export const EVENT_STREAM_DEFAULTS = Object.freeze({ keepAliveMs: 15_000, maxPendingBytes: 1024 * 1024, retryMs: 2000 });

/** The event type of a task's change, and of the notice that events may be missing before what follows. */
export const EVENT_TYPES = Object.freeze({ task: "task", gap: "gap" });

/**
 * Streams task events to one client: first the kept events after its last event id (a `gap` event
 * first when that id is no longer kept: the client should read the state it follows again), then
 * every new one, as they arrive. Replay and subscription happen in the same turn of the event
 * loop, so no event is lost or sent twice between them. A slow client never holds the queue up:
 * once `maxPendingBytes` wait to be sent to it, it is dropped. Answers a function that ends the stream.
 */
export function streamEvents(sink: EventSink, opts: EventStreamOptions): () => void {
  let open = true;
  const send = (entry: NumberedEvent): void => {
    if (!open || !opts.filter(entry.event)) return;
    sink.write(sseEvent(entry.eventId, EVENT_TYPES.task, entry.event));
    if (sink.writableLength > opts.maxPendingBytes) {
      close();
      sink.destroy();
    }
  };

  sink.write(sseRetry(opts.retryMs));
  const replay = opts.buffer.since(opts.lastEventId);
  if (replay.gap) {
    sink.write(
      sseEvent(null, EVENT_TYPES.gap, {
        lastEventId: opts.lastEventId,
        reason:
          "that event is no longer kept (or came from a server that restarted): events may be missing; read the tasks you follow again",
      }),
    );
  }
  for (const entry of replay.events) send(entry);
  const unsubscribe = opts.buffer.subscribe(send);
  const keepAlive = setInterval(() => {
    if (open) sink.write(sseComment("keep-alive"));
  }, opts.keepAliveMs);
  keepAlive.unref();

  function close(): void {
    if (!open) return;
    open = false;
    unsubscribe();
    clearInterval(keepAlive);
  }
  sink.once("close", close);
  return () => {
    if (!open) return;
    close();
    sink.end();
  };
}
