import type { Task } from "../model/task-model.js";
import { taskEventOf, type NumberedEvent, type TaskEventBatch } from "./task-event.js";

/** How long events gather before a broadcast: one broadcast per burst, not one per step. */
export const PUBLISH_DELAY_MS = 20;
/** A batch this large goes at once. */
export const PUBLISH_MAX_BATCH = 500;

/**
 * The queuer's side of the event stream: numbers every task change (`<epoch>-<seq>`, the epoch
 * being this publisher's start, so ids never repeat across a queuer restart) and hands them to
 * `publish` in batches, in order. Publishing never blocks the queue: a change only joins a list.
 */
export class TaskEventPublisher {
  private readonly epoch: string;
  private seq = 0;
  private pending: NumberedEvent[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly publish: (batch: TaskEventBatch) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.epoch = now().toString(36);
  }

  /** A task's record after a step (TaskQueue's task:changed). */
  changed(task: Task): void {
    this.pending.push({ eventId: `${this.epoch}-${++this.seq}`, event: taskEventOf(task, this.now()) });
    if (this.pending.length >= PUBLISH_MAX_BATCH) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), PUBLISH_DELAY_MS);
  }

  /** Publishes what is pending now. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const events = this.pending;
    this.pending = [];
    this.publish({ events });
  }

  /** Publishes what is pending and stops the timer. */
  stop(): void {
    this.flush();
  }
}
