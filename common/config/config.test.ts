import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { loadConfig, type DocqConfig } from "./config.js";
import { DocqError, ERROR_CODE } from "../model/errors.js";

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
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
  host: "127.0.0.1",
  dataDir: path.resolve("data"),
  jobsDir: path.join(REPO_ROOT, "scripts-job"),
  slots: os.availableParallelism(),
  maxBodyBytes: 1073741824,
  logLevel: "info",
  logFormat: "text",
  shutdownGraceMs: 30000,
  durability: "process",
  store: { type: "sqlite" },
  blobs: { type: "fs" },
  queue: {
    maxTries: 10,
    leaseMs: 30000,
    heartbeatMs: 5000,
    sweepMs: 1000,
    backoffBaseMs: 1000,
    backoffMaxMs: 300000,
    maxSplitDepth: 2,
    gcIntervalMs: 300000,
    gcGraceMs: 300000,
  },
  worker: { batchSize: 0, spawner: true },
  nats: { url: null },
  stealing: {
    globalNatsUrl: null,
    enabled: true,
    onlyWhenIdle: true,
    minVictimBacklog: 1,
    minPriority: 0,
    maxInFlight: 8,
    allow: null,
    backlogIntervalMs: 2000,
    tls: null,
    plate: "default",
    crossPlate: false,
    linkPriorBytesPerMs: 10_000,
    probeBytes: 262_144,
    transferStallMs: 15_000,
    crossPlateHoldMs: 250,
  },
  jobs: { defaultTimeoutMs: 600000, passEnv: [] },
  metrics: { public: false },
  http: { corsOrigins: [] },
  auth: { adminKey: null, metricsKey: null },
  webhooks: { maxTries: 10, backoffBaseMs: 1000, backoffMaxMs: 300000, timeoutMs: 10000, concurrency: 8, secret: null },
  retention: { outputMs: 604_800_000, errorMs: 2_592_000_000, canceledMs: 86_400_000, sweepMs: 60_000, batchSize: 200 },
} satisfies DocqConfig;

describe("loadConfig: durability", () => {
  it("is process by default; power from the file or DOCQ_DURABILITY; anything else is refused naming the key", async () => {
    assert.equal((await loadYaml("")).durability, "process");
    assert.equal((await loadYaml("durability: power\n")).durability, "power");
    assert.equal((await loadConfig({ file: await configFile(""), env: { DOCQ_DURABILITY: "power" } })).durability, "power");
    await assert.rejects(loadYaml("durability: disk\n"), /durability/);
  });
});

describe("loadConfig: stealing plates", () => {
  it("takes a plate, crossPlate as true, false or a list of plates, and refuses a bad one naming the key", async () => {
    const config = await loadYaml("stealing:\n  plate: fr\n  crossPlate: [ny, us]\n  linkPriorBytesPerMs: 125\n");
    assert.equal(config.stealing.plate, "fr");
    assert.deepEqual(config.stealing.crossPlate, ["ny", "us"]);
    assert.equal(config.stealing.linkPriorBytesPerMs, 125);
    assert.equal((await loadYaml("stealing:\n  crossPlate: true\n")).stealing.crossPlate, true);
    await assert.rejects(loadYaml('stealing:\n  crossPlate: ["NOT A PLATE"]\n'), /stealing\.crossPlate/);
    await assert.rejects(loadYaml("stealing:\n  linkPriorBytesPerMs: 0\n"), /stealing\.linkPriorBytesPerMs/);
  });
});

describe("loadConfig: host and secrets", () => {
  it("listens on loopback by default; DOCQ_HOST overrides the file", async () => {
    assert.equal((await loadYaml("")).host, "127.0.0.1");
    assert.equal((await loadConfig({ file: await configFile("host: ::1\n"), env: {} })).host, "::1");
  });

  it("refuses a non-loopback host without an admin key, naming host and how to turn authentication on", async () => {
    await assert.rejects(loadConfig({ file: await configFile(""), env: { DOCQ_HOST: "0.0.0.0" } }), (err: unknown) => {
      const message = (err as Error).message;
      return /host "0\.0\.0\.0" \(from DOCQ_HOST\)/.test(message) && /DOCQ_ADMIN_KEY/.test(message);
    });
    await assert.rejects(loadConfig({ file: await configFile("host: 10.1.2.3\n"), env: {} }), /host "10\.1\.2\.3"/);
    const config = await loadConfig({
      file: await configFile(""),
      env: { DOCQ_HOST: "0.0.0.0", DOCQ_ADMIN_KEY: "an-admin-key-long-enough" },
    });
    assert.deepEqual(config.auth, { adminKey: "an-admin-key-long-enough", metricsKey: null });
  });

  it("takes secrets from the environment only, refuses short ones without echoing them", async () => {
    await assert.rejects(loadConfig({ file: await configFile(""), env: { DOCQ_ADMIN_KEY: "short-secret" } }), (err: unknown) => {
      const message = (err as Error).message;
      return /DOCQ_ADMIN_KEY: is shorter than 16 characters/.test(message) && !message.includes("short-secret");
    });
    await assert.rejects(loadConfig({ file: await configFile("adminKey: abcdefghijklmnopqrstuvwxyz\n"), env: {} }), /adminKey/);
  });
});

describe("loadConfig: operations keys", () => {
  it("reads logFormat, shutdownGraceMs and the webhook secret from the environment", async () => {
    const config = await loadYaml("webhooks:\n  maxTries: 3\n", {
      DOCQ_LOG_FORMAT: "json",
      DOCQ_SHUTDOWN_GRACE_MS: "0",
      DOCQ_WEBHOOK_SECRET: "a-webhook-secret-long-enough",
    });
    assert.equal(config.logFormat, "json");
    assert.equal(config.shutdownGraceMs, 0);
    assert.deepEqual(config.webhooks, { ...EXPECTED_DEFAULTS.webhooks, maxTries: 3, secret: "a-webhook-secret-long-enough" });
  });

  it("takes the webhook secret from the file, the environment's over it, and refuses an unknown log format", async () => {
    const fromFile = await loadYaml("webhooks:\n  secret: s3cret\n");
    assert.equal(fromFile.webhooks.secret, "s3cret");
    const fromEnv = await loadYaml("webhooks:\n  secret: s3cret\n", { DOCQ_WEBHOOK_SECRET: "other" });
    assert.equal(fromEnv.webhooks.secret, "other");
    await configError(loadYaml('webhooks:\n  secret: ""\n'), /webhooks\.secret/);
    await configError(loadYaml("", { DOCQ_LOG_FORMAT: "xml" }), /DOCQ_LOG_FORMAT/);
  });
});

describe("loadConfig: retention", () => {
  it("keeps finished tasks 7, 30 and 1 days by default; null keeps them; a bad window is refused naming its key", async () => {
    const config = await loadYaml("retention:\n  errorMs: null\n  outputMs: 1000\n");
    assert.deepEqual(config.retention, { ...EXPECTED_DEFAULTS.retention, errorMs: null, outputMs: 1000 });
    await configError(loadYaml("retention:\n  canceledMs: 0\n"), /retention\.canceledMs/);
    await configError(loadYaml("retention:\n  keepMs: 5\n"), /retention/);
  });
});

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
    ["DOCQ_CORS_ORIGINS", "https://app.example.com", (c) => c.http.corsOrigins, ["https://app.example.com"]],
    [
      "DOCQ_CORS_ORIGINS",
      " https://a.example , http://localhost:8080,",
      (c) => c.http.corsOrigins,
      ["https://a.example", "http://localhost:8080"],
    ],
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
    ["DOCQ_CORS_ORIGINS", "*", /must be an origin/],
    ["DOCQ_CORS_ORIGINS", "https://a.example/app", /must be an origin/],
  ];
  for (const [variable, value, problem] of badValues) {
    it(`refuses ${variable}=${value}, naming the variable`, async () => {
      const err = await configError(
        loadConfig({ env: { [variable]: value } }),
        new RegExp(`${variable}="${value.replace(".", "\\.")}"`),
        problem,
      );
      assert.equal(err.field, variable);
    });
  }
});

describe("loadConfig: http.corsOrigins", () => {
  it("takes origins as the browser spells them in the Origin header", async () => {
    const config = await loadYaml("http:\n  corsOrigins: [https://App.Example.com, 'http://localhost:8080', 'https://b.example:443']\n");
    assert.deepEqual(config.http.corsOrigins, ["https://app.example.com", "http://localhost:8080", "https://b.example"]);
  });

  it("refuses a wildcard, a path, credentials or another scheme, naming the key", async () => {
    for (const bad of ['"*"', "https://a.example/", "https://u:p@a.example", "ftp://a.example", "a.example", "42"]) {
      await configError(loadYaml(`http:\n  corsOrigins: [${bad}]\n`), /http\.corsOrigins\.0/);
    }
    await configError(loadYaml("http:\n  corsOrigin: []\n"), /corsOrigin/);
  });

  it("DOCQ_CORS_ORIGINS replaces the file's list", async () => {
    const config = await loadYaml("http:\n  corsOrigins: [https://a.example]\n", { DOCQ_CORS_ORIGINS: "https://b.example" });
    assert.deepEqual(config.http.corsOrigins, ["https://b.example"]);
  });
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
    await configError(loadYaml("store:\n  type: cassandra\n"), /store\.type: .*'sqlite' \| 'mongodb' \| 'postgres'/);
    await configError(loadYaml("blobs:\n  type: gcs\n"), /blobs\.type: .*'fs' \| 's3'/);
  });

  it("heartbeatMs not below leaseMs, from the file or from DOCQ_LEASE_MS", async () => {
    await configError(
      loadYaml("queue:\n  heartbeatMs: 30000\n"),
      /queue\.heartbeatMs \(30000\) must be less than queue\.leaseMs \(30000\)/,
    );
    await configError(
      loadConfig({ env: { DOCQ_LEASE_MS: "4000" } }),
      /queue\.heartbeatMs \(5000\) must be less than queue\.leaseMs \(4000, from DOCQ_LEASE_MS\)/,
    );
  });

  it("backoffBaseMs above backoffMaxMs", async () => {
    await configError(
      loadYaml("queue:\n  backoffBaseMs: 2000\n  backoffMaxMs: 1000\n"),
      /queue\.backoffBaseMs \(2000\) must not exceed queue\.backoffMaxMs \(1000\)/,
    );
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

describe("loadConfig: store mongodb", () => {
  const MONGO = "store:\n  type: mongodb\n";

  it("takes the URL from MONGO_URL, with the defaults of the other keys", async () => {
    const config = await loadYaml(MONGO, { MONGO_URL: "mongodb://db-1:27017,db-2:27017/?replicaSet=rs0" });
    assert.deepEqual(config.store, {
      type: "mongodb",
      url: "mongodb://db-1:27017,db-2:27017/?replicaSet=rs0",
      database: "docq",
      writeConcern: "majority",
    });
  });

  it("prefers DOCQ_MONGO_URL to MONGO_URL, and either to the file's url", async () => {
    const yaml = `${MONGO}  url: mongodb://from-file:27017\n  database: site_a\n  writeConcern: 2\n`;
    const fromFile = await loadYaml(yaml);
    assert.deepEqual(fromFile.store, { type: "mongodb", url: "mongodb://from-file:27017", database: "site_a", writeConcern: 2 });
    const fromEnv = await loadYaml(yaml, { MONGO_URL: "mongodb://from-env" });
    assert.deepEqual(fromEnv.store, { ...fromFile.store, url: "mongodb://from-env" });
    const fromDocqEnv = await loadYaml(yaml, { MONGO_URL: "mongodb://from-env", DOCQ_MONGO_URL: "mongodb+srv://cluster.example" });
    assert.deepEqual(fromDocqEnv.store, { ...fromFile.store, url: "mongodb+srv://cluster.example" });
  });

  it("ignores MONGO_URL when the store is sqlite", async () => {
    assert.deepEqual((await loadConfig({ env: { MONGO_URL: "mongodb://somewhere" } })).store, { type: "sqlite" });
  });

  it("needs a URL from somewhere", async () => {
    const err = await configError(loadYaml(MONGO), /store\.type mongodb needs a URL: set MONGO_URL/);
    assert.equal(err.field, "store.url");
  });

  it("refuses a password in the file, a bad URL, a bad database name and an unacknowledged write concern", async () => {
    await configError(loadYaml(`${MONGO}  url: mongodb://docq:hunter2@db:27017\n`), /store\.url: must not hold a password: set MONGO_URL/);
    await configError(loadYaml(`${MONGO}  url: http://db:27017\n`), /store\.url: must be a mongodb:\/\/ or mongodb\+srv:\/\/ URL/);
    await configError(loadYaml(`${MONGO}  database: my.db\n`, { MONGO_URL: "mongodb://db" }), /store\.database: must be 1 to 63/);
    await configError(loadYaml(`${MONGO}  writeConcern: 0\n`, { MONGO_URL: "mongodb://db" }), /store\.writeConcern: /);
    await configError(
      loadYaml(`${MONGO}  writeConcern: all\n`, { MONGO_URL: "mongodb://db" }),
      /store\.writeConcern: must be "majority" or a whole number/,
    );
    await configError(loadYaml(`${MONGO}  host: db\n`, { MONGO_URL: "mongodb://db" }), /store: Unrecognized key: "host"/);
  });

  it("refuses a malformed MONGO_URL without echoing it (it may hold a password)", async () => {
    const err = await configError(
      loadYaml(MONGO, { MONGO_URL: "postgres://u:secret@db" }),
      /environment variable MONGO_URL \(store\.url\): must be a mongodb:\/\//,
    );
    assert.doesNotMatch(err.message, /secret/);
    assert.equal(err.field, "MONGO_URL");
  });
});

describe("loadConfig: store postgres", () => {
  const POSTGRES = "store:\n  type: postgres\n";
  const URL = "postgresql://docq:hunter2@db.internal:5432/docq";

  it("takes the URL from DOCQ_POSTGRES_URL, with the schema and pool size of the file", async () => {
    const config = await loadYaml(`${POSTGRES}  schema: site_a\n  poolSize: 4\n`, { DOCQ_POSTGRES_URL: URL });
    assert.deepEqual(config.store, { type: "postgres", url: URL, schema: "site_a", poolSize: 4 });
    assert.deepEqual((await loadYaml(POSTGRES, { DOCQ_POSTGRES_URL: URL })).store, {
      type: "postgres",
      url: URL,
      schema: null,
      poolSize: 10,
    });
  });

  it("stops at start naming DOCQ_POSTGRES_URL when it is missing", async () => {
    const err = await configError(loadYaml(POSTGRES), /store\.type postgres needs its URL in the environment variable DOCQ_POSTGRES_URL/);
    assert.equal(err.field, "DOCQ_POSTGRES_URL");
  });

  it("refuses the URL in a file, a malformed DOCQ_POSTGRES_URL (without echoing it) and a bad schema name", async () => {
    await configError(
      loadYaml(`${POSTGRES}  url: ${URL}\n`, { DOCQ_POSTGRES_URL: URL }),
      /store\.url: is a secret: set the environment variable DOCQ_POSTGRES_URL/,
    );
    const err = await configError(
      loadYaml(POSTGRES, { DOCQ_POSTGRES_URL: "mysql://u:secret@db" }),
      /environment variable DOCQ_POSTGRES_URL: must be a postgres:\/\//,
    );
    assert.doesNotMatch(err.message, /secret/);
    await configError(loadYaml(`${POSTGRES}  schema: Site-A\n`, { DOCQ_POSTGRES_URL: URL }), /store\.schema: must be 1 to 63 lowercase/);
  });
});

describe("loadConfig: blobs s3", () => {
  const KEYS = { S3_ACCESS_KEY: "AKIA-test", S3_SECRET_KEY: "s3cr3t" };
  const S3 = "blobs:\n  type: s3\n  endPoint: minio.internal\n";
  const DEFAULTS = {
    type: "s3",
    endPoint: "minio.internal",
    port: 80,
    useSSL: false,
    bucket: "docq",
    prefix: "local",
    region: "us-east-1",
    partSizeBytes: 8 * 1024 * 1024,
    accessKey: "AKIA-test",
    secretKey: "s3cr3t",
  };

  it("fills the defaults, the keys from the environment, and the prefix from the site", async () => {
    assert.deepEqual((await loadYaml(S3, KEYS)).blobs, DEFAULTS);
    assert.deepEqual((await loadYaml(`site: paris\n${S3}`, KEYS)).blobs, { ...DEFAULTS, prefix: "paris" });
    assert.deepEqual((await loadYaml(S3, { ...KEYS, DOCQ_SITE: "lyon" })).blobs, { ...DEFAULTS, prefix: "lyon" });
  });

  it("reads every key of the file", async () => {
    const yaml = `${S3}  port: 9000\n  useSSL: true\n  bucket: my.bucket-1\n  prefix: docq/site_a\n  region: eu-west-3\n  partSizeBytes: 5242880\n`;
    assert.deepEqual((await loadYaml(yaml, KEYS)).blobs, {
      ...DEFAULTS,
      port: 9000,
      useSSL: true,
      bucket: "my.bucket-1",
      prefix: "docq/site_a",
      region: "eu-west-3",
      partSizeBytes: 5242880,
    });
    const https = await loadYaml(`${S3}  useSSL: true\n`, KEYS);
    assert.equal(https.blobs.type === "s3" ? https.blobs.port : null, 443);
    const atRoot = await loadYaml(`${S3}  prefix: ""\n`, KEYS);
    assert.equal(atRoot.blobs.type === "s3" ? atRoot.blobs.prefix : null, "");
  });

  it("takes endPoint, port and useSSL from S3_URL", async () => {
    const cases: Array<[string, Partial<typeof DEFAULTS>]> = [
      ["http://127.0.0.1:9000", { endPoint: "127.0.0.1", port: 9000, useSSL: false }],
      ["https://s3.eu-west-3.amazonaws.com", { endPoint: "s3.eu-west-3.amazonaws.com", port: 443, useSSL: true }],
      ["http://minio/", { endPoint: "minio", port: 80, useSSL: false }],
    ];
    for (const [url, expected] of cases) {
      assert.deepEqual(
        (await loadYaml(`${S3}  port: 1234\n  useSSL: true\n`, { ...KEYS, S3_URL: url })).blobs,
        { ...DEFAULTS, ...expected },
        url,
      );
    }
    // The file need not name an endpoint when S3_URL does.
    assert.deepEqual((await loadYaml("blobs:\n  type: s3\n", { ...KEYS, S3_URL: "http://localhost:4568" })).blobs, {
      ...DEFAULTS,
      endPoint: "localhost",
      port: 4568,
    });
  });

  it("refuses a malformed S3_URL, naming the variable", async () => {
    const bad: Array<[string, RegExp]> = [
      ["localhost:9000", /expected http:\/\/ or https:\/\//],
      ["not a url", /not a URL/],
      ["ftp://host", /expected http:\/\/ or https:\/\//],
      ["http://key:secret@host:9000", /must not hold credentials/],
      ["http://host:9000/bucket", /only a scheme, host and port/],
    ];
    for (const [url, problem] of bad) {
      const err = await configError(loadYaml(S3, { ...KEYS, S3_URL: url }), /environment variable S3_URL=/, problem);
      assert.equal(err.field, "S3_URL", url);
    }
  });

  it("ignores the S3 variables when the blobs are fs", async () => {
    assert.deepEqual((await loadConfig({ env: { ...KEYS, S3_URL: "not a url" } })).blobs, { type: "fs" });
  });

  it("needs both keys from the environment, naming the missing ones", async () => {
    const none = await configError(loadYaml(S3), /needs the environment variables S3_ACCESS_KEY and S3_SECRET_KEY/);
    assert.equal(none.field, "S3_ACCESS_KEY");
    const noSecret = await configError(loadYaml(S3, { S3_ACCESS_KEY: "a" }), /needs the environment variable S3_SECRET_KEY:/);
    assert.equal(noSecret.field, "S3_SECRET_KEY");
    await configError(loadYaml(S3, { S3_ACCESS_KEY: "a", S3_SECRET_KEY: "" }), /S3_SECRET_KEY/);
  });

  it("refuses keys written in the file, pointing to the variables", async () => {
    await configError(
      loadYaml(`${S3}  accessKey: AKIA\n`, KEYS),
      /blobs\.accessKey: is a secret: set the environment variable S3_ACCESS_KEY/,
    );
    await configError(loadYaml(`${S3}  secretKey: s\n`, KEYS), /blobs\.secretKey: is a secret: set the environment variable S3_SECRET_KEY/);
  });

  it("needs an endpoint from the file or S3_URL", async () => {
    const err = await configError(loadYaml("blobs:\n  type: s3\n", KEYS), /blobs\.endPoint is required for blobs\.type s3 \(or set S3_URL/);
    assert.equal(err.field, "blobs.endPoint");
  });

  it("refuses a bad endpoint, bucket, prefix, port or part size", async () => {
    await configError(loadYaml("blobs:\n  type: s3\n  endPoint: http://minio:9000\n", KEYS), /blobs\.endPoint: must be a host name/);
    await configError(loadYaml(`${S3}  bucket: My_Bucket\n`, KEYS), /blobs\.bucket: must be 3 to 63 lowercase/);
    await configError(loadYaml(`${S3}  bucket: ab\n`, KEYS), /blobs\.bucket: /);
    for (const prefix of ["/abs", "a/", "a//b", "../x", ".hidden", "a b"]) {
      await configError(loadYaml(`${S3}  prefix: "${prefix}"\n`, KEYS), /blobs\.prefix: must be \/-separated names/);
    }
    await configError(loadYaml(`${S3}  port: 0\n`, KEYS), /blobs\.port: /);
    await configError(loadYaml(`${S3}  partSizeBytes: 1048576\n`, KEYS), /blobs\.partSizeBytes: .*5242880/);
    await configError(loadYaml(`${S3}  useSSL: "yes"\n`, KEYS), /blobs\.useSSL: .*expected boolean/);
    await configError(loadYaml(`${S3}  endpoint: x\n`, KEYS), /blobs: Unrecognized key: "endpoint"/);
  });
});
