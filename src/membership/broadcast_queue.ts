/**
 * The queue of updates waiting to be piggybacked or gossiped (memberlist's
 * TransmitLimitedQueue): each update goes out a bounded number of times, the least sent first,
 * and a newer update about a member replaces the pending one.
 */
import { updateSizeBytes } from "./codec.ts";
import type { Update } from "./types.ts";

interface Item {
  readonly update: Update;
  readonly sizeBytes: number;
  readonly id: number;
  transmits: number;
}

/** Pending updates with their transmit counts. */
export class BroadcastQueue {
  #items = new Map<string, Item>();
  #nextId = 0;

  /** Number of pending updates. */
  get length(): number {
    return this.#items.size;
  }

  /** Queues `update`, dropping any pending update about the same member. */
  enqueue(update: Update): void {
    this.#items.set(update.name, {
      update,
      sizeBytes: updateSizeBytes(update),
      id: this.#nextId++,
      transmits: 0,
    });
  }

  /** Drops the pending update about `name`, if any. */
  forget(name: string): void {
    this.#items.delete(name);
  }

  /**
   * Takes updates whose encoded sizes sum to at most `limitBytes`, least transmitted and then
   * newest first; each counts one transmit and is dropped after `transmitLimit` transmits.
   */
  take(limitBytes: number, transmitLimit: number): Update[] {
    if (this.#items.size === 0 || limitBytes <= 0) return [];
    const items = [...this.#items.values()].sort((a, b) =>
      a.transmits - b.transmits || b.id - a.id
    );
    const out: Update[] = [];
    let used = 0;
    for (const item of items) {
      if (used + item.sizeBytes > limitBytes) continue;
      used += item.sizeBytes;
      out.push(item.update);
      item.transmits++;
      if (item.transmits >= transmitLimit) this.#items.delete(item.update.name);
    }
    return out;
  }
}
