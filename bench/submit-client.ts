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
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

/** POST /api/tasks with `body` as the document; answers the new task's id. */
export function postTask(url: string, body: string, opts: SubmitOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      submitUrl(url, opts),
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/octet-stream", "content-length": Buffer.byteLength(body), ...authFor(url) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("error", reject);
        res.on("end", () => {
          let id: unknown;
          try {
            id = (JSON.parse(text) as { id?: unknown }).id;
          } catch {
            id = undefined;
          }
          if (res.statusCode !== 201 || typeof id !== "string") reject(new Error(`submit answered ${res.statusCode}: ${text}`));
          else resolve(id);
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
