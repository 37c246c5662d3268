/**
 * A clock that moves only when a test moves it, for the hand-driven scenario cluster: each
 * node has its own, and `advance(tickMs)` is one tick of that node (its host's tick timer
 * fires once, as do the sleeps that fall due). Killed with the node: no timer fires again.
 */
import type { Clock, TimerId } from "../../../src/replication/mod.ts";

interface Timer {
  at: number;
  /** Set for an interval. */
  readonly periodMs?: number;
  readonly fn: () => void;
}

/** A {@link Clock} driven by hand; time starts at 0. */
export class ManualClock implements Clock {
  #now = 0;
  #nextId = 1;
  #dead = false;
  readonly #timers = new Map<number, Timer>();

  now(): number {
    return this.#now;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way, in time order
   * (ties in creation order); an interval fires once per period it crosses.
   */
  advance(ms: number): void {
    const until = this.#now + ms;
    while (!this.#dead) {
      let nextId = 0;
      let next: Timer | undefined;
      for (const [id, t] of this.#timers) {
        if (t.at <= until && (next === undefined || t.at < next.at)) {
          nextId = id;
          next = t;
        }
      }
      if (next === undefined) break;
      this.#now = next.at;
      if (next.periodMs === undefined) this.#timers.delete(nextId);
      else next.at += next.periodMs;
      next.fn();
    }
    this.#now = until;
  }

  /** The node crashed: its timers never fire again. */
  kill(): void {
    this.#dead = true;
    this.#timers.clear();
  }

  setInterval(fn: () => void, ms: number): TimerId {
    const periodMs = Math.max(1, ms);
    return this.#add({ at: this.#now + periodMs, periodMs, fn });
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    return this.#add({ at: this.#now + Math.max(0, ms), fn });
  }

  clearInterval(id: TimerId): void {
    this.#timers.delete(id as number);
  }

  clearTimeout(id: TimerId): void {
    this.#timers.delete(id as number);
  }

  #add(timer: Timer): number {
    if (this.#dead) return 0;
    const id = this.#nextId++;
    this.#timers.set(id, timer);
    return id;
  }
}
