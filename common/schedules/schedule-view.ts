import type { TaskStatus } from "../model/task-model.js";
import type { Schedule } from "./schedule-model.js";
import { upcomingRuns } from "./schedule-timing.js";

/** How many next run times a schedule's answer shows. */
export const NEXT_RUNS_SHOWN = 5;

/** A schedule as the API answers it: its record, its state, its next runs, and its last tasks (newest first). */
export type ScheduleView = Schedule & {
  state: "active" | "paused" | "ended";
  /** The next run times (ISO 8601, UTC), at most NEXT_RUNS_SHOWN; none once it has ended. */
  nextRuns: string[];
  /** Its last tasks, newest first; a task deleted since is `gone`. */
  lastTasks: { id: string; status: TaskStatus | "gone" }[];
};

export function scheduleView(schedule: Schedule, statusOf: ReadonlyMap<string, TaskStatus>): ScheduleView {
  const runsLeft = schedule.maxRuns === null ? null : Math.max(0, schedule.maxRuns - schedule.runCount);
  return {
    ...schedule,
    state: schedule.nextRunAt === null ? "ended" : schedule.paused ? "paused" : "active",
    nextRuns: upcomingRuns(schedule, schedule.nextRunAt, NEXT_RUNS_SHOWN, runsLeft).map((at) => new Date(at).toISOString()),
    lastTasks: [...schedule.lastTaskIds].reverse().map((id) => ({ id, status: statusOf.get(id) ?? "gone" })),
  };
}
