import { createWorkDir, type WorkDir } from "../jobs/job-runner.js";

/**
 * The work dirs of a worker, kept between runs: a run takes an idle one (or a fresh one when none
 * is idle) and gives it back emptied, so a task costs an unlink and two directory reads instead of
 * making and removing two folders. On ext4 a folder made or removed is a journal change that can
 * wait behind another task's fsync; emptying a kept one is not. A dir that is not left empty
 * (a script wrote files it did not answer, swapped `out/` for a link...) is removed, never reused,
 * so a run never sees what an earlier one left. At most `keep` are kept idle; close() removes them.
 *
 * The dirs keep createWorkDir's names (`docq-job-<OWNER>-...`): a worker that dies leaves them to
 * the next worker's leftover sweep, as before.
 */
export class WorkDirPool {
  private readonly root: string;
  private readonly keep: number;
  private readonly idle: WorkDir[] = [];
  private closed = false;

  constructor(opts: { root: string; keep: number }) {
    this.root = opts.root;
    this.keep = opts.keep;
  }

  /** An empty work dir (with its empty `out/`) for one run. */
  async acquire(): Promise<WorkDir> {
    return this.idle.pop() ?? (await createWorkDir(this.root));
  }

  /** Gives `work` back after its run: emptied and kept, or removed. `known`: files in it already stored (unlinked first). */
  async release(work: WorkDir, known: readonly string[] = []): Promise<void> {
    if (!this.closed && this.idle.length < this.keep && (await work.empty(known)) && !this.closed && this.idle.length < this.keep) {
      this.idle.push(work);
      return;
    }
    await work.remove(known);
  }

  /** Work dirs idle now (for tests and stats). */
  get idleCount(): number {
    return this.idle.length;
  }

  /** Removes the idle dirs; a dir released after this is removed too. */
  async close(): Promise<void> {
    this.closed = true;
    const dirs = this.idle.splice(0);
    await Promise.all(dirs.map((work) => work.remove().catch(() => undefined)));
  }
}
