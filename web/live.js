// Live updates: one stream of GET /api/events for the whole page, read with fetch (EventSource
// cannot send the Authorization header the API needs), resumed with Last-Event-ID after a drop.
// While the stream is down, pages poll instead.
import { useEffect, useRef, useState } from "preact/hooks";
import { apiKey, authRequired } from "./api.js";

const RECONNECT_MS = 2000;
/** How often a page reloads while the stream is down (and, slowly, even while it is up). */
export const POLL_DOWN_MS = 4000;
const POLL_UP_MS = 30_000;

const listeners = new Set();
const stateListeners = new Set();
let state = "connecting";
let lastEventId = null;
let controller = null;
let retryTimer = null;
let started = false;

function setState(next) {
  if (state === next) return;
  state = next;
  for (const listener of stateListeners) listener(state);
}

/** Splits a chunk of the stream into complete events; answers what is left over. */
function dispatch(buffer) {
  let at;
  while ((at = buffer.indexOf("\n\n")) !== -1) {
    const block = buffer.slice(0, at);
    buffer = buffer.slice(at + 2);
    let type = "message";
    let data = "";
    let id = null;
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data += (data === "" ? "" : "\n") + value;
      else if (field === "id") id = value;
    }
    if (id !== null) lastEventId = id;
    if (type === "task" && data !== "") {
      let event;
      try {
        event = JSON.parse(data);
      } catch {
        continue;
      }
      for (const listener of listeners) listener(event);
    } else if (type === "gap") {
      // Events may be missing: every page reads its state again.
      for (const listener of listeners) listener(null);
    }
  }
  return buffer;
}

async function connect() {
  // This connection's own: a restart replaces `controller` while this one is still unwinding.
  const mine = new AbortController();
  controller = mine;
  const key = apiKey();
  if (key === null && authRequired()) {
    // No key yet where one is needed: nothing to stream until a login restarts it (and no refused request).
    setState("polling");
    return;
  }
  try {
    const res = await fetch("/api/events", {
      headers: {
        accept: "text/event-stream",
        ...(key === null ? {} : { authorization: `Bearer ${key}` }),
        ...(lastEventId === null ? {} : { "last-event-id": lastEventId }),
      },
      signal: mine.signal,
    });
    if (res.status === 401) {
      // No key, or a revoked one: nothing to stream until a login restarts it.
      setState("polling");
      return;
    }
    if (!res.ok || res.body === null) throw new Error(`events answered ${res.status}`);
    setState("live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = dispatch((buffer + value).replace(/\r\n?/g, "\n"));
    }
  } catch {
    // Dropped, refused or aborted: polling takes over until the stream is back.
  }
  if (mine.signal.aborted) return;
  setState("polling");
  retryTimer = setTimeout(connect, RECONNECT_MS);
}

/** Starts the stream again (after a login: the new key). */
export function restartEvents() {
  controller?.abort();
  clearTimeout(retryTimer);
  lastEventId = null;
  started = true;
  setState("connecting");
  void connect();
}

function ensureStarted() {
  if (started) return;
  started = true;
  void connect();
}

/** The stream's state: connecting, live, or polling. */
export function useLiveState() {
  const [current, setCurrent] = useState(state);
  useEffect(() => {
    ensureStarted();
    stateListeners.add(setCurrent);
    setCurrent(state);
    return () => stateListeners.delete(setCurrent);
  }, []);
  return current;
}

/**
 * Calls `reload` when an event `concerns` the page (debounced), and on a timer: often while the
 * stream is down, every `everyMs` while it is up (a safety net; what events do not tell, such as workers' slots).
 */
export function useLiveReload(reload, concerns = () => true, everyMs = POLL_UP_MS) {
  const live = useLiveState();
  const latest = useRef({ reload, concerns });
  latest.current = { reload, concerns };
  useEffect(() => {
    let timer = null;
    const listener = (event) => {
      if (event !== null && !latest.current.concerns(event)) return;
      if (timer !== null) return;
      timer = setTimeout(() => {
        timer = null;
        latest.current.reload();
      }, 250);
    };
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (timer !== null) clearTimeout(timer);
    };
  }, []);
  useEffect(() => {
    const every = setInterval(() => latest.current.reload(), live === "live" ? everyMs : Math.min(everyMs, POLL_DOWN_MS));
    return () => clearInterval(every);
  }, [live]);
  return live;
}
