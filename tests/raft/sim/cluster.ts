/**
 * A hand-driven in-memory cluster for scenario tests (etcd-io/raft interaction style): the
 * test ticks specific nodes, delivers, drops or inspects specific messages, and asserts on
 * roles and state. Messages wait in one outbox until the test delivers them; nothing is
 * random except the seeded election timeouts. Every node is checked by a SafetyChecker.
 */
import type { Config, Message, MessageType, NodeId, RaftNode } from "../../../src/raft/mod.ts";
import { SeededRng } from "../../../src/rng.ts";
import { SafetyChecker } from "./checker.ts";
import { SimNode, type SimRaftOptions } from "./sim_node.ts";

/** How to build a cluster. */
export interface ClusterOptions extends SimRaftOptions {
  /** Seed of the nodes' election timeouts. Default 1. */
  readonly seed?: number;
  /**
   * The initial voters, which start bootstrapped with that configuration; the other ids
   * start with no state (to be added later). Default: all ids.
   */
  readonly voters?: readonly NodeId[];
}

/** Picks messages: by predicate, or by any of `type`, `from`, `to`. */
export type MessageFilter =
  | ((m: Message) => boolean)
  | { readonly type?: MessageType; readonly from?: NodeId; readonly to?: NodeId };

function matcher(filter: MessageFilter | undefined): (m: Message) => boolean {
  if (filter === undefined) return () => true;
  if (typeof filter === "function") return filter;
  return (m) =>
    (filter.type === undefined || m.type === filter.type) &&
    (filter.from === undefined || m.from === filter.from) &&
    (filter.to === undefined || m.to === filter.to);
}

/** An in-memory cluster whose message delivery the test controls step by step. */
export class Cluster {
  readonly ids: readonly NodeId[];
  readonly checker = new SafetyChecker();
  readonly nodes = new Map<NodeId, SimNode>();
  /** Messages sent and not yet delivered or dropped, in send order. */
  outbox: Message[] = [];
  #cut = new Set<NodeId>();
  #links = new Set<string>();
  #nextOpId = 1;
  #nextReadId = 1;

  constructor(ids: readonly NodeId[], options: ClusterOptions = {}) {
    this.ids = ids;
    const rng = new SeededRng(options.seed ?? 1);
    const { seed: _seed, voters, ...raftOptions } = options;
    for (const id of ids) {
      this.nodes.set(
        id,
        new SimNode(id, raftOptions, () => {
          const r = new SeededRng(rng.nextUint32());
          return () => r.float();
        }, this.checker),
      );
    }
    const initial = voters ?? ids;
    const config: Config = {
      voters: [...initial],
      learners: [],
      addresses: Object.fromEntries(initial.map((id) => [id, `${id}:1`])),
    };
    for (const id of initial) this.#send(this.node(id).bootstrap(config));
  }

  /** The simulated host `id`. */
  node(id: NodeId): SimNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** The Raft node of `id` (throws while crashed). */
  raft(id: NodeId): RaftNode {
    return this.node(id).raft;
  }

  #send(messages: readonly Message[]): void {
    for (const m of messages) this.outbox.push(m);
  }

  /** Runs the host loop of `id` after the test touched its Raft node directly. */
  process(id: NodeId): void {
    this.#send(this.node(id).process());
  }

  /** Ticks `id` `times` times (processing after each). */
  tick(id: NodeId, times = 1): void {
    for (let i = 0; i < times; i++) {
      this.raft(id).tick();
      this.process(id);
    }
  }

  /** Ticks every live node `times` times, delivering nothing. */
  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const n of this.nodes.values()) if (n.alive) this.tick(n.id);
    }
  }

  /** Removes and returns the queued messages matching `filter` without delivering them. */
  take(filter?: MessageFilter): Message[] {
    const match = matcher(filter);
    const taken = this.outbox.filter(match);
    this.outbox = this.outbox.filter((m) => !match(m));
    return taken;
  }

  /** The queued messages matching `filter`, left in place. */
  peek(filter?: MessageFilter): Message[] {
    return this.outbox.filter(matcher(filter));
  }

  /** Drops the queued messages matching `filter`; returns how many. */
  drop(filter?: MessageFilter): number {
    return this.take(filter).length;
  }

  /** Cuts `id` off: its messages both ways are dropped on delivery until `heal()`. */
  isolate(id: NodeId): void {
    this.#cut.add(id);
  }

  /** Cuts the link between `a` and `b` (both directions). */
  cutLink(a: NodeId, b: NodeId): void {
    this.#links.add(`${a}>${b}`).add(`${b}>${a}`);
  }

  /** Restores every link. */
  heal(): void {
    this.#cut.clear();
    this.#links.clear();
  }

  #reachable(m: Message): boolean {
    const node = this.nodes.get(m.to);
    return node !== undefined && node.alive && !this.#cut.has(m.from) && !this.#cut.has(m.to) &&
      !this.#links.has(`${m.from}>${m.to}`);
  }

  /** Delivers one message now (processing the receiver); false if it could not arrive. */
  deliverOne(m: Message): boolean {
    if (!this.#reachable(m)) return false;
    this.raft(m.to).step(m);
    this.process(m.to);
    return true;
  }

  /**
   * Delivers the queued messages matching `filter`, once (replies are queued, not delivered).
   * Returns the messages that arrived.
   */
  deliver(filter?: MessageFilter): Message[] {
    const arrived: Message[] = [];
    for (const m of this.take(filter)) if (this.deliverOne(m)) arrived.push(m);
    return arrived;
  }

  /** Delivers until the outbox is empty (bounded); returns the number of messages delivered. */
  stabilize(maxRounds = 200): number {
    let delivered = 0;
    for (let round = 0; round < maxRounds && this.outbox.length > 0; round++) {
      delivered += this.deliver().length;
    }
    if (this.outbox.length > 0) throw new Error(`not stable after ${maxRounds} rounds`);
    return delivered;
  }

  /** `id` campaigns and the cluster stabilizes; returns the id's role afterwards. */
  elect(id: NodeId): string {
    this.raft(id).campaign();
    this.process(id);
    this.stabilize();
    return this.raft(id).status().role;
  }

  /**
   * `id` campaigns and only election traffic (pre-votes, votes and their answers) is
   * delivered, so nothing else moves; returns the id's role afterwards.
   */
  campaign(id: NodeId): string {
    this.raft(id).campaign();
    this.process(id);
    const election = (m: Message) =>
      m.type === "preVote" || m.type === "vote" || m.type === "preVoteResponse" ||
      m.type === "voteResponse";
    for (let r = 0; r < 10 && this.peek(election).length > 0; r++) this.deliver(election);
    return this.raft(id).status().role;
  }

  /** Proposes a client write of `key` on `id`; returns its op id and where it landed. */
  propose(id: NodeId, key: string, value?: string): { opId: number; index: number; term: number } {
    const opId = this.#nextOpId++;
    const at = this.node(id).propose({ opId, key, value: value ?? `v${opId}` });
    this.process(id);
    return { opId, ...at };
  }

  /** Starts a linearizable read of `key` on `id`; returns its read id (= context). */
  read(id: NodeId, key: string): number {
    const readId = this.#nextReadId++;
    this.node(id).read(readId, key);
    this.process(id);
    return readId;
  }

  /** Crashes `id`: its in-flight messages in the outbox are lost too. */
  crash(id: NodeId): void {
    this.node(id).crash();
    this.outbox = this.outbox.filter((m) => m.to !== id);
  }

  /** Restarts `id` from its disk. */
  restart(id: NodeId): void {
    this.#send(this.node(id).restart());
  }

  /** The ids that currently believe they lead. */
  leaders(): NodeId[] {
    return this.ids.filter((id) => this.node(id).alive && this.raft(id).status().role === "leader");
  }
}
