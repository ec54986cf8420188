import { percentile, postBatch, sortedNumbers } from "./harness.js";
import { postBatchForm } from "./submit-client.js";
import { multipartBody, type EncodedForm } from "./multipart-body.js";
import { round } from "./report.js";

/** The batch submit's figure: documents per request and their size, as the issue sets them. */
export const BATCH_DOCUMENTS = 1_000;
export const BATCH_DOCUMENT_BYTES = 1_024;

export interface BatchSubmitRun {
  requests: number;
  perRequest: number;
  documentBytes: number;
  /** Every task accepted (201) over the whole run, per second of the run. */
  tasksPerSec: number;
  ms: number;
  /** One request's round trip: upload, every document stored, one store transaction, the answer. */
  requestMs: { p50: number; max: number };
}

/** A form of `count` documents of `bytes` bytes each (different contents), every field shared; `runAt`: when the tasks become due. */
function batchForm(request: number, count: number, bytes: number, job: string, runAt?: number): EncodedForm {
  const fields: Array<[string, string]> = [["job", job]];
  if (runAt !== undefined) fields.push(["runAt", String(runAt)]);
  const filler = "x".repeat(bytes);
  const files = Array.from({ length: count }, (_, i) => {
    const head = `request ${request} document ${i}\n`;
    return { field: "file", filename: `doc-${i}.txt`, bytes: head + filler.slice(head.length) };
  });
  return multipartBody(fields, files);
}

/** Sends an encoded form through fetch (undici), the tests' client: the batch figure's client before 2026-12-04. */
export const postBatchByFetch = (url: string, form: EncodedForm): Promise<string[]> =>
  postBatch(url, { body: form.body, headers: { "content-type": form.contentType } });

/**
 * POST /api/tasks/batch, `requests` requests of `perRequest` documents of `documentBytes`, one
 * request at a time. The forms are built as plain bytes before the clock starts (multipart-body.ts),
 * as a client that streams files needs no encoding per part and leaves no garbage of its own to
 * collect during the round. Each answer is a 201 only once every task of it and its document are
 * stored (as durable as the config's `durability` says).
 */
export async function measureBatchSubmit(
  url: string,
  opts: { requests: number; perRequest: number; documentBytes: number; job: string; runAt?: number },
  client: (url: string, form: EncodedForm) => Promise<string[]> = postBatchForm,
): Promise<BatchSubmitRun> {
  const forms = Array.from({ length: opts.requests }, (_, r) => batchForm(r, opts.perRequest, opts.documentBytes, opts.job, opts.runAt));
  const durations: number[] = [];
  const t0 = performance.now();
  for (const form of forms) {
    const t = performance.now();
    const ids = await client(url, form);
    if (ids.length !== opts.perRequest)
      throw new Error(`POST /api/tasks/batch answered ${ids.length} ids for ${opts.perRequest} documents`);
    durations.push(performance.now() - t);
  }
  const ms = performance.now() - t0;
  const sorted = sortedNumbers(durations);
  return {
    requests: opts.requests,
    perRequest: opts.perRequest,
    documentBytes: opts.documentBytes,
    tasksPerSec: round(((opts.requests * opts.perRequest) / ms) * 1000, 1),
    ms: round(ms),
    requestMs: { p50: round(percentile(sorted, 50), 1), max: round(sorted[sorted.length - 1] ?? NaN, 1) },
  };
}
