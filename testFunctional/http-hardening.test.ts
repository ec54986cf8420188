import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { getTask, mapLimit, startEmbeddedApp, submit, waitUntil, type EmbeddedApp } from "./helpers.js";
import { storedBlobKeys } from "./stored-blobs.js";

/*
 * Regression tests against the real app for requests a client gets wrong, or a web page sends on
 * its own: each is answered 4xx naming the field (never a 500, never a hang), runs no action it
 * should not, and leaves nothing under the data dir's blobs/.
 */

const MAX_BODY = 200_000;
const ALLOWED_ORIGIN = "https://app.example.com";
const FOREIGN_ORIGIN = "https://evil.example";

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json(): { error?: string; field?: string; id?: string; status?: string; items?: { id: string }[] };
}

/**
 * One request over a connection of its own, the body written as `chunks` (chunked unless a
 * content-length header is given). Resolves on the answer, even one sent before the body was read.
 */
function request(
  app: EmbeddedApp,
  method: string,
  target: string,
  opts: { headers?: Record<string, string>; chunks?: (string | Buffer)[] } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request({ host: "127.0.0.1", port: app.port, method, path: target, headers: opts.headers, agent: false }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(parts).toString();
        req.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) as ReturnType<Answer["json"]> });
      });
    });
    // Writing the rest of a body the server refused early may fail; the answer is what counts.
    req.on("error", (err) => {
      if (!answered) reject(err);
    });
    for (const chunk of opts.chunks ?? []) req.write(chunk);
    req.end();
  });
}

/** A multipart form as a browser or curl -F sends it. */
function multipart(parts: Array<[name: string, value: string | Buffer, filename?: string]>): { contentType: string; body: Buffer } {
  const boundary = "----docqTestBoundary7MA4YWxkTrZu0gW";
  const pieces: Buffer[] = [];
  for (const [name, value, filename] of parts) {
    const disposition = `form-data; name="${name}"${filename === undefined ? "" : `; filename="${filename}"`}`;
    const type = filename === undefined ? "" : "Content-Type: application/octet-stream\r\n";
    pieces.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${type}\r\n`),
      Buffer.from(value),
      Buffer.from("\r\n"),
    );
  }
  pieces.push(Buffer.from(`--${boundary}--\r\n`));
  return { contentType: `multipart/form-data; boundary=${boundary}`, body: Buffer.concat(pieces) };
}

/** `buffer` in pieces of `size`, as a chunked upload sends it. */
function pieces(buffer: Buffer, size = 16 * 1024): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buffer.length; i += size) out.push(buffer.subarray(i, i + size));
  return out;
}

/**
 * Writes `payload` in one write (in the packet of the headers), optionally half-closes, and answers what came
 * back once the server closed.
 */
function rawExchange(app: EmbeddedApp, payload: string, opts: { end: boolean }): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(app.port, "127.0.0.1", () => {
      socket.write(payload);
      if (opts.end) socket.end();
    });
    let text = "";
    socket.on("data", (d: Buffer) => (text += d.toString()));
    socket.on("error", () => undefined);
    socket.on("close", () => resolve(text));
  });
}

async function taskIds(app: EmbeddedApp): Promise<string[]> {
  const res = await fetch(`${app.url}/api/tasks?limit=1000`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { items: { id: string }[] }).items.map((t) => t.id);
}

/** Everything under blobs/ (folders too), as paths relative to it, and the small documents' rows (their keys); not the rows' own file. */
async function blobEntries(app: EmbeddedApp): Promise<string[]> {
  const root = path.join(app.dataDir, "blobs");
  const entries = (await fs.readdir(root, { recursive: true }).catch(() => [] as string[])).map(String);
  return [...entries.filter((entry) => entry.split(path.sep)[0] !== ".small"), ...(await storedBlobKeys(app.dataDir))].sort();
}

/**
 * Waits until blobs/ holds nothing but the folders of tasks that exist (no file, no empty folder
 * of a refused request) and nothing in blobs/.tmp, then checks no task was added. Fails naming
 * what stayed.
 */
async function assertNothingLeft(app: EmbeddedApp, tasksBefore: readonly string[], what: string): Promise<void> {
  let strays: string[] = [];
  await waitUntil(
    `nothing left on disk after ${what}`,
    async () => {
      const known = new Set(await taskIds(app));
      strays = (await blobEntries(app)).filter((entry) => entry !== ".tmp" && !known.has(entry.split(path.sep)[0]!));
      return strays.length === 0;
    },
    10_000,
    50,
  ).catch((err: unknown) => {
    throw new Error(`${String(err)}; left: ${JSON.stringify(strays)}`);
  });
  assert.deepEqual(await taskIds(app), [...tasksBefore], `${what}: no task was created`);
}

async function expectRefusal(
  app: EmbeddedApp,
  what: string,
  send: () => Promise<Answer>,
  status: number,
  field: string,
  pattern?: RegExp,
): Promise<Answer> {
  const before = await taskIds(app);
  const answer = await send();
  assert.equal(answer.status, status, `${what}: ${answer.text}`);
  const body = answer.json();
  assert.equal(body.field, field, `${what}: ${answer.text}`);
  if (pattern !== undefined) assert.match(body.error ?? "", pattern, what);
  await assertNothingLeft(app, before, what);
  return answer;
}

describe("HTTP hardening (embedded app)", () => {
  let app: EmbeddedApp;
  const doc = Buffer.alloc(50_000, "d");

  before(async () => {
    app = await startEmbeddedApp({ slots: 1, configYaml: `maxBodyBytes: ${MAX_BODY}\nhttp:\n  corsOrigins: ["${ALLOWED_ORIGIN}"]\n` });
  });
  after(async () => {
    await app?.stop();
  });

  describe("a refused create leaves nothing on disk", () => {
    const form = (parts: Parameters<typeof multipart>[0]) => () => {
      const { contentType, body } = multipart(parts);
      return request(app, "POST", "/api/tasks", {
        headers: { "content-type": contentType, "content-length": String(body.length) },
        chunks: [body],
      });
    };

    it("when the fields after the file are bad", async () => {
      await expectRefusal(
        app,
        "priority 999",
        form([
          ["file", doc, "1mb.bin"],
          ["priority", "999"],
          ["job", "noop"],
        ]),
        400,
        "priority",
        /^priority: /,
      );
      await expectRefusal(
        app,
        "params not JSON",
        form([
          ["file", doc, "d.bin"],
          ["job", "noop"],
          ["params", "{nope"],
        ]),
        400,
        "params",
      );
      await expectRefusal(
        app,
        "params against the job's schema",
        form([
          ["file", doc, "d.bin"],
          ["job", "sleep"],
          ["params", "{}"],
        ]),
        400,
        "params",
        /param "ms" is required/,
      );
      await expectRefusal(
        app,
        "an unknown job",
        form([
          ["file", doc, "d.bin"],
          ["job", "nosuchjob"],
        ]),
        400,
        "job",
        /unknown job/,
      );
      await expectRefusal(app, "no job", form([["file", doc, "d.bin"]]), 400, "job");
      await expectRefusal(
        app,
        "a name over 500 characters",
        form([
          ["file", doc, "d.bin"],
          ["job", "noop"],
          ["name", "n".repeat(501)],
        ]),
        400,
        "name",
      );
      const many = Array.from({ length: 101 }, (_, i): [string, string] => [`f${i}`, "v"]);
      await expectRefusal(
        app,
        "too many fields",
        form([["file", doc, "d.bin"], ["job", "noop"], ...many]),
        400,
        "body",
        /more than 100 fields/,
      );
      await expectRefusal(
        app,
        "a second file",
        form([
          ["file", doc, "d.bin"],
          ["job", "noop"],
          ["file", doc, "e.bin"],
        ]),
        400,
        "file",
        /more than one file/,
      );
      await expectRefusal(
        app,
        "a file in another field",
        form([
          ["job", "noop"],
          ["attachment", doc, "a.bin"],
          ["file", doc, "d.bin"],
        ]),
        400,
        "attachment",
      );
      await expectRefusal(
        app,
        "a field given twice",
        form([
          ["job", "noop"],
          ["file", doc, "d.bin"],
          ["job", "wordcount"],
        ]),
        400,
        "job",
        /given twice/,
      );
    });

    it("when a multipart body over the limit is sent chunked (no empty folder)", async () => {
      const { contentType, body } = multipart([
        ["job", "noop"],
        ["file", Buffer.alloc(MAX_BODY + 50_000, "x"), "big.bin"],
        ["name", "after"],
      ]);
      await expectRefusal(
        app,
        "a chunked form over the limit",
        () => request(app, "POST", "/api/tasks", { headers: { "content-type": contentType }, chunks: pieces(body) }),
        413,
        "body",
        /larger than the limit/,
      );
    });

    it("when a raw body is refused, before or while it is read", async () => {
      const raw =
        (query: string, chunks: Buffer[], headers: Record<string, string> = {}) =>
        () =>
          request(app, "POST", `/api/tasks?${query}`, { headers: { "content-type": "application/octet-stream", ...headers }, chunks });
      await expectRefusal(app, "raw: priority 999", raw("job=noop&priority=999", [doc]), 400, "priority");
      await expectRefusal(app, "raw: unknown job", raw("job=nosuchjob", [doc]), 400, "job");
      await expectRefusal(app, "raw: chunked over the limit", raw("job=noop", pieces(Buffer.alloc(MAX_BODY + 50_000, "y"))), 413, "body");
      await expectRefusal(app, "raw: empty", raw("job=noop", [], { "content-length": "0" }), 400, "body", /missing body/);
    });
  });

  describe("a malformed request ends, cleans up, and the app still serves", () => {
    const head = (contentType: string, framing: string) =>
      `POST /api/tasks?job=noop HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${contentType}\r\n${framing}\r\n`;
    const { contentType: formType, body: formBody } = multipart([
      ["job", "noop"],
      ["file", "hello world", "h.txt"],
    ]);
    const variants: Array<[string, string, boolean]> = [
      ["a bad chunk size first", `${head("application/octet-stream", "Transfer-Encoding: chunked\r\n")}zz\r\nhello\r\n0\r\n\r\n`, false],
      [
        "a bad chunk size after a good chunk",
        `${head("application/octet-stream", "Transfer-Encoding: chunked\r\n")}5\r\nhello\r\nzz\r\nxx\r\n`,
        false,
      ],
      ["a Content-Length bigger than the body, then close", `${head("application/octet-stream", "Content-Length: 1000\r\n")}hello`, true],
      [
        "a form with a bad chunk size",
        `${head(formType, "Transfer-Encoding: chunked\r\n")}${formBody.length.toString(16)}\r\n${formBody.toString()}\r\nzz\r\n`,
        false,
      ],
      [
        "a form with a Content-Length that lies, then close",
        `${head(formType, `Content-Length: ${formBody.length + 500}\r\n`)}${formBody.toString()}`,
        true,
      ],
    ];

    for (const [what, payload, end] of variants) {
      it(`on ${what}`, async () => {
        const before = await taskIds(app);
        // Several at once: the body fails while the headers are being handled, before the action listens.
        const answers = await Promise.all(Array.from({ length: 8 }, () => rawExchange(app, payload, { end })));
        for (const answer of answers) assert.doesNotMatch(answer, /^HTTP\/1\.1 (5\d\d|201)/, `${what}: ${answer}`);
        await assertNothingLeft(app, before, what);
        assert.equal((await fetch(`${app.url}/api/health`)).status, 200);
      });
    }

    it("through a loop of malformed requests, then accepts a good one", async () => {
      const before = await taskIds(app);
      await mapLimit(
        Array.from({ length: 200 }, (_, i) => variants[i % variants.length]!),
        10,
        ([, payload, end]) => rawExchange(app, payload, { end }),
      );
      await assertNothingLeft(app, before, "a loop of malformed requests");
      const id = await submit(app.url, "still here", { job: "noop" });
      assert.equal((await getTask(app.url, id)).id, id);
    });
  });

  describe("CORS", () => {
    async function sleepingTask(): Promise<string> {
      const id = await submit(app.url, "slow", { job: "sleep", params: { ms: 60_000 } });
      await waitUntil("the sleep task to start", async () => (await getTask(app.url, id)).status === "work");
      return id;
    }

    it("a preflight answers CORS headers only, for an allowed origin only, and never runs the action", async () => {
      const id = await sleepingTask();
      for (const origin of [FOREIGN_ORIGIN, ALLOWED_ORIGIN, undefined]) {
        for (let i = 0; i < 2; i++) {
          const answer = await request(app, "OPTIONS", `/api/tasks/${id}`, {
            headers: { "access-control-request-method": "DELETE", ...(origin === undefined ? {} : { origin }) },
          });
          assert.equal(answer.status, 204, answer.text);
          assert.equal(answer.text, "");
          if (origin === ALLOWED_ORIGIN) {
            assert.equal(answer.headers["access-control-allow-origin"], ALLOWED_ORIGIN);
            assert.match(String(answer.headers["access-control-allow-methods"]), /DELETE/);
          } else {
            assert.equal(answer.headers["access-control-allow-origin"], undefined, `no CORS for ${origin}`);
            assert.equal(answer.headers["access-control-allow-methods"], undefined);
          }
        }
      }
      assert.equal((await getTask(app.url, id)).status, "work", "the preflights canceled nothing");
      // Cleaned up the ordinary way (no Origin): cancel, then delete.
      assert.equal((await request(app, "DELETE", `/api/tasks/${id}`)).status, 200);
      assert.equal((await request(app, "DELETE", `/api/tasks/${id}`)).status, 200);
    });

    it("a preflight of a POST with a body creates nothing, and an OPTIONS without one lists nothing", async () => {
      const before = await taskIds(app);
      const post = await request(app, "OPTIONS", "/api/tasks?job=noop", {
        headers: { origin: FOREIGN_ORIGIN, "access-control-request-method": "POST", "content-type": "application/octet-stream" },
        chunks: [doc],
      });
      assert.equal(post.status, 204, post.text);
      const plain = await request(app, "OPTIONS", "/api/tasks");
      assert.equal(plain.status, 204);
      assert.equal(plain.text, "", "no task list");
      for (const target of ["/api/stats", "/metrics", "/api/nothing-here"])
        assert.equal((await request(app, "OPTIONS", target)).status, 204, target);
      await assertNothingLeft(app, before, "preflights");
    });

    it("a state-changing request from a foreign origin is refused with 403 naming it", async () => {
      const id = await sleepingTask();
      await expectRefusal(
        app,
        "a cross-origin text/plain form POST",
        () =>
          request(app, "POST", "/api/tasks?job=noop", {
            headers: { origin: FOREIGN_ORIGIN, "content-type": "text/plain" },
            chunks: ["a document"],
          }),
        403,
        "origin",
        /evil\.example/,
      );
      const { contentType, body } = multipart([
        ["job", "noop"],
        ["file", doc, "d.bin"],
      ]);
      await expectRefusal(
        app,
        "a cross-origin multipart POST",
        () => request(app, "POST", "/api/tasks", { headers: { origin: FOREIGN_ORIGIN, "content-type": contentType }, chunks: [body] }),
        403,
        "origin",
      );
      await expectRefusal(
        app,
        "an opaque origin",
        () => request(app, "POST", "/api/tasks?job=noop", { headers: { origin: "null", "content-type": "text/plain" }, chunks: ["x"] }),
        403,
        "origin",
      );
      for (const method of ["DELETE", "PATCH", "PUT"]) {
        const answer = await request(app, method, `/api/tasks/${id}`, { headers: { origin: FOREIGN_ORIGIN } });
        assert.equal(answer.status, 403, `${method}: ${answer.text}`);
        assert.equal(answer.json().field, "origin");
        assert.match(answer.json().error ?? "", /"https:\/\/evil\.example"/);
      }
      assert.equal((await getTask(app.url, id)).status, "work", "the cross-origin DELETE canceled nothing");
      // Reading stays open to any origin (the browser keeps the answer from a foreign page: no CORS header).
      const read = await request(app, "GET", `/api/tasks/${id}`, { headers: { origin: FOREIGN_ORIGIN } });
      assert.equal(read.status, 200);
      assert.equal(read.headers["access-control-allow-origin"], undefined);
      assert.equal((await request(app, "DELETE", `/api/tasks/${id}`)).status, 200);
    });

    it("an allowed origin, the app's own origin and a client without Origin may create and delete", async () => {
      for (const headers of [
        { origin: ALLOWED_ORIGIN },
        { origin: `http://127.0.0.1:${app.port}` },
        { origin: `http://localhost:${app.port}`, host: `localhost:${app.port}` },
        {},
      ] as Record<string, string>[]) {
        const created = await request(app, "POST", "/api/tasks?job=noop", {
          headers: { ...headers, "content-type": "text/plain" },
          chunks: ["a document"],
        });
        assert.equal(created.status, 201, `${JSON.stringify(headers)}: ${created.text}`);
        assert.equal(created.headers["access-control-allow-origin"], headers.origin === ALLOWED_ORIGIN ? ALLOWED_ORIGIN : undefined);
        const id = created.json().id!;
        await waitUntil("the noop task to finish", async () => (await getTask(app.url, id)).status === "output");
        const deleted = await request(app, "DELETE", `/api/tasks/${id}`, { headers });
        assert.equal(deleted.status, 200, deleted.text);
        assert.deepEqual(deleted.json(), { id, status: "deleted" });
      }
    });
  });

  describe("no silent coercion", () => {
    const list = (query: string) => () => request(app, "GET", `/api/tasks?${query}`);

    it("refuses list filters given as arrays, objects or repeated, naming the field", async () => {
      for (const field of ["status", "user", "job", "parentId", "cursor"]) {
        for (const query of [`${field}[]=output`, `${field}=output&${field}=error`, `${field}[a]=x`]) {
          await expectRefusal(app, query, list(query), 400, field, new RegExp(`^${field}: `));
        }
      }
      await expectRefusal(app, "status=bogus", list("status=bogus"), 400, "status");
    });

    it("refuses a limit that is not plain digits in 1..1000, naming limit", async () => {
      for (const limit of ["1e3", "1000.0", "0", "1001", "-1", "0x10", "%201", ""]) {
        await expectRefusal(app, `limit=${limit}`, list(`limit=${limit}`), 400, "limit", /^limit: must be an integer 1\.\.1000/);
      }
      await expectRefusal(app, "limit[]=1", list("limit[]=1"), 400, "limit");
      await expectRefusal(app, "limit=1&limit=2", list("limit=1&limit=2"), 400, "limit");
      assert.equal((await request(app, "GET", "/api/tasks?limit=1000")).status, 200);
      assert.equal((await request(app, "GET", "/api/tasks?limit=1&status=")).status, 200);
    });

    it("refuses create fields given as arrays or objects, naming the field", async () => {
      const raw = (query: string) => () =>
        request(app, "POST", `/api/tasks?${query}`, { headers: { "content-type": "application/octet-stream" }, chunks: ["x"] });
      await expectRefusal(app, "priority[]=7", raw("job=noop&priority[]=7"), 400, "priority", /given once, as text/);
      await expectRefusal(app, "job=a&job=b", raw("job=noop&job=wordcount"), 400, "job");
      await expectRefusal(app, "params[ms]=5", raw("job=sleep&params[ms]=5"), 400, "params");
    });

    it("refuses a __proto__, constructor or prototype key in params, from the query or a form", async () => {
      const raw = (params: string) => () =>
        request(app, "POST", `/api/tasks?job=noop&params=${encodeURIComponent(params)}`, {
          headers: { "content-type": "application/octet-stream" },
          chunks: ["x"],
        });
      await expectRefusal(app, "params __proto__", raw('{"__proto__":{"polluted":true}}'), 400, "params", /__proto__/);
      await expectRefusal(
        app,
        "params deep __proto__",
        raw('{"a":[{"b":{"__proto__":{}}}]}'),
        400,
        "params",
        /params\.a\[0\]\.b\.__proto__/,
      );
      await expectRefusal(
        app,
        "params constructor.prototype",
        raw('{"constructor":{"prototype":{"polluted":true}}}'),
        400,
        "params",
        /constructor/,
      );
      const { contentType, body } = multipart([
        ["file", doc, "d.bin"],
        ["job", "noop"],
        ["params", '{"x":{"__proto__":{"polluted":true}}}'],
      ]);
      await expectRefusal(
        app,
        "form params __proto__",
        () => request(app, "POST", "/api/tasks", { headers: { "content-type": contentType }, chunks: [body] }),
        400,
        "params",
        /__proto__/,
      );
    });

    it("refuses a form field over 1 MiB instead of truncating it, naming the field", async () => {
      // Chunked, so the declared length cannot refuse it first.
      for (const parts of [
        [
          ["job", "noop"],
          ["params", `{"pad":"${"p".repeat(1024 * 1024)}"}`],
          ["file", doc, "d.bin"],
        ],
        [
          ["job", "noop"],
          ["file", doc, "d.bin"],
          ["name", "n".repeat(1024 * 1024 + 1)],
        ],
      ] as Parameters<typeof multipart>[0][]) {
        const { contentType, body } = multipart(parts);
        const field = parts[1]![0] === "file" ? parts[2]![0] : parts[1]![0];
        await expectRefusal(
          app,
          `a ${field} field over 1 MiB`,
          () => request(app, "POST", "/api/tasks", { headers: { "content-type": contentType }, chunks: pieces(body) }),
          400,
          field,
          /longer than 1048576 bytes/,
        );
      }
    });
  });
});
