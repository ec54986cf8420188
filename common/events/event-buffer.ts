import type { NumberedEvent } from "./task-event.js";

export interface EventBufferLimits {
  /** The most events kept. */
  maxEvents: number;
  /** Events older than this (by arrival) are dropped. */
  maxAgeMs: number;
}

/** Resuming after a reconnect is possible within the last 5 minutes, up to 10,000 events. */
export const EVENT_BUFFER_DEFAULTS: EventBufferLimits = Object.freeze({ maxEvents: 10_000, maxAgeMs: 5 * 60_000 });

/** What a client that resumes gets first: the kept events after its last one, and whether some may be missing. */
export interface Replay {
  events: NumberedEvent[];
  /** True when its last event id is not (or no longer) kept: events may be missing between it and `events`. */
  gap: boolean;
}

interface Kept {
  at: number;
  entry: NumberedEvent;
}

/**
 * A controller's recent task events, in arrival order, with live subscribers: what GET /api/events
 * replays after a Last-Event-ID and then streams. Bounded by count and age.
 */
export class EventBuffer {
  private kept: Kept[] = [];
  /** Index in `kept` of the first live entry (dropped ones are cut off in bulk). */
  private head = 0;
  /** Position (count of all events ever added) of each kept id. */
  private readonly positions = new Map<string, number>();
  private added = 0;
  private readonly listeners = new Set<(entry: NumberedEvent) => void>();

  constructor(
    private readonly limits: EventBufferLimits = EVENT_BUFFER_DEFAULTS,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.kept.length - this.head;
  }

  /** Keeps the events and tells every subscriber, in order. */
  add(events: readonly NumberedEvent[]): void {
    const at = this.now();
    for (const entry of events) {
      if (this.positions.has(entry.eventId)) continue; // a broadcast seen twice
      this.kept.push({ at, entry });
      this.positions.set(entry.eventId, this.added++);
      for (const listener of this.listeners) listener(entry);
    }
    this.evict(at);
  }

  /** The kept events after `lastEventId` (all of them with `gap` when it is unknown; none missing when it is null). */
  since(lastEventId: string | null): Replay {
    this.evict(this.now());
    const live = this.kept.slice(this.head).map((k) => k.entry);
    if (lastEventId === null) return { events: [], gap: false };
    const position = this.positions.get(lastEventId);
    if (position === undefined) return { events: live, gap: true };
    const firstPosition = this.added - live.length;
    return { events: live.slice(position - firstPosition + 1), gap: false };
  }

  /** Calls `listener` with each event added from now on; answers how to stop. */
  subscribe(listener: (entry: NumberedEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private evict(now: number): void {
    let head = this.head;
    const over = this.kept.length - head - this.limits.maxEvents;
    const cutCount = head + Math.max(0, over);
    while (head < this.kept.length && (head < cutCount || now - (this.kept[head]?.at ?? now) > this.limits.maxAgeMs)) {
      this.positions.delete(this.kept[head]!.entry.eventId);
      head++;
    }
    this.head = head;
    // Compacted once the dropped part is the larger: an amortized copy, not a shift per event.
    if (this.head > 1024 && this.head * 2 > this.kept.length) {
      this.kept = this.kept.slice(this.head);
      this.head = 0;
    }
  }
}
