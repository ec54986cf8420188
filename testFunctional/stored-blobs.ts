import path from "node:path";
import { FsBlobStore } from "../common/blobs/fs-blob-store.js";

/**
 * Every document key of a data dir's fs blob store, its files and its small documents' rows alike,
 * read through the store as the blob GC reads it (a small document has no file of its own).
 */
export async function storedBlobKeys(dataDir: string): Promise<string[]> {
  const store = new FsBlobStore({ root: path.join(dataDir, "blobs"), durability: "process" });
  try {
    const keys: string[] = [];
    for await (const entry of store.list()) keys.push(entry.key);
    return keys;
  } finally {
    await store.close();
  }
}

/** The names under `<id>/` of the stored documents whose key starts so (`output-` for a task's outputs). */
export async function storedUnder(dataDir: string, id: string, namePrefix = ""): Promise<string[]> {
  return (await storedBlobKeys(dataDir)).filter((key) => key.startsWith(`${id}/${namePrefix}`)).map((key) => key.slice(id.length + 1));
}
