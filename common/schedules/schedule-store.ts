import type { Task } from "../model/task-model.js";
import type { Schedule, ScheduleAdvance, ScheduleFireResult } from "./schedule-model.js";

/**
 * The schedules' part of the task store (every adapter; contract in task-store.contract.ts). The
 * tick is guarded by the store, not by a process's timer: fireSchedule is a compare-and-set on
 * the schedule's nextRunAt, so two queuers (a standby taking over, a restart) never both take it.
 */
export interface ScheduleStore {
  /** Inserts a new schedule; rejects when the id exists. */
  createSchedule(schedule: Schedule): Promise<void>;
  getSchedule(id: string): Promise<Schedule | null>;
  /** Every schedule (of `user` when given), oldest first. */
  listSchedules(filter: { user?: string }): Promise<Schedule[]>;
  /** Pauses or resumes; `nextRunAt` when given is set too (a resume starts from its next tick). Null when missing. */
  setSchedulePaused(id: string, paused: boolean, nextRunAt?: number | null): Promise<Schedule | null>;
  /** Removes it; false when it was not there. */
  deleteSchedule(id: string): Promise<boolean>;
  /** Unpaused schedules whose nextRunAt is at or before `now`, earliest first, at most `limit`. */
  dueSchedules(now: number, limit: number): Promise<Schedule[]>;
  /**
   * The tick, in one transaction: only while the schedule is unpaused and its nextRunAt is still
   * `expectedNextRunAt`, moves it on (nextRunAt; runCount + 1 and taskId appended to lastTaskIds
   * when the tick made a task) and inserts `tasks` (the tick's task(s); none when the caller made
   * them already). A miss writes nothing and answers why and the schedule as it is.
   */
  fireSchedule(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, tasks: readonly Task[]): Promise<ScheduleFireResult>;
}
