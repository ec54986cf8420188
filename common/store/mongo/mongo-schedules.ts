import type { ClientSession, Collection, IndexDescription } from "mongodb";
import {
  fireMiss,
  LAST_TASKS_KEPT,
  ScheduleSchema,
  type Schedule,
  type ScheduleAdvance,
  type ScheduleFireResult,
} from "../../schedules/schedule-model.js";

/** A schedule as stored: its record, `_id` its id. */
export type ScheduleDoc = Omit<Schedule, "id"> & { _id: string };

export const SCHEDULE_INDEXES: IndexDescription[] = [
  { key: { paused: 1, nextRunAt: 1 }, name: "schedules_due" },
  { key: { user: 1, createdAt: 1 }, name: "schedules_user" },
];

function docToSchedule({ _id, ...rest }: ScheduleDoc): Schedule {
  return ScheduleSchema.parse({ id: _id, ...rest });
}

function scheduleToDoc({ id, ...rest }: Schedule): ScheduleDoc {
  return { _id: id, ...rest };
}

/**
 * The schedules collection of a MongoDB task store. The tick (fire) is a findOneAndUpdate guarded
 * by `nextRunAt: expected` (the compare-and-set); the store runs it with the tick's task inserts,
 * in a transaction where the deployment has them.
 */
export class MongoSchedules {
  constructor(private readonly docs: Collection<ScheduleDoc>) {}

  async createIndexes(): Promise<void> {
    await this.docs.createIndexes(SCHEDULE_INDEXES);
  }

  async create(schedule: Schedule): Promise<void> {
    await this.docs.insertOne(scheduleToDoc(ScheduleSchema.parse(schedule)));
  }

  async get(id: string, session?: ClientSession): Promise<Schedule | null> {
    const doc = await this.docs.findOne({ _id: id }, session === undefined ? {} : { session });
    return doc === null ? null : docToSchedule(doc);
  }

  async list(filter: { user?: string }): Promise<Schedule[]> {
    const docs = await this.docs
      .find(filter.user === undefined ? {} : { user: filter.user })
      .sort({ createdAt: 1, _id: 1 })
      .toArray();
    return docs.map(docToSchedule);
  }

  async setPaused(id: string, paused: boolean, nextRunAt?: number | null): Promise<Schedule | null> {
    const doc = await this.docs.findOneAndUpdate(
      { _id: id },
      { $set: { paused, ...(nextRunAt === undefined ? {} : { nextRunAt }) } },
      { returnDocument: "after" },
    );
    return doc === null ? null : docToSchedule(doc);
  }

  async delete(id: string): Promise<boolean> {
    return (await this.docs.deleteOne({ _id: id })).deletedCount > 0;
  }

  async due(now: number, limit: number): Promise<Schedule[]> {
    const docs = await this.docs
      .find({ paused: false, nextRunAt: { $lte: now } })
      .sort({ nextRunAt: 1 })
      .limit(limit)
      .toArray();
    return docs.map(docToSchedule);
  }

  /**
   * The guarded advance alone (the compare-and-set): the schedule after it, or null when the
   * guard missed (gone, paused, or the tick already taken).
   */
  async advance(id: string, expectedNextRunAt: number, advance: ScheduleAdvance, session?: ClientSession): Promise<Schedule | null> {
    const set: Record<string, unknown> = { nextRunAt: advance.nextRunAt };
    const update =
      advance.taskId === null
        ? [{ $set: set }]
        : [
            {
              $set: {
                ...set,
                runCount: { $add: ["$runCount", 1] },
                // The last LAST_TASKS_KEPT ids, oldest first (as schedule-model's `advanced`).
                lastTaskIds: { $slice: [{ $concatArrays: ["$lastTaskIds", [advance.taskId]] }, -LAST_TASKS_KEPT] },
              },
            },
          ];
    const doc = await this.docs.findOneAndUpdate({ _id: id, paused: false, nextRunAt: expectedNextRunAt }, update, {
      returnDocument: "after",
      ...(session === undefined ? {} : { session }),
    });
    return doc === null ? null : docToSchedule(doc);
  }

  /** Why a fire missed, from the schedule as it is now. */
  async miss(id: string, expectedNextRunAt: number): Promise<ScheduleFireResult & { ok: false }> {
    const schedule = await this.get(id);
    return { ok: false, why: fireMiss(schedule, expectedNextRunAt) ?? "moved", schedule };
  }
}
