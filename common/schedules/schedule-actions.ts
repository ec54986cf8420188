import type { BlobStore } from "../blobs/blob-store.js";
import { dropTaskDocuments, type TaskDocumentsLog } from "../blobs/task-documents.js";
import { docqError, ERROR_CODE } from "../model/errors.js";
import type { TaskStatus } from "../model/task-model.js";
import type { QueuerHandlers } from "../queue/queuer-actions.js";
import type { TaskStore } from "../store/task-store.js";
import { scheduleBlobKeys, type Schedule } from "./schedule-model.js";
import { tickAfter } from "./schedule-timing.js";
import { scheduleView, type ScheduleView } from "./schedule-view.js";

export interface ScheduleActionDeps {
  store: TaskStore;
  blobs: BlobStore;
  log: TaskDocumentsLog;
  now: () => number;
}

type ScheduleActions = Pick<QueuerHandlers, "createSchedule" | "getSchedule" | "listSchedules" | "pauseSchedule" | "deleteSchedule">;

/** The queuer's schedule actions: the store's records, answered with their next runs and last tasks. */
export function scheduleHandlers(deps: ScheduleActionDeps): ScheduleActions {
  const { store, blobs, log, now } = deps;

  async function view(schedule: Schedule): Promise<ScheduleView> {
    const statuses = new Map<string, TaskStatus>();
    for (const id of schedule.lastTaskIds) {
      const task = await store.get(id);
      if (task !== null) statuses.set(id, task.status);
    }
    return scheduleView(schedule, statuses);
  }

  async function existing(id: string): Promise<Schedule> {
    const schedule = await store.getSchedule(id);
    if (schedule === null) throw docqError(ERROR_CODE.ScheduleNotFound, `schedule ${id} not found`, { field: "id" });
    return schedule;
  }

  return {
    createSchedule: async (schedule) => {
      await store.createSchedule(schedule);
      return view(schedule);
    },
    getSchedule: async ({ id }) => view(await existing(id)),
    listSchedules: async ({ user }) => {
      const schedules = await store.listSchedules(user === undefined ? {} : { user });
      return Promise.all(schedules.map(view));
    },
    pauseSchedule: async ({ id, paused }) => {
      const schedule = await existing(id);
      // A resume starts from the first tick after now: ticks while paused are not made up. An ended schedule stays ended.
      const nextRunAt = paused || schedule.nextRunAt === null ? undefined : tickAfter(schedule, now());
      const after = await store.setSchedulePaused(id, paused, nextRunAt);
      if (after === null) throw docqError(ERROR_CODE.ScheduleNotFound, `schedule ${id} not found`, { field: "id" });
      return view(after);
    },
    deleteSchedule: async ({ id }) => {
      if (!(await store.deleteSchedule(id))) throw docqError(ERROR_CODE.ScheduleNotFound, `schedule ${id} not found`, { field: "id" });
      // Its tasks have their own copies: only the schedule's document goes.
      await dropTaskDocuments(blobs, [scheduleBlobKeys.folder(id)], log);
      return { id, deleted: true };
    },
  };
}
