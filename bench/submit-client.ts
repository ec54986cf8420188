import http from "node:http";
import { authFor, submitUrl, type SubmitOptions } from "../testFunctional/helpers.js";

/*
 * The bench's client for single submits: node:http over kept-alive sockets, a request written in
 * one piece, as load generators (wrk, autocannon) send them. The tests' `submit` goes through
 * fetch (undici), which costs the client 300-430 µs of CPU a request on this machine kind, more
 * than the app's own; on 2 shared cores that measured the client as much as docq. This one costs
 * 80-140 µs. Figure 1 also gives the rate through fetch, beside it.
 */

/** Idle sockets are kept (and unref'd by node), so a run of submits reuses its connections. */
const MAX_SOCKETS = 256;
const agent = new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS });

/** POST /api/tasks with `body` as the document; answers the new task's id. */
export async function postTask(url: string, body: string, opts: SubmitOptions): Promise<string> {
  const { status, text } = await post(submitUrl(url, opts), body, "application/octet-stream", url);
  const id = jsonField(text, "id");
  if (status !== 201 || typeof id !== "string") throw new Error(`submit answered ${status}: ${text}`);
  return id;
}

/**
 * POST /api/tasks/batch with an encoded multipart form; answers the new tasks' ids. The batch
 * figure's client: fetch (undici) sending a 1 MB body held some requests back 90-200 ms with the
 * app idle meanwhile (about one in 15 here), and cost the client CPU the app competes for.
 */
export async function postBatchForm(url: string, form: { body: Uint8Array; contentType: string }): Promise<string[]> {
  const { status, text } = await post(`${url}/api/tasks/batch`, form.body, form.contentType, url);
  const ids = jsonField(text, "ids");
  if (status !== 201 || !Array.isArray(ids)) throw new Error(`POST /api/tasks/batch answered ${status}: ${text.slice(0, 500)}`);
  return ids as string[];
}

/**
 * One request written in one piece over a kept-alive socket; its status and its whole answer. A
 * request on a reused socket that the app closed meanwhile (its keep-alive timeout: the socket was
 * idle through another figure's requests) fails before the app read it, with EPIPE or ECONNRESET:
 * it is sent again, as Node's documentation advises. Each such failure destroys its socket, so
 * the agent soon opens a new one (at most `maxSockets` closed ones are tried).
 */
async function post(
  target: string,
  body: string | Uint8Array,
  contentType: string,
  appUrl: string,
): Promise<{ status: number; text: string }> {
  for (let closed = 0; ; closed++) {
    try {
      return await postOnce(target, body, contentType, appUrl);
    } catch (err) {
      if (!(err instanceof ReusedSocketClosed) || closed >= MAX_SOCKETS) throw err;
    }
  }
}

/** A reused socket the app had closed: the request did not reach the app. */
class ReusedSocketClosed extends Error {}

function postOnce(
  target: string,
  body: string | Uint8Array,
  contentType: string,
  appUrl: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const length = typeof body === "string" ? Buffer.byteLength(body) : body.byteLength;
    const req = http.request(
      target,
      { method: "POST", agent, headers: { "content-type": contentType, "content-length": length, ...authFor(appUrl) } },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      },
    );
    req.on("error", (err: NodeJS.ErrnoException) => {
      const closed = req.reusedSocket && (err.code === "EPIPE" || err.code === "ECONNRESET");
      reject(closed ? new ReusedSocketClosed(`${target}: a reused socket was closed by the app (${err.code})`, { cause: err }) : err);
    });
    req.end(body);
  });
}

/** A field of a JSON object answer, undefined when the answer is no such object. */
function jsonField(text: string, field: string): unknown {
  try {
    return (JSON.parse(text) as Record<string, unknown>)[field];
  } catch {
    return undefined;
  }
}
