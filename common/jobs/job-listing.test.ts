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
      "sleepy/job.yaml":
        "description: Sleeps for ms.\ntimeoutMs: 700\nmaxTries: 2\nparams:\n  ms: { type: integer, required: true, min: 0, max: 600 }\nretention: { errorMs: 60000 }\n",
      "splitter/main.sh": "echo '{}'\n",
      "splitter/job.yaml": "split: true\nwarm: true\n",
      "warmish/main.sh": "echo '{}'\n",
      "warmish/job.yaml": "warm: true\nmaxRequests: 50\nmaxRssMb: 300\nconcurrency: 4\ninline: true\n",
      "flow/job.yaml":
        'description: two steps\nworkflow:\n  steps:\n    a: { job: plain }\n    b: { job: sleepy, params: { ms: 1 } }\n  flow:\n    - "a  ->  b"\n',
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

  it("lists every job with what its job.yaml says (description, params with their schema, warm limits, retention), a workflow's steps and flow, a refused job's reason", async () => {
    const registry = new JobRegistry({ dir, defaultTimeoutMs: 5000 });
    const listing = (await registry.catalog()).map(jobListing);
    assert.deepEqual(listing, [
      {
        name: "flow",
        kind: "workflow",
        description: "two steps",
        steps: [
          { name: "a", job: "plain", upstreams: [] },
          { name: "b", job: "sleepy", params: { ms: 1 }, upstreams: ["a"] },
        ],
        flow: ["a  ->  b"],
        final: "b",
      },
      { name: "loop", error: 'job "loop": flow line 2 "b -> a": cycle: a -> b -> a' },
      {
        name: "plain",
        kind: "script",
        description: null,
        split: false,
        warm: false,
        timeoutMs: 5000,
        maxTries: null,
        params: null,
        paramsSchema: null,
        maxRequests: null,
        maxRssMb: null,
        concurrency: 1,
        inline: false,
        retention: {},
      },
      {
        name: "sleepy",
        kind: "script",
        description: "Sleeps for ms.",
        split: false,
        warm: false,
        timeoutMs: 700,
        maxTries: 2,
        params: ["ms"],
        paramsSchema: {
          type: "object",
          properties: { ms: { type: "integer", minimum: 0, maximum: 600 } },
          required: ["ms"],
          additionalProperties: false,
        },
        maxRequests: null,
        maxRssMb: null,
        concurrency: 1,
        inline: false,
        retention: { errorMs: 60000 },
      },
      {
        name: "splitter",
        kind: "split",
        description: null,
        split: true,
        warm: true,
        timeoutMs: 5000,
        maxTries: null,
        params: null,
        paramsSchema: null,
        maxRequests: null,
        maxRssMb: null,
        concurrency: 1,
        inline: false,
        retention: {},
      },
      {
        name: "warmish",
        kind: "warm",
        description: null,
        split: false,
        warm: true,
        timeoutMs: 5000,
        maxTries: null,
        params: null,
        paramsSchema: null,
        maxRequests: 50,
        maxRssMb: 300,
        concurrency: 4,
        inline: true,
        retention: {},
      },
    ]);
  });
});
