import type Database from "better-sqlite3";
import type { UsageCounts } from "../../accounts/account-records.js";
import type { Task } from "../../model/task-model.js";
import { USAGE_COUNTERS } from "../task-store.js";
import type { InsertedCounts } from "./inserted-counts.js";

/*
 * What the writes of one group (group-commit.ts) add to the summary tables, summed in memory and
 * written once, in the group's transaction, just before its commit: the counts of the rows that
 * create() inserted (status_counts, top_counts, user_active) and the usage of each user and day.
 * A stream of single submits and results paid an upsert per task for each; a group of them now
 * pays one per status, site, user and day. A group rolled back drops its sums with its rows.
 *
 * Every read of these tables commits the open group first (the store's attempt()), so none sees
 * a sum missing.
 */
export class GroupSums {
  private created: Task[] = [];
  /** Usage counts by user, then day. */
  private usage = new Map<string, Map<string, UsageCounts>>();

  constructor(
    private readonly insertedCounts: InsertedCounts,
    /** The usage upsert: user, day, then each of USAGE_COUNTERS in order. */
    private readonly addUsage: Database.Statement<(string | number)[]>,
  ) {}

  /** A row create() inserted in the open group: counted as the group commits. */
  addCreated(task: Task): void {
    this.created.push(task);
  }

  /** Usage added in the open group: summed with the group's other usage of that user and day. */
  addUsageOf(user: string, day: string, counts: UsageCounts): void {
    let byDay = this.usage.get(user);
    if (byDay === undefined) this.usage.set(user, (byDay = new Map()));
    const sum = byDay.get(day);
    if (sum === undefined) byDay.set(day, { ...counts });
    else for (const counter of USAGE_COUNTERS) sum[counter] += counts[counter];
  }

  /** Writes the sums in the group's transaction (GroupCommit's beforeCommit); a failure fails the group. */
  write(): void {
    const created = this.created;
    const usage = this.usage;
    this.drop();
    if (created.length > 0) this.insertedCounts.add(created);
    for (const [user, byDay] of usage) {
      for (const [day, counts] of byDay) this.addUsage.run(user, day, ...USAGE_COUNTERS.map((counter) => counts[counter]));
    }
  }

  /** The group was rolled back (GroupCommit's afterRollback): its sums go with it. */
  drop(): void {
    if (this.created.length > 0) this.created = [];
    if (this.usage.size > 0) this.usage = new Map();
  }
}
