import type { Backlog } from "./steal-messages.js";

export interface StealPolicy {
  site: string;
  enabled: boolean;
  onlyWhenIdle: boolean;
  minVictimBacklog: number;
  minPriority: number;
  maxInFlight: number;
  /** Sites this one steals from and lends to; null: every site. */
  allow: readonly string[] | null;
  /** A backlog older than this is not trusted. */
  backlogTtlMs: number;
}

export function allows(policy: StealPolicy, site: string): boolean {
  return site !== policy.site && (policy.allow === null || policy.allow.includes(site));
}

/**
 * The site to steal from: the one with the highest queued priority (ties: the largest backlog),
 * among the allowed sites whose fresh backlog meets the thresholds. Null when none does.
 */
export function chooseVictim(policy: StealPolicy, backlogs: Iterable<Backlog>, now: number): Backlog | null {
  let best: Backlog | null = null;
  for (const b of backlogs) {
    if (!allows(policy, b.site) || now - b.at > policy.backlogTtlMs) continue;
    if (b.queued < policy.minVictimBacklog || b.highestPriority === null || b.highestPriority < policy.minPriority) continue;
    if (
      best === null ||
      b.highestPriority > (best.highestPriority ?? -1) ||
      (b.highestPriority === best.highestPriority && b.queued > best.queued)
    )
      best = b;
  }
  return best;
}

/** How many tasks to ask for: what the idle slots can take, within the in-flight limit. */
export function stealCount(policy: StealPolicy, idleSlots: number, inFlight: number): number {
  if (!policy.enabled) return 0;
  return Math.max(0, Math.min(idleSlots, policy.maxInFlight - inFlight));
}
