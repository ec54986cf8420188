import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { REPO, startEmbeddedApp, tempDir, type EmbeddedApp } from "./helpers.js";

const run = promisify(execFile);

describe("the docq CLI", () => {
  let app: EmbeddedApp;
  let dir: string;
  const docq = (...args: string[]) => run(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", app.url, ...args], { cwd: dir });

  before(async () => {
    app = await startEmbeddedApp({ slots: 2 });
    dir = await tempDir("cli");
  });
  after(async () => {
    await app?.stop();
  });

  it("submits, waits, fetches the result, lists and cancels", async () => {
    await fs.writeFile(path.join(dir, "doc.txt"), "first line\n\nsecond line\n");
    const { stdout: waited } = await docq("submit", "doc.txt", "--job", "pages", "--priority", "80", "--name", "cli-doc", "--wait", "-o", "-");
    assert.equal(waited, "FIRST LINE\nSECOND LINE\n");

    const { stdout: idLine } = await docq("submit", "doc.txt", "--job", "wordcount");
    const id = idLine.trim();
    assert.match(id, /^local-[0-9A-Z]{26}$/);
    await docq("wait", id);
    await docq("result", id, "-o", "count.json");
    assert.deepEqual(JSON.parse(await fs.readFile(path.join(dir, "count.json"), "utf8")), { lines: 3, words: 4, bytes: 24 });
    const status = JSON.parse((await docq("status", id)).stdout) as { status: string; job: string };
    assert.equal(status.status, "output");

    const { stdout: listed } = await docq("ls", "--job", "pages", "--limit", "5");
    assert.match(listed, /output\s+80\s+pages\s+.*cli-doc/);

    const { stdout: slow } = await docq("submit", "doc.txt", "--job", "sleep", "--params", '{"ms":20000}');
    assert.match((await docq("cancel", slow.trim())).stdout, /canceled/);
    assert.match((await docq("stats")).stdout, /"byStatus"/);
  });

  it("says what is wrong and exits non-zero", async () => {
    await assert.rejects(docq("submit", "missing.txt", "--job", "wordcount"), (err: { code?: number; stderr?: string }) => err.code === 1 && /missing\.txt: no such file/.test(err.stderr ?? ""));
    await fs.writeFile(path.join(dir, "x.txt"), "x");
    await assert.rejects(docq("submit", "x.txt", "--job", "nosuchjob"), (err: { stderr?: string }) => /400 unknown job "nosuchjob".*\(field job\)/.test(err.stderr ?? ""));
    await assert.rejects(docq("submit", "x.txt", "--job", "wordcount", "--priority", "101"), (err: { code?: number; stderr?: string }) => err.code !== 0 && /must be an integer 0\.\.100/.test(err.stderr ?? ""));
    await assert.rejects(run(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", "http://127.0.0.1:1", "stats"]), (err: { stderr?: string }) => /cannot reach docq/.test(err.stderr ?? ""));
  });
});
