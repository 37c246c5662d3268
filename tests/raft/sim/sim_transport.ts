/**
 * The simulated network under the real host, behaving as `PeerTransport` does on a bad day:
 * per-link FIFO delivery with random delays (sometimes several election timeouts), optional
 * reordering, duplication and connection resets; while a link is down (a one-way, split or
 * bridge partition, or a crashed peer) the sender queues frames (bounded, oldest dropped) and
 * reports the peer unreachable, then flushes the queue in one burst once it reconnects, so a
 * restarted node receives answers meant for its previous incarnation. Messages cross the
 * wire through the real codec.
 */
import type { Message, NodeId } from "../../../src/raft/mod.ts";
import { decodeMessageBatch, encodeMessageBatch } from "../../../src/replication/codec.ts";
import {
  emptyTransportStats,
  RemoteError,
  type Transport,
  TransportError,
  type TransportHandlers,
  type TransportStats,
} from "../../../src/replication/mod.ts";
import type { Rng } from "../../../src/rng.ts";
import type { NodeClock, Scheduler } from "./scheduler.ts";

/** How unreliable the network is (all rates are per batch). */
export interface LinkFaults {
  /** Ordinary one-way latency is uniform in [0, baseDelayMs]. */
  readonly baseDelayMs: number;
  /** Probability that a batch is slow, with a delay uniform in [0, slowDelayMs]. */
  readonly slowRate: number;
  readonly slowDelayMs: number;
  /** Probability that a batch ignores FIFO order (travels on its own). */
  readonly reorderRate: number;
  readonly duplicateRate: number;
  /** Probability that a batch is lost with a reset connection. */
  readonly dropRate: number;
}

/** A calm network for the liveness phase. */
export const CALM: LinkFaults = {
  baseDelayMs: 2,
  slowRate: 0,
  slowDelayMs: 0,
  reorderRate: 0,
  duplicateRate: 0,
  dropRate: 0,
};

/** Frames a sender holds for a peer it cannot reach, at most (then the oldest go). */
const MAX_HELD_BATCHES = 256;
/** How often senders retry their held queues, in virtual ms. */
const RECONNECT_MS = 25;

type Packet =
  | { readonly type: "msgs"; readonly bytes: Uint8Array }
  | {
    readonly type: "request";
    readonly kind: number;
    readonly payload: Uint8Array;
    readonly reply: (ok: boolean, bytes: Uint8Array | string) => void;
  };

interface Held {
  readonly sender: SimTransport;
  readonly to: NodeId;
  readonly packets: Packet[];
}

/** All links between the simulated nodes. */
export class SimNetwork {
  faults: LinkFaults;
  readonly #sched: Scheduler;
  readonly #rng: Rng;
  /** The live transport of each node id (absent while crashed). */
  readonly #nodes = new Map<NodeId, SimTransport>();
  /** Directed links that are down, as "from>to". */
  readonly #down = new Set<string>();
  /** Per directed link: when its last FIFO batch arrives. */
  readonly #lastArrival = new Map<string, number>();
  readonly #held = new Map<string, Held>();
  readonly stats = { batches: 0, dropped: 0, duplicated: 0, held: 0, heldDropped: 0 };
  /** Sees every batch a node puts on the wire (the checker's durable-term property). */
  onSend: ((from: NodeId, msgs: readonly Message[]) => void) | undefined;

  constructor(sched: Scheduler, rng: Rng, faults: LinkFaults) {
    this.#sched = sched;
    this.#rng = rng;
    this.faults = faults;
    const pump = () => {
      this.#flushHeld();
      this.#sched.after(RECONNECT_MS, pump);
    };
    this.#sched.after(RECONNECT_MS, pump);
  }

  /** A new transport for a (re)started node `id` on `clock`. */
  attach(id: NodeId, clock: NodeClock, handlers: TransportHandlers): SimTransport {
    const t = new SimTransport(this, id, clock, handlers);
    this.#nodes.set(id, t);
    return t;
  }

  /** Node `id` crashed: its transport dies, and with it the frames it held. */
  detach(id: NodeId): void {
    const t = this.#nodes.get(id);
    if (!t) return;
    t.dead = true;
    this.#nodes.delete(id);
    for (const [k, h] of this.#held) if (h.sender === t) this.#held.delete(k);
  }

  /** Cuts the link from `a` to `b` (one way). */
  cut(a: NodeId, b: NodeId): void {
    this.#down.add(`${a}>${b}`);
  }

  /** The link from `a` to `b` works again (its held frames flow on the next reconnect). */
  restore(a: NodeId, b: NodeId): void {
    this.#down.delete(`${a}>${b}`);
  }

  /** Every link works again (held frames flow on the next reconnect). */
  heal(): void {
    this.#down.clear();
  }

  get partitioned(): boolean {
    return this.#down.size > 0;
  }

  #up(from: NodeId, to: NodeId): boolean {
    return !this.#down.has(`${from}>${to}`) && this.#nodes.has(to);
  }

  /** Called by a sender: queue if the link is down, else put the packet on the wire. */
  send(sender: SimTransport, to: NodeId, packet: Packet): void {
    this.stats.batches++;
    if (!this.#up(sender.id, to)) {
      sender.unreachable.add(to);
      this.#hold(sender, to, packet);
      return;
    }
    this.#transmit(sender, to, packet, false);
  }

  #hold(sender: SimTransport, to: NodeId, packet: Packet): void {
    const key = `${sender.id}>${to}`;
    let h = this.#held.get(key);
    if (!h || h.sender !== sender) this.#held.set(key, h = { sender, to, packets: [] });
    h.packets.push(packet);
    this.stats.held++;
    if (h.packets.length > MAX_HELD_BATCHES) {
      const lost = h.packets.shift()!;
      this.stats.heldDropped++;
      if (lost.type === "request") lost.reply(false, "connection lost");
    }
  }

  /** Reconnects: every held queue whose link is up again goes out in one burst, in order. */
  #flushHeld(): void {
    for (const [key, h] of this.#held) {
      if (h.sender.dead) {
        this.#held.delete(key);
        continue;
      }
      if (!this.#up(h.sender.id, h.to)) continue;
      this.#held.delete(key);
      for (const p of h.packets) this.#transmit(h.sender, h.to, p, true);
    }
  }

  #transmit(sender: SimTransport, to: NodeId, packet: Packet, burst: boolean): void {
    const f = this.faults;
    const rng = this.#rng;
    if (!burst && rng.float() < f.dropRate) {
      this.stats.dropped++;
      sender.unreachable.add(to);
      if (packet.type === "request") packet.reply(false, "connection reset");
      return;
    }
    const link = `${sender.id}>${to}`;
    let delay = rng.float() * f.baseDelayMs;
    if (!burst && rng.float() < f.slowRate) delay += rng.float() * f.slowDelayMs;
    let at = this.#sched.now + delay;
    if (burst || rng.float() >= f.reorderRate) {
      at = Math.max(at, this.#lastArrival.get(link) ?? 0);
      this.#lastArrival.set(link, at);
    }
    this.#sched.at(at, () => this.#arrive(sender, to, packet));
    if (packet.type === "msgs" && !burst && rng.float() < f.duplicateRate) {
      this.stats.duplicated++;
      const again = this.#sched.now + rng.float() * (f.baseDelayMs + f.slowDelayMs);
      this.#sched.at(again, () => this.#arrive(sender, to, packet));
    }
  }

  #arrive(sender: SimTransport, to: NodeId, packet: Packet): void {
    const dest = this.#nodes.get(to);
    if (!dest || this.#down.has(`${sender.id}>${to}`)) {
      // The connection broke under the frame: a live sender keeps it for the reconnect.
      if (sender.dead) {
        if (packet.type === "request") packet.reply(false, "connection lost");
        return;
      }
      sender.unreachable.add(to);
      this.#hold(sender, to, packet);
      return;
    }
    dest.deliver(sender.id, packet);
  }

  /** Sends a reply back over the reverse link; lost if that link is down. */
  reply(from: NodeId, to: NodeId, fn: () => void): void {
    if (this.#down.has(`${from}>${to}`)) return;
    this.#sched.after(this.#rng.float() * this.faults.baseDelayMs, fn);
  }
}

/** One node's transport on the {@link SimNetwork}. */
export class SimTransport implements Transport {
  dead = false;
  readonly unreachable = new Set<NodeId>();
  readonly #net: SimNetwork;
  readonly id: NodeId;
  readonly #clock: NodeClock;
  readonly #handlers: TransportHandlers;

  constructor(net: SimNetwork, id: NodeId, clock: NodeClock, handlers: TransportHandlers) {
    this.#net = net;
    this.id = id;
    this.#clock = clock;
    this.#handlers = handlers;
  }

  send(to: NodeId, _addr: string, msgs: readonly Message[]): void {
    if (this.dead || msgs.length === 0) return;
    this.#net.onSend?.(this.id, msgs);
    this.#net.send(this, to, { type: "msgs", bytes: encodeMessageBatch(msgs) });
  }

  request(addr: string, kind: number, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.dead) return new Promise(() => {});
    const to = idOfAddress(addr);
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = this.#clock.setTimeout(() => {
        if (settled) return;
        settled = true;
        reject(new TransportError(`request to ${addr} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#net.send(this, to, {
        type: "request",
        kind,
        payload: payload.slice(),
        reply: (ok, answer) => {
          if (settled || this.dead) return;
          settled = true;
          this.#clock.clearTimeout(timer);
          if (!ok) reject(new TransportError(`request to ${addr} failed: ${answer}`));
          else if (typeof answer === "string") reject(new RemoteError(answer));
          else resolve(answer);
        },
      });
    });
  }

  /** A packet arrived for this node. */
  deliver(from: NodeId, packet: Packet): void {
    if (this.dead) return;
    if (packet.type === "msgs") {
      this.#handlers.onMessages(decodeMessageBatch(packet.bytes));
      return;
    }
    this.#handlers.onRequest(from, packet.kind, packet.payload).then(
      (bytes) => this.#net.reply(this.id, from, () => packet.reply(true, bytes.slice())),
      (err) =>
        this.#net.reply(
          this.id,
          from,
          () => packet.reply(true, err instanceof Error ? err.message : String(err)),
        ),
    );
  }

  takeUnreachable(): NodeId[] {
    const out = [...this.unreachable];
    this.unreachable.clear();
    return out;
  }

  stats(): TransportStats {
    return emptyTransportStats();
  }

  forget(_addr: string): void {}

  close(): Promise<void> {
    this.dead = true;
    return Promise.resolve();
  }
}

/** Simulated addresses are "<id>:1". */
export function idOfAddress(addr: string): NodeId {
  return addr.slice(0, addr.lastIndexOf(":"));
}
