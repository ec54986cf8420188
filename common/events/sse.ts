/*
 * Server-Sent Events framing (the WHATWG "text/event-stream" format): each event is `id:`,
 * `event:` and one `data:` line of JSON, ended by a blank line; a line starting with `:` is a
 * comment (keep-alive). JSON never holds a raw newline, and event ids are checked, so a frame can
 * never be split or forged by what it carries.
 */

export const SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8";

/** An event frame: `id` (omitted when null: the client's last id stays as it is), its type and data. */
export function sseEvent(id: string | null, type: string, data: unknown): string {
  if (id !== null && /[\r\n]/.test(id)) throw new Error(`an SSE event id cannot hold a line break: ${JSON.stringify(id)}`);
  return `${id === null ? "" : `id: ${id}\n`}event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A comment frame (clients ignore it): keeps proxies and the connection from timing out. */
export function sseComment(text: string): string {
  return `: ${text.replace(/[\r\n]+/g, " ")}\n\n`;
}

/** Tells the client how long to wait before it reconnects. */
export function sseRetry(ms: number): string {
  return `retry: ${Math.max(0, Math.round(ms))}\n\n`;
}
