import type { BlobStore } from "../blobs/blob-store.js";
import { docqError, ERROR_CODE, errorMessage, isDocqError } from "../model/errors.js";
import type { Task } from "../model/task-model.js";
import { blobKeys } from "../queue/new-task.js";
import type { QueuerMessage } from "../queue/protocol.js";
import type { TaskStore } from "../store/task-store.js";
import type { Schedule } from "./schedule-model.js";
import { planFire } from "./schedule-timing.js";
import { tickTaskId } from "./tick-task-id.js";

export interface ScheduleFirerDeps {
  store: Pick<TaskStore, "get" | "dueSchedules" | "fireSchedule">;
  blobs: BlobStore;
  /**
   * Submits a tick's task as the controller's create does (the queuer's submit handler): indexed,
   * announced, and a workflow job expanded into its steps.
   */
  submit(spec: QueuerMessage<"submit">): Promise<Task>;
  log: { info(msg: string): void; warn(msg: string): void };
  now?: () => number;
}

/** How often the active queuer looks for due schedules. */
export const SCHEDULE_POLL_MS = 250;
/** Schedules fired in one pass at most (the next pass takes the rest). */
const DUE_BATCH = 100;

/** What a tick did. */
export type TickOutcome = { made: string | null; missed: number; taken: boolean };

/**
 * Fires the due schedules: run by the active queuer only (the queuer service exists there). Each
 * tick is made safe by the store, not by this timer: its task has the tick's id (tickTaskId), so a
 * second fire of the tick finds it there, and the advance is fireSchedule's compare-and-set on
 * nextRunAt, so a tick moves the schedule on once.
 */
export class ScheduleFirer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private readonly now: () => number;

  constructor(private readonly deps: ScheduleFirerDeps) {
    this.now = deps.now ?? Date.now;
  }

  start(pollMs: number = SCHEDULE_POLL_MS): void {
    this.timer = setInterval(() => {
      if (this.running !== null) return;
      this.running = this.fireDue()
        .then(() => undefined)
        .catch((err: unknown) => this.deps.log.warn(`firing schedules failed (tried again in ${pollMs} ms): ${errorMessage(err)}`))
        .finally(() => {
          this.running = null;
        });
    }, pollMs);
  }

  /** Stops the timer and waits for a pass under way. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass: every schedule due now; answers how many ticks it took. */
  async fireDue(): Promise<number> {
    const due = await this.deps.store.dueSchedules(this.now(), DUE_BATCH);
    let taken = 0;
    for (const schedule of due) {
      try {
        if ((await this.fire(schedule)).taken) taken++;
      } catch (err) {
        this.deps.log.warn(`schedule ${schedule.id}: its tick was not fired (tried again shortly): ${errorMessage(err)}`);
      }
    }
    return taken;
  }

  /** One due tick of `schedule`: its task (unless skipped by catchUp none), then the guarded advance. */
  async fire(schedule: Schedule): Promise<TickOutcome> {
    const expected = schedule.nextRunAt;
    if (expected === null) return { made: null, missed: 0, taken: false };
    const plan = planFire(schedule, this.now());
    let made: string | null = null;
    if (plan.runTick !== null) made = await this.makeTickTask(schedule, plan.runTick);
    if (plan.missed > 0) {
      const what = made === null ? "skipped (catchUp none)" : "run once now (catchUp one)";
      this.deps.log.info(`schedule ${schedule.id}: ${plan.missed} tick(s) missed while no queuer ran, ${what}`);
    }
    const fired = await this.deps.store.fireSchedule(schedule.id, expected, { nextRunAt: plan.nextRunAt, taskId: made }, []);
    if (fired.ok && plan.nextRunAt === null) this.deps.log.info(`schedule ${schedule.id} has ended (endAt or maxRuns reached)`);
    return { made, missed: plan.missed, taken: fired.ok };
  }

  /**
   * The tick's task, unless it exists already (this tick was fired before, and the advance did
   * not follow); null when the schedule's document is gone (the tick is skipped, said in the log).
   */
  private async makeTickTask(schedule: Schedule, tick: number): Promise<string | null> {
    const { store, blobs } = this.deps;
    const id = tickTaskId(schedule.site, schedule.id, tick);
    if ((await store.get(id)) !== null) return id;
    if ((await blobs.stat(schedule.input)) === null) {
      this.deps.log.warn(
        `schedule ${schedule.id}: its document ${schedule.input} is gone: the tick of ${new Date(tick).toISOString()} made no task`,
      );
      return null;
    }
    // Each task gets its own copy: a task's delete, retention and the blob GC then treat it as any other.
    const input = blobKeys.input(id);
    await blobs.put(input, await blobs.get(schedule.input));
    try {
      await this.deps.submit({
        id,
        site: schedule.site,
        user: schedule.user,
        name: schedule.name,
        job: schedule.job,
        params: schedule.params,
        priority: schedule.priority,
        maxTries: schedule.maxTries,
        input,
        inputBytes: schedule.inputBytes,
        offload: schedule.offload,
      });
    } catch (err) {
      // Made meanwhile by another fire of the same tick: that task is the tick's.
      if (isDocqError(err, ERROR_CODE.TaskExists) || (await store.get(id)) !== null) return id;
      await blobs.delete(input).catch(() => undefined);
      throw docqError(ERROR_CODE.StoreUnavailable, `its task ${id} was not made: ${errorMessage(err)}`, { cause: err });
    }
    return id;
  }
}
