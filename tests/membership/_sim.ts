/**
 * A deterministic simulator for the SWIM core: a virtual clock and a seeded network with loss,
 * delay and partitions. Every datagram goes through the real codec and is checked against the
 * datagram bound, so one seed replays a whole run exactly.
 */
import { SeededRng } from "../../src/rng.ts";
import {
  decodeMessage,
  encodeMessage,
  ENCRYPTION_OVERHEAD_BYTES,
  MAX_DATAGRAM_BYTES,
  type MemberEvent,
  type MemberState,
  Swim,
  type SwimConfig,
  type Tags,
} from "../../src/membership/mod.ts";

/** Network and protocol settings of one simulated run. */
export interface SimOptions {
  readonly seed: number;
  /** Probability that any datagram is lost. */
  readonly lossRate?: number;
  readonly minDelayTicks?: number;
  readonly maxDelayTicks?: number;
  readonly config?: Partial<SwimConfig>;
}

/** One event as a node saw it, with the tick it happened at. */
export interface LoggedEvent {
  readonly tick: number;
  readonly observer: string;
  readonly event: MemberEvent;
}

interface GossipNode {
  readonly name: string;
  readonly addr: string;
  swim: Swim;
  running: boolean;
  readonly seedNames: readonly string[];
  readonly restarts: number;
}

interface InFlight {
  readonly from: string;
  readonly to: string;
  readonly bytes: Uint8Array;
}

/** A cluster of SWIM cores on a virtual network. */
export class SimCluster {
  readonly log: LoggedEvent[] = [];
  readonly nodes = new Map<string, GossipNode>();
  readonly #byAddr = new Map<string, GossipNode>();
  readonly #net: SeededRng;
  readonly #inflight = new Map<number, InFlight[]>();
  #groups: Map<string, number> | undefined;
  now = 0;
  delivered = 0;
  dropped = 0;

  constructor(readonly options: SimOptions) {
    this.#net = new SeededRng(options.seed);
  }

  /** Address of node `name` in the simulation. */
  static addrOf(name: string): string {
    return `sim-${name}:7946`;
  }

  /** Starts a node now and makes it join through `seeds` (node names). */
  start(name: string, seedNames: readonly string[], tags: Tags = { id: name }): void {
    const addr = SimCluster.addrOf(name);
    const existing = this.nodes.get(name);
    const restarts = existing ? existing.restarts + 1 : 0;
    const node: GossipNode = {
      name,
      addr,
      swim: this.#core(name, addr, tags, restarts),
      running: true,
      seedNames,
      restarts,
    };
    this.nodes.set(name, node);
    this.#byAddr.set(addr, node);
    node.swim.join(seedNames.map(SimCluster.addrOf));
    this.#drain(node);
  }

  #core(name: string, addr: string, tags: Tags, restarts: number): Swim {
    let h = this.options.seed >>> 0;
    for (const c of `${name}#${restarts}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
    return new Swim({ name, addr, tags, rng: new SeededRng(h), config: this.options.config });
  }

  /** Stops a node abruptly: it neither ticks nor receives anything any more. */
  kill(name: string): void {
    this.node(name).running = false;
  }

  /** Restarts a killed node as a fresh process (incarnation 0) under the same name and address. */
  restart(name: string, tags: Tags = { id: name }): void {
    this.start(name, this.node(name).seedNames, tags);
  }

  /** Cuts the network into `groups` (node names); nodes in no group are cut off from all. */
  partition(groups: readonly (readonly string[])[]): void {
    this.#groups = new Map();
    groups.forEach((g, i) => g.forEach((name) => this.#groups!.set(SimCluster.addrOf(name), i)));
  }

  /** Removes every partition. */
  heal(): void {
    this.#groups = undefined;
  }

  /** The node called `name`. */
  node(name: string): GossipNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** Running nodes, in start order. */
  running(): GossipNode[] {
    return [...this.nodes.values()].filter((n) => n.running);
  }

  /** What `observer` believes about `subject`'s state (undefined when unknown). */
  view(observer: string, subject: string): MemberState | undefined {
    return this.node(observer).swim.member(subject)?.state;
  }

  /** Advances the clock one tick: deliver what is due, then tick every running node. */
  tick(): void {
    this.now++;
    const due = this.#inflight.get(this.now) ?? [];
    this.#inflight.delete(this.now);
    for (const d of due) {
      const node = this.#byAddr.get(d.to);
      if (!node || !node.running) {
        this.dropped++;
        continue;
      }
      this.delivered++;
      node.swim.step(d.from, decodeMessage(d.bytes));
      this.#drain(node);
    }
    for (const node of this.nodes.values()) {
      if (!node.running) continue;
      node.swim.tick();
      this.#drain(node);
    }
  }

  /** Ticks until `done()` holds (returns the ticks it took) or `maxTicks` pass (undefined). */
  runUntil(done: () => boolean, maxTicks: number): number | undefined {
    const start = this.now;
    for (let i = 0; i < maxTicks; i++) {
      if (done()) return this.now - start;
      this.tick();
    }
    return done() ? this.now - start : undefined;
  }

  /** Ticks exactly `ticks` times. */
  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.tick();
  }

  /** True when every running observer sees every name in `subjects` in `state`. */
  allSee(subjects: readonly string[], state: MemberState, observers = this.running()): boolean {
    return observers.every((o) =>
      subjects.every((s) => s === o.name || o.swim.member(s)?.state === state)
    );
  }

  #drain(node: GossipNode): void {
    const { messages, events } = node.swim.ready();
    for (const event of events) this.log.push({ tick: this.now, observer: node.name, event });
    const maxPayload = node.swim.config.maxPayloadBytes;
    for (const out of messages) {
      const bytes = encodeMessage(out.msg);
      if (
        bytes.length > maxPayload || bytes.length + ENCRYPTION_OVERHEAD_BYTES >= MAX_DATAGRAM_BYTES
      ) {
        throw new Error(`datagram of ${bytes.length} bytes exceeds the bound`);
      }
      if (this.#net.float() < (this.options.lossRate ?? 0)) {
        this.dropped++;
        continue;
      }
      const g = this.#groups;
      if (g && (g.get(node.addr) === undefined || g.get(node.addr) !== g.get(out.to))) {
        this.dropped++;
        continue;
      }
      const min = this.options.minDelayTicks ?? 1;
      const max = this.options.maxDelayTicks ?? 1;
      const at = this.now + Math.max(1, min + this.#net.int(max - min + 1));
      let bucket = this.#inflight.get(at);
      if (!bucket) this.#inflight.set(at, bucket = []);
      bucket.push({ from: node.addr, to: out.to, bytes });
    }
  }
}

/** Runs `body` for every seed in `seeds`, naming the seed in any failure. */
export function forSeeds(seeds: readonly number[], body: (seed: number) => void): void {
  for (const seed of seeds) {
    try {
      body(seed);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(`seed ${seed} failed (reproduce with SIM_SEED=${seed}): ${msg}`, {
        cause: e,
      });
    }
  }
}

/** The seeds to run: `SIM_SEED` alone when set, else `count` seeds from `base`. */
export function seedList(base: number, count: number): number[] {
  const only = Deno.env.get("SIM_SEED");
  if (only !== undefined) return [Number(only)];
  return Array.from({ length: count }, (_, i) => base + i);
}
