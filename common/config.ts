import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { docqError, ERROR_CODE, errorMessage } from "./errors.js";
import { formatZodIssues } from "./job-registry.js";
import { SITE_PATTERN } from "./task-model.js";

const REPO_ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEFAULT_CONFIG_FILE = path.join(REPO_ROOT, "config", "default.yaml");

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const SiteSchema = z.string().regex(SITE_PATTERN, `must match ${String(SITE_PATTERN)}`);
const PortSchema = z.int().min(0).max(65535);
const FolderSchema = z.string().min(1);
const SlotsSchema = z.int().positive();
const DurationMsSchema = z.int().positive();
const LogLevelSchema = z.enum(LOG_LEVELS);

/** A section whose every line is commented out reads as `null` in YAML; treat it as absent, not as a type error. */
function section<T extends z.ZodType>(schema: T) {
  return z.preprocess((value) => (value === null ? undefined : value), schema);
}

const ConfigFileSchema = z.strictObject({
  site: SiteSchema.default("local"),
  port: PortSchema.default(3000),
  dataDir: FolderSchema.default("./data"),
  jobsDir: FolderSchema.default("./scripts-job"),
  slots: SlotsSchema.nullable().default(null),
  maxBodyBytes: z.int().positive().default(1024 * 1024 * 1024),
  logLevel: LogLevelSchema.default("info"),
  // Unions of one, so adding mongodb / s3 is a new member rather than a new shape.
  store: section(z.discriminatedUnion("type", [z.strictObject({ type: z.literal("sqlite") })]).default({ type: "sqlite" })),
  blobs: section(z.discriminatedUnion("type", [z.strictObject({ type: z.literal("fs") })]).default({ type: "fs" })),
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
      })
      .prefault({}),
  ),
  worker: section(z.strictObject({ batchSize: z.int().min(0).default(0) }).prefault({})),
  jobs: section(z.strictObject({ defaultTimeoutMs: DurationMsSchema.default(600_000) }).prefault({})),
});
type ConfigFile = z.output<typeof ConfigFileSchema>;

/** The loaded configuration: the file's schema with `slots` made concrete and both folders absolute. */
export type DocqConfig = Omit<ConfigFile, "slots"> & { slots: number };

const WholeNumberSchema = z
  .string()
  .regex(/^\d+$/, "expected a whole number")
  .transform(Number);

interface EnvOverride {
  variable: string;
  key: string;
  apply(config: ConfigFile, raw: string): void;
}

function envOverride<T>(variable: string, key: string, schema: z.ZodType<T, string>, set: (config: ConfigFile, value: T) => void): EnvOverride {
  return {
    variable,
    key,
    apply(config, raw) {
      const result = schema.safeParse(raw);
      if (!result.success) {
        throw docqError(ERROR_CODE.Config, `environment variable ${variable}=${JSON.stringify(raw)} (${key}): ${formatZodIssues(result.error.issues)}`, {
          field: variable,
        });
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

  const cwd = process.cwd();
  return {
    ...config,
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
  if (queue.heartbeatMs >= queue.leaseMs) problems.push(`${show("queue.heartbeatMs", queue.heartbeatMs)} must be less than ${show("queue.leaseMs", queue.leaseMs)}`);
  if (queue.backoffBaseMs > queue.backoffMaxMs) problems.push(`${show("queue.backoffBaseMs", queue.backoffBaseMs)} must not exceed ${show("queue.backoffMaxMs", queue.backoffMaxMs)}`);
  if (problems.length > 0) throw docqError(ERROR_CODE.Config, `${label}: ${problems.join("; ")}`);
}

/** Container setups often pass `VAR=` for "not set"; reading that as a value would turn a default into an error. */
function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative === "" || relative === ".." || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative) ? file : relative;
}
