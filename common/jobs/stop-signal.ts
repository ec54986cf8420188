/** What a run asks of the signal that stops it: an AbortSignal is one, and so is the cheaper RunStop. */
export interface StopSignal {
  readonly aborted: boolean;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/**
 * The stop of one task's run, made per task: an AbortController (an EventTarget, its signal made
 * through the platform's slow path) cost a warm task about 10 µs of the main thread between its
 * creation and one listener added and removed. A run holds one or two listeners, kept in an array.
 * As with an AbortSignal, a listener added after the stop is never called, and each is called once.
 */
export class RunStop implements StopSignal {
  private stopped = false;
  private listeners: Array<() => void> = [];

  get aborted(): boolean {
    return this.stopped;
  }

  /** Every listener is called once at most (`once` or not), as the run is stopped once. */
  addEventListener(_type: "abort", listener: () => void, _options?: { once?: boolean }): void {
    if (!this.stopped && !this.listeners.includes(listener)) this.listeners.push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const at = this.listeners.indexOf(listener);
    if (at >= 0) this.listeners.splice(at, 1);
  }

  /**
   * Stops the run: every listener is called once, in the order added. A listener that throws does
   * not keep the others from their call; its error is thrown on the next tick, as an AbortSignal's
   * listener's is (an uncaught exception).
   */
  abort(): void {
    if (this.stopped) return;
    this.stopped = true;
    const listeners = this.listeners;
    this.listeners = [];
    for (const listener of listeners) {
      try {
        listener();
      } catch (error) {
        process.nextTick(() => {
          throw error;
        });
      }
    }
  }
}
