// docq-warm: turn a JavaScript function into a docq job, warm or one-shot.
//
//   import { serve } from "../lib/docq-warm.mjs";
//   serve(async (req) => {          // req: the request (mode, input|inputs, outputDir, params, task)
//     ...                            // write the result under req.outputDir
//     return "result.json";          // or { output: "result.json" } or { children: [{ input: "part-1" }, ...] }
//   });
//
// With `warm: true` in job.yaml docq starts the script once per worker slot and sends one JSON
// request per line on stdin, each with a "requestId"; serve() calls the handler for each one, in
// turn, and prints the answer with the same requestId as one JSON line on stdout. Whatever the
// module does before serve() (imports, loading a model) happens once per process, not per task.
//
// Without `warm: true` the same script is a one-shot job: one request without requestId, then the
// end of stdin; serve() answers it and the process ends (a thrown error then means exit code 1).
//
// console.log/info/debug write to stderr once serve() is called, so they cannot corrupt the
// protocol and end up in the task's stderr tail. A thrown error fails only its task (the answer is
// {"requestId": ..., "error": "..."}, the stack goes to stderr); the process stays up.

/** @typedef {{ output: string } | { children: { input: string, params?: Record<string, unknown> }[] }} Answer */

/**
 * Answers requests from stdin with `handle(request)` until stdin ends.
 * @param {(request: Record<string, any>) => string | Answer | Promise<string | Answer>} handle
 */
export function serve(handle) {
  for (const method of ["log", "info", "debug"]) console[method] = console.error;
  const queue = [];
  let buffer = "";
  let running = false;

  const pump = async () => {
    if (running) return;
    running = true;
    while (queue.length > 0) await answer(queue.shift());
    running = false;
  };

  const answer = async (line) => {
    const request = JSON.parse(line);
    const { requestId, ...rest } = request;
    let reply;
    try {
      reply = asAnswer(await handle(rest));
    } catch (err) {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      if (requestId === undefined) {
        process.exitCode = 1;
        return;
      }
      reply = { error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
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
      if (line !== "") queue.push(line);
      newline = buffer.indexOf("\n");
    }
    void pump();
  });
  process.stdin.on("end", () => {
    const last = buffer.trim();
    buffer = "";
    if (last !== "") queue.push(last);
    void pump();
  });
}

function asAnswer(result) {
  if (typeof result === "string") return { output: result };
  if (result !== null && typeof result === "object" && ("output" in result || "children" in result)) return result;
  throw new TypeError(`the handler returned ${JSON.stringify(result)}: return an output file name, or an object with output or children`);
}
