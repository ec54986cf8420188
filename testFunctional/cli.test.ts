import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { REPO, result, startEmbeddedApp, tempDir, waitAllFinal, type EmbeddedApp } from "./helpers.js";

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
    const { stdout: waited } = await docq(
      "submit",
      "doc.txt",
      "--job",
      "pages",
      "--priority",
      "80",
      "--name",
      "cli-doc",
      "--wait",
      "-o",
      "-",
    );
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

  it("submits several files through the batch route, printing their ids in file order", async () => {
    const names = Array.from({ length: 12 }, (_, i) => `many-${i}.txt`);
    for (const [i, name] of names.entries()) await fs.writeFile(path.join(dir, name), `${"word ".repeat(i + 1)}\n`);
    const { stdout } = await docq("submit", ...names, "--job", "wordcount", "--priority", "60");
    const ids = stdout.trim().split("\n");
    assert.equal(ids.length, names.length);
    const tasks = await waitAllFinal(app.url, ids);
    for (const [i, task] of tasks.entries()) {
      assert.deepEqual([task.name, task.priority, task.status], [names[i], 60, "output"]);
      assert.deepEqual(JSON.parse(await result(app.url, task.id)), { lines: 1, words: i + 1, bytes: 5 * (i + 1) + 1 });
    }
    await assert.rejects(docq("submit", names[0]!, names[1]!, "--job", "wordcount", "--wait"), /--wait and --output take one file/);
  });

  it("says what is wrong and exits non-zero", async () => {
    await assert.rejects(
      docq("submit", "missing.txt", "--job", "wordcount"),
      (err: { code?: number; stderr?: string }) => err.code === 1 && /missing\.txt: no such file/.test(err.stderr ?? ""),
    );
    await fs.writeFile(path.join(dir, "x.txt"), "x");
    await assert.rejects(docq("submit", "x.txt", "--job", "nosuchjob"), (err: { stderr?: string }) =>
      /400 unknown job "nosuchjob".*\(field job\)/.test(err.stderr ?? ""),
    );
    await assert.rejects(
      docq("submit", "x.txt", "--job", "wordcount", "--priority", "101"),
      (err: { code?: number; stderr?: string }) => err.code !== 0 && /must be an integer 0\.\.100/.test(err.stderr ?? ""),
    );
    await assert.rejects(
      run(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", "http://127.0.0.1:1", "stats"]),
      (err: { stderr?: string }) => /cannot reach docq/.test(err.stderr ?? ""),
    );
  });
});

describe("the docq CLI with API keys", () => {
  const ADMIN = "cli-admin-key-0123456789";
  let app: EmbeddedApp;
  let dir: string;
  type Failure = { code?: number; stdout?: string; stderr?: string };
  /** The CLI against the app with keys on; `env` adds to an environment that holds no DOCQ_KEY of its own. */
  const docq = (args: string[], env: Record<string, string> = {}) => {
    const { DOCQ_KEY: _ignored, ...inherited } = process.env;
    return run(process.execPath, [path.join(REPO, "bin/docq.js"), "--url", app.url, ...args], { cwd: dir, env: { ...inherited, ...env } });
  };
  const refused = (status: number, pattern: RegExp) => (err: Failure) => {
    assert.equal(err.code, 1, `exit code of a ${status}: ${err.stderr}`);
    assert.match(err.stderr ?? "", new RegExp(`: ${status} `));
    assert.match(err.stderr ?? "", pattern);
    return true;
  };
  const created = (stdout: string) => {
    assert.match(stdout, /shown this once/);
    return { id: /^id:\s+(key-[0-9A-Z]{26})$/m.exec(stdout)?.[1], key: /^key:\s+(\S+)$/m.exec(stdout)?.[1] };
  };

  before(async () => {
    app = await startEmbeddedApp({ slots: 2, env: { DOCQ_ADMIN_KEY: ADMIN } });
    dir = await tempDir("cli-keys");
    await fs.writeFile(path.join(dir, "doc.txt"), "first line\n\nsecond line\n");
  });
  after(async () => {
    await app?.stop();
  });

  it("says 401 with the server's message without a key or with an unknown one, and never echoes a malformed key", async () => {
    await assert.rejects(docq(["stats"]), refused(401, /no Authorization header.*pass --key or set DOCQ_KEY/));
    await assert.rejects(docq(["submit", "doc.txt", "--job", "wordcount"]), refused(401, /POST \/api\/tasks.*no Authorization header/));
    await assert.rejects(docq(["--key", "not-a-key-docq-made", "keys", "ls"]), refused(401, /unknown or revoked key/));
    await assert.rejects(docq(["stats"], { DOCQ_KEY: "not-a-key-docq-made" }), refused(401, /unknown or revoked key/));
    await assert.rejects(docq(["stats"], { DOCQ_KEY: "two words" }), (err: Failure) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? "", /DOCQ_KEY.*printable ASCII without spaces/);
      assert.doesNotMatch(err.stderr ?? "", /two words/);
      return true;
    });
  });

  it("makes, lists and revokes keys with --key and DOCQ_KEY; a user key submits, waits, fetches, and meets its limits; usage", async () => {
    // The admin key by --key, which wins over a DOCQ_KEY in the environment.
    const alice = created(
      (
        await docq(["--key", ADMIN, "keys", "create", "alice", "--max-priority", "80", "--max-per-day", "2", "--no-offload"], {
          DOCQ_KEY: "not-a-key-docq-made",
        })
      ).stdout,
    );
    assert.ok(alice.id !== undefined && alice.key !== undefined, "keys create prints the id and the key");
    assert.match((await docq(["--key", ADMIN, "keys", "create", "alice"])).stdout, /^limits:\s+unlimited$/m);
    // The admin key by DOCQ_KEY.
    const asAdmin = { DOCQ_KEY: ADMIN };
    const bob = created(
      (await docq(["keys", "create", "bob", "--max-queued", "1000", "--max-bytes-per-day", "10737418240"], asAdmin)).stdout,
    );
    assert.ok(bob.id !== undefined && bob.key !== undefined);
    assert.notEqual(alice.key, bob.key);

    const listed = (await docq(["keys", "ls"], asAdmin)).stdout;
    assert.match(listed, /^ID\s+USER\s+LIMITS\s+CREATED\s+REVOKED$/m);
    assert.match(
      listed,
      new RegExp(`^${alice.id}\\s+alice\\s+maxPriority=80 maxPerDay=2 no-offload\\s+\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}\\s+-$`, "m"),
    );
    assert.match(listed, new RegExp(`^${bob.id}\\s+bob\\s+maxQueued=1000 maxBytesPerDay=10737418240\\s+\\S+ \\S+\\s+-$`, "m"));
    assert.ok(!listed.includes(alice.key!) && !listed.includes(bob.key!), "keys ls never shows a key");

    // A user key, by --key: submit with --wait polls and downloads the result with it.
    const { stdout: waited } = await docq([
      "--key",
      alice.key!,
      "submit",
      "doc.txt",
      "--job",
      "pages",
      "--priority",
      "80",
      "--wait",
      "-o",
      "-",
    ]);
    assert.equal(waited, "FIRST LINE\nSECOND LINE\n");
    // And by DOCQ_KEY: submit, wait, result, status.
    const asAlice = { DOCQ_KEY: alice.key! };
    const id = (await docq(["submit", "doc.txt", "--job", "wordcount"], asAlice)).stdout.trim();
    assert.match(id, /^local-[0-9A-Z]{26}$/);
    assert.match((await docq(["wait", id], asAlice)).stdout, /output/);
    await docq(["result", id, "-o", "count.json"], asAlice);
    assert.deepEqual(JSON.parse(await fs.readFile(path.join(dir, "count.json"), "utf8")), { lines: 3, words: 4, bytes: 24 });
    assert.equal((JSON.parse((await docq(["status", id], asAlice)).stdout) as { user: string }).user, "alice");

    // A user key's limits and rights: 403 with the server's message, 429 with its Retry-After.
    await assert.rejects(docq(["keys", "ls"], asAlice), refused(403, /listing keys needs the admin key/));
    await assert.rejects(
      docq(["submit", "doc.txt", "--job", "wordcount", "--priority", "90"], asAlice),
      refused(403, /above this key's maxPriority of 80/),
    );
    await assert.rejects(
      docq(["submit", "doc.txt", "--job", "wordcount"], asAlice),
      refused(429, /maxPerDay: alice submitted 2 tasks today.*\(retry after \d+ s\)/),
    );
    await docq(["--key", bob.key!, "submit", "doc.txt", "--job", "wordcount", "--wait"]);

    // Usage: the admin sees every user; a user key its own only.
    const usage = (await docq(["usage"], asAdmin)).stdout;
    assert.match(usage, /^user\s+day\s+submitted\s+output\s+error\s+canceled\s+runMs\s+bytesIn\s+bytesOut\s+ranElsewhere$/m);
    assert.match(usage, /^alice\s+\d{4}-\d{2}-\d{2}\s+2\s+2\s+0\s+0\s+\d+\s+48\s+\d+\s+0$/m);
    assert.match(usage, /^bob\s+\d{4}-\d{2}-\d{2}\s+1\s+1\s+0\s+0\s+\d+\s+24\s+\d+\s+0$/m);
    const own = (await docq(["usage", "--user", "alice"], asAlice)).stdout;
    assert.match(own, /^alice\s/m);
    assert.doesNotMatch(own, /^bob\s/m);
    await assert.rejects(docq(["usage", "--user", "bob"], asAlice), refused(403, /usage of alice only/));
    assert.match((await docq(["usage", "--from", "2000-01-01", "--to", "2000-01-02"], asAdmin)).stdout, /no usage in that range/);
    await assert.rejects(
      docq(["usage", "--from", "yesterday"], asAdmin),
      (err: Failure) => err.code !== 0 && /must be a day YYYY-MM-DD/.test(err.stderr ?? ""),
    );

    // Revoked: listed with the time, and refused from then on.
    assert.match(
      (await docq(["keys", "revoke", alice.id!], asAdmin)).stdout,
      new RegExp(`^${alice.id} \\(alice\\) revoked at \\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}$`, "m"),
    );
    assert.match(
      (await docq(["keys", "ls"], asAdmin)).stdout,
      new RegExp(`^${alice.id}\\s+alice\\s+.*\\d{2}:\\d{2}:\\d{2}\\s+\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}$`, "m"),
    );
    await assert.rejects(docq(["stats"], asAlice), refused(401, /unknown or revoked key.*refused/));
    await assert.rejects(
      docq(["--key", ADMIN, "keys", "revoke", "key-nosuch"]),
      (err: Failure) => err.code === 1 && /DELETE \/api\/keys\/key-nosuch: 400 /.test(err.stderr ?? ""),
    );
  });
});
