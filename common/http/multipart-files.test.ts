import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import busboy from "busboy";
import { multipartBody } from "../../bench/multipart-body.js";
import { multipartFromFiles } from "./multipart-files.js";

interface ParsedForm {
  fields: Array<[string, string]>;
  files: Array<{ field: string; filename: string; bytes: Buffer }>;
}

/** Reads a form back with the parser the server uses. */
async function parse(contentType: string, body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<ParsedForm> {
  const parsed: ParsedForm = { fields: [], files: [] };
  const form = busboy({ headers: { "content-type": contentType } });
  const done = new Promise<void>((resolve, reject) => {
    form.on("field", (name, value) => parsed.fields.push([name, value]));
    form.on("file", (field, file, info) => {
      const chunks: Buffer[] = [];
      file.on("data", (chunk: Buffer) => chunks.push(chunk));
      file.on("end", () => parsed.files.push({ field, filename: info.filename, bytes: Buffer.concat(chunks) }));
    });
    form.on("close", resolve);
    form.on("error", reject);
  });
  for await (const chunk of body) form.write(chunk);
  form.end();
  await done;
  return parsed;
}

describe("multipartFromFiles", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-multipart-test-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("streams the fields, then each file whole, saying when each was taken", async () => {
    const contents = [Buffer.from('a "quoted"\r\nline\n'), Buffer.alloc(300_000, 7), Buffer.from("last")];
    const names = ['first "one".txt', "big.bin", "c"];
    const files = await Promise.all(
      contents.map(async (bytes, i) => {
        const file = path.join(dir, names[i]!);
        await fs.writeFile(file, bytes);
        return file;
      }),
    );
    const sent: number[] = [];
    const form = multipartFromFiles(
      [
        ["job", "wordcount"],
        ["tasks", '[{"name":"x"},{},{}]'],
      ],
      "file",
      files,
      (i) => sent.push(i),
    );
    const chunksSeen: number[] = [];
    async function* watched(): AsyncGenerator<Uint8Array> {
      for await (const chunk of form.body) {
        chunksSeen.push(sent.length);
        yield chunk as Uint8Array;
      }
    }
    const parsed = await parse(form.contentType, watched());
    assert.deepEqual(parsed.fields, [
      ["job", "wordcount"],
      ["tasks", '[{"name":"x"},{},{}]'],
    ]);
    // Quotes in a file name are escaped as browsers do (the parser does not undo it).
    assert.deepEqual(
      parsed.files.map((f) => [f.field, f.filename]),
      [
        ["file", "first %22one%22.txt"],
        ["file", "big.bin"],
        ["file", "c"],
      ],
    );
    parsed.files.forEach((f, i) => assert.ok(f.bytes.equals(contents[i]!), `file ${i} as written`));
    assert.deepEqual(sent, [0, 1, 2]);
    // The big file came in several chunks, all before it was said to be sent.
    assert.ok(chunksSeen.filter((n) => n === 1).length > 2, `chunks per file: ${chunksSeen.join(",")}`);
  });

  it("writes the same parts as the bench's forms built in memory", async () => {
    const file = path.join(dir, "doc.txt");
    await fs.writeFile(file, "some text\n");
    const streamed = multipartFromFiles([["job", "noop"]], "file", [file], () => undefined);
    const built = multipartBody([["job", "noop"]], [{ field: "file", filename: "doc.txt", bytes: "some text\n" }]);
    const fromFiles = await parse(streamed.contentType, streamed.body);
    const fromMemory = await parse(built.contentType, [built.body]);
    assert.deepEqual(fromFiles, fromMemory);
  });
});
