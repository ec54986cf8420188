import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { acquireQueuerLock } from "./queuer-lock.js";
import { SqliteQueuerLock, sqliteQueuerLock } from "./sqlite-queuer-lock.js";

let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-lock-test-"));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe("SqliteQueuerLock", () => {
  it("lets one holder at a time, and the next one in after release", async () => {
    const file = path.join(dir, "a.lock");
    const first = SqliteQueuerLock.tryAcquire(file);
    assert.ok(first);
    assert.equal(SqliteQueuerLock.tryAcquire(file), null);
    const waiting = acquireQueuerLock(sqliteQueuerLock(file), { pollMs: 20 });
    await new Promise((r) => setTimeout(r, 60));
    first.releaseNow();
    const second = await waiting;
    assert.equal(SqliteQueuerLock.tryAcquire(file), null);
    await second.release();
  });

  it("is freed when the holding process is killed with SIGKILL", async () => {
    const file = path.join(dir, "b.lock");
    const module = fileURLToPath(new URL("./sqlite-queuer-lock.ts", import.meta.url));
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        `import { SqliteQueuerLock } from ${JSON.stringify(module)}; SqliteQueuerLock.tryAcquire(${JSON.stringify(file)}); console.log("held"); setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    assert.equal(SqliteQueuerLock.tryAcquire(file), null, "held by the child");
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const lock = SqliteQueuerLock.tryAcquire(file);
    assert.ok(lock, "free once the holder is dead");
    lock.releaseNow();
  });
});
