/**
 * A seeded, lossy network on a virtual clock: each message gets a random delay in ticks and
 * may be dropped or duplicated; messages due at the same tick are delivered in random order;
 * partitions split the nodes into groups that cannot talk. Every choice comes from the
 * injected generator, so one seed replays the same network exactly.
 */
import type { Message, NodeId } from "../../../src/raft/mod.ts";
import { type Rng, shuffle } from "../../../src/rng.ts";

/** How unreliable the network is. */
export interface NetworkFaults {
  /** Probability that a message is lost. */
  readonly dropRate: number;
  /** Probability that a message is delivered twice (each copy with its own delay). */
  readonly duplicateRate: number;
  /** Delays are uniform in [0, maxDelayTicks]. */
  readonly maxDelayTicks: number;
}

/** A perfect network: no loss, no duplicates, no delay. */
export const NO_FAULTS: NetworkFaults = { dropRate: 0, duplicateRate: 0, maxDelayTicks: 0 };

/** Messages in flight, bucketed by delivery tick. */
export class SimNetwork {
  faults: NetworkFaults;
  readonly #rng: Rng;
  #buckets = new Map<number, Message[]>();
  /** node → partition group; nodes in different groups cannot talk. Empty when healed. */
  #group = new Map<NodeId, number>();
  /** Counters for reports. */
  readonly stats = { sent: 0, dropped: 0, duplicated: 0, delivered: 0 };

  constructor(rng: Rng, faults: NetworkFaults) {
    this.#rng = rng;
    this.faults = faults;
  }

  /** Can `a` and `b` talk now? */
  connected(a: NodeId, b: NodeId): boolean {
    return (this.#group.get(a) ?? 0) === (this.#group.get(b) ?? 0);
  }

  /** Splits the nodes into `groups` (nodes not listed join group 0). */
  partition(groups: readonly (readonly NodeId[])[]): void {
    this.#group.clear();
    groups.forEach((g, i) => g.forEach((id) => this.#group.set(id, i + 1)));
  }

  /** Removes every partition. */
  heal(): void {
    this.#group.clear();
  }

  /** Is any partition in place? */
  get partitioned(): boolean {
    return this.#group.size > 0;
  }

  /** Sends `msg` at tick `now`: it is lost, or scheduled once or twice. */
  send(msg: Message, now: number): void {
    this.stats.sent++;
    if (this.#rng.float() < this.faults.dropRate) {
      this.stats.dropped++;
      return;
    }
    this.#schedule(msg, now);
    if (this.#rng.float() < this.faults.duplicateRate) {
      this.stats.duplicated++;
      this.#schedule(structuredClone(msg), now);
    }
  }

  #schedule(msg: Message, now: number): void {
    const at = now + this.#rng.int(this.faults.maxDelayTicks + 1);
    let bucket = this.#buckets.get(at);
    if (!bucket) this.#buckets.set(at, bucket = []);
    bucket.push(msg);
  }

  /**
   * Takes the messages due at `now` in random order, without those crossing a partition
   * or addressed to a node that `isAlive` says is down (lost with the crash).
   */
  takeDue(now: number, isAlive: (id: NodeId) => boolean): Message[] {
    const bucket = this.#buckets.get(now);
    if (!bucket) return [];
    this.#buckets.delete(now);
    const out: Message[] = [];
    for (const m of shuffle(this.#rng, bucket)) {
      if (!this.connected(m.from, m.to) || !isAlive(m.to)) {
        this.stats.dropped++;
        continue;
      }
      this.stats.delivered++;
      out.push(m);
    }
    return out;
  }

  /** Drops every message in flight to `id` (its host crashed: its sockets are gone). */
  dropTo(id: NodeId): void {
    for (const bucket of this.#buckets.values()) {
      for (let i = bucket.length - 1; i >= 0; i--) {
        if (bucket[i].to === id) {
          bucket.splice(i, 1);
          this.stats.dropped++;
        }
      }
    }
  }

  /** Number of messages in flight. */
  get inFlight(): number {
    let n = 0;
    for (const b of this.#buckets.values()) n += b.length;
    return n;
  }
}
