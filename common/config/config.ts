import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { docqError, ERROR_CODE, errorMessage } from "../model/errors.js";
import { formatZodIssues } from "../model/zod-issues.js";
import { SITE_PATTERN } from "../model/task-model.js";

/** The install folder: the nearest parent holding package.json, the same from `common/` and from `dist/common/`. */
export const REPO_ROOT = findInstallRoot(path.dirname(fileURLToPath(import.meta.url)));

function findInstallRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir + path.sep;
    if (path.dirname(dir) === dir) return path.dirname(from) + path.sep;
  }
}
const DEFAULT_CONFIG_FILE = path.join(REPO_ROOT, "config", "default.yaml");

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;
/** `text`: one readable line per entry (Moleculer's "short" formatter); `json`: one JSON object per line, for log collectors. */
const LOG_FORMATS = ["text", "json"] as const;

const SiteSchema = z.string().regex(SITE_PATTERN, `must match ${String(SITE_PATTERN)}`);
const PortSchema = z.int().min(0).max(65535);
const FolderSchema = z.string().min(1);
const SlotsSchema = z.int().positive();
const DurationMsSchema = z.int().positive();
const LogLevelSchema = z.enum(LOG_LEVELS);
const LogFormatSchema = z.enum(LOG_FORMATS);
const DAY_MS = 86_400_000;
/** How long a finished task is kept, in ms; null keeps it for ever. */
export const RetentionWindowSchema = z.int().positive().nullable();
/** 0 is allowed: stop at once, releasing every running task. */
const GraceMsSchema = z.int().min(0);
const NatsUrlSchema = z.string().regex(/^(nats|tls):\/\/[^\s/]+(:\d+)?$/, "expected nats://host:port");
/**
 * A web origin as a browser sends it in the Origin header: scheme://host[:port], nothing more. Kept
 * in the browser's spelling (lowercase host, no default port) so it compares equal to the header.
 */
const CorsOriginSchema = z
  .string()
  .regex(/^https?:\/\/[^\s/?#@*]+$/, 'must be an origin like https://app.example.com (scheme://host[:port], no path, no "*")')
  .transform((raw, ctx) => {
    let origin: string;
    try {
      origin = new URL(raw).origin;
    } catch {
      ctx.addIssue({ code: "custom", message: "is not a valid origin" });
      return z.NEVER;
    }
    return origin;
  });
const CorsOriginsSchema = z.array(CorsOriginSchema);
/** An interface address (IPv4, IPv6) or a host name to listen on. */
const HostSchema = z
  .string()
  .min(1, "must not be empty")
  .max(253)
  .regex(/^[A-Za-z0-9.:_-]+$/, "expected an IP address or a host name, e.g. 127.0.0.1 or 0.0.0.0");
/** A variable name a job may inherit from the server's environment. */
const EnvNameSchema = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name");
/** A secret from the environment: long enough not to be guessed, printable so it fits a header. */
const SecretSchema = z
  .string()
  .min(16, "is shorter than 16 characters: too short for a secret")
  .max(512, "is longer than 512 characters")
  .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces");

const MiB = 1024 * 1024;
/** S3's bounds on a multipart part (except the last): 5 MiB to 5 GiB. */
const S3_MIN_PART_BYTES = 5 * MiB;
const S3_MAX_PART_BYTES = 5 * 1024 * MiB;
const S3_DEFAULT_PART_BYTES = 8 * MiB;

/** `mongodb://user:password@host`: a password must come from the environment, never from a committed file. */
const URL_WITH_PASSWORD = /^[a-z+]+:\/\/[^/@]*:[^/@]*@/i;
const MongoUrlSchema = z.string().regex(/^mongodb(\+srv)?:\/\/\S+$/, "must be a mongodb:// or mongodb+srv:// URL");
const MongoDatabaseSchema = z.string().regex(/^[A-Za-z0-9_-]{1,63}$/, "must be 1 to 63 letters, digits, _ or -");
/**
 * `majority` waits for most of a replica set; a number waits for that many members. 0 (unacknowledged) is
 * refused: a task must be durable when acknowledged.
 */
const WriteConcernSchema = z.union([z.literal("majority"), z.int().min(1)], {
  error: 'must be "majority" or a whole number of members >= 1',
});

const S3HostSchema = z
  .string()
  .regex(/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/, "must be a host name or IPv4 address, without scheme or port (S3_URL takes a URL)");
/** S3's bucket naming rules (3 to 63 lowercase letters, digits, dots and hyphens). */
const S3BucketSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
    "must be 3 to 63 lowercase letters, digits, . or -, starting and ending with a letter or digit",
  );
/** Segments of blob-key characters, none starting with a dot; "" stores keys at the bucket's root. */
const S3PrefixSchema = z
  .string()
  .max(200)
  .regex(
    /^([A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*)?$/,
    "must be /-separated names of letters, digits, . _ - (no leading dot, no empty segment, no leading or trailing /)",
  );

/** A key that must never be set in a file: the message says which variable to use instead. */
function fromEnvOnly(variable: string) {
  return z.never({ error: `is a secret: set the environment variable ${variable} instead, never a config file` }).optional();
}

/** The only place the PostgreSQL store's URL comes from (never a config file: it holds a password). */
export const POSTGRES_URL_VARIABLE = "DOCQ_POSTGRES_URL";
const PostgresUrlSchema = z.string().regex(/^postgres(ql)?:\/\/\S+$/, "must be a postgres:// or postgresql:// URL");
const PostgresSchemaNameSchema = z
  .string()
  .regex(/^[a-z_][a-z0-9_]{0,62}$/, "must be 1 to 63 lowercase letters, digits or _, not starting with a digit");

const StoreSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("sqlite") }),
  z.strictObject({
    type: z.literal("mongodb"),
    url: MongoUrlSchema.refine((url) => !URL_WITH_PASSWORD.test(url), "must not hold a password: set MONGO_URL instead")
      .nullable()
      .default(null),
    database: MongoDatabaseSchema.default("docq"),
    writeConcern: WriteConcernSchema.default("majority"),
  }),
  z.strictObject({
    type: z.literal("postgres"),
    /** The URL holds the server and usually a password: only from the environment. */
    url: fromEnvOnly(POSTGRES_URL_VARIABLE),
    /** The schema the tables live in (made when missing): several sites can share one database. Null: the URL's search_path (public). */
    schema: PostgresSchemaNameSchema.nullable().default(null),
    poolSize: z.int().min(1).max(200).default(10),
  }),
]);

const BlobsSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("fs") }),
  z.strictObject({
    type: z.literal("s3"),
    endPoint: S3HostSchema.nullable().default(null),
    port: z.int().min(1).max(65535).nullable().default(null),
    useSSL: z.boolean().default(false),
    bucket: S3BucketSchema.default("docq"),
    prefix: S3PrefixSchema.nullable().default(null),
    region: z.string().min(1).default("us-east-1"),
    partSizeBytes: z.int().min(S3_MIN_PART_BYTES).max(S3_MAX_PART_BYTES).default(S3_DEFAULT_PART_BYTES),
    accessKey: fromEnvOnly("S3_ACCESS_KEY"),
    secretKey: fromEnvOnly("S3_SECRET_KEY"),
  }),
]);

export type SqliteStoreConfig = { type: "sqlite" };
export interface MongoStoreConfig {
  type: "mongodb";
  /** From DOCQ_MONGO_URL, else MONGO_URL, else the file's `store.url`. May hold credentials: never log it whole. */
  url: string;
  database: string;
  writeConcern: "majority" | number;
}
export interface PostgresStoreConfig {
  type: "postgres";
  /** From DOCQ_POSTGRES_URL only. May hold credentials: never log it whole. */
  url: string;
  schema: string | null;
  poolSize: number;
}
export type StoreConfig = SqliteStoreConfig | MongoStoreConfig | PostgresStoreConfig;

export type FsBlobsConfig = { type: "fs" };
export interface S3BlobsConfig {
  type: "s3";
  endPoint: string;
  port: number;
  useSSL: boolean;
  bucket: string;
  /** Every key is stored as `<prefix>/<key>` (or `<key>` when ""); defaults to the site name. */
  prefix: string;
  region: string;
  partSizeBytes: number;
  /** From S3_ACCESS_KEY and S3_SECRET_KEY only. */
  accessKey: string;
  secretKey: string;
}
export type BlobsConfig = FsBlobsConfig | S3BlobsConfig;

/** A section whose every line is commented out reads as `null` in YAML; treat it as absent, not as a type error. */
function section<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => (value === null ? undefined : value), schema);
}

const DurabilitySchema = z.enum(["process", "power"], {
  error: 'must be "process" (survives a process crash) or "power" (survives a power loss)',
});
export type Durability = z.output<typeof DurabilitySchema>;

const ConfigFileSchema = z.strictObject({
  site: SiteSchema.default("local"),
  port: PortSchema.default(3000),
  // Loopback by default: reachable from another machine only when chosen, and then only with keys.
  host: HostSchema.default("127.0.0.1"),
  dataDir: FolderSchema.default("./data"),
  jobsDir: FolderSchema.default("./scripts-job"),
  slots: SlotsSchema.nullable().default(null),
  maxBodyBytes: z
    .int()
    .positive()
    .default(1024 * 1024 * 1024),
  logLevel: LogLevelSchema.default("info"),
  logFormat: LogFormatSchema.default("text"),
  // On SIGTERM/SIGINT running tasks get this long to finish before they are killed and queued again.
  shutdownGraceMs: GraceMsSchema.default(30_000),
  // What an acknowledged task and a recorded result survive: "process" (a crash or SIGKILL of any
  // docq process; no fsync per document, SQLite synchronous=NORMAL) or "power" (an OS crash or power
  // loss too; each document and its folder fsynced, SQLite synchronous=FULL).
  durability: DurabilitySchema.default("process"),
  store: section(StoreSchema.default({ type: "sqlite" })),
  blobs: section(BlobsSchema.default({ type: "fs" })),
  queue: section(
    z
      .strictObject({
        maxTries: z.int().min(1).default(10),
        leaseMs: DurationMsSchema.default(30_000),
        heartbeatMs: DurationMsSchema.default(5_000),
        sweepMs: DurationMsSchema.default(1_000),
        backoffBaseMs: DurationMsSchema.default(1_000),
        backoffMaxMs: DurationMsSchema.default(300_000),
        maxSplitDepth: z.int().min(0).max(10).default(2),
        gcIntervalMs: DurationMsSchema.default(300_000),
        gcGraceMs: DurationMsSchema.default(300_000),
      })
      .prefault({}),
  ),
  worker: section(z.strictObject({ batchSize: z.int().min(0).default(0), spawner: z.boolean().default(true) }).prefault({})),
  // The site's broker: null runs every service in one process with no transporter (embedded mode).
  nats: section(z.strictObject({ url: NatsUrlSchema.nullable().default(null) }).prefault({})),
  stealing: section(
    z
      .strictObject({
        // The NATS between the sites' stealers: null means this site neither steals nor lends.
        globalNatsUrl: NatsUrlSchema.nullable().default(null),
        enabled: z.boolean().default(true),
        onlyWhenIdle: z.boolean().default(true),
        minVictimBacklog: z.int().min(1).default(1),
        minPriority: z.int().min(0).max(100).default(0),
        maxInFlight: z.int().min(1).default(8),
        allow: z.array(SiteSchema).nullable().default(null),
        backlogIntervalMs: DurationMsSchema.default(2000),
        tls: z.strictObject({ ca: FolderSchema, cert: FolderSchema, key: FolderSchema }).nullable().default(null),
        // The group of sites this one belongs to: a thief steals within its plate first.
        plate: SiteSchema.default("default"),
        // Other plates this site may steal from and lend to when its own plate has no backlog worth
        // stealing: false (none), true (any), or a list of plates. Both sides must allow it.
        crossPlate: z.union([z.boolean(), z.array(SiteSchema)]).default(false),
        // A victim answers a thief of another plate this long after it asked, when a site of its own
        // plate is stealing too: its plate-mates, asking at the same news, pick first.
        crossPlateHoldMs: z.int().min(0).default(250),
        // The throughput (bytes/ms) assumed for a link to another site until a transfer of 64 KiB or
        // more measured it: what a steal's document is expected to cost on a link not yet seen.
        linkPriorBytesPerMs: z.number().positive().default(10_000),
        // Before its first steal from a site, a thief times a transfer of this many bytes from it,
        // so even that steal is weighed on the link's real throughput. 0: no probe, the prior holds.
        probeBytes: z
          .int()
          .min(0)
          .max(4 * 1024 * 1024)
          .default(256 * 1024),
        // A stolen task's document (or its result going home) that sends no byte for this long is
        // given up and the task given back to its owner: a stream over a saturated link can stall for good.
        transferStallMs: DurationMsSchema.default(15_000),
      })
      .prefault({}),
  ),
  jobs: section(
    z
      .strictObject({
        defaultTimeoutMs: DurationMsSchema.default(600_000),
        // Variables of the server's environment a job script may see, beyond PATH, HOME, TMPDIR and LANG.
        passEnv: z.array(EnvNameSchema).default([]),
      })
      .prefault({}),
  ),
  // /metrics needs the admin key (or DOCQ_METRICS_KEY) unless public.
  metrics: section(z.strictObject({ public: z.boolean().default(false) }).prefault({})),
  // The web origins whose pages may call the API from a browser; none by default.
  http: section(z.strictObject({ corsOrigins: CorsOriginsSchema.default([]) }).prefault({})),
  // Deliveries of a task's record to its callbackUrl when it ends.
  webhooks: section(
    z
      .strictObject({
        maxTries: z.int().min(1).max(100).default(10),
        backoffBaseMs: DurationMsSchema.default(1_000),
        backoffMaxMs: DurationMsSchema.default(300_000),
        timeoutMs: DurationMsSchema.default(10_000),
        // Deliveries in flight at once: a slow receiver never holds more than this many sockets.
        concurrency: z.int().min(1).max(1000).default(8),
        // The HMAC key of X-Docq-Signature (DOCQ_WEBHOOK_SECRET wins); the receivers hold it too.
        secret: z.string().min(1).max(1000).nullable().default(null),
      })
      .prefault({}),
  ),
  // How long finished top-level tasks (with their trees and documents) are kept; null keeps them.
  // A job's job.yaml `retention` overrides a status's window for its tasks.
  retention: section(
    z
      .strictObject({
        outputMs: RetentionWindowSchema.default(7 * DAY_MS),
        errorMs: RetentionWindowSchema.default(30 * DAY_MS),
        canceledMs: RetentionWindowSchema.default(DAY_MS),
        // How often the active queuer sweeps, and how many top-level tasks one batch removes (a few batches a pass).
        sweepMs: DurationMsSchema.default(60_000),
        batchSize: z.int().min(1).max(10_000).default(200),
      })
      .prefault({}),
  ),
});
type ConfigFile = z.output<typeof ConfigFileSchema>;

/**
 * The loaded configuration: the file's schema with `slots` made concrete, both folders absolute, and
 * the stores' endpoints and secrets filled in from the environment.
 */
export type DocqConfig = Omit<ConfigFile, "slots" | "store" | "blobs" | "webhooks"> & {
  slots: number;
  store: StoreConfig;
  blobs: BlobsConfig;
  auth: AuthConfig;
  webhooks: WebhooksConfig;
};

export interface WebhooksConfig {
  maxTries: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  timeoutMs: number;
  concurrency: number;
  /** `webhooks.secret`, or DOCQ_WEBHOOK_SECRET over it: the HMAC key of X-Docq-Signature. Null: deliveries go unsigned. */
  secret: string | null;
}

/** Secrets of the API, from the environment only (never the config file, which gets copied and committed). */
export interface AuthConfig {
  /** DOCQ_ADMIN_KEY: once set, every route but /api/health needs a key. Null: authentication off. */
  adminKey: string | null;
  /** DOCQ_METRICS_KEY: a key that may read /metrics and nothing else. */
  metricsKey: string | null;
}

/** Loopback names and addresses: only this machine can reach them. */
function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

/** A comma-separated list, blanks around the commas ignored. */
const CommaListSchema = z.string().transform((raw) =>
  raw
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== ""),
);

const WholeNumberSchema = z.string().regex(/^\d+$/, "expected a whole number").transform(Number);

interface EnvOverride {
  variable: string;
  key: string;
  apply(config: ConfigFile, raw: string): void;
}

function envOverride<T>(
  variable: string,
  key: string,
  schema: z.ZodType<T, string>,
  set: (config: ConfigFile, value: T) => void,
): EnvOverride {
  return {
    variable,
    key,
    apply(config, raw) {
      const result = schema.safeParse(raw);
      if (!result.success) {
        throw docqError(
          ERROR_CODE.Config,
          `environment variable ${variable}=${JSON.stringify(raw)} (${key}): ${formatZodIssues(result.error.issues)}`,
          {
            field: variable,
          },
        );
      }
      set(config, result.data);
    },
  };
}

const ENV_OVERRIDES: readonly EnvOverride[] = [
  envOverride("PORT", "port", WholeNumberSchema.pipe(PortSchema), (c, v) => (c.port = v)),
  envOverride("DATA_DIR", "dataDir", FolderSchema, (c, v) => (c.dataDir = v)),
  envOverride("DOCQ_SLOTS", "slots", WholeNumberSchema.pipe(SlotsSchema), (c, v) => (c.slots = v)),
  envOverride("DOCQ_SITE", "site", SiteSchema, (c, v) => (c.site = v)),
  envOverride("DOCQ_JOBS_DIR", "jobsDir", FolderSchema, (c, v) => (c.jobsDir = v)),
  envOverride("DOCQ_LEASE_MS", "queue.leaseMs", WholeNumberSchema.pipe(DurationMsSchema), (c, v) => (c.queue.leaseMs = v)),
  envOverride("DOCQ_LOG_LEVEL", "logLevel", LogLevelSchema, (c, v) => (c.logLevel = v)),
  envOverride("DOCQ_NATS_URL", "nats.url", NatsUrlSchema, (c, v) => (c.nats.url = v)),
  envOverride("DOCQ_GLOBAL_NATS_URL", "stealing.globalNatsUrl", NatsUrlSchema, (c, v) => (c.stealing.globalNatsUrl = v)),
  envOverride("DOCQ_HOST", "host", HostSchema, (c, v) => (c.host = v)),
  envOverride("DOCQ_PASS_ENV", "jobs.passEnv", CommaListSchema.pipe(z.array(EnvNameSchema)), (c, v) => (c.jobs.passEnv = v)),
  envOverride("DOCQ_LOG_FORMAT", "logFormat", LogFormatSchema, (c, v) => (c.logFormat = v)),
  envOverride("DOCQ_DURABILITY", "durability", DurabilitySchema, (c, v) => (c.durability = v)),
  envOverride("DOCQ_SHUTDOWN_GRACE_MS", "shutdownGraceMs", WholeNumberSchema.pipe(GraceMsSchema), (c, v) => (c.shutdownGraceMs = v)),
  envOverride("DOCQ_CORS_ORIGINS", "http.corsOrigins", CommaListSchema.pipe(CorsOriginsSchema), (c, v) => (c.http.corsOrigins = v)),
];

/**
 * Reads the YAML config (`opts.file`, else `$DOCQ_CONFIG`, else `config/default.yaml`), fills defaults,
 * applies environment overrides, and checks the result. Throws DocqError CONFIG naming the file and key,
 * or the variable, at fault.
 */
export async function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv } = {}): Promise<DocqConfig> {
  const env = opts.env ?? process.env;
  const file = path.resolve(opts.file ?? nonEmpty(env.DOCQ_CONFIG) ?? DEFAULT_CONFIG_FILE);
  const label = displayPath(file);

  const config = parseConfigFile(await readConfigFile(file, label), label);
  const overriddenBy = new Map<string, string>();
  for (const override of ENV_OVERRIDES) {
    const raw = nonEmpty(env[override.variable]);
    if (raw === undefined) continue;
    override.apply(config, raw);
    overriddenBy.set(override.key, override.variable);
  }
  crossCheck(config, label, overriddenBy);
  const store = resolveStore(config, env, label);
  const blobs = resolveBlobs(config, env, label);
  const auth = resolveAuth(config, env, label, overriddenBy);
  const webhooks: WebhooksConfig = { ...config.webhooks, secret: nonEmpty(env.DOCQ_WEBHOOK_SECRET) ?? config.webhooks.secret };

  const cwd = process.cwd();
  return {
    ...config,
    store,
    blobs,
    auth,
    webhooks,
    slots: config.slots ?? os.availableParallelism(),
    dataDir: path.resolve(cwd, config.dataDir),
    // The default `./scripts-job` names the repo's folder wherever docq is started from; a path typed in a shell means the shell's folder.
    jobsDir: path.resolve(overriddenBy.has("jobsDir") ? cwd : REPO_ROOT, config.jobsDir),
  };
}

async function readConfigFile(file: string, label: string): Promise<string> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    throw docqError(ERROR_CODE.Config, `${label}: cannot read config file: ${errorMessage(err)}`, { cause: err, details: { file } });
  }
}

function parseConfigFile(text: string, label: string): ConfigFile {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw docqError(ERROR_CODE.Config, `${label}: not valid YAML: ${errorMessage(err).trimEnd()}`, { cause: err });
  }
  const result = ConfigFileSchema.safeParse(raw ?? {});
  if (!result.success) throw docqError(ERROR_CODE.Config, `${label}: ${formatZodIssues(result.error.issues)}`);
  return result.data;
}

function crossCheck(config: ConfigFile, label: string, overriddenBy: ReadonlyMap<string, string>): void {
  const show = (key: string, value: number): string => {
    const variable = overriddenBy.get(key);
    return `${key} (${value}${variable === undefined ? "" : `, from ${variable}`})`;
  };
  const { queue } = config;
  const problems: string[] = [];
  // A worker must renew its lease at least once before it expires, or healthy tasks get re-queued.
  if (queue.heartbeatMs >= queue.leaseMs)
    problems.push(`${show("queue.heartbeatMs", queue.heartbeatMs)} must be less than ${show("queue.leaseMs", queue.leaseMs)}`);
  if (queue.backoffBaseMs > queue.backoffMaxMs)
    problems.push(`${show("queue.backoffBaseMs", queue.backoffBaseMs)} must not exceed ${show("queue.backoffMaxMs", queue.backoffMaxMs)}`);
  if (problems.length > 0) throw docqError(ERROR_CODE.Config, `${label}: ${problems.join("; ")}`);
}

/** A secret from the environment variable `variable`, checked (SecretSchema); null when unset. */
function secretFromEnv(env: NodeJS.ProcessEnv, variable: string): string | null {
  const raw = nonEmpty(env[variable]);
  if (raw === undefined) return null;
  const result = SecretSchema.safeParse(raw);
  // Never echo a secret, not even a wrong one.
  if (!result.success)
    throw docqError(ERROR_CODE.Config, `environment variable ${variable}: ${formatZodIssues(result.error.issues)}`, { field: variable });
  return result.data;
}

/** The API's secrets, from the environment; refuses to listen beyond loopback with no key to ask for. */
function resolveAuth(config: ConfigFile, env: NodeJS.ProcessEnv, label: string, overriddenBy: ReadonlyMap<string, string>): AuthConfig {
  const auth = { adminKey: secretFromEnv(env, "DOCQ_ADMIN_KEY"), metricsKey: secretFromEnv(env, "DOCQ_METRICS_KEY") };
  if (auth.adminKey === null && !isLoopbackHost(config.host)) {
    const from = overriddenBy.has("host") ? ` (from ${overriddenBy.get("host")})` : ` (${label})`;
    throw docqError(
      ERROR_CODE.Config,
      `host "${config.host}"${from} is reachable from other machines, and authentication is off: ` +
        "set DOCQ_ADMIN_KEY in the environment to require API keys (see README, Security), or listen on 127.0.0.1",
      { field: "host" },
    );
  }
  return auth;
}

/** The PostgreSQL store with its URL, which only DOCQ_POSTGRES_URL gives. */
function resolvePostgresStore(
  store: { schema: string | null; poolSize: number },
  env: NodeJS.ProcessEnv,
  label: string,
): PostgresStoreConfig {
  const raw = nonEmpty(env[POSTGRES_URL_VARIABLE]);
  if (raw === undefined) {
    throw docqError(
      ERROR_CODE.Config,
      `${label}: store.type postgres needs its URL in the environment variable ${POSTGRES_URL_VARIABLE} (postgresql://user:password@host:5432/database), never in a config file`,
      { field: POSTGRES_URL_VARIABLE },
    );
  }
  const result = PostgresUrlSchema.safeParse(raw);
  // The value may hold a password: name the variable, not its content.
  if (!result.success)
    throw docqError(ERROR_CODE.Config, `environment variable ${POSTGRES_URL_VARIABLE}: ${formatZodIssues(result.error.issues)}`, {
      field: POSTGRES_URL_VARIABLE,
    });
  return { type: "postgres", url: result.data, schema: store.schema, poolSize: store.poolSize };
}

/**
 * The task store with its URL: DOCQ_MONGO_URL, else MONGO_URL, else the file's `store.url`. The
 * variables are read only when the file chooses mongodb, so a MONGO_URL meant for something else
 * (the MongoDB contract suite) never switches the store.
 */
function resolveStore(config: ConfigFile, env: NodeJS.ProcessEnv, label: string): StoreConfig {
  const store = config.store;
  if (store.type === "sqlite") return { type: "sqlite" };
  if (store.type === "postgres") return resolvePostgresStore(store, env, label);
  let url = store.url;
  const variable = nonEmpty(env.DOCQ_MONGO_URL) !== undefined ? "DOCQ_MONGO_URL" : "MONGO_URL";
  const raw = nonEmpty(env[variable]);
  if (raw !== undefined) {
    const result = MongoUrlSchema.safeParse(raw);
    // The value may hold a password: name the variable, not its content.
    if (!result.success)
      throw docqError(ERROR_CODE.Config, `environment variable ${variable} (store.url): ${formatZodIssues(result.error.issues)}`, {
        field: variable,
      });
    url = result.data;
  }
  if (url === null) {
    throw docqError(
      ERROR_CODE.Config,
      `${label}: store.type mongodb needs a URL: set MONGO_URL (or DOCQ_MONGO_URL), or store.url without a password`,
      {
        field: "store.url",
      },
    );
  }
  return { type: "mongodb", url, database: store.database, writeConcern: store.writeConcern };
}

/**
 * The blob store with its endpoint (S3_URL overrides the file's endPoint, port and useSSL) and its
 * keys, which come from S3_ACCESS_KEY and S3_SECRET_KEY only. Read only when the file chooses s3.
 */
function resolveBlobs(config: ConfigFile, env: NodeJS.ProcessEnv, label: string): BlobsConfig {
  const blobs = config.blobs;
  if (blobs.type === "fs") return { type: "fs" };
  let { endPoint, port, useSSL } = blobs;
  const s3Url = nonEmpty(env.S3_URL);
  if (s3Url !== undefined) ({ endPoint, port, useSSL } = parseS3Url(s3Url));
  if (endPoint === null) {
    throw docqError(ERROR_CODE.Config, `${label}: blobs.endPoint is required for blobs.type s3 (or set S3_URL=http://host:port)`, {
      field: "blobs.endPoint",
    });
  }
  const accessKey = nonEmpty(env.S3_ACCESS_KEY);
  const secretKey = nonEmpty(env.S3_SECRET_KEY);
  const missing = [accessKey === undefined ? "S3_ACCESS_KEY" : null, secretKey === undefined ? "S3_SECRET_KEY" : null].filter(
    (v) => v !== null,
  );
  if (accessKey === undefined || secretKey === undefined) {
    throw docqError(
      ERROR_CODE.Config,
      `blobs.type s3 needs the environment variable${missing.length > 1 ? "s" : ""} ${missing.join(" and ")}: S3 keys are never read from a config file`,
      {
        field: missing[0] ?? "S3_ACCESS_KEY",
      },
    );
  }
  return {
    type: "s3",
    endPoint,
    port: port ?? (useSSL ? 443 : 80),
    useSSL,
    bucket: blobs.bucket,
    prefix: blobs.prefix ?? config.site,
    region: blobs.region,
    partSizeBytes: blobs.partSizeBytes,
    accessKey,
    secretKey,
  };
}

/** `http://host[:port]` or `https://host[:port]`, nothing else: no credentials, path or query. */
function parseS3Url(raw: string): { endPoint: string; port: number; useSSL: boolean } {
  const refuse = (why: string): never => {
    throw docqError(ERROR_CODE.Config, `environment variable S3_URL=${JSON.stringify(raw)} (blobs.endPoint): ${why}`, { field: "S3_URL" });
  };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return refuse("not a URL; expected http://host:port or https://host:port");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") refuse(`expected http:// or https://, got ${url.protocol}//`);
  if (url.username !== "" || url.password !== "") refuse("must not hold credentials: set S3_ACCESS_KEY and S3_SECRET_KEY");
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "")
    refuse("must be only a scheme, host and port (the bucket is blobs.bucket)");
  const useSSL = url.protocol === "https:";
  const endPoint = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return { endPoint, port: url.port === "" ? (useSSL ? 443 : 80) : Number(url.port), useSSL };
}

/** Container setups often pass `VAR=` for "not set"; reading that as a value would turn a default into an error. */
function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative === "" || relative === ".." || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative) ? file : relative;
}
