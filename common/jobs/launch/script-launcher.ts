import type { launchScript } from "./launch-script.mjs";

type LaunchScript = typeof launchScript;

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
 * launch-script.mjs, loaded on the first launch: execa and its modules take 150 ms of a start-up's
 * CPU here (a seventh of an empty app's), and a site whose worker starts its scripts through the
 * spawner (the default), or that runs no worker, never needs them in this process.
 */
let launchScriptLoaded: LaunchScript | undefined;
let launchScriptLoading: Promise<LaunchScript> | undefined;

function loadLaunchScript(): Promise<LaunchScript> {
  launchScriptLoading ??= import("./launch-script.mjs").then((module) => (launchScriptLoaded = module.launchScript));
  return launchScriptLoading;
}

/** What a run killed before its script was started answers: as if the script had been killed at once. */
const KILLED_BEFORE_START: LaunchResult = { signal: "SIGKILL", stdout: "", stderrTail: "", isMaxBuffer: false };

/**
 * Starts scripts from this process with execa. Forking costs more the larger the forking process
 * is, so a large process hands this to the spawner (spawner.ts).
 */
export const inProcessLauncher: ScriptLauncher = {
  launch(spec, onLine) {
    if (launchScriptLoaded !== undefined) {
      const script = launchScriptLoaded(spec, onLine);
      return { kill: script.kill, result: script.result, pid: Promise.resolve(script.pid) };
    }
    let killed = false;
    let script: ReturnType<LaunchScript> | undefined;
    const started = loadLaunchScript().then((launch) => (killed ? undefined : (script = launch(spec, onLine))));
    const startError = (err: unknown): LaunchResult => ({
      stdout: "",
      stderrTail: "",
      isMaxBuffer: false,
      startError: `cannot load the script launcher (launch-script.mjs): ${err instanceof Error ? err.message : String(err)}`,
    });
    return {
      kill: () => {
        killed = true;
        script?.kill();
      },
      result: started.then((launched) => launched?.result ?? KILLED_BEFORE_START, startError),
      pid: started.then(
        (launched) => launched?.pid,
        () => undefined,
      ),
    };
  },
};
