import type { RunScope } from "./leftovers.mjs";

export function markedEnv(env: Record<string, string | undefined>, runId: string): Record<string, string | undefined>;
export function killGroup(pid: number | undefined): void;
export function killRunNow(pid: number | undefined, runId: string, scope: RunScope | undefined): number;

export class StderrTail {
  constructor(chars: number);
  add(chunk: string): void;
  clear(): void;
  readonly text: string;
}

export function lastLine(text: string): string;

/** Whether a stdout line may be a progress line (starts with `{` and mentions "progress"): only those are parsed. */
export function mayBeProgressLine(line: string): boolean;

/** Splits a stream of text into lines, calling `onLine` with each complete one; a line longer than `maxChars` is dropped. */
export class LineSplitter {
  constructor(onLine: (line: string) => void, maxChars: number);
  add(chunk: string): void;
}

/** How a run ended, as far as docq saw it. */
export interface RunEnd {
  /** Why docq ended it, when it did. */
  stoppedFor?: "cancel" | "timeout" | "stop";
  /** The timeout it had (for `timed out after ... ms`). */
  timeoutMs?: number;
  /** Set when it printed more than this on stdout. */
  stdoutOverflowBytes?: number;
  startError?: string;
  signal?: string | null;
  exitCode?: number | null;
  stderrTail?: string;
  /** A warm process that exited while it held a request. */
  beforeAnswering?: boolean;
}

export function endOfRun(end: RunEnd): string;
export function endedCleanly(end: RunEnd): boolean;
