/** The environment variable that marks every process of a run. */
export const RUN_ID_VAR: "DOCQ_RUN_ID";

/** This process as the owner of what it makes: `<pid>.<start time>`. */
export const OWNER: string;

/** Where a run started: its first process and when (narrows the look for its processes). */
export interface RunScope {
  firstPid: number;
  startedAt: number;
}

export function isOwnerAlive(owner: string): boolean;
export function newRunId(): string;
export function killRun(runId: string, scope?: RunScope): number;
export function endRun(runId: string, scope?: RunScope): Promise<number>;
export function killOrphans(): number;
