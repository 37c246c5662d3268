/**
 * A hand-driven cluster of real nodes for scenario tests (etcd-io/raft interaction style):
 * each node is a real `ReplicationHost` with the real `KvStateMachine` and the real
 * `RaftStorage` over a simulated Deno KV file ({@link SimKvFile}); the test ticks specific
 * nodes, delivers, drops or inspects specific messages, holds a node's saves in flight,
 * crashes and restarts nodes, and asserts on roles and state. Messages wait in one outbox
 * until the test delivers them (they cross it through the real codec); requests between
 * hosts (a forwarded write, an admin call) go straight through while the link is up.
 *
 * Every action settles the hosts before it returns: the virtual disk completes every commit
 * not held and every promise runs, until each host's loop is idle (or waits on a held save).
 * So nothing depends on timing and a scenario replays exactly. The {@link SafetyChecker}
 * with the {@link KvModel} watches every node through the same observation points as the
 * randomized simulator (host_sim.ts).
 */
import {
  type Command,
  type CommandResult,
  encodeCommand,
  KvStateMachine,
} from "../../../src/kv/mod.ts";
import type {
  Config,
  ConfigChange,
  Entry,
  Message,
  MessageType,
  NodeId,
  RaftNode,
  RaftOptions,
  RaftStatus,
} from "../../../src/raft/mod.ts";
import { decodeMessageBatch, encodeMessageBatch } from "../../../src/replication/codec.ts";
import {
  decodeResult,
  emptyTransportStats,
  encodeResult,
  RaftStorage,
  RemoteError,
  ReplicationHost,
  type Transport,
  TransportError,
  type TransportHandlers,
  type TransportStats,
} from "../../../src/replication/mod.ts";
import { SeededRng } from "../../../src/rng.ts";
import { SafetyChecker } from "./checker.ts";
import { Disk } from "./disk.ts";
import { entryText, KvModel } from "./kv_model.ts";
import { ManualClock } from "./manual_clock.ts";
import { Scheduler, settle } from "./scheduler.ts";
import { SimDisk, SimKvFile } from "./sim_kv.ts";
import { idOfAddress } from "./sim_transport.ts";
import {
  observedFsm,
  observedHooks,
  observedStore,
  type Observer,
  stateOf,
} from "./observed_host.ts";

/** Virtual milliseconds per tick. */
export const TICK_MS = 10;
/** A held commit is scheduled this far in disk time: it lands only when released. */
const HOLD_MS = 1e9;
/** Rounds of disk events and promises one settle may take (a loop that never idles). */
const MAX_SETTLE_ROUNDS = 10_000;

/** How to build a cluster. */
export interface ClusterOptions {
  /** Seed of the nodes' election timeouts (and read contexts). Default 1. */
  readonly seed?: number;
  /**
   * The initial voters, which start bootstrapped with that configuration; the other ids
   * start with no state (to be added later). Default: all ids.
   */
  readonly voters?: readonly NodeId[];
  /** Base election timeout in ticks. Default 10. */
  readonly electionTicks?: number;
  /** Heartbeat interval in ticks. Default 1. */
  readonly heartbeatTicks?: number;
  /** The host's snapshot trigger, in applied entries. Default: never in a scenario. */
  readonly snapshotEntries?: number;
  /** Most mutations per Deno KV commit: a batch above it is written in several commits. */
  readonly maxCommitMutations?: number;
  /** The host's `memoryLogEntries` (applied commands kept in memory). Default: the host's. */
  readonly memoryLogEntries?: number;
  readonly preVote?: boolean;
  readonly checkQuorum?: boolean;
  readonly maxInflight?: number;
  readonly maxBatchBytes?: number;
  readonly snapshotChunkBytes?: number;
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

/** The outcome of an asynchronous client or admin call, filled in as it settles. */
export interface Outcome<T> {
  state: "pending" | "done" | "failed";
  value?: T;
  error?: unknown;
}

/** A client write as the test sees it. */
export interface Write extends Outcome<CommandResult> {
  readonly opId: number;
  /** Where the entry landed on the leader (0 when the write was forwarded or refused). */
  readonly index: number;
  readonly term: number;
}

/** A linearizable read as the test sees it: `value` is the key's value text when served. */
export interface Read extends Outcome<string | undefined> {
  readonly readId: number;
  readonly key: string;
  /** The node's applied index when the read was served. */
  appliedIndex?: number;
}

/** One node: its disk survives crashes, everything else is one incarnation's. */
interface Member {
  readonly id: NodeId;
  readonly disk: SimDisk;
  /** The disk's own time: commits land when it runs their events. */
  readonly diskTime: Scheduler;
  /** Bumped on every crash: late callbacks of an older incarnation are ignored. */
  generation: number;
  /** Commits wait in flight until released (a slow disk). */
  holdSaves: boolean;
  /** Reads of log entries wait for this until `releaseReads` (a slow read). */
  readGate?: { readonly promise: Promise<void>; readonly release: () => void };
  /** What the checker reads as the node's durable log. */
  mirror: Disk;
  /** A leadership seen in a Ready, checked once that Ready's save is durable. */
  pendingLeaderTerm?: number;
  host?: ReplicationHost<CommandResult>;
  fsm?: KvStateMachine;
  clock?: ManualClock;
  kv?: SimKvFile;
  storage?: RaftStorage;
  handlers?: TransportHandlers;
  transport?: ManualTransport;
  /** Reads waiting on this incarnation (abandoned if it crashes). */
  readonly reads: Set<Read>;
}

/** A hand-driven cluster of real hosts whose message delivery the test controls. */
export class Cluster {
  readonly ids: readonly NodeId[];
  readonly model = new KvModel();
  readonly checker = new SafetyChecker(this.model);
  /** Messages sent and not yet delivered or dropped, in send order. */
  outbox: Message[] = [];
  readonly #members = new Map<NodeId, Member>();
  readonly #options: ClusterOptions;
  readonly #rng: SeededRng;
  #cut = new Set<NodeId>();
  #links = new Set<string>();
  #nextOpId = 1;
  #nextReadId = 1;
  #failure: unknown;

  private constructor(ids: readonly NodeId[], options: ClusterOptions) {
    this.ids = ids;
    this.#options = options;
    this.#rng = new SeededRng(options.seed ?? 1);
    for (const id of ids) {
      this.#members.set(id, {
        id,
        disk: new SimDisk(),
        diskTime: new Scheduler(),
        generation: 0,
        holdSaves: false,
        mirror: new Disk(),
        reads: new Set(),
      });
    }
  }

  /** Starts every node (the initial voters bootstrapped) and settles. */
  static async start(ids: readonly NodeId[], options: ClusterOptions = {}): Promise<Cluster> {
    const c = new Cluster(ids, options);
    const initial = options.voters ?? ids;
    const config: Config = {
      voters: [...initial],
      learners: [],
      addresses: Object.fromEntries(initial.map((id) => [id, `${id}:1`])),
    };
    for (const id of ids) {
      const host = await c.#open(c.#member(id));
      if (initial.includes(id)) host.bootstrap(config);
    }
    await c.settle();
    return c;
  }

  // ---- nodes ---------------------------------------------------------------------------

  #member(id: NodeId): Member {
    const m = this.#members.get(id);
    if (!m) throw new Error(`no node ${id}`);
    return m;
  }

  /** The running host of `id` (throws while crashed). */
  host(id: NodeId): ReplicationHost<CommandResult> {
    const h = this.#member(id).host;
    if (!h) throw new Error(`${id} is crashed`);
    return h;
  }

  /** Is `id` running? */
  alive(id: NodeId): boolean {
    return this.#member(id).host !== undefined;
  }

  /** The Raft status of `id`. */
  status(id: NodeId): RaftStatus {
    return this.host(id).status();
  }

  /** Entries [lo, hi) in `id`'s in-memory log. */
  entries(id: NodeId, lo: number, hi: number): readonly Entry[] {
    return this.host(id).withCore((r) => r.entries(lo, hi));
  }

  /** Index of the last entry applied to `id`'s state machine. */
  applied(id: NodeId): number {
    return this.#member(id).fsm!.appliedIndex;
  }

  /** The value of `key` on `id` as text, or undefined when absent. */
  value(id: NodeId, key: string): string | undefined {
    const e = this.#member(id).fsm!.get(key);
    return e ? new TextDecoder().decode(e.value) : undefined;
  }

  /** The whole state of `id`: key → value text. */
  state(id: NodeId): Map<string, string> {
    const out = new Map<string, string>();
    for (const item of this.#member(id).fsm!.list()) {
      out.set(item.key, new TextDecoder().decode(item.value));
    }
    return out;
  }

  /** What `id`'s real storage holds on disk (its snapshot index and log range). */
  stored(id: NodeId): { snapshotIndex: number; firstIndex: number; lastIndex: number } {
    const s = this.#member(id).storage!.stats();
    return { snapshotIndex: s.snapshotIndex, firstIndex: s.firstIndex, lastIndex: s.lastIndex };
  }

  /**
   * Runs `fn` on `id`'s Raft core (campaign, a crafted step, a proposal the host would not
   * make), lets the host handle what it produced, and settles. A throw of `fn` rejects.
   */
  async core<T>(id: NodeId, fn: (raft: RaftNode) => T): Promise<T> {
    const out = this.host(id).withCore(fn);
    await this.settle();
    return out;
  }

  // ---- settling ------------------------------------------------------------------------

  /**
   * Lets every host run until it is idle: every commit not held lands, every promise runs.
   * Throws the first safety violation (or host failure) seen.
   */
  async settle(): Promise<void> {
    for (let round = 0; round < MAX_SETTLE_ROUNDS; round++) {
      await settle();
      let ran = false;
      for (const m of this.#members.values()) {
        const before = m.diskTime.events;
        await m.diskTime.runUntil(m.diskTime.now);
        if (m.diskTime.events !== before) ran = true;
      }
      if (!ran) {
        this.#throwIfFailed();
        return;
      }
    }
    throw new Error(`the hosts did not settle in ${MAX_SETTLE_ROUNDS} rounds`);
  }

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** Runs `fn`, keeping the first failure (callbacks run inside the hosts). */
  #guard(fn: () => void): void {
    if (this.#failure !== undefined) return;
    try {
      fn();
    } catch (err) {
      this.#failure = err;
    }
  }

  // ---- time ----------------------------------------------------------------------------

  /** Ticks `id` `times` times (settling after each). */
  async tick(id: NodeId, times = 1): Promise<void> {
    for (let i = 0; i < times; i++) {
      const clock = this.#member(id).clock;
      if (!this.alive(id) || !clock) throw new Error(`${id} is crashed`);
      clock.advance(TICK_MS);
      await this.settle();
    }
  }

  /** Ticks every live node `times` times, delivering nothing. */
  async tickAll(times = 1): Promise<void> {
    for (let i = 0; i < times; i++) {
      for (const id of this.ids) if (this.alive(id)) await this.tick(id);
    }
  }

  // ---- the disk ------------------------------------------------------------------------

  /** From now on `id`'s commits stay in flight until `releaseSaves` (or a crash). */
  holdSaves(id: NodeId): void {
    this.#member(id).holdSaves = true;
  }

  /** Lands `id`'s held commit and lets its disk run freely again; settles. */
  async releaseSaves(id: NodeId): Promise<void> {
    const m = this.#member(id);
    m.holdSaves = false;
    await m.diskTime.runUntil(m.diskTime.now + HOLD_MS);
    await this.settle();
  }

  /** From now on `id`'s reads of log entries (to send evicted ones) wait until `releaseReads`. */
  holdReads(id: NodeId): void {
    const m = this.#member(id);
    if (m.readGate) return;
    let release = () => {};
    const promise = new Promise<void>((r) => (release = r));
    m.readGate = { promise, release };
  }

  /** Lets `id`'s held reads of log entries go on, and later ones run at once; settles. */
  async releaseReads(id: NodeId): Promise<void> {
    const m = this.#member(id);
    const gate = m.readGate;
    m.readGate = undefined;
    gate?.release();
    await this.settle();
  }

  /** Is a commit of `id` being written (held) now? */
  saving(id: NodeId): boolean {
    return this.#member(id).kv?.writing ?? false;
  }

  // ---- the network ---------------------------------------------------------------------

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

  #linked(from: NodeId, to: NodeId): boolean {
    return this.#members.get(to)?.host !== undefined && !this.#cut.has(from) &&
      !this.#cut.has(to) && !this.#links.has(`${from}>${to}`);
  }

  /** Delivers one message now and settles; false if it could not arrive. */
  async deliverOne(m: Message): Promise<boolean> {
    if (!this.#linked(m.from, m.to)) return false;
    this.#member(m.to).handlers!.onMessages([m]);
    await this.settle();
    return true;
  }

  /**
   * Delivers the queued messages matching `filter`, once (replies are queued, not delivered).
   * Returns the messages that arrived.
   */
  async deliver(filter?: MessageFilter): Promise<Message[]> {
    const arrived: Message[] = [];
    for (const m of this.take(filter)) if (await this.deliverOne(m)) arrived.push(m);
    return arrived;
  }

  /** Delivers until the outbox is empty (bounded); returns the number of messages delivered. */
  async stabilize(maxRounds = 200): Promise<number> {
    let delivered = 0;
    for (let round = 0; round < maxRounds && this.outbox.length > 0; round++) {
      delivered += (await this.deliver()).length;
    }
    if (this.outbox.length > 0) throw new Error(`not stable after ${maxRounds} rounds`);
    return delivered;
  }

  // ---- elections -----------------------------------------------------------------------

  /** `id` campaigns and the cluster stabilizes; returns the id's role afterwards. */
  async elect(id: NodeId): Promise<string> {
    await this.core(id, (r) => r.campaign());
    await this.stabilize();
    return this.status(id).role;
  }

  /**
   * `id` campaigns and only election traffic (pre-votes, votes and their answers) is
   * delivered, so nothing else moves; returns the id's role afterwards.
   */
  async campaign(id: NodeId): Promise<string> {
    await this.core(id, (r) => r.campaign());
    const election = (m: Message) =>
      m.type === "preVote" || m.type === "vote" || m.type === "preVoteResponse" ||
      m.type === "voteResponse";
    for (let r = 0; r < 10 && this.peek(election).length > 0; r++) await this.deliver(election);
    return this.status(id).role;
  }

  /** The ids that currently believe they lead. */
  leaders(): NodeId[] {
    return this.ids.filter((id) => this.alive(id) && this.status(id).role === "leader");
  }

  // ---- clients -------------------------------------------------------------------------

  /**
   * A client writes `value` (default `v<opId>`) to `key` through `id`'s host (a follower
   * forwards it to the leader), in a session of its own; settles. The model checks the
   * answer if one comes.
   */
  async propose(id: NodeId, key: string, value?: string): Promise<Write> {
    const write = this.submit(id, key, value);
    await this.settle();
    return write;
  }

  /** {@link propose} without settling: writes submitted together share the loop's next batch. */
  submit(id: NodeId, key: string, value?: string): Write {
    const opId = this.#nextOpId++;
    const m = this.#member(id);
    const host = this.host(id);
    const clientId = `w${opId}`;
    const cmd: Command = {
      type: "set",
      key,
      value: new TextEncoder().encode(value ?? `v${opId}`),
      session: { clientId, seq: 1 },
      timeMs: Math.floor(m.clock!.now()),
    };
    const before = host.status().lastIndex;
    const p = host.apply(encodeCommand(cmd));
    // On the leader the entry is appended before apply() first waits.
    const st = host.status();
    const appended = st.role === "leader" && st.lastIndex > before;
    const write: Write = {
      opId,
      index: appended ? st.lastIndex : 0,
      term: appended ? st.term : 0,
      state: "pending",
    };
    const generation = m.generation;
    p.then(
      (result) =>
        this.#guard(() => {
          if (m.generation !== generation) return;
          this.model.writeAcknowledged(id, clientId, 1, result);
          write.state = "done";
          write.value = result;
        }),
      (err) => {
        write.state = "failed";
        write.error = err;
      },
    );
    return write;
  }

  /** A client starts a linearizable read of `key` on `id`; settles. */
  async read(id: NodeId, key: string): Promise<Read> {
    const m = this.#member(id);
    const fsm = m.fsm!;
    const read: Read = { readId: this.#nextReadId++, key, state: "pending" };
    this.model.readInvoked(read.readId);
    m.reads.add(read);
    this.host(id).readBarrier("linearizable").then(
      () =>
        this.#guard(() => {
          if (!m.reads.delete(read)) return;
          const e = fsm.get(key);
          read.state = "done";
          read.appliedIndex = fsm.appliedIndex;
          read.value = e ? new TextDecoder().decode(e.value) : undefined;
          this.model.readServed(
            read.readId,
            id,
            key,
            fsm.appliedIndex,
            e ? entryText(e) : undefined,
          );
        }),
      (err) => {
        if (!m.reads.delete(read)) return;
        read.state = "failed";
        read.error = err;
        this.model.readAbandoned(read.readId);
      },
    );
    await this.settle();
    return read;
  }

  /**
   * Proposes a membership change through `id`'s host and settles; resolves with where it was
   * appended and its outcome, or rejects at once with the host's error if it was refused.
   */
  async changeConfig(
    id: NodeId,
    change: ConfigChange,
  ): Promise<{ readonly index: number } & Outcome<void>> {
    const host = this.host(id);
    const before = host.status().lastIndex;
    const p = host.changeConfig(change);
    const appended = host.status().lastIndex > before;
    if (!appended) {
      await p;
      throw new Error(`the change ${JSON.stringify(change)} was neither appended nor refused`);
    }
    const out = this.#track(p, { index: host.status().lastIndex, state: "pending" });
    await this.settle();
    return out;
  }

  /** Asks `id`'s host to move leadership to `target` and settles; the call's outcome. */
  async transfer(id: NodeId, target: NodeId): Promise<Outcome<string>> {
    const out = this.#track(this.host(id).transferLeadership(target), { state: "pending" });
    await this.settle();
    return out;
  }

  /** Fills `out` in as `p` settles; returns it. */
  #track<T, O extends Outcome<T>>(p: Promise<T>, out: O): O {
    p.then((value) => {
      out.state = "done";
      out.value = value;
    }, (error) => {
      out.state = "failed";
      out.error = error;
    });
    return out;
  }

  // ---- crashes -------------------------------------------------------------------------

  /**
   * Crashes `id`: the commit it has in flight lands only with `landInFlight` (a held save
   * torn or not), its waiting clients get no answer, and the messages queued to it are lost.
   */
  crash(id: NodeId, options: { landInFlight?: boolean } = {}): void {
    const m = this.#member(id);
    if (!m.host) throw new Error(`${id} is crashed`);
    m.generation++;
    m.clock?.kill();
    m.kv?.crash(options.landInFlight ?? false);
    if (m.transport) m.transport.dead = true;
    m.host = undefined;
    m.pendingLeaderTerm = undefined;
    for (const read of m.reads) this.model.readAbandoned(read.readId);
    m.reads.clear();
    this.checker.nodeCrashed(id);
    this.outbox = this.outbox.filter((msg) => msg.to !== id);
  }

  /** Restarts `id` from its disk and settles. */
  async restart(id: NodeId): Promise<void> {
    const m = this.#member(id);
    if (m.host) throw new Error(`${id} is running`);
    m.holdSaves = false;
    await this.#open(m);
    await this.settle();
  }

  /** Opens and starts a new incarnation of `m` from its disk. */
  async #open(m: Member): Promise<ReplicationHost<CommandResult>> {
    const generation = m.generation;
    const clock = m.clock = new ManualClock();
    const kv = m.kv = new SimKvFile(m.disk, m.diskTime, {
      commitMs: () => (m.holdSaves ? HOLD_MS : 0),
      failCommit: () => false,
    });
    const storage = m.storage = RaftStorage.over(kv, {
      maxCommitMutations: this.#options.maxCommitMutations,
    });
    const fsm = m.fsm = new KvStateMachine();
    const random = new SeededRng(this.#rng.nextUint32());
    const o = this.#options;
    const raftOptions: Omit<RaftOptions, "id" | "random" | "electionTicks" | "heartbeatTicks"> = {
      preVote: o.preVote,
      checkQuorum: o.checkQuorum,
      maxInflight: o.maxInflight,
      maxBatchBytes: o.maxBatchBytes,
      snapshotChunkBytes: o.snapshotChunkBytes,
    };
    const host = await ReplicationHost.open<CommandResult>({
      nodeId: m.id,
      rpcAddr: `${m.id}:1`,
      storage: observedStore(m, storage, generation, this.#observer, {
        beforeRead: () => m.readGate?.promise,
      }),
      fsm: observedFsm(m, fsm, generation, this.#observer, { steppedSnapshots: false }),
      results: { encode: encodeResult, decode: decodeResult },
      transport: (handlers) => {
        m.handlers = handlers;
        return m.transport = new ManualTransport(clock, {
          send: (msgs) => this.#send(m.id, msgs),
          request: (to, kind, payload) => this.#request(m.id, to, kind, payload),
        });
      },
      clock,
      tickMs: TICK_MS,
      electionTicks: o.electionTicks ?? 10,
      heartbeatTicks: o.heartbeatTicks ?? 1,
      snapshotEntries: o.snapshotEntries,
      memoryLogEntries: o.memoryLogEntries,
      random: () => random.float(),
      hooks: observedHooks(m, generation, this.#observer),
      raftOptions: Object.fromEntries(
        Object.entries(raftOptions).filter(([, v]) => v !== undefined),
      ),
    });
    m.host = host;
    for (const id of this.ids) host.setAddress(id, `${id}:1`);
    host.onFatal((err) =>
      this.#guard(() => {
        if (m.generation !== generation) return;
        throw new Error(`${m.id}'s replication loop stopped: ${err.message}`, { cause: err });
      })
    );
    this.checker.stateRestored(m.id, fsm.appliedIndex, stateOf(fsm));
    host.start();
    return host;
  }

  #send(from: NodeId, msgs: readonly Message[]): void {
    this.#guard(() => {
      for (const msg of msgs) this.checker.messageSent(from, msg.type, msg.term);
    });
    this.outbox.push(...decodeMessageBatch(encodeMessageBatch(msgs)));
  }

  #request(from: NodeId, to: NodeId, kind: number, payload: Uint8Array): Promise<Uint8Array> {
    if (!this.#linked(from, to)) {
      return Promise.reject(new TransportError(`${to} is unreachable from ${from}`));
    }
    return this.#member(to).handlers!.onRequest(from, kind, payload.slice()).then(
      (bytes) => bytes.slice(),
      (err) => {
        throw new RemoteError(err instanceof Error ? err.message : String(err));
      },
    );
  }

  /** The checker and the failure guard, as the observed hosts see them. */
  get #observer(): Observer {
    return { checker: this.checker, guard: (fn) => this.#guard(fn) };
  }
}

/** What a node's transport reaches in the cluster. */
interface Wire {
  /** Queues messages into the outbox. */
  send(msgs: readonly Message[]): void;
  /** Calls the peer's request handler, if the link is up. */
  request(to: NodeId, kind: number, payload: Uint8Array): Promise<Uint8Array>;
}

/**
 * A host's transport in the scenario cluster: `send` queues into the cluster's outbox (the
 * test delivers), `request` goes straight to the peer's handler while the link is up and
 * fails after `timeoutMs` of the sender's clock otherwise (a peer that crashed meanwhile).
 */
class ManualTransport implements Transport {
  dead = false;
  readonly #clock: ManualClock;
  readonly #wire: Wire;

  constructor(clock: ManualClock, wire: Wire) {
    this.#clock = clock;
    this.#wire = wire;
  }

  send(_to: NodeId, _addr: string, msgs: readonly Message[]): void {
    if (!this.dead && msgs.length > 0) this.#wire.send(msgs);
  }

  request(addr: string, kind: number, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.dead) return new Promise(() => {});
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = this.#clock.setTimeout(() => {
        if (settled) return;
        settled = true;
        reject(new TransportError(`request to ${addr} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#wire.request(idOfAddress(addr), kind, payload).then((bytes) => {
        if (settled || this.dead) return;
        settled = true;
        this.#clock.clearTimeout(timer);
        resolve(bytes);
      }, (err) => {
        if (settled || this.dead) return;
        settled = true;
        this.#clock.clearTimeout(timer);
        reject(err);
      });
    });
  }

  takeUnreachable(): NodeId[] {
    return [];
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
