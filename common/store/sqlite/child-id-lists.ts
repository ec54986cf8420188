/** A list of child ids this long (a split of about 30 parts) or longer is worth remembering parsed. */
const REMEMBERED_CHARS = 1024;
/** How many parents' lists are remembered: the splits whose children are running at once. */
const REMEMBERED_LISTS = 4;

interface RememberedList {
  parentId: string;
  json: string;
  ids: readonly string[];
}

/**
 * The child ids of parents' `children` columns, the large lists remembered parsed per parent. A
 * split's parent is written at each of its children's counts, its list unchanged: read back whole
 * (RETURNING *), a thousand parts copied 30 KB of text out of SQLite a thousand times, and parsed
 * it too. A count now reads the row without the column (byParent) and answers the list
 * remembered from the parent's last whole read, which the split itself made (RETURNING *).
 *
 * Only a split writes a parent's list, and it reads its row back whole (fromColumn), so a
 * remembered list is the column's; a list whose length is not the row's children_total, or a
 * parent deleted since (forget), is read again.
 */
export class ChildIdLists {
  /** Newest last. */
  private readonly remembered: RememberedList[] = [];

  /** The ids of a `children` column read with its row; a large list is remembered for its parent. */
  fromColumn(parentId: string, json: string): string[] {
    if (json.length < REMEMBERED_CHARS) return JSON.parse(json) as string[];
    const index = this.remembered.findIndex((entry) => entry.parentId === parentId);
    let entry = index === -1 ? undefined : this.remembered[index];
    if (entry === undefined || entry.json !== json) {
      if (index !== -1) this.remembered.splice(index, 1);
      entry = { parentId, json, ids: JSON.parse(json) as string[] };
      this.remembered.push(entry);
      if (this.remembered.length > REMEMBERED_LISTS) this.remembered.shift();
    }
    return entry.ids.slice();
  }

  /**
   * The ids of a parent whose row was read without its `children` column: the list remembered
   * for it when it holds `total` ids, else the column as `readColumn` answers it (null: no such row).
   */
  byParent(parentId: string, total: number, readColumn: () => string | null): string[] {
    const entry = this.remembered.find((candidate) => candidate.parentId === parentId);
    if (entry !== undefined && entry.ids.length === total) return entry.ids.slice();
    const json = readColumn();
    return json === null ? [] : this.fromColumn(parentId, json);
  }

  /** Drops every remembered list (tasks were deleted: an id may come back as another task). */
  forgetAll(): void {
    this.remembered.length = 0;
  }
}
