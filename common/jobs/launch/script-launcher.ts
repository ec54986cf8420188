import { launchScript } from "./launch-script.mjs";

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

/** Called with each stdout line that may be a progress line (mayBeProgressLine), while the script runs. */
export type StdoutLineListener = (line: string) => void;

export interface ScriptLauncher {
  launch(spec: LaunchSpec, onLine?: StdoutLineListener): LaunchedScript;
}

/**
 * Starts scripts from this process with execa. Forking costs more the larger the forking process
 * is, so a large process hands this to the spawner (spawner.ts).
 */
export const inProcessLauncher: ScriptLauncher = {
  launch(spec, onLine) {
    const script = launchScript(spec, onLine);
    return { kill: script.kill, result: script.result, pid: Promise.resolve(script.pid) };
  },
};
