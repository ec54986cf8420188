import { performance } from "node:perf_hooks";
import type Database from "better-sqlite3";

/*
 * Group commit of a SQLite connection's hot writes. A write runs at once, in the group's open
 * IMMEDIATE transaction (begun by the first write of the group), and its caller is answered:
 *
 * - durable: once the group is committed, as before: an acknowledged submit or result survives a
 *   crash of the process;
 * - early: at once, before the commit. Only for writes whose loss in a crash costs a run again and
 *   never a task: a claim for a worker of this very process (the task stays queued in the file and
 *   runs after the restart; the crash stopped the run the lost claim started) and a lease renewal.
 *   A claim for a worker elsewhere is durable: that run would go on, and the task's next claim
 *   would number its attempt the same (the same output key, a lease guard that cannot tell them apart).
 *
 * A commit costs about 120 µs and a dozen WAL pages, most of them the same for every task of a
 * group (the counters, the index leaves of a status). A group with a durable write is committed at
 * the end of the first turn of the event loop that brings no write to it, within `windowMs` of its
 * first durable write: an isolated write is committed at the end of its turn, as before, and under a
 * stream the claims, results and usage rows of a few milliseconds share one commit. Early writes
 * alone are committed `windowMs` after the first of them: nobody waits for that commit.
 *
 * A write that fails is undone alone (SQLite undoes the statement, better-sqlite3 a nested
 * transaction's savepoint) and the group goes on. An error that ends the whole transaction, or a
 * failed commit, fails every durable write of the group; its early writes, already answered, are
 * run again in a transaction of their own (they are guarded statements with their values bound,
 * run on the file as it was before the group), and reported to `onLost` if that fails too.
 *
 * The group holds the file's write lock while it is open: another connection's write waits up to
 * `windowMs` for it (its busy timeout), so one process keeps one writing connection per file.
 */

export interface GroupCommitOptions {
  /** The longest a group stays open: after its first durable write, or its first early one when it has none. */
  windowMs: number;
  /** The error a caller sees for a driver error of `operation`. */
  explain(operation: string, err: unknown): unknown;
  /** Early writes that could not be stored, even run again: their answers are not in the file. */
  onLost(operations: readonly string[], err: unknown): void;
  /**
   * Writes the group's deferred part (what its writes leave to be summed once per group) in its
   * transaction, just before the commit; an error fails the group as a failed commit does.
   */
  beforeCommit?(): void;
  /** The group's transaction was rolled back: what beforeCommit would have written is dropped. */
  afterRollback?(): void;
}

interface Waiting {
  operation: string;
  /** What the write answered, given to `resolve` once the group is committed. */
  value: unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

interface EarlyWrite {
  operation: string;
  run: () => unknown;
}

interface OpenGroup {
  /** Durable writes run in the group, waiting for its commit. */
  waiting: Waiting[];
  /** Early writes run in the group, answered already: run again if the group is lost. */
  early: EarlyWrite[];
  /** When the last write was run in the group. */
  lastWriteAt: number;
  /** The commit of a group of early writes only. */
  timer: NodeJS.Timeout | undefined;
  /** The turns are being watched for the end of its stream of writes (it has a durable write). */
  watching: boolean;
}

export class GroupCommit {
  private readonly begin: Database.Statement<[], unknown>;
  private readonly commitStatement: Database.Statement<[], unknown>;
  private readonly rollback: Database.Statement<[], unknown>;
  private open: OpenGroup | null = null;
  /** A write is running: a commit asked meanwhile (by a read inside it) waits for the group's. */
  private running = false;

  constructor(
    private readonly db: Database.Database,
    private readonly opts: GroupCommitOptions,
  ) {
    this.begin = db.prepare("BEGIN IMMEDIATE");
    this.commitStatement = db.prepare("COMMIT");
    this.rollback = db.prepare("ROLLBACK");
  }

  /** Runs `run` in the group; answers once the group is committed. */
  durable<T>(operation: string, run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const ran = this.runInGroup(operation, run);
      if (!ran.ok) {
        reject(ran.error);
        return;
      }
      ran.group.waiting.push({ operation, value: ran.value, resolve: resolve as (value: unknown) => void, reject });
      this.watchTurns(ran.group);
    });
  }

  /** Runs `run` in the group; answers at once (see the header: only for writes whose loss costs a run again). */
  early<T>(operation: string, run: () => T): Promise<T> {
    const ran = this.runInGroup(operation, run);
    if (!ran.ok) return Promise.reject(ran.error);
    const { group } = ran;
    group.early.push({ operation, run });
    if (!group.watching && group.timer === undefined) group.timer = setTimeout(() => this.commitIfOpen(group), this.opts.windowMs);
    return Promise.resolve(ran.value);
  }

  /** Commits the open group now: what runs after it (a read, a transaction of its own) sees every write asked before. */
  commit(): void {
    const group = this.open;
    if (group === null || this.running) return;
    this.open = null;
    clearTimeout(group.timer);
    try {
      this.opts.beforeCommit?.();
      this.commitStatement.run();
    } catch (err) {
      if (this.db.inTransaction) this.rollback.run();
      this.lose(group, err);
      return;
    }
    for (const write of group.waiting) write.resolve(write.value);
  }

  /** Runs the write in the open group, beginning one if none is. */
  private runInGroup<T>(operation: string, run: () => T): { ok: true; value: T; group: OpenGroup } | { ok: false; error: unknown } {
    if (this.open === null) {
      try {
        this.begin.run();
      } catch (err) {
        return { ok: false, error: this.opts.explain(operation, err) };
      }
      this.open = { waiting: [], early: [], lastWriteAt: 0, timer: undefined, watching: false };
    }
    const group = this.open;
    this.running = true;
    try {
      const value = run();
      group.lastWriteAt = performance.now();
      return { ok: true, value, group };
    } catch (err) {
      const error = this.opts.explain(operation, err);
      // Disk full, I/O: the whole transaction is gone, and every write of the group with it.
      if (!this.db.inTransaction) {
        this.open = null;
        clearTimeout(group.timer);
        this.lose(group, err);
      }
      return { ok: false, error };
    } finally {
      this.running = false;
    }
  }

  /** Commits the group at the end of the first turn of the event loop that brought it no write (or once the window is over). */
  private watchTurns(group: OpenGroup): void {
    if (group.watching) return;
    group.watching = true;
    clearTimeout(group.timer);
    group.timer = undefined;
    const firstAt = group.lastWriteAt;
    let lookedAt = firstAt;
    const look = (): void => {
      if (this.open !== group) return;
      const now = performance.now();
      if (group.lastWriteAt > lookedAt && now - firstAt < this.opts.windowMs) {
        lookedAt = now;
        setImmediate(look);
      } else {
        this.commit();
      }
    };
    setImmediate(look);
  }

  /** Commits `group` if it is still the open one (a read may have committed it meanwhile). */
  private commitIfOpen(group: OpenGroup): void {
    if (this.open === group) this.commit();
  }

  /** The group's transaction is gone: its durable writes fail, its early ones are run again. */
  private lose(group: OpenGroup, err: unknown): void {
    this.opts.afterRollback?.();
    const error = this.opts.explain(`${group.waiting.map((w) => w.operation).join(", ") || "early writes"} (one commit)`, err);
    for (const write of group.waiting) write.reject(error);
    if (group.early.length > 0) this.storeAgain(group.early);
  }

  /** Runs answered early writes again, in a transaction of their own; what still fails goes to onLost. */
  private storeAgain(writes: readonly EarlyWrite[]): void {
    const failed: string[] = [];
    let lastError: unknown;
    try {
      this.begin.run();
      for (const write of writes) {
        try {
          write.run();
        } catch (err) {
          failed.push(write.operation);
          lastError = err;
          if (!this.db.inTransaction) throw err;
        }
      }
      this.commitStatement.run();
    } catch (err) {
      if (this.db.inTransaction) this.rollback.run();
      this.opts.onLost(
        writes.map((write) => write.operation),
        err,
      );
      return;
    }
    if (failed.length > 0) this.opts.onLost(failed, lastError);
  }
}
