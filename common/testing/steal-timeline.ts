/*
 * Reading a stealing run back from the task records (the bench's stealing figures and tests):
 * how long a thief's slots stood idle between stolen tasks, and, for each steal, what moving the
 * task cost against the wait it saved at its owner.
 */

/** One run of a task on one node, as its record at the site that ran it says (ms since the epoch). */
export interface NodeRun {
  node: string;
  start: number;
  end: number;
}

/**
 * The idle time of a node's slots between one task and the next: the k-th time one of its `slots`
 * freed (a record's end, in time order) is paired with the k-th refill (the starts after the first
 * `slots`, which only filled empty slots), as a freed slot is the next one filled. A gap counts only
 * when the slot freed before `until` (while the victim still had work to give); a pair whose start
 * comes before its end (the output is stored and recorded after the slot is free) is a gap of 0.
 * A slot that freed before `until` and was never filled again counts as idle until `until`.
 */
export function slotIdleGaps(runs: readonly NodeRun[], slots: number, until: number): number[] {
  const byNode = new Map<string, NodeRun[]>();
  for (const run of runs) {
    const list = byNode.get(run.node);
    if (list === undefined) byNode.set(run.node, [run]);
    else list.push(run);
  }
  const gaps: number[] = [];
  for (const list of byNode.values()) {
    const ends = list.map((r) => r.end).sort((a, b) => a - b);
    const refills = list
      .map((r) => r.start)
      .sort((a, b) => a - b)
      .slice(slots);
    ends.forEach((end, k) => {
      if (end >= until) return;
      const refill = refills[k];
      gaps.push(refill === undefined ? until - end : Math.max(0, refill - end));
    });
  }
  return gaps;
}

/** A task of the victim site as the bench reads it back: where and when it ran. */
export interface OwnerRun {
  id: string;
  /** The site whose slot ran it. */
  ranAt: string;
  /** Queue order at the owner: higher priority first, then older first. */
  priority: number;
  submitTime: number;
  /** At the owner: when it was claimed by a local worker or lent to a thief. */
  start: number;
  /** At the owner: when its result was recorded there. */
  end: number;
}

/** A stolen task's record at the thief: when its proxy ran there. */
export interface ProxyRun {
  id: string;
  start: number;
  end: number;
}

export interface StealCost {
  id: string;
  thief: string;
  /** Lent → running at the thief (its document moved) plus ended there → recorded at home (its result moved), ms. */
  transferMs: number;
  /** How much longer it would have queued at its owner from the moment it was lent, ms (estimate, see stealCosts). */
  waitSavedMs: number;
}

/**
 * For each stolen task: what the steal cost (the document's and the result's trips, from the lend
 * at the owner to the proxy's start at the thief, and from the proxy's end to the result recorded
 * at the owner) against the wait it saved. The wait saved is how long it would still have queued
 * at the owner when it was lent: the owner would have started it in place of the first task behind
 * it in queue order that the owner ran itself (the start of that one); when the owner ran nothing
 * behind it, when the first of its slots had nothing left to run (the earliest of its slots' last
 * ends, the slots' last ends read as the `ownerSlots` latest ends of its own runs).
 */
export function stealCosts(
  owner: string,
  ownerSlots: number,
  ownerRuns: readonly OwnerRun[],
  proxies: ReadonlyMap<string, ProxyRun>,
): StealCost[] {
  const order = [...ownerRuns].sort((a, b) => b.priority - a.priority || a.submitTime - b.submitTime || a.id.localeCompare(b.id));
  const localEnds = order.filter((r) => r.ranAt === owner).map((r) => r.end);
  // The owner's slots would have taken a task left over no later than when the first of them went idle for good.
  const ownerFirstIdle = localEnds.length === 0 ? null : Math.min(...lastEndsPerSlot(localEnds, ownerSlots));
  const costs: StealCost[] = [];
  order.forEach((run, i) => {
    if (run.ranAt === owner) return;
    const proxy = proxies.get(run.id);
    if (proxy === undefined) return;
    const behind = order.slice(i + 1).find((r) => r.ranAt === owner && r.start >= run.start);
    const wouldStart = behind?.start ?? ownerFirstIdle ?? run.start;
    costs.push({
      id: run.id,
      thief: run.ranAt,
      transferMs: Math.max(0, proxy.start - run.start) + Math.max(0, run.end - proxy.end),
      waitSavedMs: Math.max(0, wouldStart - run.start),
    });
  });
  return costs;
}

/** The last `slots` ends of a run of ends: when each of that many slots finished its last task. */
function lastEndsPerSlot(ends: readonly number[], slots: number): number[] {
  return [...ends].sort((a, b) => b - a).slice(0, slots);
}

/** p50, p95 and max of a list (nearest rank), null when it is empty. */
export function spread(values: readonly number[]): { count: number; p50: number; p95: number; max: number } | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
  return { count: sorted.length, p50: at(50), p95: at(95), max: sorted[sorted.length - 1]! };
}
