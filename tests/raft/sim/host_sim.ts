/**
 * The deterministic simulator of the real node: one 32-bit seed drives 3 or 5 real
 * `ReplicationHost`s, each with the real `KvStateMachine` and the real `RaftStorage`, over a
 * virtual clock ({@link Scheduler}), a simulated network ({@link SimNetwork}) and simulated
 * disks ({@link SimKvFile}). Only the disk, the network and the clock are simulated.
 *
 * Faults: slow, reordered, duplicated and reset links, with delays up to several election
 * timeouts; split, one-way and bridge partitions with frames held and flushed in a burst on
 * reconnect; crashes at any time, also in the middle of a multi-commit save (torn batches);
 * saves that fail (the loop stops and a supervisor restarts the node); slow disks; per-node
 * clock skew and pauses; a node that loses its disk and rejoins under a new id; one-voter
 * clusters with learners; membership changes (also right after an election), removals and
 * leadership transfers through the host's API; snapshots every few entries. Clients write
 * Set, Delete, Append and CompareAndSet with sessions (retrying with the same sequence
 * number) and read linearizably on any node. An etcd client sends transactions, lease grants,
 * keep-alives and revokes through the host as etcd's services do, and linearizable Ranges;
 * every node runs the production {@link Lessor} on its own virtual clock, proposing expiries
 * through its host. The {@link SafetyChecker} with a {@link KvModel} checks every step (every
 * replica's whole state, etcd metadata and leases included, after every etcd command it applies);
 * the {@link LeaseTimingChecker} checks that no lease expires early. A run ends with a
 * liveness phase (faults off, all restarted, a fresh write must reach every member), then a
 * lease drain (nobody keeps leases alive: every lease must expire on every member).
 */
import { InvalidArgumentError, NotLeaderError, UnavailableError } from "../../../src/errors.ts";
import {
  type Command,
  type CommandResult,
  encodeCommand,
  KvStateMachine,
  rangeRequest,
} from "../../../src/kv/mod.ts";
import type { Config, ConfigChange, Message, NodeId } from "../../../src/raft/mod.ts";
import {
  decodeResult,
  DEFAULT_MEMORY_LOG_ENTRIES,
  encodeResult,
  RaftStorage,
  ReplicationHost,
} from "../../../src/replication/mod.ts";
import { SeededRng } from "../../../src/rng.ts";
import { InvariantViolation, SafetyChecker } from "./checker.ts";
import { Disk } from "./disk.ts";
import { Lessor } from "../../../src/etcd/lessor.ts";
import {
  type KeyMemory,
  keyMemory,
  putTxn,
  randomTxn,
  remember,
  rememberTxn,
} from "./etcd_workload.ts";
import { entryText, KvModel, payloadKey, REVISION_KEY } from "./kv_model.ts";
import { LeaseTimingChecker } from "./lease_checker.ts";
import {
  observedFsm,
  observedHooks,
  type ObservedOptions,
  observedStore,
  type Observer,
  stateOf,
} from "./observed_host.ts";
import { NodeClock, Scheduler } from "./scheduler.ts";
import { SimDisk, SimKvFile } from "./sim_kv.ts";
import { CALM, type LinkFaults, SimNetwork } from "./sim_transport.ts";

/** Virtual milliseconds per tick. */
const TICK_MS = 10;
const ELECTION_TICKS = 10;
/** Fault-phase ticks of one run unless told otherwise. */
export const DEFAULT_STEPS = 600;
/** Ticks the liveness phase may take. */
export const DEFAULT_LIVENESS_TICKS = 1000;
/**
 * Ticks the leases left after the liveness phase (nobody keeps them alive any more) may take
 * to expire: the longest TTL (2 s) on a clock running 20% slow, plus checks and commits.
 */
const LEASE_DRAIN_TICKS = 400;
const KEYS = ["a", "b", "c"];
/**
 * Clients of mökv's API, and of etcd's (transactions, ranges, leases). Each has one request
 * out at a time, so they bound the write rate: two and one keep a run's cost near what four
 * mökv clients alone cost (the simulator's 300 seeds are part of `deno task test`).
 */
const CLIENTS = 2;
const ETCD_CLIENTS = 1;
/** How often each node's lessor checks expiry, on its clock (production's default). */
const LESSOR_CHECK_MS = 250;
/** The end of the range of every key (etcd's range_end: KEYS are single letters). */
const RANGE_END = "d";
const TRACE_LINES = 40;
const utf8 = new TextEncoder();

/** What to simulate. */
export interface SimOptions {
  /** Everything follows from this 32-bit seed. */
  readonly seed: number;
  /** Cluster size (3 or 5 in the standard runs). */
  readonly nodes: number;
  /** Ticks with faults before the liveness phase. Default {@link DEFAULT_STEPS}. */
  readonly steps?: number;
  /** Bound on the liveness phase, in ticks. Default {@link DEFAULT_LIVENESS_TICKS}. */
  readonly livenessTicks?: number;
  /** Receives every trace line (verbose replays). */
  readonly trace?: (line: string) => void;
  /**
   * Also fail on a keep-alive acknowledged after its lease's expiry was proposed but applied
   * before it, and on an expiry appended in another term than it was decided in (see
   * lease_checker.ts, bounds 3 and 4). Default true; false only counts both.
   */
  readonly strictLeases?: boolean;
  /**
   * Run the hosts with `freeSnapshotBytes` (as the node does): snapshot buffers are detached
   * once released. The simulated disk copies what it is given and the network encodes at
   * send, as Deno KV and PeerTransport do. Default false.
   */
  readonly freeSnapshotBytes?: boolean;
  /**
   * The hosts' `memoryLogEntries`: with 0 to 3 applied entries' commands in memory, appends
   * to a follower behind are filled from the storage all the time. Default: drawn per seed,
   * 0 to 3 in three runs of four, else the host's default.
   */
  readonly memoryLogEntries?: number;
}

/** What a passing run did. */
export interface SimReport {
  readonly seed: number;
  readonly nodes: number;
  readonly steps: number;
  /** Virtual milliseconds, liveness phase included. */
  readonly virtualMs: number;
  readonly livenessMs: number;
  /** Virtual milliseconds the calm cluster took to expire every lease left after liveness. */
  readonly leaseDrainMs: number;
  readonly stats: Readonly<Record<string, number>>;
}

/** A run broke a safety or liveness property; carries the command that replays it. */
export class SimulationFailure extends Error {
  constructor(
    readonly seed: number,
    readonly nodes: number,
    readonly steps: number,
    readonly atMs: number,
    readonly command: string,
    readonly trace: readonly string[],
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super(
      `seed ${seed} (${nodes} nodes) failed at ${atMs.toFixed(1)} ms: ${reason}\n` +
        `  last events:\n${trace.map((l) => `    ${l}`).join("\n")}\n` +
        `  replay: ${command}`,
      { cause },
    );
    this.name = "SimulationFailure";
  }
}

/** The command that replays one run exactly. */
export function replayCommand(seed: number, nodes: number, steps: number, free = false): string {
  const stepsFlag = steps === DEFAULT_STEPS ? "" : ` --steps ${steps}`;
  const freeFlag = free ? " --free-snapshot-bytes" : "";
  return `deno task sim --seed ${seed} --nodes ${nodes}${stepsFlag}${freeFlag}`;
}

/** Runs one seed; resolves with its report or rejects with {@link SimulationFailure}. */
export function runSimulation(options: SimOptions): Promise<SimReport> {
  return new HostSimulation(options).run();
}

interface NodeSlot {
  readonly id: NodeId;
  disk: SimDisk;
  /** Bumped on every crash: late callbacks of an older incarnation are ignored. */
  generation: number;
  status: "down" | "starting" | "up";
  host?: ReplicationHost<CommandResult>;
  kv?: SimKvFile;
  clock?: NodeClock;
  fsm?: KvStateMachine;
  lessor?: Lessor;
  /** The clock source of this incarnation's etcd commands (production: node id + suffix). */
  clockSource?: string;
  mirror: Disk;
  /** A leadership seen in a Ready, checked once that Ready's save is issued. */
  pendingLeaderTerm?: number;
  readonly skewRate: number;
  readonly offsetMs: number;
  slowDiskUntil: number;
  /** The id was abandoned with its lost disk. */
  gone: boolean;
  /**
   * The configuration this node bootstraps with (`bootstrap: true` in its config file): it
   * bootstraps on every start that finds no Raft state, as the agent does, so a crash in the
   * middle of the first save does not leave a cluster that never starts.
   */
  bootstrap?: Config;
  /** Sole-voter trap armed: crash in the next term-changing save (see #soleVoterTrap). */
  trapTermSave?: boolean;
}

/**
 * The stale-read trap of a 5-voter cluster: leader L and follower F cut off from the other
 * three (M) right after L sent a ReadIndex heartbeat, M's answers to it held by M's
 * transport, L and F stalled (no election, no step-down), M electing a leader and
 * acknowledging writes; then F reads, and M's held answers reach L first when M→L
 * reconnects. Those answers are to a round sent before F's read was registered, so they
 * must not confirm it (Raft thesis §6.4).
 */
interface ReadTrap {
  phase: "cut" | "waiting" | "reading" | "flushing" | "done";
  readonly leader: NodeId;
  readonly follower: NodeId;
  readonly majority: readonly NodeId[];
  ackedBefore: number;
  writing: boolean;
}

interface Client {
  readonly id: string;
  seq: number;
  busy: boolean;
  /** Last version seen per key (for CompareAndSet). */
  readonly versions: Map<string, number>;
}

/** A client of etcd's API: no sessions (etcd has none), so nothing is retried. */
interface EtcdClient {
  readonly id: string;
  /** Requests made, for unique values. */
  count: number;
  busy: boolean;
  /** Its granted leases it believes alive → when to send the next keep-alive (or never). */
  readonly leases: Map<number, { ttlSeconds: number; nextKeepAliveMs: number; sending: boolean }>;
  readonly memory: KeyMemory;
}

class HostSimulation {
  readonly #seed: number;
  readonly #steps: number;
  readonly #livenessTicks: number;
  readonly #rng: SeededRng;
  /** Draws of the targeted faults, apart so that runs where none fires stay as they were. */
  readonly #trapRng: SeededRng;
  readonly #sched = new Scheduler();
  readonly #net: SimNetwork;
  readonly #model = new KvModel();
  readonly #checker = new SafetyChecker(this.#model);
  readonly #leaseChecker: LeaseTimingChecker;
  /** Draws of the etcd workload, apart so that the faults' draws stay as they were. */
  readonly #etcdRng: SeededRng;
  readonly #etcdClients: EtcdClient[] = [];
  /** Every lease id ever granted (a put may aim at one that ended). */
  readonly #leaseIds: number[] = [];
  #nextLeaseId = 1;
  readonly #nodes = new Map<NodeId, NodeSlot>();
  readonly #ids: NodeId[];
  readonly #faults: LinkFaults;
  readonly #heartbeatTicks: number;
  readonly #snapshotEntries: number;
  readonly #memoryLogEntries: number;
  readonly #freeSnapshotBytes: boolean;
  readonly #maxCommitMutations: number;
  readonly #oneVoter: boolean;
  readonly #failRate: number;
  readonly #clients: Client[] = [];
  readonly #traceSink: ((line: string) => void) | undefined;
  readonly #trace: string[] = [];
  #faultsOn = true;
  #failure: unknown;
  #nextReadId = 1;
  #readTrap: ReadTrap | undefined;
  #readTrapDone = false;
  readonly #trapClient: Client = { id: "trap", seq: 1, busy: false, versions: new Map() };
  /** Each node's latest ReadIndex request on the wire, and whether its answer went out. */
  readonly #readCtx = new Map<NodeId, { context: number; answered: boolean }>();
  #disksLost = 0;
  readonly #stats: Record<string, number> = {
    writes: 0,
    acked: 0,
    writeErrors: 0,
    retries: 0,
    reads: 0,
    readsServed: 0,
    crashes: 0,
    crashesInSave: 0,
    soleVoterTraps: 0,
    staleReadTraps: 0,
    restarts: 0,
    failedSaves: 0,
    disksLost: 0,
    partitions: 0,
    pauses: 0,
    slowDisks: 0,
    configChanges: 0,
    transfers: 0,
    etcdWrites: 0,
    etcdAcked: 0,
    etcdErrors: 0,
    ranges: 0,
    rangesServed: 0,
    keepAlivesSent: 0,
    expiryProposals: 0,
  };

  constructor(options: SimOptions) {
    this.#seed = options.seed >>> 0;
    this.#steps = options.steps ?? DEFAULT_STEPS;
    this.#livenessTicks = options.livenessTicks ?? DEFAULT_LIVENESS_TICKS;
    this.#traceSink = options.trace;
    this.#freeSnapshotBytes = options.freeSnapshotBytes ?? false;
    this.#leaseChecker = new LeaseTimingChecker(options.strictLeases ?? true);
    this.#etcdRng = new SeededRng((this.#seed ^ 0xe7cd_0018) >>> 0);
    // A stream of its own, so that the seed's other choices stay what they were.
    const memoryRng = new SeededRng((this.#seed ^ 0x10c_e71c) >>> 0);
    this.#memoryLogEntries = options.memoryLogEntries ??
      (memoryRng.float() < 0.75 ? memoryRng.int(4) : DEFAULT_MEMORY_LOG_ENTRIES);
    this.#model.onRevoke = (r) =>
      this.#guard(() => {
        if (r.expired) {
          this.#leaseChecker.expiryApplied(r.leaseId, r.index, r.term, payloadKey(r.data));
        }
        this.#log(
          `lease ${r.leaseId} ${
            r.expired ? "expires" : "is revoked"
          } at ${r.index}, deleting [${r.keys}]`,
        );
      });
    const rng = this.#rng = new SeededRng(this.#seed);
    this.#trapRng = new SeededRng((this.#seed ^ 0x5eed_b004) >>> 0);
    this.#ids = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    this.#heartbeatTicks = 1 + rng.int(3);
    this.#snapshotEntries = 5 + rng.int(40);
    this.#maxCommitMutations = rng.float() < 0.6 ? 2 + rng.int(10) : 1000;
    this.#oneVoter = rng.float() < 0.25;
    this.#failRate = rng.float() < 0.3 ? rng.float() * 0.002 : 0;
    const electionMs = TICK_MS * ELECTION_TICKS;
    this.#faults = {
      baseDelayMs: 1 + rng.float() * 4,
      slowRate: rng.float() * 0.05,
      slowDelayMs: rng.float() * electionMs * 6,
      reorderRate: rng.float() * 0.1,
      duplicateRate: rng.float() * 0.04,
      dropRate: rng.float() * 0.03,
    };
    this.#net = new SimNetwork(this.#sched, new SeededRng(rng.nextUint32()), this.#faults);
    this.#net.onSend = (from, msgs) =>
      this.#guard(() => {
        for (const m of msgs) {
          this.#checker.messageSent(from, m.type, m.term);
          this.#watchReads(from, m);
        }
      });
    for (const id of this.#ids) this.#addNode(id);
    for (let i = 0; i < CLIENTS; i++) {
      this.#clients.push({ id: `c${i}`, seq: 1, busy: false, versions: new Map() });
    }
    for (let i = 0; i < ETCD_CLIENTS; i++) {
      this.#etcdClients.push({
        id: `e${i}`,
        count: 0,
        busy: false,
        leases: new Map(),
        memory: keyMemory(),
      });
    }
    this.#log(
      `options heartbeatTicks ${this.#heartbeatTicks} snapshotEntries ${this.#snapshotEntries} memoryLogEntries ${this.#memoryLogEntries} maxCommitMutations ${this.#maxCommitMutations} oneVoter ${this.#oneVoter} failRate ${
        this.#failRate.toFixed(4)
      } faults ${JSON.stringify(this.#faults)}`,
    );
  }

  #addNode(id: NodeId): NodeSlot {
    const rng = this.#rng;
    const node: NodeSlot = {
      id,
      disk: new SimDisk(),
      generation: 0,
      status: "down",
      mirror: new Disk(),
      skewRate: rng.float() < 0.5 ? 1 : 0.8 + rng.float() * 0.4,
      offsetMs: rng.int(100_000),
      slowDiskUntil: 0,
      gone: false,
    };
    this.#nodes.set(id, node);
    return node;
  }

  async run(): Promise<SimReport> {
    try {
      const voters = this.#oneVoter ? [this.#ids[0]] : this.#ids;
      const config: Config = {
        voters,
        learners: [],
        addresses: Object.fromEntries(voters.map((id) => [id, `${id}:1`])),
      };
      for (const node of this.#nodes.values()) {
        if (voters.includes(node.id)) node.bootstrap = config;
        this.#start(node);
      }
      const faultEnd = this.#steps * TICK_MS;
      for (let t = TICK_MS; t <= faultEnd; t += TICK_MS) {
        this.#sched.at(t, () => this.#guard(() => this.#step()));
      }
      await this.#sched.runUntil(faultEnd, () => this.#failure !== undefined);
      this.#throwIfFailed();
      const livenessMs = await this.#liveness();
      this.#throwIfFailed();
      const leaseDrainMs = await this.#leaseDrain();
      this.#throwIfFailed();
      return {
        seed: this.#seed,
        nodes: this.#ids.length,
        steps: this.#steps,
        virtualMs: this.#sched.now,
        livenessMs,
        leaseDrainMs,
        stats: {
          ...this.#stats,
          leaders: this.#checker.leaders.size,
          committed: this.#checker.commonLength,
          duplicatesSkipped: this.#model.duplicates,
          ...this.#model.etcdStats,
          keepAliveRaces: this.#leaseChecker.races,
          forwardedExpiries: this.#leaseChecker.forwarded,
          events: this.#sched.events,
          ...this.#net.stats,
        },
      };
    } catch (err) {
      throw new SimulationFailure(
        this.#seed,
        this.#ids.length,
        this.#steps,
        this.#sched.now,
        replayCommand(this.#seed, this.#ids.length, this.#steps, this.#freeSnapshotBytes),
        this.#trace,
        err,
      );
    }
  }

  #throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** Runs `fn`, keeping the first failure (callbacks run outside the main loop). */
  #guard(fn: () => void): void {
    if (this.#failure !== undefined) return;
    try {
      fn();
    } catch (err) {
      this.#failure ??= err;
    }
  }

  #log(line: string): void {
    const text = `t=${this.#sched.now.toFixed(1)} ${line}`;
    this.#trace.push(text);
    if (this.#trace.length > TRACE_LINES) this.#trace.shift();
    this.#traceSink?.(text);
  }

  // ---- nodes ---------------------------------------------------------------------------

  #up(): NodeSlot[] {
    return [...this.#nodes.values()].filter((n) => n.status === "up");
  }

  /** The up leader of the highest term, if any. */
  #leader(): NodeSlot | undefined {
    let best: NodeSlot | undefined;
    let bestTerm = -1;
    for (const n of this.#up()) {
      const st = n.host!.status();
      if (st.role === "leader" && st.term > bestTerm) {
        best = n;
        bestTerm = st.term;
      }
    }
    return best;
  }

  /** The configuration of the most advanced up node. */
  #config(): Config | undefined {
    let best: { term: number; last: number; config: Config } | undefined;
    for (const n of this.#up()) {
      const st = n.host!.status();
      if (!best || st.term > best.term || (st.term === best.term && st.lastIndex > best.last)) {
        best = { term: st.term, last: st.lastIndex, config: st.config };
      }
    }
    return best?.config;
  }

  /** How many more voters may go down now (at least one: a sole voter may crash too). */
  #crashBudget(): number {
    const config = this.#config();
    if (!config) return 0;
    const down = config.voters.filter((v) => this.#nodes.get(v)?.status !== "up").length;
    return Math.max(1, Math.floor((config.voters.length - 1) / 2)) - down;
  }

  #start(node: NodeSlot): void {
    const bootstrap = node.bootstrap;
    const generation = ++node.generation;
    node.status = "starting";
    const clock = node.clock = new NodeClock(this.#sched, node.offsetMs, node.skewRate);
    const kv = node.kv = new SimKvFile(node.disk, this.#sched, {
      commitMs: () => this.#commitMs(node),
      failCommit: () => this.#faultsOn && this.#rng.float() < this.#failRate,
    });
    const storage = RaftStorage.over(kv, { maxCommitMutations: this.#maxCommitMutations });
    const fsm = node.fsm = new KvStateMachine();
    const obs = this.#observer;
    const options = this.#observedOptions(node);
    const store = observedStore(node, storage, generation, obs, options);
    const fsmSeen = observedFsm(node, fsm, generation, obs, options);
    node.clockSource = `${node.id}#etcd-${generation}`;
    const rngSeed = this.#rng.nextUint32();
    const random = new SeededRng(rngSeed);
    void ReplicationHost.open({
      nodeId: node.id,
      rpcAddr: `${node.id}:1`,
      storage: store,
      fsm: fsmSeen,
      results: { encode: encodeResult, decode: decodeResult },
      transport: (handlers) => this.#net.attach(node.id, clock, handlers),
      clock,
      tickMs: TICK_MS,
      electionTicks: ELECTION_TICKS,
      heartbeatTicks: this.#heartbeatTicks,
      snapshotEntries: this.#snapshotEntries,
      memoryLogEntries: this.#memoryLogEntries,
      freeSnapshotBytes: this.#freeSnapshotBytes,
      requestTimeoutMs: 1000,
      random: () => random.float(),
      hooks: observedHooks(node, generation, obs, options),
    }).then((host) =>
      this.#guard(() => {
        if (node.generation !== generation) return;
        node.host = host;
        node.status = "up";
        for (const id of this.#nodes.keys()) host.setAddress(id, `${id}:1`);
        host.onFatal((err) => this.#guard(() => this.#onFatal(node, generation, err)));
        this.#checker.stateRestored(node.id, fsm.appliedIndex, stateOf(fsm));
        host.start();
        if (bootstrap && !host.hasState()) host.bootstrap(bootstrap);
        this.#startLessor(node, generation, host, fsm, clock);
      }), (err) =>
      this.#guard(() => {
        if (node.generation !== generation) return;
        if (kv.failed) {
          // The injected I/O error hit load()'s cleanup: the supervisor tries again.
          this.#crash(node, "failed to open");
          this.#sched.after(50, () => this.#guard(() => this.#restart(node)));
          return;
        }
        throw err;
      }));
  }

  #commitMs(node: NodeSlot): number {
    const rng = this.#rng;
    if (this.#faultsOn && this.#sched.now < node.slowDiskUntil) return 30 + rng.float() * 300;
    const ms = 0.2 + rng.float() * 2;
    // A crash in the middle of a save (between or during the commits of one batch).
    if (this.#faultsOn && rng.float() < 0.004 && this.#crashBudget() > 0) {
      const generation = node.generation;
      this.#sched.after(rng.float() * ms * 1.5, () =>
        this.#guard(() => {
          if (node.generation !== generation || node.status !== "up") return;
          this.#stats.crashesInSave++;
          this.#crash(node, "in the middle of a save");
        }));
    }
    return ms;
  }

  #onFatal(node: NodeSlot, generation: number, err: Error): void {
    if (node.generation !== generation) return;
    if (node.kv?.failed) {
      this.#stats.failedSaves++;
      this.#log(`${node.id} stops after an injected I/O error; its supervisor restarts it`);
      this.#crash(node, "fatal after an I/O error");
      this.#sched.after(50 + this.#rng.float() * 150, () => this.#guard(() => this.#restart(node)));
      return;
    }
    throw new InvariantViolation(
      "liveness",
      `${node.id}'s replication loop stopped: ${err.message}`,
    );
  }

  /** Crashes `node`; the commit in flight lands if `land` (default: at random). */
  #crash(node: NodeSlot, how: string, land?: boolean): void {
    if (node.status === "down") return;
    node.generation++;
    node.status = "down";
    node.clock?.kill();
    node.lessor?.stop();
    node.lessor = undefined;
    node.kv?.crash(land ?? this.#rng.float() < 0.5);
    this.#net.detach(node.id);
    this.#checker.nodeCrashed(node.id);
    node.host = undefined;
    node.pendingLeaderTerm = undefined;
    this.#stats.crashes++;
    this.#log(`crash ${node.id} (${how})`);
  }

  #restart(node: NodeSlot): void {
    if (node.status !== "down" || node.gone) return;
    this.#stats.restarts++;
    this.#log(`restart ${node.id} from its disk`);
    this.#start(node);
  }

  /**
   * A voter whose permanent loss the cluster survives: every up node agrees on a committed
   * configuration of at least three voters, and one more voter may go down. (A voter lost
   * while a change is pending, or from two voters, leaves no quorum at all, in any Raft.)
   */
  #diskLossVictim(): NodeSlot | undefined {
    const leader = this.#leader();
    if (!leader || this.#crashBudget() <= 0) return undefined;
    const st = leader.host!.status();
    if (st.commit !== st.lastIndex || st.config.voters.length < 3) return undefined;
    const same = JSON.stringify(st.config);
    if (this.#up().some((n) => JSON.stringify(n.host!.status().config) !== same)) return undefined;
    const candidates = this.#up().filter((n) => st.config.voters.includes(n.id));
    return candidates.length > 0 ? pick(this.#rng, candidates) : undefined;
  }

  /** The node's disk is gone for good: it comes back empty under a new id. */
  #loseDisk(node: NodeSlot): void {
    this.#crash(node, "and loses its disk");
    node.gone = true;
    this.#disksLost++;
    this.#stats.disksLost++;
    const fresh = this.#addNode(`${node.id.split("-")[0]}-${this.#disksLost}`);
    this.#log(`${fresh.id} starts empty in place of ${node.id}`);
    for (const n of this.#up()) n.host!.setAddress(fresh.id, `${fresh.id}:1`);
    this.#start(fresh);
  }

  /** The checker and the failure guard, as the observed hosts see them. */
  get #observer(): Observer {
    return { checker: this.#checker, guard: (fn) => this.#guard(fn) };
  }

  /** This simulator's additions to the shared observation of `node`'s host. */
  #observedOptions(node: NodeSlot): ObservedOptions {
    const generation = node.generation;
    const live = () => node.generation === generation;
    return {
      onSoftState: (ss) =>
        this.#traceSink?.(
          `t=${this.#sched.now.toFixed(1)} ${node.id} is ${ss.role} in term ${ss.term}`,
        ),
      onLeader: (term) => {
        this.#leaseChecker.leading(`${node.id}#${generation}`, term, this.#sched.now);
        this.#log(`${node.id} leads term ${term}`);
        // Membership changes right after an election (the reconciler does this).
        if (this.#faultsOn && this.#rng.float() < 0.3) {
          this.#sched.after(0, () => this.#guard(() => this.#changeMembership(node)));
        }
      },
      beforeSave: (batch) => {
        if (
          !node.trapTermSave || batch.hardState === undefined ||
          batch.hardState.term <= node.mirror.hardState.term
        ) return;
        // The trap: the process dies while its new term is being written (and that write
        // is lost), after whatever the host sent before the save went out.
        node.trapTermSave = false;
        this.#sched.after(0, () =>
          this.#guard(() => {
            if (!live()) return;
            this.#crash(node, `while term ${batch.hardState!.term} is being written`, false);
            this.#sched.after(
              20 + this.#trapRng.float() * 200,
              () => this.#guard(() => this.#restart(node)),
            );
          }));
      },
      // Compared after every etcd command (the whole state: a divergence of a mökv write
      // shows at the next one, and in reads, restores and the end).
      compareAfter: isEtcdCommand,
    };
  }

  // ---- the fault phase -----------------------------------------------------------------

  #step(): void {
    this.#faultEvents();
    this.#clientEvents();
    this.#etcdEvents();
  }

  #faultEvents(): void {
    this.#soleVoterTrap();
    const rng = this.#rng;
    for (const node of this.#nodes.values()) {
      if (node.status === "down" && !node.gone && rng.float() < 0.03) this.#restart(node);
    }
    const up = this.#up();
    if (up.length > 0 && rng.float() < 0.003 && this.#crashBudget() > 0) {
      this.#crash(pick(rng, up), "between events");
    }
    if (this.#disksLost < 2 && rng.float() < 0.0005) {
      const victim = this.#diskLossVictim();
      if (victim) this.#loseDisk(victim);
    }
    if (this.#readTrap) this.#stepReadTrap();
    else if (!this.#net.partitioned && rng.float() < 0.006) this.#partition();
    else if (this.#net.partitioned && rng.float() < 0.02) {
      this.#net.heal();
      this.#log("heal");
    }
    if (this.#up().length > 0 && rng.float() < 0.003) {
      const node = pick(rng, this.#up());
      const ms = 100 + rng.float() * 1500;
      node.clock!.pause(ms);
      this.#stats.pauses++;
      this.#log(`${node.id} pauses for ${ms.toFixed(0)} ms`);
    }
    if (this.#up().length > 0 && rng.float() < 0.005) {
      const node = pick(rng, this.#up());
      node.slowDiskUntil = this.#sched.now + 100 + rng.float() * 1500;
      this.#stats.slowDisks++;
      this.#traceSink?.(`t=${this.#sched.now.toFixed(1)} ${node.id} has a slow disk`);
    }
    const leader = this.#leader();
    if (leader && rng.float() < 0.015) this.#changeMembership(leader);
    const upNow = this.#up();
    if (upNow.length > 0 && rng.float() < 0.005) {
      const asker = pick(rng, upNow);
      const voters = this.#config()?.voters ?? [];
      const target = rng.float() < 0.3 || voters.length === 0 ? "" : pick(rng, voters);
      this.#stats.transfers++;
      this.#log(`${asker.id} asks to transfer leadership to ${target || "anyone"}`);
      this.#tolerate(asker.host!.transferLeadership(target));
    }
  }

  /**
   * A targeted fault for one-voter clusters with learners: the sole voter crashes, and when
   * it restarts and elects itself (pre-vote, vote and leadership in one tick) it crashes
   * again while that new term is being written, then comes back and wins the same term
   * number again. Anything it sent in the lost term, such as early appends to the learners,
   * is what the durable-term check catches.
   */
  #soleVoterTrap(): void {
    if (!this.#oneVoter) return;
    const config = this.#config();
    if (!config || config.voters.length !== 1) return;
    const voter = this.#nodes.get(config.voters[0]);
    if (!voter || voter.status !== "up" || voter.trapTermSave) return;
    const learnersUp = config.learners.filter((id) => this.#nodes.get(id)?.status === "up");
    if (learnersUp.length === 0 || this.#trapRng.float() >= 0.01) return;
    this.#stats.soleVoterTraps++;
    voter.trapTermSave = true;
    this.#crash(voter, "to re-elect itself (sole-voter trap)");
  }

  /** Follows ReadIndex traffic on the wire, for the stale-read trap's timing. */
  #watchReads(from: NodeId, m: Message): void {
    if (m.type === "readIndex") {
      this.#readCtx.set(from, { context: m.context, answered: false });
      const trap = this.#readTrap;
      if (trap?.phase === "reading" && from === trap.follower) {
        trap.phase = "flushing";
        this.#sched.after(
          5 + this.#trapRng.float() * 20,
          () => this.#guard(() => this.#flushTrap()),
        );
      }
    } else if (m.type === "readIndexResponse") {
      const r = this.#readCtx.get(m.to);
      if (r && r.context === m.context) r.answered = true;
    } else if (m.type === "heartbeat" && m.context > 0) {
      this.#springReadTrap(from, m.context);
    }
  }

  /**
   * Leader `leaderId` just sent heartbeats of ReadIndex round `context`. The trap springs
   * when some follower's next read would carry the same number (a host that numbers its
   * requests as the leader numbers its rounds), or now and then at random, so that the
   * same schedule runs against any numbering.
   */
  #springReadTrap(leaderId: NodeId, context: number): void {
    if (this.#readTrap || this.#readTrapDone || !this.#faultsOn || this.#ids.length !== 5) return;
    if (this.#net.partitioned) return;
    const leader = this.#leader();
    if (leader?.id !== leaderId) return;
    const voters = leader.host!.status().config.voters;
    if (voters.length !== 5 || voters.some((v) => this.#nodes.get(v)?.status !== "up")) return;
    const followers = voters.filter((v) => v !== leaderId);
    const lined = followers.filter((f) => {
      const r = this.#readCtx.get(f);
      return r !== undefined && r.answered && r.context + 1 === context;
    });
    let follower: NodeId;
    if (lined.length > 0) follower = pick(this.#trapRng, lined);
    else if (this.#trapRng.float() < 0.002) follower = pick(this.#trapRng, followers);
    else return;
    const majority = followers.filter((v) => v !== follower);
    for (const m of majority) this.#net.cut(m, leaderId);
    this.#readTrap = {
      phase: "cut",
      leader: leaderId,
      follower,
      majority,
      ackedBefore: 0,
      writing: false,
    };
    this.#stats.staleReadTraps++;
    this.#log(
      `stale-read trap: ${
        majority.join(",")
      } cannot reach ${leaderId} (round ${context} in flight)`,
    );
    this.#sched.after(20, () =>
      this.#guard(() => {
        const trap = this.#readTrap;
        if (!trap) return;
        for (const m of trap.majority) {
          this.#net.cut(trap.leader, m);
          this.#net.cut(trap.follower, m);
          this.#net.cut(m, trap.follower);
        }
        const stallMs = 1200;
        for (const id of [trap.leader, trap.follower]) this.#nodes.get(id)?.clock?.pause(stallMs);
        trap.phase = "waiting";
        trap.ackedBefore = this.#model.acked;
        this.#log(
          `stale-read trap: ${trap.leader},${trap.follower} cut off from ${
            trap.majority.join(",")
          } and stalled`,
        );
        this.#sched.after(stallMs, () => this.#guard(() => this.#endReadTrap()));
      }));
  }

  /** Each step of a waiting trap: once the majority acknowledged a write, the follower reads. */
  #stepReadTrap(): void {
    const trap = this.#readTrap;
    if (trap?.phase !== "waiting") return;
    if (this.#model.acked <= trap.ackedBefore) {
      // The clients may all be waiting on the stalled leader: one more writes to the new one.
      const leader = this.#leader();
      if (!trap.writing && leader && trap.majority.includes(leader.id)) {
        trap.writing = true;
        this.#write(this.#trapClient, true)?.finally(() => (trap.writing = false));
      }
      return;
    }
    const follower = this.#nodes.get(trap.follower);
    if (follower?.status !== "up") return;
    trap.phase = "reading";
    this.#log(`stale-read trap: ${trap.follower} reads every key`);
    for (const key of KEYS) this.#read(follower, key);
    // If its request does not go out at once (one is still waiting), reconnect anyway.
    this.#sched.after(30, () => this.#guard(() => this.#flushTrap()));
  }

  /** The majority's links to the stalled leader come back: their held frames go first. */
  #flushTrap(): void {
    const trap = this.#readTrap;
    if (!trap || trap.phase === "cut" || trap.phase === "waiting" || trap.phase === "done") return;
    trap.phase = "done";
    for (const m of trap.majority) this.#net.restore(m, trap.leader);
    this.#log(`stale-read trap: ${trap.majority.join(",")} reach ${trap.leader} again`);
  }

  #endReadTrap(): void {
    if (!this.#readTrap) return;
    this.#readTrap = undefined;
    this.#readTrapDone = true;
    this.#net.heal();
    this.#log("stale-read trap over: heal");
  }

  #partition(): void {
    const rng = this.#rng;
    const ids = shuffled(rng, [...this.#nodes.keys()]);
    const kind = rng.int(3);
    this.#stats.partitions++;
    if (kind === 0) {
      const cut = 1 + rng.int(ids.length - 1);
      const a = ids.slice(0, cut);
      const b = ids.slice(cut);
      for (const x of a) for (const y of b) this.#net.cut(x, y), this.#net.cut(y, x);
      this.#log(`partition ${JSON.stringify([a, b])}`);
    } else if (kind === 1) {
      const from = ids[0];
      const to = ids.slice(1, 2 + rng.int(ids.length - 1));
      for (const y of to) this.#net.cut(from, y);
      this.#log(`one-way partition: ${from} cannot reach ${to.join(",")}`);
    } else {
      const bridge = ids[0];
      const rest = ids.slice(1);
      const cut = Math.max(1, rest.length >> 1);
      const a = rest.slice(0, cut);
      const b = rest.slice(cut);
      for (const x of a) for (const y of b) this.#net.cut(x, y), this.#net.cut(y, x);
      this.#log(`bridge partition: ${bridge} links ${a.join(",")} and ${b.join(",")}`);
    }
  }

  #changeMembership(leader: NodeSlot): void {
    if (leader.status !== "up") return;
    const rng = this.#rng;
    const st = leader.host!.status();
    if (st.role !== "leader") return;
    const config = st.config;
    const minVoters = this.#oneVoter ? 1 : Math.ceil(this.#ids.length / 2);
    const inConfig = (id: NodeId) => config.voters.includes(id) || config.learners.includes(id);
    const goneMember = [...this.#nodes.values()].find((n) => n.gone && inConfig(n.id));
    const outside = [...this.#nodes.values()].filter((n) => !n.gone && !inConfig(n.id));
    let change: ConfigChange;
    if (goneMember && (config.voters.length > 1 || !config.voters.includes(goneMember.id))) {
      change = { type: "remove", id: goneMember.id };
    } else if (outside.length > 0 && rng.float() < 0.7) {
      const id = pick(rng, outside).id;
      change = rng.float() < 0.7
        ? { type: "addLearner", id, address: `${id}:1` }
        : { type: "addVoter", id, address: `${id}:1` };
    } else if (config.learners.length > 0 && rng.float() < 0.7) {
      change = { type: "promote", id: pick(rng, config.learners) };
    } else if (config.voters.length > minVoters) {
      const others = config.voters.filter((v) => v !== leader.id);
      const id = rng.float() < 0.2 || others.length === 0 ? leader.id : pick(rng, others);
      change = { type: "remove", id };
    } else {
      return;
    }
    this.#stats.configChanges++;
    this.#log(`${leader.id} proposes ${JSON.stringify(change)}`);
    this.#tolerate(leader.host!.changeConfig(change));
  }

  /** Lets an admin call fail the ways the API documents; anything else is a failure. */
  #tolerate(p: Promise<unknown>): void {
    p.catch((err) =>
      this.#guard(() => {
        if (
          err instanceof NotLeaderError || err instanceof UnavailableError ||
          err instanceof InvalidArgumentError
        ) return;
        throw err;
      })
    );
  }

  // ---- clients -------------------------------------------------------------------------

  #clientEvents(): void {
    const rng = this.#rng;
    if (rng.float() < 0.4) {
      const idle = this.#clients.filter((c) => !c.busy);
      if (idle.length > 0) this.#write(pick(rng, idle), false);
    }
    if (rng.float() < 0.3) this.#read();
  }

  #command(client: Client, timeMs: number, plainSet: boolean): Command {
    const rng = this.#rng;
    const key = pick(rng, KEYS);
    const session = { clientId: client.id, seq: client.seq };
    const value = new TextEncoder().encode(`${client.id}.${client.seq};`);
    const base = { key, session, timeMs: Math.max(0, Math.floor(timeMs)) };
    const r = rng.float();
    if (plainSet || r < 0.4) return { type: "set", value, ...base };
    if (r < 0.55) return { type: "delete", ...base };
    if (r < 0.8) return { type: "append", value, ...base };
    return {
      type: "cas",
      value,
      expectVersion: rng.float() < 0.3 ? 0 : client.versions.get(key) ?? 0,
      ...base,
    };
  }

  /** One client write through a random node (mostly the leader), retried with its session. */
  #write(client: Client, liveness: boolean): Promise<number> | undefined {
    const rng = this.#rng;
    const up = this.#up();
    if (up.length === 0) return undefined;
    const leader = this.#leader();
    const node = leader && (liveness || rng.float() < 0.7) ? leader : pick(rng, up);
    client.busy = true;
    const seq = client.seq;
    const cmd = this.#command(client, node.clock!.now(), liveness);
    this.#stats.writes++;
    const attempt = (n: NodeSlot, tries: number): Promise<number> => {
      const host = n.host!;
      return host.apply(encodeCommand({ ...cmd, timeMs: Math.floor(n.clock!.now()) })).then(
        (result) => {
          this.#guard(() => {
            // A client that gave up on this write and moved on may get "not applied" for a
            // late retry of it (one outstanding write per session): nothing to check then.
            if (client.seq !== seq && !result.ok && result.version === 0) return;
            this.#model.writeAcknowledged(n.id, client.id, seq, result);
            this.#stats.acked++;
            if (result.version > 0) client.versions.set(cmd.key, result.version);
          });
          if (client.seq === seq) {
            client.seq++;
            client.busy = false;
          }
          return result.version;
        },
        (err) => {
          this.#stats.writeErrors++;
          const known = err instanceof NotLeaderError || err instanceof UnavailableError ||
            err instanceof InvalidArgumentError;
          if (!known) {
            this.#guard(() => {
              throw err;
            });
          }
          const next = this.#up();
          if (tries < 3 && next.length > 0 && rng.float() < 0.8) {
            // The outcome is unknown: retry the same session sequence number elsewhere.
            this.#stats.retries++;
            return attempt(this.#leader() ?? pick(rng, next), tries + 1);
          }
          if (client.seq === seq) {
            client.seq++;
            client.busy = false;
          }
          return -1;
        },
      );
    };
    const done = attempt(node, 0);
    // A node that crashes takes its pending promises with it: the client gives up on it.
    this.#sched.after(5000, () => {
      if (client.seq === seq) {
        client.seq++;
        client.busy = false;
      }
    });
    return done;
  }

  /** One linearizable read of a random key on `on` (default: a random up node). */
  #read(on?: NodeSlot, only?: string): void {
    // The stale-read trap chooses when its follower reads (see #springReadTrap).
    const up = this.#up().filter((n) => n.id !== this.#readTrap?.follower);
    if (up.length === 0) return;
    const node = on ?? pick(this.#rng, up);
    const key = only ?? pick(this.#rng, KEYS);
    const readId = this.#nextReadId++;
    const generation = node.generation;
    const fsm = node.fsm!;
    this.#stats.reads++;
    this.#model.readInvoked(readId);
    node.host!.readBarrier("linearizable").then(
      () =>
        this.#guard(() => {
          if (node.generation !== generation) return this.#model.readAbandoned(readId);
          const e = fsm.get(key);
          this.#stats.readsServed++;
          this.#model.readServed(
            readId,
            node.id,
            key,
            fsm.appliedIndex,
            e ? entryText(e) : undefined,
          );
        }),
      () => this.#model.readAbandoned(readId),
    );
  }

  // ---- etcd: the lessor and its clients ------------------------------------------------

  /**
   * The production lessor on this incarnation's virtual clock, proposing expiries through
   * its host as the node does; the lease checker sees every proposal as it is made.
   */
  #startLessor(
    node: NodeSlot,
    generation: number,
    host: ReplicationHost<CommandResult>,
    fsm: KvStateMachine,
    clock: NodeClock,
  ): void {
    const live = () => node.generation === generation && node.host === host;
    const label = `${node.id}#${generation}`;
    // As the node does: an expiry is proposed as a decision of its leadership (leaderTerm).
    const propose = (cmd: Command, leaderTerm?: number): Promise<CommandResult> => {
      if (!live()) return Promise.reject(new UnavailableError(`${node.id} is down`));
      const data = encodeCommand(cmd);
      if (cmd.type === "leaseRevoke" && cmd.expired) {
        this.#stats.expiryProposals++;
        const term = leaderTerm ?? host.status().term;
        this.#log(`${node.id} proposes the expiry of lease ${cmd.leaseId} in term ${term}`);
        this.#guard(() =>
          this.#leaseChecker.proposed(payloadKey(data), {
            leaseId: cmd.leaseId,
            node: label,
            term,
            atMs: this.#sched.now,
            rate: node.skewRate,
          })
        );
      }
      return host.apply(data, { leaderTerm });
    };
    const lessor = node.lessor = new Lessor({
      backend: {
        nodeId: node.id,
        store: fsm,
        raftStatus: () => {
          const st = host.status();
          if (live() && st.leader === node.id) {
            this.#guard(() => this.#leaseChecker.leading(label, st.term, this.#sched.now));
          }
          return {
            term: st.term,
            leader: st.leader,
            commit: st.commit,
            applied: fsm.appliedIndex,
            isLearner: st.config.learners.includes(node.id),
          };
        },
        apply: (cmd) => propose(cmd),
        applyAsLeader: (cmd, term) => propose(cmd, term),
      },
      stamp: () => this.#stamp(node),
      nowMs: () => clock.now(),
      checkMs: LESSOR_CHECK_MS,
      every: (ms, fn) => {
        const id = clock.setInterval(() => this.#guard(fn), ms);
        return () => clock.clearInterval(id);
      },
    });
    lessor.start();
  }

  /** What every etcd command carries: a reading of the node's clock, and which clock. */
  #stamp(node: NodeSlot): { timeMs: number; clockSource: string } {
    return { timeMs: Math.floor(node.clock!.now()), clockSource: node.clockSource! };
  }

  #etcdEvents(): void {
    const rng = this.#etcdRng;
    const now = this.#sched.now;
    for (const c of this.#etcdClients) {
      for (const [id, l] of c.leases) {
        if (!l.sending && l.nextKeepAliveMs <= now) this.#keepAlive(c, id, l);
      }
    }
    if (rng.float() < 0.15) {
      const idle = this.#etcdClients.filter((c) => !c.busy);
      if (idle.length > 0) this.#etcdRequest(pick(rng, idle));
    }
  }

  /** The node an etcd client talks to: mostly the leader, else any up node. */
  #etcdNode(): NodeSlot | undefined {
    const up = this.#up();
    if (up.length === 0) return undefined;
    const leader = this.#leader();
    return leader && this.#etcdRng.float() < 0.85 ? leader : pick(this.#etcdRng, up);
  }

  #etcdRequest(client: EtcdClient): void {
    const node = this.#etcdNode();
    if (!node) return;
    const rng = this.#etcdRng;
    client.count++;
    const own = [...client.leases.keys()];
    const r = rng.float();
    if ((r < 0.1 && own.length < 2) || (own.length === 0 && r < 0.25)) this.#grant(client, node);
    else if (r < 0.35) this.#range(client, node);
    else if (r < 0.4 && own.length > 0) this.#revoke(client, node, pick(rng, own));
    else this.#txn(client, node);
  }

  /** The client waits for `p` (or gives up after a while: a crashed node never answers). */
  #busy(client: EtcdClient, p: Promise<unknown>): void {
    client.busy = true;
    const token = client.count;
    const free = () => {
      if (client.count === token) client.busy = false;
    };
    p.finally(free);
    this.#sched.after(5000, free);
  }

  /**
   * Sends `cmd` through `node`'s host, the path etcd's services take; the model checks the
   * answer against the common sequence. Resolves with the answer and its index, or undefined
   * when the outcome is unknown (etcd has no sessions: nothing is retried).
   */
  #etcdApply(
    client: EtcdClient,
    node: NodeSlot,
    cmd: Command,
    what: string,
  ): Promise<{ result: CommandResult; index: number } | undefined> {
    const data = encodeCommand(cmd);
    this.#stats.etcdWrites++;
    return node.host!.apply(data).then(
      (result) => {
        let index = -1;
        this.#guard(() => {
          index = this.#model.etcdAcknowledged(node.id, `${client.id}'s ${what}`, data, result);
          this.#stats.etcdAcked++;
        });
        return index < 0 ? undefined : { result, index };
      },
      (err) => {
        this.#stats.etcdErrors++;
        const known = err instanceof NotLeaderError || err instanceof UnavailableError ||
          err instanceof InvalidArgumentError;
        if (!known) {
          this.#guard(() => {
            throw err;
          });
        }
        return undefined;
      },
    );
  }

  #grant(client: EtcdClient, node: NodeSlot): void {
    const rng = this.#etcdRng;
    const leaseId = this.#nextLeaseId++;
    const ttlSeconds = rng.float() < 0.9 ? 1 : 2;
    const keepAlive = rng.float() < 0.6;
    const invokedMs = this.#sched.now;
    this.#leaseIds.push(leaseId);
    this.#leaseChecker.granted(leaseId, ttlSeconds);
    const cmd: Command = {
      type: "leaseGrant",
      key: "",
      leaseId,
      ttlSeconds,
      owner: "",
      ...this.#stamp(node),
    };
    const done = this.#etcdApply(client, node, cmd, `grant of lease ${leaseId}`).then((ack) =>
      this.#guard(() => {
        if (!ack?.result.ok) return;
        this.#leaseChecker.renewed(leaseId, ack.index, invokedMs, this.#sched.now, "grant");
        client.leases.set(leaseId, {
          ttlSeconds,
          nextKeepAliveMs: keepAlive ? invokedMs + (ttlSeconds * 1000) / 3 : Infinity,
          sending: false,
        });
      })
    );
    this.#busy(client, done);
  }

  /** A keep-alive every third of the TTL, as etcd's clients send them. */
  #keepAlive(
    client: EtcdClient,
    id: number,
    l: { ttlSeconds: number; nextKeepAliveMs: number; sending: boolean },
  ): void {
    const node = this.#etcdNode();
    if (!node) return;
    l.sending = true;
    this.#stats.keepAlivesSent++;
    const invokedMs = this.#sched.now;
    const cmd: Command = { type: "leaseKeepAlive", key: "", leaseId: id, ...this.#stamp(node) };
    let answered = false;
    this.#etcdApply(client, node, cmd, `keep-alive of lease ${id}`).then((ack) =>
      this.#guard(() => {
        answered = true;
        l.sending = false;
        if (!ack) {
          l.nextKeepAliveMs = this.#sched.now + 50;
          return;
        }
        if (!ack.result.ok) {
          client.leases.delete(id);
          return;
        }
        this.#leaseChecker.renewed(id, ack.index, invokedMs, this.#sched.now, "keep-alive");
        l.nextKeepAliveMs = invokedMs + (l.ttlSeconds * 1000) / 3;
      })
    );
    this.#sched.after(1000, () => {
      if (!answered) l.sending = false;
    });
  }

  #revoke(client: EtcdClient, node: NodeSlot, id: number): void {
    client.leases.delete(id);
    const cmd: Command = {
      type: "leaseRevoke",
      key: "",
      leaseId: id,
      expired: false,
      ...this.#stamp(node),
    };
    this.#busy(client, this.#etcdApply(client, node, cmd, `revoke of lease ${id}`));
  }

  #txn(client: EtcdClient, node: NodeSlot): void {
    const rng = this.#etcdRng;
    const own = [...client.leases.keys()];
    const tag = `${client.id}.${client.count}`;
    const txn = own.length > 0 && rng.float() < 0.2
      ? putTxn(pick(rng, KEYS), `${tag}p;`, pick(rng, own))
      : randomTxn(rng, {
        keys: KEYS,
        tag,
        lease: own.length > 0 ? pick(rng, own) : 0,
        anyLease: this.#leaseIds.length > 0 ? pick(rng, this.#leaseIds) : 0,
        memory: client.memory,
      });
    const cmd: Command = { type: "txn", key: "", txn, ...this.#stamp(node) };
    const done = this.#etcdApply(client, node, cmd, `txn ${tag}`).then((ack) =>
      this.#guard(() => {
        if (ack?.result.txn) rememberTxn(client.memory, ack.result.txn);
      })
    );
    this.#busy(client, done);
  }

  /** A linearizable etcd Range (of every key, or one), as the KV service serves it. */
  #range(client: EtcdClient, node: NodeSlot): void {
    const rng = this.#etcdRng;
    const keys = rng.float() < 0.7 ? KEYS : [pick(rng, KEYS)];
    const req = rangeRequest(
      keys.length > 1
        ? { key: utf8.encode(KEYS[0]), range_end: utf8.encode(RANGE_END) }
        : { key: utf8.encode(keys[0]) },
    );
    const readId = this.#nextReadId++;
    const generation = node.generation;
    const fsm = node.fsm!;
    this.#stats.ranges++;
    this.#model.readInvoked(readId);
    const done = node.host!.readBarrier("linearizable").then(
      () =>
        this.#guard(() => {
          if (node.generation !== generation) return this.#model.readAbandoned(readId);
          const res = fsm.range(req);
          this.#stats.rangesServed++;
          const seen = new Map<string, string | undefined>(keys.map((k) => [k, undefined]));
          for (const kv of res.kvs) {
            seen.set(
              new TextDecoder().decode(kv.key),
              entryText({
                value: kv.value,
                version: kv.mod_revision,
                created: kv.create_revision,
                writes: kv.version,
                lease: kv.lease,
              }),
            );
          }
          if (res.count !== res.kvs.length || res.more) {
            throw new InvariantViolation(
              "linearizability",
              `range ${readId} on ${node.id} counted ${res.count} keys (more: ${res.more}) but returned ${res.kvs.length}`,
            );
          }
          seen.set(REVISION_KEY, fsm.revision > 0 ? String(fsm.revision) : undefined);
          this.#model.rangeServed(readId, node.id, fsm.appliedIndex, seen);
          remember(client.memory, keys, res.kvs);
        }),
      () => this.#model.readAbandoned(readId),
    );
    this.#busy(client, done);
  }

  // ---- liveness ------------------------------------------------------------------------

  /**
   * Faults stop, the network heals, every node restarts and lost ids are removed; then a
   * fresh write must be acknowledged and applied by every member within the bound.
   */
  async #liveness(): Promise<number> {
    const start = this.#sched.now;
    this.#log("liveness phase: heal, restart all, no more faults");
    this.#faultsOn = false;
    this.#net.heal();
    this.#net.faults = CALM;
    for (const node of this.#nodes.values()) {
      node.slowDiskUntil = 0;
      if (node.status === "down" && !node.gone) this.#restart(node);
    }
    const deadline = start + this.#livenessTicks * TICK_MS;
    let fresh: { index: number } | undefined;
    let writing = false;
    let removing = false;
    const client: Client = { id: "final", seq: 1, busy: false, versions: new Map() };
    for (let t = start + TICK_MS; t <= deadline; t += TICK_MS) {
      await this.#sched.runUntil(t, () => this.#failure !== undefined);
      this.#throwIfFailed();
      for (const node of this.#nodes.values()) {
        if (node.status === "down" && !node.gone) this.#restart(node);
      }
      const leader = this.#leader();
      if (!leader) continue;
      const config = leader.host!.status().config;
      const gone = [...config.voters, ...config.learners].find((id) => this.#nodes.get(id)!.gone);
      if (gone !== undefined) {
        if (!removing) {
          removing = true;
          leader.host!.changeConfig({ type: "remove", id: gone }).catch(() => undefined)
            .finally(() => (removing = false));
        }
        continue;
      }
      if (!fresh) {
        if (!writing) {
          writing = true;
          const p = this.#write(client, true);
          if (!p) writing = false;
          else {
            p.then((index) => {
              writing = false;
              if (index > 0) fresh = { index };
            });
          }
        }
        continue;
      }
      const members = [...config.voters, ...config.learners].map((id) => this.#nodes.get(id)!);
      const target = Math.max(fresh.index, this.#model.ackedIndex);
      if (members.every((n) => n.status === "up" && n.fsm!.appliedIndex >= target)) {
        for (const n of members) {
          this.#checker.finalMember(n.id, n.fsm!.appliedIndex, stateOf(n.fsm!));
          if (n.fsm!.appliedIndex < this.#model.ackedIndex) {
            throw new InvariantViolation(
              "durability",
              `${n.id} ends at ${
                n.fsm!.appliedIndex
              } without the write acknowledged at ${this.#model.ackedIndex}`,
            );
          }
        }
        this.#log(`liveness: write at ${fresh.index} applied by ${members.map((n) => n.id)}`);
        return this.#sched.now - start;
      }
    }
    const status = [...this.#nodes.values()].map((n) => {
      if (n.status !== "up") return `${n.id}:${n.gone ? "gone" : n.status}`;
      const s = n.host!.status();
      return `${n.id}:${s.role}/t${s.term}/commit${s.commit}/applied${
        n.fsm!.appliedIndex
      }/last${s.lastIndex}/durable${s.durableIndex}/leader=${s.leader || "-"}/voters=${
        s.config.voters.join("+")
      }/learners=${s.config.learners.join("+")}`;
    });
    throw new InvariantViolation(
      "liveness",
      `no fresh write applied by every member within ${this.#livenessTicks} ticks after healing (${
        fresh ? `write at ${fresh.index}` : "no write acknowledged"
      }); nodes: ${status.join(" ")}`,
    );
  }
  /**
   * After liveness, nobody keeps leases alive: the leader must expire every lease left, and
   * every member must apply those expiries and end in the same state.
   */
  async #leaseDrain(): Promise<number> {
    const start = this.#sched.now;
    const deadline = start + LEASE_DRAIN_TICKS * TICK_MS;
    for (let t = start + TICK_MS; t <= deadline; t += TICK_MS) {
      await this.#sched.runUntil(t, () => this.#failure !== undefined);
      this.#throwIfFailed();
      if (this.#model.leaseCount > 0) continue;
      const leader = this.#leader();
      if (!leader) continue;
      const config = leader.host!.status().config;
      const members = [...config.voters, ...config.learners].map((id) => this.#nodes.get(id)!);
      const target = this.#checker.commonLength;
      if (members.every((n) => n.status === "up" && n.fsm!.appliedIndex >= target)) {
        for (const n of members) {
          this.#checker.finalMember(n.id, n.fsm!.appliedIndex, stateOf(n.fsm!));
        }
        this.#log(`leases drained: every member applied ${target}`);
        return this.#sched.now - start;
      }
    }
    throw new InvariantViolation(
      "liveness",
      `${this.#model.leaseCount} leases still exist ${LEASE_DRAIN_TICKS} ticks after nobody keeps them alive any more (leader ${
        this.#leader()?.id ?? "none"
      })`,
    );
  }
}

/**
 * Is `data` an etcd command (a transaction or a lease command)? Its second byte is the type
 * (commands.ts's encoding: 5 txn, 6 compact, 7-9 the lease commands).
 */
function isEtcdCommand(data: Uint8Array): boolean {
  return data.length > 1 && data[1] >= 5;
}

function pick<T>(rng: SeededRng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

function shuffled<T>(rng: SeededRng, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}
