import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { DocqError, ERROR_CODE, type ErrorCode } from "../model/errors.js";
import { JobRegistry, type JobDefinition } from "./job-registry.js";
import { rejection } from "../testing/rejection.js";

const EXAMPLES = fileURLToPath(new URL("../../scripts-job/", import.meta.url));
const HAS_PYTHON = (() => {
  try {
    execFileSync("python3", ["-c", "pass"]);
    return true;
  } catch {
    return false;
  }
})();

let tmp: string;
let jobsDir: string;

before(async () => {
  tmp = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-registry-test-")));
  jobsDir = path.join(tmp, "jobs");
  await fs.mkdir(jobsDir);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function write(rel: string, text: string, mode = 0o644): Promise<string> {
  const file = path.join(jobsDir, rel);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, text, { mode });
  return file;
}

function registry(dir = jobsDir): JobRegistry {
  return new JobRegistry({ dir, defaultTimeoutMs: 5000 });
}

function throwsWith(fn: () => unknown, code: ErrorCode, field: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof DocqError && err.code === code && err.field === field && message.test(err.message));
}

describe("JobRegistry: job forms", () => {
  it("resolves NAME.js and NAME.mjs to node, NAME.sh to /bin/sh", async () => {
    const js = await write("js-job.js", "console.log('{}')\n");
    const mjs = await write("mjs-job.mjs", "console.log('{}')\n");
    const sh = await write("sh-job.sh", "echo '{}'\n");
    const reg = registry();
    assert.deepEqual(pick(await reg.resolve("js-job")), { command: process.execPath, args: [js], dir: jobsDir });
    assert.deepEqual(pick(await reg.resolve("mjs-job")), { command: process.execPath, args: [mjs], dir: jobsDir });
    assert.deepEqual(pick(await reg.resolve("sh-job")), { command: "/bin/sh", args: [sh], dir: jobsDir });
  });

  it("resolves NAME.py to the real python interpreter, not a PATH shim", { skip: !HAS_PYTHON && "no python3" }, async () => {
    const py = await write("py_job.py", "print('{}')\n");
    const def = await registry().resolve("py_job");
    assert.deepEqual(def.args, [py]);
    assert.ok(path.isAbsolute(def.command));
    assert.doesNotMatch(def.command, /\/shims\//);
    assert.equal(execFileSync(def.command, ["-c", "print(1)"], { encoding: "utf8" }), "1\n");
  });

  it("runs an extension-less executable file with a shebang directly", async () => {
    const file = await write("bare", "#!/bin/sh\necho '{}'\n", 0o755);
    assert.deepEqual(pick(await registry().resolve("bare")), { command: file, args: [], dir: jobsDir });
  });

  it("refuses an extension-less file that is not executable or has no shebang", async () => {
    await write("not-exec", "#!/bin/sh\n", 0o644);
    await write("no-shebang", "echo hi\n", 0o755);
    await rejection(registry().resolve("not-exec"), {
      code: ERROR_CODE.Config,
      field: "job",
      message: /not-exec.*not an executable file starting with #!/,
    });
    await rejection(registry().resolve("no-shebang"), { code: ERROR_CODE.Config, field: "job", message: /no-shebang/ });
  });

  it("resolves a folder with job.yaml and applies its settings", async () => {
    const entry = await write("folder/run.sh", "echo '{}'\n");
    await write(
      "folder/job.yaml",
      [
        "entry: run.sh",
        "timeoutMs: 1234",
        "maxTries: 3",
        "split: true",
        "env: { GREETING: hello, COUNT: 3 }",
        "params:",
        "  ms: { type: integer, required: true, min: 0 }",
        "warm: true",
        "maxRequests: 100",
        "maxRssMb: 256",
      ].join("\n"),
    );
    const def = await registry().resolve("folder");
    assert.deepEqual(pick(def), { command: "/bin/sh", args: [entry], dir: path.join(jobsDir, "folder") });
    assert.equal(def.timeoutMs, 1234);
    assert.equal(def.maxTries, 3);
    assert.equal(def.split, true);
    assert.deepEqual(def.env, { GREETING: "hello", COUNT: "3" });
    assert.ok(def.paramsSchema !== null);
    assert.equal(def.warm, true);
    assert.equal(def.maxRequests, 100);
    assert.equal(def.maxRssMb, 256);
  });

  it("gives a folder job defaults and finds its single main.* or job.* entry", async () => {
    const entry = await write("defaults/main.mjs", "console.log('{}')\n");
    await write("defaults/job.yaml", "");
    await write("defaults/README.md", "not an entry\n");
    const def = await registry().resolve("defaults");
    assert.deepEqual(pick(def), { command: process.execPath, args: [entry], dir: path.join(jobsDir, "defaults") });
    assert.equal(def.timeoutMs, 5000);
    assert.equal(def.maxTries, null);
    assert.equal(def.split, false);
    assert.deepEqual(def.env, {});
    assert.equal(def.paramsSchema, null);
    assert.equal(def.warm, false);
    assert.equal(def.maxRequests, null);
    assert.equal(def.maxRssMb, null);

    const other = await write("jobentry/job.sh", "echo '{}'\n");
    await write("jobentry/job.yaml", "timeoutMs: 10\n");
    assert.deepEqual((await registry().resolve("jobentry")).args, [other]);
  });

  it("does not take a folder without job.yaml for a job", async () => {
    await write("plain-folder/main.sh", "echo '{}'\n");
    await rejection(registry().resolve("plain-folder"), {
      code: ERROR_CODE.JobNotFound,
      field: "job",
      message: /unknown job "plain-folder"/,
    });
  });

  it("refuses a name that several forms claim", async () => {
    await write("twice.sh", "echo '{}'\n");
    await write("twice.js", "console.log('{}')\n");
    await rejection(registry().resolve("twice"), {
      code: ERROR_CODE.Config,
      field: "job",
      message: /job "twice" is ambiguous: twice\.js, twice\.sh/,
    });
  });
});

describe("JobRegistry: names", () => {
  for (const bad of ["", "../x", "x/y", "Upper", "-dash", "_under", ".hidden", "x.sh", "a b", "x\u0000"]) {
    it(`refuses the name ${JSON.stringify(bad)}`, async () => {
      await rejection(registry().resolve(bad), {
        code: ERROR_CODE.BadRequest,
        field: "job",
        message: new RegExp(`invalid job name "${escapeRe(bad)}"`),
      });
    });
  }

  it("reports an unknown job with the folder it looked in", async () => {
    const err = await rejection(registry().resolve("missing"), { code: ERROR_CODE.JobNotFound, field: "job", message: /.*/ });
    assert.equal(err.message, `unknown job "missing": no script or folder with job.yaml in ${jobsDir}`);
  });

  it("refuses a script, a folder or an entry that a symlink leads out of the folder", async () => {
    const outside = path.join(tmp, "outside");
    await fs.mkdir(outside, { recursive: true });
    await fs.writeFile(path.join(outside, "evil.sh"), "echo '{}'\n");
    await fs.writeFile(path.join(outside, "job.yaml"), "entry: evil.sh\n");
    await fs.symlink(path.join(outside, "evil.sh"), path.join(jobsDir, "link-file.sh"));
    await fs.symlink(outside, path.join(jobsDir, "link-dir"));
    await write("link-entry/job.yaml", "entry: ../../outside/evil.sh\n");
    await write("link-entry/main.sh", "echo '{}'\n");
    await rejection(registry().resolve("link-file"), {
      code: ERROR_CODE.BadRequest,
      field: "job",
      message: /job "link-file" refused: .* resolves outside/,
    });
    await rejection(registry().resolve("link-dir"), { code: ERROR_CODE.BadRequest, field: "job", message: /job "link-dir" refused/ });
    await rejection(registry().resolve("link-entry"), { code: ERROR_CODE.BadRequest, field: "job", message: /job "link-entry" refused/ });
  });

  it("accepts a symlink that stays inside the folder", async () => {
    const target = await write("real-target.sh", "echo '{}'\n");
    await fs.symlink(target, path.join(jobsDir, "alias.sh"));
    assert.deepEqual((await registry().resolve("alias")).args, [target]);
  });
});

describe("JobRegistry: changes at runtime", () => {
  it("finds a job added after a failed lookup, without a restart", async () => {
    const reg = registry();
    await rejection(reg.resolve("late"), { code: ERROR_CODE.JobNotFound, field: "job", message: /unknown job "late"/ });
    await write("late.sh", "echo '{}'\n");
    assert.equal((await reg.resolve("late")).name, "late");
  });

  it("reuses a lookup briefly, then sees an edited job.yaml", async () => {
    await write("edited/main.sh", "echo '{}'\n");
    await write("edited/job.yaml", "timeoutMs: 100\n");
    const reg = registry();
    const first = await reg.resolve("edited");
    assert.equal(first.timeoutMs, 100);
    await write("edited/job.yaml", "timeoutMs: 200\n");
    assert.equal(await reg.resolve("edited"), first, "a lookup within the cache period is reused");
    await sleep(1100);
    assert.equal((await reg.resolve("edited")).timeoutMs, 200);
  });

  it("shares one filesystem lookup between concurrent resolves", async () => {
    await write("concurrent.sh", "echo '{}'\n");
    const reg = registry();
    const [a, b] = await Promise.all([reg.resolve("concurrent"), reg.resolve("concurrent")]);
    assert.equal(a, b);
  });
});

describe("JobRegistry: job.yaml errors name the file and the key", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["bad-yaml", "timeoutMs: [1, 2\n", /not valid YAML/],
    ["unknown-key", "timeout: 100\n", /Unrecognized key: "timeout"/],
    ["bad-timeout", "timeoutMs: -5\n", /timeoutMs: /],
    ["bad-tries", "maxTries: 1.5\n", /maxTries: /],
    ["bad-split", "split: yes please\n", /split: /],
    ["bad-env", "env: { 1BAD: x }\n", /env\.1BAD: /],
    ["bad-param-type", "params:\n  ms: { type: float }\n", /params\.ms\.type: /],
    ["bad-param-key", "params:\n  ms: { type: integer, requird: true }\n", /params\.ms: Unrecognized key: "requird"/],
    ["bad-param-minmax", "params:\n  flag: { type: boolean, min: 1 }\n", /params\.flag: min\/max do not apply to type boolean/],
    ["bad-warm", "warm: 1\n", /warm: /],
    ["bad-retention", "retention: { errorMs: -1 }\n", /retention\.errorMs: /],
    ["bad-retention-key", "retention: { doneMs: 5 }\n", /retention: Unrecognized key: "doneMs"/],
    ["not-a-map", "- a\n- b\n", /expected object/],
  ];
  for (const [name, yaml, message] of cases) {
    it(`${name}`, async () => {
      await write(`${name}/main.sh`, "echo '{}'\n");
      const file = await write(`${name}/job.yaml`, yaml);
      const err = await rejection(registry().resolve(name), { code: ERROR_CODE.Config, field: "job", message: message });
      assert.ok(err.message.startsWith(`${file}: `), err.message);
    });
  }

  it("entry missing or not found", async () => {
    await write("no-entry/main.sh", "echo '{}'\n");
    await write("no-entry/main.py", "print('{}')\n");
    await write("no-entry/job.yaml", "timeoutMs: 10\n");
    await rejection(registry().resolve("no-entry"), {
      code: ERROR_CODE.Config,
      field: "job",
      message: /job\.yaml: entry: required: several candidates \(main\.py, main\.sh\)/,
    });
    await write("lost-entry/job.yaml", "entry: nope.sh\n");
    await rejection(registry().resolve("lost-entry"), {
      code: ERROR_CODE.Config,
      field: "job",
      message: /job\.yaml: entry: file "nope\.sh" not found/,
    });
  });
});

describe("JobRegistry: params", () => {
  let job: JobDefinition;
  before(async () => {
    await write("typed/main.sh", "echo '{}'\n");
    await write(
      "typed/job.yaml",
      [
        "params:",
        "  ms: { type: integer, required: true, min: 0, max: 60000 }",
        "  label: { type: string, max: 5 }",
        "  ratio: { type: number }",
        "  flag: { type: boolean }",
        "  opts: { type: object }",
        "  tags: { type: array, min: 1 }",
      ].join("\n"),
    );
    job = await registry().resolve("typed");
  });
  const reg = new JobRegistry({ dir: os.tmpdir(), defaultTimeoutMs: 1 });

  it("accepts valid params", () => {
    const params = { ms: 10, label: "abc", ratio: 0.5, flag: true, opts: { a: 1 }, tags: ["x"] };
    assert.deepEqual(reg.validateParams(job, params), params);
    assert.deepEqual(reg.validateParams(job, { ms: 0 }), { ms: 0 });
  });

  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ["a missing required param", {}, /job "typed": param "ms" is required/],
    ["a wrong type", { ms: "10" }, /param "ms": .*expected number/],
    ["a non-integer", { ms: 1.5 }, /param "ms": .*int/],
    ["a value below min", { ms: -1 }, /param "ms": /],
    ["a value above max", { ms: 60001 }, /param "ms": /],
    ["a string too long", { ms: 1, label: "abcdef" }, /param "label": /],
    ["an empty array below min", { ms: 1, tags: [] }, /param "tags": /],
    ["an object of the wrong type", { ms: 1, opts: [1] }, /param "opts": /],
    ["an unknown param", { ms: 1, extra: true }, /unknown param "extra"/],
  ];
  for (const [what, params, message] of bad) {
    it(`refuses ${what}`, () => {
      throwsWith(() => reg.validateParams(job, params), ERROR_CODE.BadRequest, "params", message);
    });
  }

  it("passes params through for a job without a params schema", async () => {
    await write("untyped.sh", "echo '{}'\n");
    const untyped = await registry().resolve("untyped");
    assert.deepEqual(reg.validateParams(untyped, { anything: [1] }), { anything: [1] });
  });
});

describe("JobRegistry: list", () => {
  it("lists the valid jobs by name and leaves broken ones out", async () => {
    const dir = path.join(tmp, "list");
    await fs.mkdir(path.join(dir, "folder"), { recursive: true });
    await fs.writeFile(path.join(dir, "b.sh"), "echo '{}'\n");
    await fs.writeFile(path.join(dir, "a.js"), "console.log('{}')\n");
    await fs.writeFile(path.join(dir, "folder", "job.yaml"), "entry: main.sh\n");
    await fs.writeFile(path.join(dir, "folder", "main.sh"), "echo '{}'\n");
    await fs.writeFile(path.join(dir, "README.md"), "docs\n");
    await fs.mkdir(path.join(dir, "broken"));
    await fs.writeFile(path.join(dir, "broken", "job.yaml"), "nope: 1\n");
    const names = (await registry(dir).list()).map((j) => j.name);
    assert.deepEqual(names, ["a", "b", "folder"]);
  });
});

describe("JobRegistry: retention", () => {
  it("reads a job's own retention windows (null keeps), and lists the jobs that have some", async () => {
    const dir = path.join(tmp, "retention");
    await fs.mkdir(path.join(dir, "keep"), { recursive: true });
    await fs.writeFile(path.join(dir, "keep", "job.yaml"), "entry: main.sh\nretention: { errorMs: null, outputMs: 60000 }\n");
    await fs.writeFile(path.join(dir, "keep", "main.sh"), "echo '{}'\n");
    await fs.writeFile(path.join(dir, "plain.sh"), "echo '{}'\n");
    const reg = registry(dir);
    assert.deepEqual((await reg.resolve("keep")).retention, { errorMs: null, outputMs: 60_000 });
    assert.deepEqual((await reg.resolve("plain")).retention, {});
    assert.deepEqual([...(await reg.retentionByJob())], [["keep", { errorMs: null, outputMs: 60_000 }]]);
  });
});

describe("JobRegistry: the example jobs in scripts-job/", () => {
  it("resolves each example", async () => {
    const reg = registry(EXAMPLES);
    const real = await fs.realpath(EXAMPLES);
    assert.deepEqual(pick(await reg.resolve("noop")), { command: path.join(real, "noop"), args: [], dir: real });
    assert.deepEqual(pick(await reg.resolve("wordcount")), { command: "/bin/sh", args: [path.join(real, "wordcount.sh")], dir: real });
    assert.deepEqual(pick(await reg.resolve("fail")), { command: "/bin/sh", args: [path.join(real, "fail.sh")], dir: real });
    const sleepJob = await reg.resolve("sleep");
    assert.deepEqual(sleepJob.args, [path.join(real, "sleep", "main.sh")]);
    throwsWith(() => reg.validateParams(sleepJob, { ms: -1 }), ERROR_CODE.BadRequest, "params", /param "ms"/);
    const pages = await reg.resolve("pages");
    assert.equal(pages.split, true);
    // The example workflows: their steps name example jobs, so they are checked whole here.
    assert.equal((await reg.workflowOf("diamond"))?.final, "d");
    assert.deepEqual((await reg.workflowOf("diamond"))?.upstreams, { a: [], b: ["a"], c: ["a"], d: ["b", "c"] });
    assert.deepEqual((await reg.workflowOf("textreport"))?.upstreams, { count: [], upper: [], report: ["count", "upper"] });
    assert.deepEqual(
      (await reg.list()).map((j) => j.name),
      [
        "concat",
        "diamond",
        "fail",
        "noop",
        "noop-warm",
        "noop-warm-files",
        "pages",
        "pages-warm",
        "pdfcheck",
        "progress",
        "sleep",
        "sleep-warm",
        "stamp",
        "textreport",
        "wordcount",
        "wordcount-warm",
      ],
    );
  });
});

function pick(def: JobDefinition): { command: string; args: string[]; dir: string } {
  return { command: def.command, args: def.args, dir: def.dir };
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("JobRegistry: workflow jobs", () => {
  let dir: string;
  before(async () => {
    dir = path.join(tmp, "workflows");
    const files: Record<string, string> = {
      "step.sh": "echo '{}'\n",
      "sleepy/main.sh": "echo '{}'\n",
      "sleepy/job.yaml": "params:\n  ms: { type: integer, required: true }\n",
      "flow/job.yaml": [
        "workflow:",
        "  steps:",
        "    a: { job: step }",
        "    b: { job: sleepy, params: { ms: 5 }, maxTries: 2 }",
        "    c: { job: step, priority: 80, timeoutMs: 900 }",
        "    d: { job: step }",
        "  flow:",
        '    - "a -> [b, c] -> d"',
        "retention: { outputMs: 1000 }",
      ].join("\n"),
      "cycle/job.yaml": 'workflow:\n  steps: { a: { job: step }, b: { job: step } }\n  flow:\n    - a -> b\n    - "b -> a"\n',
      "unknown-job/job.yaml": "workflow:\n  steps: { a: { job: step }, b: { job: nosuchjob } }\n  flow: [a -> b]\n",
      "nested/job.yaml": "workflow:\n  steps: { a: { job: step }, b: { job: flow } }\n  flow: [a -> b]\n",
      "self/job.yaml": "workflow:\n  steps: { a: { job: self } }\n",
      "bad-params/job.yaml": "workflow:\n  steps: { a: { job: sleepy } }\n",
      "with-entry/job.yaml": "entry: main.sh\nwarm: true\nworkflow:\n  steps: { a: { job: step } }\n",
      // A folder of helpers beside the jobs (as scripts-job/lib): no job, so not a refused one either.
      "lib/helper.py": "def serve(handler): pass\n",
    };
    for (const [rel, text] of Object.entries(files)) {
      await fs.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
      await fs.writeFile(path.join(dir, rel), text);
    }
  });

  it("resolves a folder whose job.yaml holds workflow: as a workflow job with no script", async () => {
    const reg = registry(dir);
    const flow = await reg.resolve("flow");
    assert.equal(flow.command, "");
    assert.deepEqual(flow.workflow, {
      steps: [
        { name: "a", job: "step" },
        { name: "b", job: "sleepy", params: { ms: 5 }, maxTries: 2 },
        { name: "c", job: "step", priority: 80, timeoutMs: 900 },
        { name: "d", job: "step" },
      ],
      upstreams: { a: [], b: ["a"], c: ["a"], d: ["b", "c"] },
      final: "d",
    });
    assert.deepEqual(flow.workflowFlow, ["a -> [b, c] -> d"]);
    assert.deepEqual(flow.retention, { outputMs: 1000 });
    assert.deepEqual(await reg.workflowOf("flow"), flow.workflow);
    assert.equal(await reg.workflowOf("step"), null);
    assert.equal((await reg.resolve("step")).workflow, undefined);
    // The steps' params are job.yaml's: a submission may give none.
    assert.deepEqual(reg.validateParams(flow, {}), {});
    throwsWith(() => reg.validateParams(flow, { ms: 1 }), ERROR_CODE.BadRequest, "params", /unknown param "ms"/);
  });

  it("refuses a workflow with a cycle, an unknown job, a nested workflow or bad step params: a 400 naming the line or step", async () => {
    const reg = registry(dir);
    const cases: Array<[string, RegExp]> = [
      ["cycle", /^job "cycle": flow line 2 "b -> a": cycle: a -> b -> a$/],
      ["unknown-job", /^job "unknown-job": step "b": unknown job "nosuchjob"/],
      ["nested", /^job "nested": step "b": job "flow" is a workflow: a step must name a script job \(workflows do not nest\)$/],
      ["self", /^job "self": step "a": job "self" is a workflow/],
      ["bad-params", /^job "bad-params": step "a": job "sleepy": param "ms" is required$/],
    ];
    for (const [name, message] of cases) {
      await rejection(reg.resolve(name), { code: ERROR_CODE.BadRequest, field: "job", message, label: name });
      await rejection(reg.workflowOf(name), { code: ERROR_CODE.BadRequest, label: name });
    }
  });

  it("refuses the script settings beside workflow:", async () => {
    await rejection(registry(dir).resolve("with-entry"), {
      field: "job",
      message: /job\.yaml: entry: does not apply to a workflow job .*; warm: does not apply to a workflow job/,
    });
  });

  it("catalog() lists every job, the refused ones with their reason, and no folder that holds no job; list() leaves the refused out", async () => {
    const reg = registry(dir);
    const catalog = await reg.catalog();
    assert.deepEqual(
      catalog.map((entry) => ("error" in entry ? `${entry.name}: refused` : entry.name)),
      [
        "bad-params: refused",
        "cycle: refused",
        "flow",
        "nested: refused",
        "self: refused",
        "sleepy",
        "step",
        "unknown-job: refused",
        "with-entry: refused",
      ],
    );
    const cycle = catalog.find((entry) => entry.name === "cycle");
    assert.ok(cycle !== undefined && "error" in cycle);
    assert.match(cycle.error, /flow line 2 "b -> a": cycle: a -> b -> a/);
    assert.deepEqual(
      (await reg.list()).map((job) => job.name),
      ["flow", "sleepy", "step"],
    );
  });
});
