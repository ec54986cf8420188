/*
 * What a job script sees of the environment: enough to run (PATH, a locale, a home and a temp dir
 * of its own, which are its work dir), its job.yaml `env`, and what the operator passes on by name
 * (`jobs.passEnv`). Nothing else of the server's environment: the admin key, S3 and MongoDB
 * credentials stay with docq, whatever a script prints or logs.
 */

/**
 * The variables every job gets from the server's environment, when set there. pyenv's: PATH often
 * points at its shims, which find the interpreter through PYENV_ROOT, else through HOME (which is
 * the work dir here).
 */
const ALWAYS_PASSED = ["PATH", "LANG", "LC_ALL", "TZ", "PYENV_ROOT", "PYENV_VERSION"] as const;
/** Where a job finds its interpreters when the server runs with no PATH at all. */
const DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin";

export interface JobEnvOptions {
  /** The job's own variables (job.yaml `env`): they win over the rest. */
  jobEnv?: Readonly<Record<string, string>>;
  /** `jobs.passEnv`: names of the server's variables the operator lets jobs see. */
  passEnv?: readonly string[];
  /** HOME and TMPDIR: the run's work dir (a warm process: its own dir). */
  workDir: string;
  /** The server's environment (process.env). */
  from?: NodeJS.ProcessEnv;
}

export function jobEnvironment(opts: JobEnvOptions): Record<string, string> {
  const from = opts.from ?? process.env;
  const env: Record<string, string> = {};
  for (const name of [...ALWAYS_PASSED, ...(opts.passEnv ?? [])]) {
    const value = from[name];
    if (value !== undefined) env[name] = value;
  }
  env.PATH ??= DEFAULT_PATH;
  env.HOME = opts.workDir;
  env.TMPDIR = opts.workDir;
  return { ...env, ...opts.jobEnv };
}

/**
 * The environment of a run of `job` whose home is `workDir`: the one merge both kinds of run use
 * (a one-shot script in its work dir, a warm process in its own dir). The run's mark is added
 * where the process starts (markedEnv in launch/job-process.mjs).
 */
export function jobEnvironmentOf(
  job: { env: Readonly<Record<string, string>>; passEnv: readonly string[] },
  workDir: string,
): Record<string, string> {
  return jobEnvironment({ jobEnv: job.env, passEnv: job.passEnv, workDir });
}
