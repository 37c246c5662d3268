/**
 * Virtual time for the host simulator: one event queue ordered by (time, insertion), and a
 * {@link Clock} per node that reads the virtual time through its own skew and can stall (a
 * paused process: its timers fire late, once). After every event the scheduler lets every
 * promise the event started settle (a real `setImmediate`, with nothing else running), so
 * the real host's async loop advances exactly as far as it can before virtual time moves.
 */
import { setImmediate } from "node:timers";
import type { Clock, TimerId } from "../../../src/replication/mod.ts";

interface Event {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** The global event queue (a binary heap) and virtual time in milliseconds. */
export class Scheduler {
  #now = 0;
  #seq = 0;
  #heap: Event[] = [];
  /** Events run so far. */
  events = 0;

  get now(): number {
    return this.#now;
  }

  /** Runs `fn` at virtual time `at` (never earlier than now). */
  at(at: number, fn: () => void): void {
    this.#push({ at: Math.max(at, this.#now), seq: this.#seq++, fn });
  }

  /** Runs `fn` `ms` from now. */
  after(ms: number, fn: () => void): void {
    this.at(this.#now + ms, fn);
  }

  /**
   * Runs events in order until virtual time `until` (events at `until` included), settling
   * promises after each one. `stop` is checked between events.
   */
  async runUntil(until: number, stop?: () => boolean): Promise<void> {
    while (this.#heap.length > 0 && this.#heap[0].at <= until) {
      const ev = this.#pop();
      this.#now = ev.at;
      this.events++;
      ev.fn();
      await settle();
      if (stop?.()) return;
    }
    this.#now = Math.max(this.#now, until);
  }

  #push(ev: Event): void {
    const h = this.#heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  #pop(): Event {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l], h[m])) m = l;
        if (r < h.length && before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Lets every pending promise settle: nothing but the simulation runs in this process. */
export function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/**
 * One node's clock: local time = offset + virtual time × rate. While paused, the node's
 * timers do not fire; each fires once when the pause ends (as in a stalled process). Killed
 * with the node: its timers never fire again.
 */
export class NodeClock implements Clock {
  readonly #sched: Scheduler;
  readonly #offset: number;
  readonly #rate: number;
  #pausedUntil = 0;
  #dead = false;
  #nextId = 1;
  readonly #live = new Set<number>();

  constructor(sched: Scheduler, offsetMs: number, rate: number) {
    this.#sched = sched;
    this.#offset = offsetMs;
    this.#rate = rate;
  }

  now(): number {
    return this.#offset + this.#sched.now * this.#rate;
  }

  /** Stalls the node's timers for `ms` of virtual time. */
  pause(ms: number): void {
    this.#pausedUntil = Math.max(this.#pausedUntil, this.#sched.now + ms);
  }

  get paused(): boolean {
    return this.#sched.now < this.#pausedUntil;
  }

  /** The node crashed: no timer of it runs again. */
  kill(): void {
    this.#dead = true;
    this.#live.clear();
  }

  setInterval(fn: () => void, ms: number): TimerId {
    const id = this.#nextId++;
    this.#live.add(id);
    const period = Math.max(1, ms) / this.#rate;
    const fire = () => {
      if (this.#dead || !this.#live.has(id)) return;
      if (this.paused) return this.#sched.at(this.#pausedUntil, fire);
      fn();
      this.#sched.after(period, fire);
    };
    this.#sched.after(period, fire);
    return id;
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.#nextId++;
    this.#live.add(id);
    const fire = () => {
      if (this.#dead || !this.#live.has(id)) return;
      if (this.paused) return this.#sched.at(this.#pausedUntil, fire);
      this.#live.delete(id);
      fn();
    };
    this.#sched.after(Math.max(0, ms) / this.#rate, fire);
    return id;
  }

  clearInterval(id: TimerId): void {
    this.#live.delete(id as number);
  }

  clearTimeout(id: TimerId): void {
    this.#live.delete(id as number);
  }
}
