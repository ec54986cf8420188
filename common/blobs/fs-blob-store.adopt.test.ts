import assert from "node:assert/strict";
import { closeSync, openSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FsBlobStore, type BlobDurability } from "./fs-blob-store.js";

/*
 * FsBlobStore.adopt: a worker's answered file moved into the store by one rename. What it must
 * never do is keep something other than the file the caller opened: the name may have been
 * swapped (by the script that wrote it) between the open and the rename.
 */

for (const durability of ["process", "power"] as BlobDurability[]) {
  describe(`FsBlobStore.adopt, durability ${durability}`, () => {
    let dir: string;
    let work: string;
    let store: FsBlobStore;
    const opened: number[] = [];

    /** A file in the work folder, opened for reading as the worker opens an answered file. */
    async function answered(name: string, content: string): Promise<{ path: string; fd: number }> {
      const file = path.join(work, name);
      await fs.writeFile(file, content);
      const fd = openSync(file, "r");
      opened.push(fd);
      return { path: file, fd };
    }

    beforeEach(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-adopt-test-"));
      work = path.join(dir, "work");
      await fs.mkdir(work);
      store = await FsBlobStore.open(path.join(dir, "blobs"), durability);
    });
    afterEach(async () => {
      for (const fd of opened.splice(0)) closeSync(fd);
      await store.close();
      await fs.rm(dir, { recursive: true, force: true });
    });

    it("moves the file in as the blob: its content under the key, gone from where it was", async () => {
      const source = await answered("out.txt", "the output\n");
      assert.deepEqual(await store.adopt("t1/output-1", source), { size: "the output\n".length });
      assert.equal(await fs.readFile(path.join(dir, "blobs", "t1", "output-1"), "utf8"), "the output\n");
      await assert.rejects(fs.stat(source.path), { code: "ENOENT" });
      // Into an existing task folder as well as a new one.
      const second = await answered("second", "");
      assert.deepEqual(await store.adopt("t1/part-0", second), { size: 0 });
      assert.deepEqual(await store.stat("t1/part-0"), { size: 0 });
    });

    it("replaces a blob already under the key, as put does", async () => {
      const first = await answered("a", "first");
      await store.adopt("t/output", first);
      const second = await answered("b", "second");
      await store.adopt("t/output", second);
      assert.equal(await fs.readFile(path.join(dir, "blobs", "t", "output"), "utf8"), "second");
    });

    it("takes nothing when the file has a second link (it could be changed through it): null, the file left in place", async () => {
      const source = await answered("linked", "doc");
      await fs.link(source.path, path.join(work, "other-name"));
      assert.equal(await store.adopt("t/output", source), null);
      assert.equal(await store.stat("t/output"), null);
      assert.equal(await fs.readFile(source.path, "utf8"), "doc");
    });

    it("a name swapped for another file after the open: that file is moved back, nothing is kept, null", async () => {
      const source = await answered("out", "what was opened");
      await fs.writeFile(path.join(work, "impostor"), "something else");
      await fs.rename(path.join(work, "impostor"), source.path);
      assert.equal(await store.adopt("t/output", source), null);
      assert.equal(await store.stat("t/output"), null);
      assert.equal(await fs.readFile(source.path, "utf8"), "something else");
    });

    it("a name swapped for a link after the open: the link is moved back and the file it points to stays where it is", async () => {
      const outside = path.join(dir, "outside-secret");
      await fs.writeFile(outside, "secret");
      const source = await answered("out", "what was opened");
      await fs.rm(source.path);
      await fs.symlink(outside, source.path);
      assert.equal(await store.adopt("t/output", source), null);
      assert.equal(await store.stat("t/output"), null);
      assert.equal((await fs.lstat(source.path)).isSymbolicLink(), true);
      assert.equal(await fs.readFile(outside, "utf8"), "secret");
    });

    it("a name swapped for a folder after the open: the folder goes back, nothing is kept", async () => {
      const source = await answered("out", "what was opened");
      await fs.rm(source.path);
      await fs.mkdir(source.path);
      await fs.writeFile(path.join(source.path, "inside"), "x");
      assert.equal(await store.adopt("t/output", source), null);
      assert.equal(await store.stat("t/output"), null);
      assert.equal(await fs.readFile(path.join(source.path, "inside"), "utf8"), "x");
    });
  });
}
