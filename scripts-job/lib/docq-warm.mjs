// docq-warm: turn a JavaScript function into a docq job, warm or one-shot.
//
//   import { serve } from "../lib/docq-warm.mjs";
//   serve(async (req) => {          // req: the request (mode, input|inputs, outputDir, params, task)
//     ...                            // write the result under req.outputDir
//     return "result.json";          // or { output: "result.json" } or { children: [{ input: "part-1" }, ...] }
//   });                              // or { outputBytes: buffer }: the output itself (written as a file when docq asks for files)
//                                    // or { children: [{ inputBytes: buffer }, ...] }: each part itself (the same)
//
// With `warm: true` in job.yaml docq starts the script once per worker slot and sends one JSON
// request per line on stdin, each with a "requestId"; serve() calls the handler for each one as it
// arrives and prints the answer with the same requestId as one JSON line on stdout. docq sends one
// request at a time unless job.yaml says `concurrency: N`: then up to N are in flight at once, and
// an async handler runs them side by side (their answers in any order). Whatever the
// module does before serve() (imports, loading a model) happens once per process, not per task.
//
// With `inline: true` as well, a small document comes inside the request line and the output goes
// back inside the answer. The handler then also gets the document's bytes as req.inputBytes (a
// merge: its parts' as req.inputsBytes), and answering { outputBytes } (a split: children with
// inputBytes) spares every file; req.input, req.inputs and req.outputDir still work (made when
// read), so a handler written for files runs unchanged.
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
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";

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

let stdoutCorked = false;

/** Answers written in one turn leave in one write: docq reads them together and fills their slots at once. */
function writeCorked(text) {
  if (!stdoutCorked) {
    stdoutCorked = true;
    process.stdout.cork();
    process.nextTick(() => {
      stdoutCorked = false;
      process.stdout.uncork();
    });
  }
  process.stdout.write(text);
}

/** @typedef {{ output: string } | { children: (({ input: string } | { inputBytes: Uint8Array | string }) & { params?: Record<string, unknown> })[] } | { outputBytes: Uint8Array | string }} Answer */

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
      reply =
        rest.inline === true
          ? await current.run({ requestId }, () => answerInline(handle, rest))
          : fileAnswer(await current.run({ requestId }, () => handle(rest)), rest);
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
    writeCorked(JSON.stringify(requestId === undefined ? reply : { requestId, ...reply }) + "\n");
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

/** The most bytes an inline answer carries (its line, in base64, stays under docq's 4 MB limit of a stdout line). */
const INLINE_OUTPUT_MAX_BYTES = 2 * 1024 * 1024;

/** Folders of this process's own dir for inline requests' files, each free again once its request is answered. */
const freeInlineDirs = [];
let inlineDirsMade = 0;

/**
 * An inline request (job.yaml `inline: true`): its documents come inside the line, its output goes
 * back inside the answer. The handler gets the document's bytes as `inputBytes` (a merge: its
 * parts' as `inputsBytes`) and may answer `{ outputBytes }`: then no file is made at all. `input`
 * (or `inputs`) and `outputDir` are there too, as always, but made only when the handler reads
 * them: the documents written in a folder of this process's own dir (docq made it for this process
 * and removes it when it ends), an empty `out/` beside them. An output file answered there goes
 * back as its bytes. The folder is kept for the next request once its `out/` is empty (making and
 * removing folders costs a disk journal's work per task).
 */
async function answerInline(handle, request) {
  const { inline: _inline, inputBase64, inputsBase64, ...rest } = request;
  let dir = null;
  const folder = () => (dir ??= freeInlineDirs.pop() ?? newInlineDir());
  /** The documents written into the folder, removed again once the request is answered. */
  const written = [];
  const writeOnce = (name, bytes) => {
    const file = path.join(folder(), name);
    if (!written.includes(name)) {
      writeFileSync(file, bytes);
      written.push(name);
    }
    return file;
  };
  const req = { ...rest };
  if (inputBase64 !== undefined) {
    const inputBytes = Buffer.from(inputBase64, "base64");
    req.inputBytes = inputBytes;
    Object.defineProperty(req, "input", { enumerable: true, get: () => writeOnce("input", inputBytes) });
  }
  if (inputsBase64 !== undefined) {
    const inputsBytes = inputsBase64.map((part) => Buffer.from(part, "base64"));
    req.inputsBytes = inputsBytes;
    let inputs = null;
    Object.defineProperty(req, "inputs", {
      enumerable: true,
      get: () => (inputs ??= inputsBytes.map((bytes, i) => writeOnce(`input-${i}`, bytes))),
    });
  }
  Object.defineProperty(req, "outputDir", { enumerable: true, get: () => path.join(folder(), "out") });
  let reusable = false;
  try {
    const reply = inlineReply(await handle(req), dir);
    reusable = true;
    return reply;
  } finally {
    if (dir !== null) releaseInlineDir(dir, reusable, written);
  }
}

/**
 * The answer to an inline request: the output's bytes (`{ outputBytes }`, or a file answered in
 * outputDir, read and removed), or each child's (`inputBytes`, or a file answered in outputDir).
 */
function inlineReply(result, dir) {
  if (isBytesAnswer(result)) {
    const bytes = bytesOf(result.outputBytes);
    checkInlineSize(bytes.byteLength, "the output");
    return { outputBase64: base64Of(bytes) };
  }
  const answer = asAnswer(result);
  if ("output" in answer) {
    const { file, size } = answeredFile(answer.output, dir, "output");
    checkInlineSize(size, "the output");
    const bytes = readFileSync(file);
    unlinkSync(file);
    return { outputBase64: base64Of(bytes) };
  }
  /** Files answered for parts, read once each (one file may be several parts' input) and removed after. */
  const files = new Map();
  let total = 0;
  const children = answer.children.map((child) => {
    let bytes;
    if (child.inputBytes !== undefined) bytes = bytesOf(child.inputBytes);
    else {
      const { file } = answeredFile(child.input, dir, "child input");
      if (!files.has(file)) files.set(file, readFileSync(file));
      bytes = files.get(file);
    }
    total += bytes.byteLength;
    checkInlineSize(total, "the parts together");
    return { inputBase64: base64Of(bytes), ...(child.params === undefined ? {} : { params: child.params }) };
  });
  for (const file of files.keys()) unlinkSync(file);
  return { children };
}

/** A file the handler answered, its path and size: a regular file inside the request's outputDir, else a FatalError. */
function answeredFile(name, dir, what) {
  const outside = () => new FatalError(`the ${what} ${JSON.stringify(name)} is not inside outputDir`);
  if (dir === null) throw outside();
  const outputDir = path.join(dir, "out");
  const file = path.resolve(outputDir, name);
  const relative = path.relative(outputDir, file);
  if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) throw outside();
  const stats = lstatSync(file);
  if (!stats.isFile()) throw new FatalError(`the ${what} ${JSON.stringify(name)} is not a regular file`);
  return { file, size: stats.size };
}

/** A FatalError saying so when `size` bytes (`what`) do not fit an inline answer. */
function checkInlineSize(size, what) {
  if (size <= INLINE_OUTPUT_MAX_BYTES) return;
  throw new FatalError(
    `${what}: ${size} bytes, and an inline answer carries at most ${INLINE_OUTPUT_MAX_BYTES} (drop inline: true from job.yaml for larger outputs)`,
  );
}

function base64Of(bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/** Keeps the folder for the next request when its `out/` is empty, else removes it: the next request never sees this one's output files. */
function releaseInlineDir(dir, reusable, written) {
  for (const name of written) rmSync(path.join(dir, name), { force: true });
  if (reusable && readdirSync(path.join(dir, "out")).length === 0) freeInlineDirs.push(dir);
  else rmSync(dir, { recursive: true, force: true });
}

function newInlineDir() {
  const dir = path.resolve(`inline-${++inlineDirsMade}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, "out"), { recursive: true });
  return dir;
}

/**
 * A handler's answer to a request with files: `{ outputBytes }` becomes the file `output` of its
 * outputDir, a child's `inputBytes` the file `part-<i>`.
 */
function fileAnswer(result, request) {
  if (isBytesAnswer(result)) {
    writeFileSync(path.join(request.outputDir, "output"), bytesOf(result.outputBytes));
    return { output: "output" };
  }
  const answer = asAnswer(result);
  if (!("children" in answer) || !answer.children.some((child) => child.inputBytes !== undefined)) return answer;
  const children = answer.children.map(({ inputBytes, ...child }, i) => {
    if (inputBytes === undefined) return child;
    writeFileSync(path.join(request.outputDir, `part-${i}`), bytesOf(inputBytes));
    return { ...child, input: `part-${i}` };
  });
  return { ...answer, children };
}

function isBytesAnswer(result) {
  return result !== null && typeof result === "object" && "outputBytes" in result;
}

function bytesOf(outputBytes) {
  if (typeof outputBytes === "string") return Buffer.from(outputBytes);
  if (outputBytes instanceof Uint8Array) return outputBytes;
  throw new TypeError(`the handler answered bytes of type ${typeof outputBytes}: give a Buffer, a Uint8Array or a string`);
}

function asAnswer(result) {
  if (typeof result === "string") return { output: result };
  if (result !== null && typeof result === "object" && ("output" in result || "children" in result)) return result;
  throw new TypeError(`the handler returned ${JSON.stringify(result)}: return an output file name, or an object with output or children`);
}
