import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { loadConfig, type DocqConfig } from "./config.js";
import { DocqError, ERROR_CODE } from "./errors.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEFAULT_FILE = path.join(REPO_ROOT, "config", "default.yaml");

let tmp: string;

before(async () => {
  tmp = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), "docq-config-test-")));
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

let fileCount = 0;
async function configFile(yaml: string): Promise<string> {
  const file = path.join(tmp, `config-${++fileCount}.yaml`);
  await fs.writeFile(file, yaml);
  return file;
}

async function loadYaml(yaml: string, env: NodeJS.ProcessEnv = {}): Promise<DocqConfig> {
  return loadConfig({ file: await configFile(yaml), env });
}

async function configError(loading: Promise<unknown>, ...patterns: RegExp[]): Promise<DocqError> {
  let caught: unknown;
  try {
    await loading;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof DocqError, `expected a DocqError, got ${String(caught)}`);
  assert.equal(caught.code, ERROR_CODE.Config, caught.message);
  for (const pattern of patterns) assert.match(caught.message, pattern);
  return caught;
}

const EXPECTED_DEFAULTS = {
  site: "local",
  port: 3000,
  dataDir: path.resolve("data"),
  jobsDir: path.join(REPO_ROOT, "scripts-job"),
  slots: os.availableParallelism(),
  maxBodyBytes: 1073741824,
  logLevel: "info",
  store: { type: "sqlite" },
  blobs: { type: "fs" },
  queue: { maxTries: 10, leaseMs: 30000, heartbeatMs: 5000, sweepMs: 1000, backoffBaseMs: 1000, backoffMaxMs: 300000, maxSplitDepth: 2 },
  worker: { batchSize: 0 },
  jobs: { defaultTimeoutMs: 600000 },
} satisfies DocqConfig;

describe("loadConfig: defaults", () => {
  it("loads config/default.yaml when no file is named", async () => {
    assert.deepEqual(await loadConfig({ env: {} }), EXPECTED_DEFAULTS);
  });

  it("fills every default for an empty file, and they match config/default.yaml", async () => {
    assert.deepEqual(await loadYaml(""), EXPECTED_DEFAULTS);
    assert.deepEqual(await loadYaml("# nothing but a comment\n"), EXPECTED_DEFAULTS);
    assert.deepEqual(await loadConfig({ file: DEFAULT_FILE, env: {} }), await loadYaml(""));
  });

  it("treats a section whose lines are all commented out as absent", async () => {
    const config = await loadYaml("queue:\n  # leaseMs: 1000\nworker:\n");
    assert.deepEqual(config.queue, EXPECTED_DEFAULTS.queue);
    assert.deepEqual(config.worker, EXPECTED_DEFAULTS.worker);
  });

  it("merges a partial section with the defaults of its other keys", async () => {
    const config = await loadYaml("queue:\n  leaseMs: 60000\nslots: 3\n");
    assert.deepEqual(config.queue, { ...EXPECTED_DEFAULTS.queue, leaseMs: 60000 });
    assert.equal(config.slots, 3);
  });

  it("reads the file named by DOCQ_CONFIG, but opts.file first", async () => {
    const viaEnv = await configFile("port: 4001\n");
    const viaOpts = await configFile("port: 4002\n");
    assert.equal((await loadConfig({ env: { DOCQ_CONFIG: viaEnv } })).port, 4001);
    assert.equal((await loadConfig({ file: viaOpts, env: { DOCQ_CONFIG: viaEnv } })).port, 4002);
  });
});

describe("loadConfig: paths", () => {
  it("resolves a relative dataDir against the working directory, a relative jobsDir against the repo", async () => {
    const config = await loadYaml("dataDir: ./somewhere/data\njobsDir: jobs\n");
    assert.equal(config.dataDir, path.join(process.cwd(), "somewhere", "data"));
    assert.equal(config.jobsDir, path.join(REPO_ROOT, "jobs"));
    assert.ok(path.isAbsolute(config.dataDir) && path.isAbsolute(config.jobsDir));
  });

  it("keeps absolute paths as they are", async () => {
    const config = await loadYaml(`dataDir: ${tmp}/d\njobsDir: ${tmp}/j\n`);
    assert.equal(config.dataDir, path.join(tmp, "d"));
    assert.equal(config.jobsDir, path.join(tmp, "j"));
  });
});

describe("loadConfig: environment overrides", () => {
  const cases: Array<[string, string, (c: DocqConfig) => unknown, unknown]> = [
    ["PORT", "8080", (c) => c.port, 8080],
    ["PORT", "0", (c) => c.port, 0],
    ["DATA_DIR", "/srv/docq", (c) => c.dataDir, "/srv/docq"],
    ["DATA_DIR", "rel/data", (c) => c.dataDir, path.resolve("rel/data")],
    ["DOCQ_SLOTS", "7", (c) => c.slots, 7],
    ["DOCQ_SITE", "paris_2", (c) => c.site, "paris_2"],
    ["DOCQ_JOBS_DIR", "/opt/jobs", (c) => c.jobsDir, "/opt/jobs"],
    ["DOCQ_JOBS_DIR", "my-jobs", (c) => c.jobsDir, path.resolve("my-jobs")],
    ["DOCQ_LEASE_MS", "60000", (c) => c.queue.leaseMs, 60000],
    ["DOCQ_LOG_LEVEL", "debug", (c) => c.logLevel, "debug"],
  ];
  for (const [variable, value, read, expected] of cases) {
    it(`${variable}=${value}`, async () => {
      assert.deepEqual(read(await loadConfig({ env: { [variable]: value } })), expected);
    });
  }

  it("overrides the file's value", async () => {
    const config = await loadYaml("port: 4000\nslots: 2\nlogLevel: warn\n", { PORT: "5000", DOCQ_SLOTS: "9", DOCQ_LOG_LEVEL: "trace" });
    assert.deepEqual([config.port, config.slots, config.logLevel], [5000, 9, "trace"]);
  });

  it("ignores variables set to the empty string", async () => {
    assert.deepEqual(await loadConfig({ env: { PORT: "", DOCQ_SLOTS: "", DOCQ_CONFIG: "" } }), EXPECTED_DEFAULTS);
  });

  const badValues: Array<[string, string, RegExp]> = [
    ["PORT", "http", /whole number/],
    ["PORT", "65536", /65535/],
    ["PORT", "-1", /whole number/],
    ["DOCQ_SLOTS", "0", /slots/],
    ["DOCQ_SLOTS", "2.5", /whole number/],
    ["DOCQ_SITE", "Paris", /must match/],
    ["DOCQ_LEASE_MS", "30s", /whole number/],
    ["DOCQ_LOG_LEVEL", "verbose", /expected one of/],
  ];
  for (const [variable, value, problem] of badValues) {
    it(`refuses ${variable}=${value}, naming the variable`, async () => {
      const err = await configError(loadConfig({ env: { [variable]: value } }), new RegExp(`${variable}="${value.replace(".", "\\.")}"`), problem);
      assert.equal(err.field, variable);
    });
  }
});

describe("loadConfig: errors name the file and the key", () => {
  it("an unreadable file", async () => {
    const missing = path.join(tmp, "missing.yaml");
    await configError(loadConfig({ file: missing, env: {} }), new RegExp(`^${missing}: cannot read config file`), /ENOENT/);
  });

  it("invalid YAML", async () => {
    const file = await configFile("port: 3000\nqueue: [unclosed\n");
    await configError(loadConfig({ file, env: {} }), new RegExp(`^${file}: not valid YAML`));
    await configError(loadYaml("port: 1\nport: 2\n"), /not valid YAML/, /port|unique/i);
  });

  it("an unknown key, at the top or in a section", async () => {
    await configError(loadYaml("prot: 3000\n"), /Unrecognized key: "prot"/);
    await configError(loadYaml("queue:\n  leaseMS: 3000\n"), /queue: Unrecognized key: "leaseMS"/);
    await configError(loadYaml("store:\n  type: sqlite\n  file: x.db\n"), /store: Unrecognized key: "file"/);
  });

  it("a wrong type", async () => {
    const file = await configFile("queue:\n  leaseMs: thirty\n");
    await configError(loadConfig({ file, env: {} }), new RegExp(`^${file}: queue\\.leaseMs: .*expected number, received string`));
    await configError(loadYaml("port: 3000.5\n"), /port: .*expected int/);
    await configError(loadYaml("slots: 0\n"), /slots: /);
    await configError(loadYaml("worker:\n  batchSize: -1\n"), /worker\.batchSize: /);
    await configError(loadYaml("logLevel: loud\n"), /logLevel: .*expected one of/);
    await configError(loadYaml("site: Bad Site\n"), /site: must match/);
    await configError(loadYaml("queue: 5\n"), /queue: .*expected object/);
    await configError(loadYaml("- a list\n"), /expected object, received array/);
  });

  it("a store or blobs type that does not exist", async () => {
    await configError(loadYaml("store:\n  type: mongodb\n"), /store\.type: /);
    await configError(loadYaml("blobs:\n  type: s3\n"), /blobs\.type: /);
  });

  it("heartbeatMs not below leaseMs, from the file or from DOCQ_LEASE_MS", async () => {
    await configError(loadYaml("queue:\n  heartbeatMs: 30000\n"), /queue\.heartbeatMs \(30000\) must be less than queue\.leaseMs \(30000\)/);
    await configError(loadConfig({ env: { DOCQ_LEASE_MS: "4000" } }), /queue\.heartbeatMs \(5000\) must be less than queue\.leaseMs \(4000, from DOCQ_LEASE_MS\)/);
  });

  it("backoffBaseMs above backoffMaxMs", async () => {
    await configError(loadYaml("queue:\n  backoffBaseMs: 2000\n  backoffMaxMs: 1000\n"), /queue\.backoffBaseMs \(2000\) must not exceed queue\.backoffMaxMs \(1000\)/);
    assert.equal((await loadYaml("queue:\n  backoffBaseMs: 1000\n  backoffMaxMs: 1000\n")).queue.backoffMaxMs, 1000);
  });

  it("shows the default file relative to the working directory", async () => {
    const cwd = process.cwd();
    process.chdir(REPO_ROOT);
    try {
      await configError(loadConfig({ env: { DOCQ_LEASE_MS: "10" } }), /^config\/default\.yaml: queue\.heartbeatMs/);
    } finally {
      process.chdir(cwd);
    }
  });
});
