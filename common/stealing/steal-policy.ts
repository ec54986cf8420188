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
  /** This site's plate: a group of sites that steal from each other first. */
  plate: string;
  /** Other plates this site steals from and lends to when its own has no backlog worth stealing: none (false), any (true), or these. */
  crossPlate: boolean | readonly string[];
}

export function allows(policy: StealPolicy, site: string): boolean {
  return site !== policy.site && (policy.allow === null || policy.allow.includes(site));
}

/** Whether `crossPlate` (of a site of plate `own`) lets it deal with a site of plate `other`. */
export function plateAllowed(own: string, crossPlate: boolean | readonly string[], other: string): boolean {
  if (other === own) return true;
  return crossPlate === true || (Array.isArray(crossPlate) && crossPlate.includes(other));
}

/** The best of `backlogs`: the highest queued priority, ties broken by the largest backlog. */
function best(backlogs: readonly Backlog[]): Backlog | null {
  let chosen: Backlog | null = null;
  for (const b of backlogs) {
    if (
      chosen === null ||
      (b.highestPriority ?? -1) > (chosen.highestPriority ?? -1) ||
      (b.highestPriority === chosen.highestPriority && b.queued > chosen.queued)
    )
      chosen = b;
  }
  return chosen;
}

/**
 * The site to steal from, among the allowed sites whose fresh backlog meets the thresholds: one of
 * this site's plate when any has such a backlog, else one of another plate that both sides'
 * `crossPlate` allow. Within those, the highest queued priority (ties: the largest backlog). Null when none.
 */
export function chooseVictim(policy: StealPolicy, backlogs: Iterable<Backlog>, now: number): Backlog | null {
  const samePlate: Backlog[] = [];
  const otherPlates: Backlog[] = [];
  for (const b of backlogs) {
    if (!allows(policy, b.site) || now - b.at > policy.backlogTtlMs) continue;
    if (b.queued < policy.minVictimBacklog || b.highestPriority === null || b.highestPriority < policy.minPriority) continue;
    if (b.plate === policy.plate) samePlate.push(b);
    else if (plateAllowed(policy.plate, policy.crossPlate, b.plate) && plateAllowed(b.plate, b.crossPlate, policy.plate))
      otherPlates.push(b);
  }
  return samePlate.length > 0 ? best(samePlate) : best(otherPlates);
}

/** How many tasks to ask for: enough to fill `target` (the slots and a buffer), within the in-flight limit. */
export function stealCount(policy: StealPolicy, target: number, inFlight: number): number {
  if (!policy.enabled) return 0;
  return Math.max(0, Math.min(target, policy.maxInFlight) - inFlight);
}
