import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { jobListing } from "./job-listing.js";
import { JobRegistry } from "./job-registry.js";

describe("jobListing (GET /api/jobs)", () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "docq-job-listing-test-"));
    const files: Record<string, string> = {
      "plain.sh": "echo '{}'\n",
      "sleepy/main.sh": "echo '{}'\n",
      "sleepy/job.yaml": "timeoutMs: 700\nmaxTries: 2\nparams:\n  ms: { type: integer }\n",
      "splitter/main.sh": "echo '{}'\n",
      "splitter/job.yaml": "split: true\nwarm: true\n",
      "warmish/main.sh": "echo '{}'\n",
      "warmish/job.yaml": "warm: true\n",
      "flow/job.yaml": 'workflow:\n  steps:\n    a: { job: plain }\n    b: { job: sleepy, params: { ms: 1 } }\n  flow:\n    - "a  ->  b"\n',
      "loop/job.yaml": "workflow:\n  steps: { a: { job: plain }, b: { job: plain } }\n  flow: [a -> b, b -> a]\n",
    };
    for (const [rel, text] of Object.entries(files)) {
      await fs.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
      await fs.writeFile(path.join(dir, rel), text);
    }
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("lists every job with its kind, a workflow's steps and flow, a refused job's reason", async () => {
    const registry = new JobRegistry({ dir, defaultTimeoutMs: 5000 });
    const listing = (await registry.catalog()).map(jobListing);
    assert.deepEqual(listing, [
      {
        name: "flow",
        kind: "workflow",
        steps: [
          { name: "a", job: "plain", upstreams: [] },
          { name: "b", job: "sleepy", params: { ms: 1 }, upstreams: ["a"] },
        ],
        flow: ["a  ->  b"],
        final: "b",
      },
      { name: "loop", error: 'job "loop": flow line 2 "b -> a": cycle: a -> b -> a' },
      { name: "plain", kind: "script", split: false, warm: false, timeoutMs: 5000, maxTries: null, params: null },
      { name: "sleepy", kind: "script", split: false, warm: false, timeoutMs: 700, maxTries: 2, params: ["ms"] },
      { name: "splitter", kind: "split", split: true, warm: true, timeoutMs: 5000, maxTries: null, params: null },
      { name: "warmish", kind: "warm", split: false, warm: true, timeoutMs: 5000, maxTries: null, params: null },
    ]);
  });
});
