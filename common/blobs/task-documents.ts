import type { BlobStore } from "./blob-store.js";
import { errorMessage } from "../model/errors.js";

export interface TaskDocumentsLog {
  warn(msg: string): void;
}

/**
 * The one place a task's documents are dropped: the prefixes (task folders) the queue's cancel and
 * delete answers name in `drop` and its "documents:unneeded" event names after a cascade, and the
 * folder of a task whose documents were written but never handed to the queue. A failure is
 * logged, not thrown: the step it follows is done, and the documents only take room longer (the
 * blob GC removes those of tasks whose record is gone).
 * Answers how many prefixes could not be dropped.
 */
export async function dropTaskDocuments(blobs: BlobStore, prefixes: readonly string[], log: TaskDocumentsLog): Promise<number> {
  const results = await Promise.allSettled(prefixes.map((prefix) => blobs.deletePrefix(prefix)));
  let failed = 0;
  results.forEach((result, i) => {
    if (result.status === "fulfilled") return;
    failed++;
    log.warn(`could not drop the documents under ${prefixes[i]} (the blob GC retries): ${errorMessage(result.reason)}`);
  });
  return failed;
}
