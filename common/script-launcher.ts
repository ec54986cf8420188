import { execa } from "execa";

/** What a job script needs to start: the same for a one-shot run in this process or in the spawner. */
export interface LaunchSpec {
  command: string;
  args: string[];
  cwd: string;
  /** The whole environment of the script (not merged with anything). */
  env: Record<string, string | undefined>;
  /** Written to the script's stdin, which is then closed. */
  input: string;
  maxStdoutBytes: number;
  stderrTailChars: number;
}

export interface LaunchResult {
  exitCode?: number;
  signal?: string;
  stdout: string;
  stderrTail: string;
  isMaxBuffer: boolean;
  /** Set when the script could not be started at all. */
  startError?: string;
}

export interface LaunchedScript {
  /** Kills the script's whole process group (it runs detached, as its group's leader). */
  kill(): void;
  readonly result: Promise<LaunchResult>;
  /** Resolves with the pid once the script runs. */
  readonly pid: Promise<number | undefined>;
}

export interface ScriptLauncher {
  launch(spec: LaunchSpec): LaunchedScript;
}

/**
 * Starts scripts from this process with execa. Forking costs more the larger the forking process
 * is (../shared/PLATFORM.md), so a large process hands this to the spawner (common/spawner.ts).
 */
export const inProcessLauncher: ScriptLauncher = {
  launch(spec) {
    const subprocess = execa(spec.command, spec.args, {
      cwd: spec.cwd,
      input: spec.input,
      env: spec.env,
      extendEnv: false,
      detached: true,
      reject: false,
      stripFinalNewline: false,
      buffer: { stdout: true, stderr: false },
      maxBuffer: { stdout: spec.maxStdoutBytes },
    });
    let stderrTail = "";
    subprocess.stderr.setEncoding("utf8");
    subprocess.stderr.on("data", (chunk: string) => {
      stderrTail += chunk;
      if (stderrTail.length > 2 * spec.stderrTailChars) stderrTail = stderrTail.slice(-spec.stderrTailChars);
    });
    const { pid } = subprocess;
    const killGroup = (): void => {
      if (pid === undefined) return;
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    // Leftovers of a finished script would hold stdout open (delaying the result) and outlive the work dir.
    subprocess.once("exit", killGroup);
    const result = subprocess.then((r) => ({
      ...(r.exitCode === undefined ? {} : { exitCode: r.exitCode }),
      ...(r.signal === undefined ? {} : { signal: r.signal }),
      stdout: typeof r.stdout === "string" ? r.stdout : "",
      stderrTail: stderrTail.slice(-spec.stderrTailChars),
      isMaxBuffer: r.isMaxBuffer,
      ...(r.exitCode === undefined && r.signal === undefined ? { startError: r.cause instanceof Error ? r.cause.message : String(r.cause) } : {}),
    }));
    return { kill: killGroup, result, pid: Promise.resolve(pid) };
  },
};
