import { createParser, type EventSourceMessage } from "eventsource-parser";

/*
 * `docq wait`: follows one task through the event stream (GET /api/events?task=ID) until it ends,
 * riding out a server restart: while the server cannot be reached it tries again every second,
 * and after each (re)connect it reads the task's record once more, so an end it missed while
 * disconnected is still seen. It resumes the stream after the last event it got (Last-Event-ID).
 */

/** The statuses a task ends in. */
const FINAL = new Set(["output", "error", "canceled"]);

/** What the server says of the task: its record, or an event of the stream (the same fields). */
export interface TaskState {
  id: string;
  status: string;
  progress: number | null;
  /** `message` in an event, `progressMessage` in the record. */
  message: string | null;
  error?: string | null;
}

export type FollowOutcome =
  | { kind: "ended"; state: TaskState }
  /** The server could not be reached for `unreachableMs` in a row. */
  | { kind: "unreachable"; why: string }
  /** The server refused: an unknown task, a key refused... (`status` is the HTTP status). */
  | { kind: "refused"; status: number; message: string };

export interface FollowOptions {
  url: string;
  key: string | undefined;
  id: string;
  /** Give up after the server was unreachable this long in a row. */
  unreachableMs: number;
  /** Each state seen while the task runs (the record, then each event of the task). */
  onState?: (state: TaskState) => void;
  /** Said when the connection is lost or comes back. */
  onNotice?: (message: string) => void;
  /** Wait between two tries to reach the server. */
  retryMs?: number;
}

/** A failure to reach the server (or a 5xx): worth trying again. */
class Unreachable extends Error {}
/** A refusal (4xx): trying again will not help. */
class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function followTask(opts: FollowOptions): Promise<FollowOutcome> {
  const retryMs = opts.retryMs ?? 1000;
  let lastEventId: string | null = null;
  let downSince: number | null = null;
  for (;;) {
    const abort = new AbortController();
    try {
      const stream = await openStream(opts, lastEventId, abort.signal);
      if (downSince !== null) opts.onNotice?.("reconnected");
      downSince = null;
      // Read after the stream is open (the server already listens for us): an end that happened
      // before, or while we were away, is in the record; one after it comes as an event.
      const record = await readRecord(opts);
      if (FINAL.has(record.status)) return { kind: "ended", state: record };
      opts.onState?.(record);
      const ended = await readEvents(stream, opts.id, {
        onEvent: (id) => (lastEventId = id),
        onState: (state) => opts.onState?.(state),
      });
      if (ended !== null) return { kind: "ended", state: ended };
      // The stream ended (the server stops, or dropped a client that fell behind): connect again.
    } catch (err) {
      if (err instanceof Refused) return { kind: "refused", status: err.status, message: err.message };
      const why = err instanceof Error ? err.message : String(err);
      const now = Date.now();
      if (downSince === null) {
        downSince = now;
        opts.onNotice?.(`lost the server (${why}): trying again for ${Math.round(opts.unreachableMs / 1000)} s`);
      } else if (now - downSince >= opts.unreachableMs) {
        return { kind: "unreachable", why };
      }
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    } finally {
      abort.abort();
    }
  }
}

function headers(opts: FollowOptions, extra: Record<string, string> = {}): Headers {
  const h = new Headers(extra);
  if (opts.key !== undefined) h.set("authorization", `Bearer ${opts.key}`);
  return h;
}

async function request(opts: FollowOptions, path: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(new URL(path, opts.url), init);
  } catch (err) {
    throw new Unreachable(err instanceof Error && err.cause instanceof Error ? err.cause.message : String(err));
  }
  if (res.ok) return res;
  const text = await res.text().catch(() => "");
  let message = text;
  try {
    message = (JSON.parse(text) as { error?: string }).error ?? text;
  } catch {
    // Not JSON: the text as it is.
  }
  // 503: the site's queue restarts; any 5xx is worth another try.
  if (res.status >= 500) throw new Unreachable(`${res.status} ${message}`);
  throw new Refused(res.status, `${init.method ?? "GET"} ${path}: ${res.status} ${message}`);
}

async function readRecord(opts: FollowOptions): Promise<TaskState> {
  const res = await request(opts, `/api/tasks/${encodeURIComponent(opts.id)}`, { headers: headers(opts) });
  const task = (await res.json()) as {
    id: string;
    status: string;
    progress?: number | null;
    progressMessage?: string | null;
    error?: string | null;
  };
  return {
    id: task.id,
    status: task.status,
    progress: task.progress ?? null,
    message: task.progressMessage ?? null,
    error: task.error ?? null,
  };
}

async function openStream(opts: FollowOptions, lastEventId: string | null, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
  const res = await request(opts, `/api/events?task=${encodeURIComponent(opts.id)}`, {
    headers: headers(
      opts,
      lastEventId === null ? { accept: "text/event-stream" } : { accept: "text/event-stream", "last-event-id": lastEventId },
    ),
    signal,
  });
  if (res.body === null) throw new Unreachable("the event stream has no body");
  return res.body;
}

/**
 * Reads events until the task ends (answers its final state) or the stream ends (null). A `gap`
 * (events may be missing before what follows) needs nothing more: the record was read after the
 * stream opened.
 */
async function readEvents(
  stream: ReadableStream<Uint8Array>,
  id: string,
  on: { onEvent(eventId: string): void; onState(state: TaskState): void },
): Promise<TaskState | null> {
  let ended: TaskState | null = null;
  const parser = createParser({
    onEvent: (message: EventSourceMessage) => {
      if (ended !== null || message.event !== "task") return;
      if (message.id !== undefined) on.onEvent(message.id);
      let event: { id?: unknown; status?: unknown; progress?: unknown; message?: unknown };
      try {
        event = JSON.parse(message.data) as typeof event;
      } catch {
        return;
      }
      if (event.id !== id || typeof event.status !== "string") return; // a child's event
      const state: TaskState = {
        id,
        status: event.status,
        progress: typeof event.progress === "number" ? event.progress : null,
        message: typeof event.message === "string" ? event.message : null,
      };
      if (FINAL.has(state.status)) ended = state;
      else on.onState(state);
    },
  });
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        // A connection cut mid-stream: as a failure to reach the server (the caller retries).
        throw new Unreachable(err instanceof Error && err.cause instanceof Error ? err.cause.message : String(err));
      }
      if (chunk.done) return null;
      parser.feed(decoder.decode(chunk.value, { stream: true }));
      if (ended !== null) return ended;
    }
  } finally {
    reader.releaseLock();
  }
}
