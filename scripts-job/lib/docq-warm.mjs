// docq-warm: turn a JavaScript function into a docq job, warm or one-shot.
//
//   import { serve } from "../lib/docq-warm.mjs";
//   serve(async (req) => {          // req: the request (mode, input|inputs, outputDir, params, task)
//     ...                            // write the result under req.outputDir
//     return "result.json";          // or { output: "result.json" } or { children: [{ input: "part-1" }, ...] }
//   });
//
// With `warm: true` in job.yaml docq starts the script once per worker slot and sends one JSON
// request per line on stdin, each with a "requestId"; serve() calls the handler for each one as it
// arrives and prints the answer with the same requestId as one JSON line on stdout. docq sends one
// request at a time unless job.yaml says `concurrency: N`: then up to N are in flight at once, and
// an async handler runs them side by side (their answers in any order). Whatever the
// module does before serve() (imports, loading a model) happens once per process, not per task.
//
// Without `warm: true` the same script is a one-shot job: one request without requestId, then the
// end of stdin; serve() answers it and the process ends (a thrown error then means exit code 1).
//
// console.log/info/debug write to stderr once serve() is called, so they cannot corrupt the
// protocol and end up in the task's stderr tail. A thrown error fails only its task (the answer is
// {"requestId": ..., "error": "..."}, the stack goes to stderr); the process stays up, and the task
// is retried after its backoff. Throw a FatalError for a document that can never work (a broken
// file): the answer then says "retry": false and the task ends in error at once.
//
//   import { serve, progress, FatalError } from "../lib/docq-warm.mjs";
//   progress(0.4, "page 4 of 10");    // while handling a request: shown in the task's record
//   throw new FatalError("not a PDF"); // no retry

import { AsyncLocalStorage } from "node:async_hooks";

/** A failure no retry can fix: the task ends in error at once (`{"error": ..., "retry": false}`). */
export class FatalError extends Error {
  constructor(message) {
    super(message);
    this.name = "FatalError";
  }
}

/** The request being handled where progress() is called (its requestId, undefined in a one-shot run). */
const current = new AsyncLocalStorage();

/**
 * Reports how far the current request is (0..1) and what it does. Does nothing outside a handler.
 * @param {number} fraction
 * @param {string} [message]
 */
export function progress(fraction, message) {
  const request = current.getStore();
  if (request === undefined) return;
  const line = { progress: Number(fraction), ...(message === undefined ? {} : { message: String(message) }) };
  process.stdout.write(JSON.stringify(request.requestId === undefined ? line : { requestId: request.requestId, ...line }) + "\n");
}

/** @typedef {{ output: string } | { children: { input: string, params?: Record<string, unknown> }[] }} Answer */

/**
 * Answers requests from stdin with `handle(request)` until stdin ends.
 * @param {(request: Record<string, any>) => string | Answer | Promise<string | Answer>} handle
 */
export function serve(handle) {
  for (const method of ["log", "info", "debug"]) console[method] = console.error;
  let buffer = "";

  const answer = async (line) => {
    const request = JSON.parse(line);
    const { requestId, ...rest } = request;
    let reply;
    try {
      reply = asAnswer(await current.run({ requestId }, () => handle(rest)));
    } catch (err) {
      if (err instanceof FatalError) {
        // Answered in a one-shot run too: the answer line counts whatever the exit code.
        reply = { error: err.message || "FatalError", retry: false };
        if (requestId === undefined) process.exitCode = 1;
      } else {
        process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
        if (requestId === undefined) {
          process.exitCode = 1;
          return;
        }
        reply = { error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
      }
    }
    process.stdout.write(JSON.stringify(requestId === undefined ? reply : { requestId, ...reply }) + "\n");
  };

  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk) => {
    buffer += chunk;
    let newline = buffer.indexOf("\n");
    while (newline !== -1) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line !== "") void answer(line);
      newline = buffer.indexOf("\n");
    }
  });
  process.stdin.on("end", () => {
    const last = buffer.trim();
    buffer = "";
    if (last !== "") void answer(last);
  });
}

function asAnswer(result) {
  if (typeof result === "string") return { output: result };
  if (result !== null && typeof result === "object" && ("output" in result || "children" in result)) return result;
  throw new TypeError(`the handler returned ${JSON.stringify(result)}: return an output file name, or an object with output or children`);
}
