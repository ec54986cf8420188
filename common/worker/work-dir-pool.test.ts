import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { WorkDirPool } from "./work-dir-pool.js";

describe("WorkDirPool", () => {
  let root = "";
  before(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "docq-work-dir-pool-"));
  });
  after(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("hands back the same dir once emptied of the files it stored, and removes the kept dirs on close", async () => {
    const pool = new WorkDirPool({ root, keep: 2 });
    const a = await pool.acquire();
    await fs.writeFile(path.join(a.outputDir, "result.txt"), "x");
    await pool.release(a, [path.join(a.outputDir, "result.txt")]);
    assert.equal(pool.idleCount, 1);
    const again = await pool.acquire();
    assert.equal(again.path, a.path, "the emptied dir is reused");
    assert.deepEqual(await fs.readdir(again.outputDir), []);
    await pool.release(again);
    await pool.close();
    assert.deepEqual(await fs.readdir(root), [], "close removes every kept dir");
  });

  it("removes, never keeps, a dir with anything left in it (a stray file, a link in place of out/)", async () => {
    const pool = new WorkDirPool({ root, keep: 4 });
    const stray = await pool.acquire();
    await fs.writeFile(path.join(stray.outputDir, "stray"), "x");
    const beside = await pool.acquire();
    await fs.writeFile(path.join(beside.path, "beside"), "x");
    const linked = await pool.acquire();
    await fs.rmdir(linked.outputDir);
    await fs.symlink(os.tmpdir(), linked.outputDir);
    for (const work of [stray, beside, linked]) await pool.release(work);
    assert.equal(pool.idleCount, 0);
    assert.deepEqual(await fs.readdir(root), []);
    await pool.close();
  });

  it("keeps at most `keep` idle dirs, and removes a dir released after close", async () => {
    const pool = new WorkDirPool({ root, keep: 1 });
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    await pool.release(a!);
    await pool.release(b!);
    assert.equal(pool.idleCount, 1);
    assert.equal((await fs.readdir(root)).length, 1);
    const c = await pool.acquire();
    await pool.close();
    await pool.release(c);
    assert.deepEqual(await fs.readdir(root), []);
  });
});
