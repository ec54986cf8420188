import { createHash } from "node:crypto";
import { encodeTime } from "ulid";

/** Crockford's base 32, as ULIDs write it. */
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/**
 * The id of the task a schedule's tick makes: `<site>-<ulid>` whose time is the tick and whose
 * random part is a hash of the schedule and the tick. The same tick always names the same task,
 * so a tick fired twice (a restart between its task and its advance, two queuers at a takeover)
 * finds its task already there (TASK_EXISTS) instead of making a second one.
 */
export function tickTaskId(site: string, scheduleId: string, tick: number): string {
  const digest = createHash("sha256").update(`${scheduleId}@${tick}`).digest();
  let random = "";
  for (let i = 0; i < 16; i++) random += CROCKFORD[digest[i]! % 32];
  return `${site}-${encodeTime(tick, 10)}${random}`;
}
