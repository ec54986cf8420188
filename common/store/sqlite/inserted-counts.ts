import type Database from "better-sqlite3";
import { isFinal, type Task } from "../../model/task-model.js";

/*
 * What new rows of `tasks` add to the counts tables (status_counts, top_counts, user_active),
 * summed in the store's code and written once per insert: a batch of a thousand tasks of one user
 * and status is three upserts, where the insert triggers of schema versions 2-5 ran three per row
 * (about a fifth of a batch submit's store time). Updates and deletes stay counted by triggers:
 * their old row is SQLite's to know.
 *
 * Exactly what the triggers counted: every row in status_counts; a top-level row (no parent) in
 * top_counts under its site and the site that ran it (processed_by's `site`, '' when none); a
 * top-level row that is not final in user_active under its user.
 */

export class InsertedCounts {
  private readonly addStatus: Database.Statement<[string, number]>;
  private readonly addTop: Database.Statement<[string, string, number]>;
  private readonly addActive: Database.Statement<[string, number]>;

  constructor(db: Database.Database) {
    this.addStatus = db.prepare(
      "INSERT INTO status_counts (status, count) VALUES (?, ?) ON CONFLICT (status) DO UPDATE SET count = count + excluded.count",
    );
    this.addTop = db.prepare(
      "INSERT INTO top_counts (site, ran_site, count) VALUES (?, ?, ?) ON CONFLICT (site, ran_site) DO UPDATE SET count = count + excluded.count",
    );
    this.addActive = db.prepare(
      "INSERT INTO user_active (user, count) VALUES (?, ?) ON CONFLICT (user) DO UPDATE SET count = count + excluded.count",
    );
  }

  /** Adds the rows of `tasks`, just inserted, to the counts: run in the transaction of their insert. */
  add(tasks: readonly Task[]): void {
    const byStatus = new Map<string, number>();
    /** Site, then the site that ran it ('' when none). */
    const byTop = new Map<string, Map<string, number>>();
    const activeByUser = new Map<string, number>();
    for (const task of tasks) {
      byStatus.set(task.status, (byStatus.get(task.status) ?? 0) + 1);
      if (task.parentId !== null) continue;
      const ranSite = task.processedBy?.site ?? "";
      const bySite = byTop.get(task.site) ?? new Map<string, number>();
      byTop.set(task.site, bySite.set(ranSite, (bySite.get(ranSite) ?? 0) + 1));
      if (!isFinal(task.status)) activeByUser.set(task.user, (activeByUser.get(task.user) ?? 0) + 1);
    }
    for (const [status, count] of byStatus) this.addStatus.run(status, count);
    for (const [site, bySite] of byTop) for (const [ranSite, count] of bySite) this.addTop.run(site, ranSite, count);
    for (const [user, count] of activeByUser) this.addActive.run(user, count);
  }
}
