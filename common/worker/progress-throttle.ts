import type { ProgressReport } from "../jobs/script-answer.js";

/** At most this often per task a progress report goes to the queue (about 4 a second). */
export const PROGRESS_INTERVAL_MS = 250;

/**
 * Throttles one running task's progress reports: a script may print a line per page, and each
 * report is a queue call and a store write. The first goes at once, then at most one per
 * `intervalMs`; a report held back is replaced by a newer one and sent when the interval ends, so
 * the latest report always goes (flush() sends it at once, when the script is over).
 */
export class ProgressThrottle {
  private lastSentAt = -Infinity;
  private pending: ProgressReport | null = null;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly send: (report: ProgressReport) => void,
    private readonly intervalMs: number = PROGRESS_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  offer(report: ProgressReport): void {
    if (this.stopped) return;
    const wait = this.lastSentAt + this.intervalMs - this.now();
    if (wait <= 0 && this.timer === undefined) {
      this.emit(report);
      return;
    }
    this.pending = report;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
  }

  /** Sends the report held back, if any, now. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const report = this.pending;
    this.pending = null;
    if (report !== null && !this.stopped) this.emit(report);
  }

  /** Sends nothing more (the run is over or was stopped). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = null;
  }

  private emit(report: ProgressReport): void {
    this.lastSentAt = this.now();
    this.send(report);
  }
}
