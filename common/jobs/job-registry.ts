import { execFile } from "node:child_process";
import { constants as fsConstants, promises as fs } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import { JOB_NAME_PATTERN } from "../model/task-model.js";
import { formatZodIssues } from "../model/zod-issues.js";
import { RetentionWindowSchema } from "../config/config.js";
import type { JobRetention } from "../queue/retention.js";
import { parseWorkflow, WorkflowDefinitionError } from "../workflows/parse-workflow.js";
import type { WorkflowDefinition } from "../workflows/workflow-definition.js";

export type ParamsSchema = z.ZodType<Record<string, unknown>>;

export interface JobDefinition {
  name: string;
  /** job.yaml `description`: what the job does, for people (GET /api/jobs, the dashboard's submit form). */
  description?: string;
  /** Real path of the folder holding the job's files (the jobs dir itself for a single-file job). */
  dir: string;
  /** Absolute path of the program to execute: an interpreter, or the script itself when it has a shebang. */
  command: string;
  args: string[];
  timeoutMs: number;
  maxTries: number | null;
  split: boolean;
  env: Record<string, string>;
  /** Variables of the server's environment the job may see beyond the basics (config `jobs.passEnv`). */
  passEnv: readonly string[];
  paramsSchema: ParamsSchema | null;
  warm: boolean;
  maxRequests: number | null;
  maxRssMb: number | null;
  /** Requests one warm process may hold at once (job.yaml `concurrency`, 1 unless said). */
  concurrency: number;
  /**
   * job.yaml `inline: true` (warm jobs): a small document (a split's, a child's part, a merge's
   * parts) goes to the process inside its request line and the output (or the split's parts) comes
   * back inside the answer (base64), not as files of a work dir (README "Warm jobs"). Absent: false.
   */
  inline?: boolean;
  /** job.yaml `retention`: this job's own windows per final status (ms, null = keep); a status left out keeps the site's. */
  retention?: JobRetention;
  /**
   * job.yaml `workflow:`: a job made of jobs, checked (its steps' jobs exist and are not workflows).
   * Such a job has no script: `command` is empty and no worker may run it; the queue runs its steps.
   */
  workflow?: WorkflowDefinition;
  /** A workflow's flow lines as job.yaml writes them (GET /api/jobs shows them). */
  workflowFlow?: readonly string[];
}

/** One job of the jobs folder as GET /api/jobs lists it: its definition, or why it is refused. */
export type JobCatalogEntry = { name: string; job: JobDefinition } | { name: string; error: string };

/** True for a job made of jobs (job.yaml `workflow:`): the queue runs its steps, never a worker the job itself. */
export function isWorkflowJob(job: JobDefinition): job is JobDefinition & { workflow: WorkflowDefinition } {
  return job.workflow !== undefined;
}

/** Long enough to spare the filesystem on the per-task hot path, short enough that an edited job.yaml takes effect at once. */
const CACHE_TTL_MS = 1000;
const SCRIPT_EXTENSIONS = [".py", ".js", ".mjs", ".sh"] as const;
const JOB_YAML = "job.yaml";
/** The most requests a warm process may hold at once: past that, one process per few slots serves no purpose. */
export const MAX_WARM_CONCURRENCY = 64;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PARAM_TYPES = ["string", "number", "integer", "boolean", "object", "array"] as const;

const ParamSpecSchema = z
  .strictObject({
    type: z.enum(PARAM_TYPES),
    required: z.boolean().optional(),
    min: z.number().optional(),
    max: z.number().optional(),
  })
  .superRefine((spec, ctx) => {
    if ((spec.type === "boolean" || spec.type === "object") && (spec.min !== undefined || spec.max !== undefined)) {
      ctx.addIssue({ code: "custom", message: `min/max do not apply to type ${spec.type}` });
    }
    if (spec.min !== undefined && spec.max !== undefined && spec.min > spec.max) {
      ctx.addIssue({ code: "custom", path: ["min"], message: "min is greater than max" });
    }
  });
type ParamSpec = z.infer<typeof ParamSpecSchema>;

const JobYamlSchema = z
  .strictObject({
    // What the job does, for people: GET /api/jobs shows it.
    description: z.string().max(2000).optional(),
    entry: z.string().min(1).optional(),
    timeoutMs: z.int().positive().optional(),
    maxTries: z.int().min(1).optional(),
    split: z.boolean().optional(),
    // YAML reads `FOO: 1` as a number; an env value is always a string, so accept scalars as written.
    env: z
      .record(z.string().regex(ENV_NAME, "not a valid variable name"), z.union([z.string(), z.number(), z.boolean()]).transform(String))
      .optional(),
    params: z.record(z.string().min(1), ParamSpecSchema).optional(),
    // Warm job processes (common/jobs/warm-pool.ts): kept alive between tasks, recycled after maxRequests or above maxRssMb.
    warm: z.boolean().optional(),
    maxRequests: z.int().min(1).optional(),
    maxRssMb: z.int().min(1).optional(),
    concurrency: z.int().min(1).max(MAX_WARM_CONCURRENCY).optional(),
    inline: z.boolean().optional(),
    // How long this job's finished tasks are kept, per final status (config `retention` for the others).
    retention: z
      .strictObject({
        outputMs: RetentionWindowSchema.optional(),
        errorMs: RetentionWindowSchema.optional(),
        canceledMs: RetentionWindowSchema.optional(),
      })
      .optional(),
    // A job made of jobs (common/workflows/parse-workflow.ts checks it): no script of its own.
    workflow: z.unknown().optional(),
  })
  .superRefine((config, ctx) => {
    if (config.workflow !== undefined) {
      for (const key of Object.keys(config)) {
        if (key !== "workflow" && key !== "retention" && key !== "description")
          ctx.addIssue({ code: "custom", path: [key], message: "does not apply to a workflow job (it has no script of its own)" });
      }
    }
    // A limit on a job that is not warm would silently do nothing.
    for (const key of ["maxRequests", "maxRssMb", "concurrency", "inline"] as const) {
      if (config[key] !== undefined && config.warm !== true)
        ctx.addIssue({ code: "custom", path: [key], message: "applies to warm jobs only: add warm: true" });
    }
  });
type JobYaml = z.infer<typeof JobYamlSchema>;

/**
 * Finds job scripts in one folder by name. Lookups hit the filesystem on a cache miss, so a job
 * dropped into the folder is found without a restart; hits are trusted for at most CACHE_TTL_MS.
 */
export class JobRegistry {
  private readonly dir: string;
  private readonly defaultTimeoutMs: number;
  private readonly passEnv: readonly string[];
  private readonly cache = new Map<string, { def: JobDefinition; at: number }>();
  private readonly loading = new Map<string, Promise<JobDefinition>>();
  private rootPromise: Promise<string> | undefined;

  constructor(opts: { dir: string; defaultTimeoutMs: number; passEnv?: readonly string[] }) {
    this.dir = path.resolve(opts.dir);
    this.defaultTimeoutMs = opts.defaultTimeoutMs;
    this.passEnv = opts.passEnv ?? [];
  }

  async resolve(name: string): Promise<JobDefinition> {
    const hit = this.cache.get(name);
    if (hit !== undefined && Date.now() - hit.at < CACHE_TTL_MS) return hit.def;
    if (!JOB_NAME_PATTERN.test(name)) {
      throw docqError(ERROR_CODE.BadRequest, `invalid job name "${name}": must match ${String(JOB_NAME_PATTERN)}`, { field: "job" });
    }
    let pending = this.loading.get(name);
    if (pending === undefined) {
      pending = this.load(name)
        .then(
          (def) => {
            this.cache.set(name, { def, at: Date.now() });
            return def;
          },
          (err: unknown) => {
            this.cache.delete(name);
            throw err;
          },
        )
        .finally(() => this.loading.delete(name));
      this.loading.set(name, pending);
    }
    return pending;
  }

  /** Every valid job in the folder, by name. Broken jobs (bad job.yaml, ambiguous names) are left out; resolve() explains them. */
  async list(): Promise<JobDefinition[]> {
    const results = await Promise.allSettled((await this.names()).map((n) => this.resolve(n)));
    return results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  }

  /** The checked definition of a workflow job, null for a script job; refuses an unknown or broken job as resolve() does. */
  async workflowOf(name: string): Promise<WorkflowDefinition | null> {
    return (await this.resolve(name)).workflow ?? null;
  }

  /** Every job in the folder by name, the refused ones with the reason resolve() gives (GET /api/jobs). */
  async catalog(): Promise<JobCatalogEntry[]> {
    const names = await this.names();
    const entries = await Promise.all(
      names.map((name) =>
        this.resolve(name).then(
          (job): JobCatalogEntry => ({ name, job }),
          // A folder that holds no job (scripts-job/lib, the warm helpers) is no refused job: left out.
          (err: unknown): JobCatalogEntry | null => (isDocqError(err, ERROR_CODE.JobNotFound) ? null : { name, error: errorMessage(err) }),
        ),
      ),
    );
    return entries.filter((entry) => entry !== null);
  }

  /** The jobs whose job.yaml sets a retention window of their own, by name (the queuer's retention sweep reads it). */
  async retentionByJob(): Promise<Map<string, JobRetention>> {
    const jobs = await this.list();
    return new Map(
      jobs.flatMap((job) => (job.retention !== undefined && Object.keys(job.retention).length > 0 ? [[job.name, job.retention]] : [])),
    );
  }

  validateParams(job: JobDefinition, params: Record<string, unknown>): Record<string, unknown> {
    if (job.paramsSchema === null) return params;
    const result = job.paramsSchema.safeParse(params);
    if (result.success) return result.data;
    const problems = result.error.issues.map((issue) => {
      if (issue.code === "unrecognized_keys") return issue.keys.map((k) => `unknown param "${k}"`).join(", ");
      const [key, ...rest] = issue.path.map(String);
      if (key === undefined) return issue.message;
      if (rest.length === 0 && !Object.hasOwn(params, key)) return `param "${key}" is required`;
      return `param "${[key, ...rest].join(".")}": ${issue.message}`;
    });
    throw docqError(ERROR_CODE.BadRequest, `job "${job.name}": ${problems.join("; ")}`, { field: "params" });
  }

  /** The job names the folder's entries give, sorted. */
  private async names(): Promise<string[]> {
    const root = await this.root();
    const names = new Set<string>();
    for (const entry of await fs.readdir(root)) {
      const ext = SCRIPT_EXTENSIONS.find((e) => entry.endsWith(e));
      const name = ext === undefined ? entry : entry.slice(0, -ext.length);
      if (JOB_NAME_PATTERN.test(name)) names.add(name);
    }
    return [...names].sort();
  }

  private root(): Promise<string> {
    this.rootPromise ??= fs.realpath(this.dir).catch((err: unknown) => {
      this.rootPromise = undefined;
      throw docqError(ERROR_CODE.Config, `jobs folder ${this.dir} is not readable: ${errorMessage(err)}`, { cause: err });
    });
    return this.rootPromise;
  }

  /**
   * The job's definition from its files. A workflow's steps are checked against the other jobs
   * unless `shallow` (the check of a step's own job: a workflow there is refused, not followed,
   * so two workflows naming each other cannot wait on each other's load).
   */
  private async load(name: string, shallow = false): Promise<JobDefinition> {
    const job = await this.loadFiles(name);
    if (!shallow && isWorkflowJob(job)) await this.checkSteps(job);
    return job;
  }

  /** A workflow's steps name jobs that exist, are not workflows (no nesting) and take the params the step gives. */
  private async checkSteps(workflow: JobDefinition & { workflow: WorkflowDefinition }): Promise<void> {
    const stepJobs = new Map<string, Promise<JobDefinition | Error>>();
    for (const step of workflow.workflow.steps) {
      const at = `job "${workflow.name}": step "${step.name}"`;
      let pending = stepJobs.get(step.job);
      if (pending === undefined) {
        pending = this.load(step.job, true).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
        stepJobs.set(step.job, pending);
      }
      const job = await pending;
      if (job instanceof Error) throw docqError(ERROR_CODE.BadRequest, `${at}: ${job.message}`, { field: "job", cause: job });
      if (isWorkflowJob(job)) {
        throw docqError(
          ERROR_CODE.BadRequest,
          `${at}: job "${step.job}" is a workflow: a step must name a script job (workflows do not nest)`,
          {
            field: "job",
          },
        );
      }
      try {
        this.validateParams(job, step.params ?? {});
      } catch (err) {
        throw docqError(ERROR_CODE.BadRequest, `${at}: ${errorMessage(err)}`, { field: "job", cause: err });
      }
    }
  }

  private async loadFiles(name: string): Promise<JobDefinition> {
    const root = await this.root();
    const base = path.join(root, name);
    const [bare, ...scripts] = await Promise.all(
      [base, ...SCRIPT_EXTENSIONS.map((e) => base + e)].map((p) => realpathInside(p, root, name)),
    );

    const forms: Array<() => Promise<JobDefinition>> = [];
    const found: string[] = [];
    if (bare !== null) {
      const stat = await fs.stat(bare);
      if (stat.isDirectory()) {
        const yamlPath = await realpathInside(path.join(bare, JOB_YAML), root, name);
        if (yamlPath !== null) {
          found.push(`${name}/${JOB_YAML}`);
          forms.push(() => this.loadFolder(name, bare, yamlPath));
        }
      } else if (stat.isFile()) {
        found.push(name);
        forms.push(async () => this.definition(name, root, await commandFor(bare, name), {}));
      }
    }
    scripts.forEach((real, i) => {
      if (real === null) return;
      found.push(name + SCRIPT_EXTENSIONS[i]);
      forms.push(async () => this.definition(name, root, await commandFor(real, name), {}));
    });

    const [only] = forms;
    if (only === undefined) {
      throw docqError(ERROR_CODE.JobNotFound, `unknown job "${name}": no script or folder with job.yaml in ${this.dir}`, { field: "job" });
    }
    if (forms.length > 1) {
      // Picking one silently would make the job depend on an unwritten precedence rule.
      throw docqError(ERROR_CODE.Config, `job "${name}" is ambiguous: ${found.join(", ")} all exist in ${this.dir}; keep one`, {
        field: "job",
      });
    }
    return only();
  }

  private async loadFolder(name: string, folder: string, yamlPath: string): Promise<JobDefinition> {
    const config = parseJobYaml(await fs.readFile(yamlPath, "utf8"), yamlPath);
    if (config.workflow !== undefined) return this.workflowDefinition(name, folder, config);
    const entry = config.entry ?? (await defaultEntry(folder, yamlPath));
    const entryPath = await realpathInside(path.resolve(folder, entry), folder, name);
    if (entryPath === null) throw configError(yamlPath, `entry: file "${entry}" not found in ${folder}`);
    if (!(await fs.stat(entryPath)).isFile()) throw configError(yamlPath, `entry: "${entry}" is not a file`);
    return this.definition(name, folder, await commandFor(entryPath, name), config);
  }

  /** A refused workflow is the submitter's 400 (not the server's 500): the message names the flow line or step at fault. */
  private workflowDefinition(name: string, folder: string, config: JobYaml): JobDefinition {
    let parsed;
    try {
      parsed = parseWorkflow(config.workflow);
    } catch (err) {
      if (!(err instanceof WorkflowDefinitionError)) throw err;
      throw docqError(ERROR_CODE.BadRequest, `job "${name}": ${err.message}`, { field: "job", cause: err });
    }
    return {
      ...this.definition(name, folder, { command: "", args: [] }, config),
      // The steps' params are job.yaml's: a submission's params would have no step to go to.
      paramsSchema: z.strictObject({}),
      workflow: parsed.definition,
      workflowFlow: parsed.flow,
    };
  }

  private definition(name: string, dir: string, command: { command: string; args: string[] }, config: JobYaml): JobDefinition {
    return {
      name,
      ...(config.description === undefined ? {} : { description: config.description }),
      dir,
      ...command,
      timeoutMs: config.timeoutMs ?? this.defaultTimeoutMs,
      maxTries: config.maxTries ?? null,
      split: config.split ?? false,
      env: config.env ?? {},
      passEnv: this.passEnv,
      paramsSchema: config.params === undefined ? null : paramsSchemaFrom(config.params),
      warm: config.warm ?? false,
      maxRequests: config.maxRequests ?? null,
      maxRssMb: config.maxRssMb ?? null,
      concurrency: config.concurrency ?? 1,
      ...(config.inline === true ? { inline: true } : {}),
      retention: config.retention ?? {},
    };
  }
}

function configError(file: string, message: string, cause?: unknown): Error {
  return docqError(ERROR_CODE.Config, `${file}: ${message}`, { field: "job", cause });
}

function parseJobYaml(text: string, file: string): JobYaml {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw configError(file, `not valid YAML: ${errorMessage(err)}`, err);
  }
  const result = JobYamlSchema.safeParse(raw ?? {});
  if (!result.success) throw configError(file, formatZodIssues(result.error.issues));
  return result.data;
}

async function defaultEntry(folder: string, yamlPath: string): Promise<string> {
  const yamlName = path.basename(yamlPath);
  const candidates = (await fs.readdir(folder)).filter((f) => /^(main|job)\.[^.]+$/.test(f) && f !== yamlName && f !== "job.yml");
  if (candidates.length === 1 && candidates[0] !== undefined) return candidates[0];
  const why = candidates.length === 0 ? "no main.* or job.* file found" : `several candidates (${candidates.sort().join(", ")})`;
  throw configError(yamlPath, `entry: required: ${why}`);
}

/** The real path of `p`, or null when it does not exist; refuses a path that resolves outside `inside`. */
async function realpathInside(p: string, inside: string, name: string): Promise<string | null> {
  let real: string;
  try {
    real = await fs.realpath(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ENAMETOOLONG" || code === "ELOOP") return null;
    throw err;
  }
  if (!real.startsWith(inside + path.sep)) {
    throw docqError(ERROR_CODE.BadRequest, `job "${name}" refused: ${p} resolves outside ${inside}`, { field: "job" });
  }
  return real;
}

async function commandFor(script: string, name: string): Promise<{ command: string; args: string[] }> {
  switch (path.extname(script)) {
    case ".py":
      return { command: await pythonPath(), args: [script] };
    case ".js":
    case ".mjs":
      return { command: process.execPath, args: [script] };
    case ".sh":
      return { command: "/bin/sh", args: [script] };
  }
  const executable = await fs.access(script, fsConstants.X_OK).then(
    () => true,
    () => false,
  );
  if (!executable || !(await hasShebang(script))) {
    throw docqError(
      ERROR_CODE.Config,
      `job "${name}": ${script} has no known extension (.py .js .mjs .sh) and is not an executable file starting with #!`,
      { field: "job" },
    );
  }
  return { command: script, args: [] };
}

async function hasShebang(file: string): Promise<boolean> {
  const handle = await fs.open(file, "r");
  try {
    const { bytesRead, buffer } = await handle.read(Buffer.alloc(2), 0, 2, 0);
    return bytesRead === 2 && buffer.toString("latin1") === "#!";
  } finally {
    await handle.close();
  }
}

let pythonPromise: Promise<string> | undefined;

/** `python3` on PATH may be a pyenv shim costing ~300 ms per start: ask it once for the real interpreter. */
function pythonPath(): Promise<string> {
  pythonPromise ??= probePython().catch((err: unknown) => {
    pythonPromise = undefined; // let a later lookup retry, e.g. after python is installed
    throw docqError(ERROR_CODE.Config, `cannot find python3 for .py jobs: ${errorMessage(err)}`, { cause: err });
  });
  return pythonPromise;
}

async function probePython(): Promise<string> {
  const { stdout } = await promisify(execFile)("python3", ["-c", "import sys; print(sys.executable)"]);
  const real = stdout.trim();
  if (!path.isAbsolute(real)) throw new Error(`sys.executable is "${real}"`);
  // Not realpath'd: a venv's python is a symlink, and following it would lose the venv.
  return real;
}

function paramsSchemaFrom(specs: Record<string, ParamSpec>): ParamsSchema {
  const shape: Record<string, z.ZodType> = {};
  for (const [key, spec] of Object.entries(specs)) {
    const schema = paramSchema(spec);
    shape[key] = spec.required === true ? schema : schema.optional();
  }
  return z.strictObject(shape);
}

function paramSchema(spec: ParamSpec): z.ZodType {
  const { min, max } = spec;
  switch (spec.type) {
    case "string": {
      let s = z.string();
      if (min !== undefined) s = s.min(min);
      if (max !== undefined) s = s.max(max);
      return s;
    }
    case "number":
    case "integer": {
      let n = spec.type === "integer" ? z.int() : z.number();
      if (min !== undefined) n = n.gte(min);
      if (max !== undefined) n = n.lte(max);
      return n;
    }
    case "array": {
      let a = z.array(z.unknown());
      if (min !== undefined) a = a.min(min);
      if (max !== undefined) a = a.max(max);
      return a;
    }
    case "boolean":
      return z.boolean();
    case "object":
      return z.record(z.string(), z.unknown());
  }
}
