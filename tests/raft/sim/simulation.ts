/**
 * The deterministic Raft simulator: one 32-bit seed drives a 3- or 5-node cluster on a
 * virtual clock through a lossy, reordering, partitionable network, crashes and restarts,
 * membership changes, leadership transfers, compaction and client traffic, while the
 * {@link SafetyChecker} checks every step. A run ends with a liveness phase: faults stop,
 * everything heals and restarts, and a fresh write must commit everywhere in bounded time.
 */
import { InvalidArgumentError, NotLeaderError, UnavailableError } from "../../../src/errors.ts";
import type { Config, ConfigChange, Message, NodeId } from "../../../src/raft/mod.ts";
import { SeededRng, shuffle } from "../../../src/rng.ts";
import { InvariantViolation, SafetyChecker } from "./checker.ts";
import { type NetworkFaults, NO_FAULTS, SimNetwork } from "./network.ts";
import { SimNode, type SimRaftOptions } from "./sim_node.ts";

/** Fault-phase ticks of one run unless told otherwise. */
export const DEFAULT_STEPS = 600;
/** Ticks the liveness phase may take (electionTicks is 10). */
export const DEFAULT_LIVENESS_TICKS = 500;

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
}

/** What a passing run did. */
export interface SimReport {
  readonly seed: number;
  readonly nodes: number;
  readonly steps: number;
  /** Total ticks, liveness phase included. */
  readonly ticks: number;
  /** Ticks the liveness phase took. */
  readonly livenessTicks: number;
  readonly stats: Readonly<Record<string, number>>;
}

/** A run broke a safety or liveness property; carries the command that replays it. */
export class SimulationFailure extends Error {
  constructor(
    readonly seed: number,
    readonly nodes: number,
    readonly steps: number,
    readonly tick: number,
    readonly command: string,
    readonly trace: readonly string[],
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super(
      `seed ${seed} (${nodes} nodes) failed at tick ${tick}: ${reason}\n` +
        `  last events:\n${trace.map((l) => `    ${l}`).join("\n")}\n` +
        `  replay: ${command}`,
      { cause },
    );
    this.name = "SimulationFailure";
  }
}

/** The command that replays one run exactly. */
export function replayCommand(seed: number, nodes: number, steps: number): string {
  const stepsFlag = steps === DEFAULT_STEPS ? "" : ` --steps ${steps}`;
  return `deno task sim --seed ${seed} --nodes ${nodes}${stepsFlag}`;
}

/** Runs one seed; returns its report or throws {@link SimulationFailure}. */
export function runSimulation(options: SimOptions): SimReport {
  return new Simulation(options).run();
}

const KEYS = ["a", "b", "c", "d", "e"];
const TRACE_LINES = 40;
/** More deliveries than this in one tick means a message storm (two nodes ping-ponging). */
const MAX_DELIVERIES_PER_TICK = 5000;

class Simulation {
  readonly #seed: number;
  readonly #steps: number;
  readonly #livenessTicks: number;
  readonly #rng: SeededRng;
  readonly #ids: NodeId[];
  readonly #nodes = new Map<NodeId, SimNode>();
  readonly #net: SimNetwork;
  readonly #checker = new SafetyChecker();
  readonly #faults: NetworkFaults;
  readonly #compactEntries: number;
  /** Does the host send a leader's replication traffic before its fsync (as allowed)? */
  readonly #earlySend: boolean;
  readonly #minVoters: number;
  readonly #traceSink: ((line: string) => void) | undefined;
  readonly #trace: string[] = [];
  readonly #stats: Record<string, number> = {
    writes: 0,
    refusedWrites: 0,
    reads: 0,
    refusedReads: 0,
    crashes: 0,
    restarts: 0,
    partitions: 0,
    configChanges: 0,
    refusedConfigChanges: 0,
    transfers: 0,
    compactions: 0,
    snapshotChunks: 0,
  };
  #now = 0;
  /** False in the liveness phase: no crashes, partitions or drops any more. */
  #faultsOn = true;
  #nextOpId = 1;
  #nextReadId = 1;

  constructor(options: SimOptions) {
    this.#seed = options.seed >>> 0;
    this.#steps = options.steps ?? DEFAULT_STEPS;
    this.#livenessTicks = options.livenessTicks ?? DEFAULT_LIVENESS_TICKS;
    this.#traceSink = options.trace;
    this.#rng = new SeededRng(this.#seed);
    const rng = this.#rng;
    this.#ids = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    this.#minVoters = Math.max(1, Math.ceil(options.nodes / 2));
    const raftOptions: SimRaftOptions = {
      electionTicks: 10,
      heartbeatTicks: 1 + rng.int(3),
      maxInflight: rng.float() < 0.5 ? 2 + rng.int(4) : 64,
      maxBatchBytes: rng.float() < 0.5 ? 100 + rng.int(400) : 1024 * 1024,
      snapshotChunkBytes: 16 + rng.int(256),
      preVote: rng.float() < 0.85,
      checkQuorum: true,
    };
    this.#faults = {
      dropRate: rng.float() * 0.08,
      duplicateRate: rng.float() * 0.04,
      maxDelayTicks: rng.int(4),
    };
    this.#compactEntries = 5 + rng.int(40);
    this.#earlySend = rng.float() < 0.5;
    this.#net = new SimNetwork(new SeededRng(rng.nextUint32()), this.#faults);
    this.#log(
      `options ${JSON.stringify(raftOptions)} faults ${
        JSON.stringify(this.#faults)
      } compactEntries ${this.#compactEntries} earlySend ${this.#earlySend}`,
    );
    for (const id of this.#ids) {
      const node = new SimNode(id, raftOptions, () => {
        const r = new SeededRng(rng.nextUint32());
        return () => r.float();
      }, this.#checker);
      this.#nodes.set(id, node);
    }
  }

  run(): SimReport {
    try {
      const config: Config = {
        voters: this.#ids,
        learners: [],
        addresses: Object.fromEntries(this.#ids.map((id) => [id, `${id}:1`])),
      };
      for (const node of this.#nodes.values()) this.#route(node.bootstrap(config));
      for (; this.#now < this.#steps; this.#now++) {
        this.#faultEvents();
        this.#clientEvents();
        this.#tickAll();
        this.#deliver();
      }
      const liveness = this.#liveness();
      return {
        seed: this.#seed,
        nodes: this.#ids.length,
        steps: this.#steps,
        ticks: this.#now,
        livenessTicks: liveness,
        stats: {
          ...this.#stats,
          leaders: this.#checker.leaders.size,
          acked: this.#checker.acknowledged,
          committed: this.#checker.commonLength,
          ...this.#outcomes(),
          sent: this.#net.stats.sent,
          dropped: this.#net.stats.dropped,
        },
      };
    } catch (err) {
      throw new SimulationFailure(
        this.#seed,
        this.#ids.length,
        this.#steps,
        this.#now,
        replayCommand(this.#seed, this.#ids.length, this.#steps),
        this.#trace,
        err,
      );
    }
  }

  #outcomes(): Record<string, number> {
    let readsServed = 0;
    let readsFailed = 0;
    for (const n of this.#nodes.values()) {
      readsServed += n.outcomes.readsServed;
      readsFailed += n.outcomes.readsFailed;
    }
    return { readsServed, readsFailed };
  }

  #log(line: string): void {
    const text = `t=${this.#now} ${line}`;
    this.#trace.push(text);
    if (this.#trace.length > TRACE_LINES) this.#trace.shift();
    this.#traceSink?.(text);
  }

  #alive(): SimNode[] {
    return [...this.#nodes.values()].filter((n) => n.alive);
  }

  /** The live leader of the highest term, if any node believes it leads. */
  #leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.#nodes.values()) {
      if (n.alive && n.role === "leader" && (!best || n.term > best.term)) best = n;
    }
    return best;
  }

  #route(messages: readonly Message[]): void {
    for (const m of messages) {
      if (m.type === "snapshot") this.#stats.snapshotChunks++;
      this.#net.send(m, this.#now);
    }
  }

  #process(node: SimNode): void {
    const before = node.role;
    const term = node.term;
    this.#route(node.process({ earlySend: this.#earlySend }));
    if (node.role !== before || node.term !== term) {
      this.#log(`${node.id} is ${node.role} in term ${node.term}`);
    }
  }

  #tickAll(): void {
    for (const node of shuffle(this.#rng, this.#alive())) {
      node.raft.tick();
      this.#process(node);
    }
  }

  #deliver(): void {
    const isAlive = (id: NodeId) => this.#nodes.get(id)?.alive ?? false;
    let delivered = 0;
    while (delivered < MAX_DELIVERIES_PER_TICK) {
      const due = this.#net.takeDue(this.#now, isAlive);
      if (due.length === 0) return;
      delivered += due.length;
      for (const m of due) {
        const node = this.#nodes.get(m.to)!;
        if (!node.alive) continue; // crashed by an earlier delivery of this round
        this.#traceSink?.(`t=${this.#now} deliver ${JSON.stringify(m, bytesAsLength)}`);
        node.raft.step(m);
        if (this.#faultsOn && this.#crashBudget() > 0 && this.#rng.float() < 0.0005) {
          const crash = this.#rng.float() < 0.5 ? "beforePersist" : "afterPersist";
          this.#route(node.process({ earlySend: this.#earlySend, crash }));
          this.#afterCrash(node, `inside a Ready: ${crash}`);
          continue;
        }
        this.#process(node);
      }
    }
    throw new InvariantViolation(
      "liveness",
      `tick ${this.#now}: over ${MAX_DELIVERIES_PER_TICK} messages delivered in one tick (a message storm)`,
    );
  }

  #crashBudget(): number {
    const crashed = this.#ids.length - this.#alive().length;
    return Math.floor((this.#ids.length - 1) / 2) - crashed;
  }

  #afterCrash(node: SimNode, how: string): void {
    this.#net.dropTo(node.id);
    this.#stats.crashes++;
    this.#log(`crash ${node.id} (${how})`);
  }

  #restart(node: SimNode): void {
    this.#stats.restarts++;
    this.#log(`restart ${node.id} from disk (snapshot ${node.disk.snapshotIndex})`);
    this.#route(node.restart());
  }

  #faultEvents(): void {
    const rng = this.#rng;
    for (const node of this.#nodes.values()) {
      if (!node.alive && rng.float() < 0.03) this.#restart(node);
    }
    if (this.#crashBudget() > 0 && rng.float() < 0.004) {
      const node = pick(rng, this.#alive());
      node.crash();
      this.#afterCrash(node, "between steps");
    }
    if (!this.#net.partitioned && rng.float() < 0.006) {
      const ids = shuffle(rng, [...this.#ids]);
      const cut = 1 + rng.int(ids.length - 1);
      const groups = [ids.slice(0, cut), ids.slice(cut)];
      this.#net.partition(groups);
      this.#stats.partitions++;
      this.#log(`partition ${JSON.stringify(groups)}`);
    } else if (this.#net.partitioned && rng.float() < 0.03) {
      this.#net.heal();
      this.#log("heal");
    }
    for (const node of this.#alive()) {
      if (rng.float() < 0.1 && node.compact(this.#compactEntries)) {
        this.#stats.compactions++;
        this.#traceSink?.(`t=${this.#now} ${node.id} compacts to ${node.applied}`);
      }
    }
    const leader = this.#leader();
    if (leader && rng.float() < 0.015) this.#changeMembership(leader);
    if (leader && rng.float() < 0.005) {
      const voters = leader.raft.status().config.voters.filter((v) => v !== leader.id);
      if (voters.length > 0) {
        const target = pick(rng, voters);
        this.#stats.transfers++;
        this.#log(`transfer leadership ${leader.id} -> ${target}`);
        this.#tolerate(() => leader.raft.transferLeadership(target));
        this.#process(leader);
      }
    }
  }

  #changeMembership(leader: SimNode): void {
    const rng = this.#rng;
    const config = leader.raft.status().config;
    const outside = this.#ids.filter((id) =>
      !config.voters.includes(id) && !config.learners.includes(id)
    );
    let change: ConfigChange;
    if (outside.length > 0 && rng.float() < 0.7) {
      const id = pick(rng, outside);
      change = rng.float() < 0.6
        ? { type: "addLearner", id, address: `${id}:1` }
        : { type: "addVoter", id, address: `${id}:1` };
    } else if (config.learners.length > 0) {
      change = { type: "promote", id: pick(rng, config.learners) };
    } else if (config.voters.length > this.#minVoters) {
      // Mostly followers; sometimes the leader removes itself.
      const others = config.voters.filter((v) => v !== leader.id);
      const id = rng.float() < 0.2 || others.length === 0 ? leader.id : pick(rng, others);
      change = { type: "remove", id };
    } else {
      return;
    }
    try {
      const at = leader.raft.proposeConfigChange(change);
      this.#stats.configChanges++;
      this.#log(`${leader.id} proposes ${JSON.stringify(change)} at ${at.index}/${at.term}`);
    } catch (err) {
      if (!(err instanceof UnavailableError || err instanceof NotLeaderError)) throw err;
      this.#stats.refusedConfigChanges++;
    }
    this.#process(leader);
  }

  #clientEvents(): void {
    const rng = this.#rng;
    if (rng.float() < 0.4) {
      const count = 1 + rng.int(3);
      for (let i = 0; i < count; i++) {
        const node = rng.float() < 0.1 ? pick(rng, this.#alive()) : this.#leader();
        if (node) this.#write(node);
      }
    }
    if (rng.float() < 0.3) {
      const node = pick(rng, this.#alive());
      const readId = this.#nextReadId++;
      const key = pick(rng, KEYS);
      this.#stats.reads++;
      try {
        node.read(readId, key);
      } catch (err) {
        if (!(err instanceof NotLeaderError)) throw err;
        this.#stats.refusedReads++;
      }
      this.#process(node);
    }
  }

  /** Proposes a fresh write on `node`; returns where it landed, if accepted. */
  #write(node: SimNode): { index: number; term: number } | undefined {
    const opId = this.#nextOpId++;
    const op = { opId, key: pick(this.#rng, KEYS), value: `v${opId}` };
    this.#stats.writes++;
    let at: { index: number; term: number } | undefined;
    try {
      at = node.propose(op);
      this.#traceSink?.(`t=${this.#now} ${node.id} write ${opId} at ${at.index}/${at.term}`);
    } catch (err) {
      if (!(err instanceof NotLeaderError || err instanceof UnavailableError)) throw err;
      this.#stats.refusedWrites++;
    }
    this.#process(node);
    return at;
  }

  #tolerate(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (
        !(err instanceof NotLeaderError || err instanceof UnavailableError ||
          err instanceof InvalidArgumentError)
      ) throw err;
    }
  }

  /**
   * Heals the network, restarts every crashed node and stops faults; then a leader must
   * emerge and a fresh write must be applied by every member within the bound.
   */
  #liveness(): number {
    const start = this.#now;
    this.#log("liveness phase: heal, restart all, no more faults");
    this.#faultsOn = false;
    this.#net.heal();
    this.#net.faults = { ...NO_FAULTS, maxDelayTicks: this.#faults.maxDelayTicks };
    for (const node of this.#nodes.values()) if (!node.alive) this.#restart(node);
    let fresh: { node: SimNode; index: number; term: number; acked: boolean } | undefined;
    const deadline = start + this.#livenessTicks;
    for (; this.#now < deadline; this.#now++) {
      this.#tickAll();
      this.#deliver();
      const leader = this.#leader();
      if (!leader) continue;
      if (fresh && (fresh.node !== leader || leader.term !== fresh.term) && !fresh.acked) {
        fresh = undefined; // leadership moved before it committed: write again
      }
      if (!fresh) {
        const at = this.#write(leader);
        if (at) {
          fresh = { node: leader, ...at, acked: false };
          leader.onAck = (_op, index) => {
            if (fresh && index === fresh.index) fresh.acked = true;
          };
        }
        continue;
      }
      if (!fresh.acked) continue;
      const config = leader.raft.status().config;
      const members = [...config.voters, ...config.learners];
      if (members.every((id) => this.#nodes.get(id)!.applied >= fresh!.index)) {
        for (const id of members) {
          const n = this.#nodes.get(id)!;
          this.#checker.finalMember(id, n.applied, n.sm.state());
        }
        this.#log(`liveness: write at ${fresh.index} applied by ${members.join(",")}`);
        return this.#now - start;
      }
    }
    const status = [...this.#nodes.values()].map((n) => {
      if (!n.alive) return `${n.id}:crashed`;
      const s = n.raft.status();
      return `${n.id}:${s.role}/t${s.term}/commit${s.commit}/applied${n.applied}/last${s.lastIndex}/leader=${
        s.leader || "-"
      }/voters=${s.config.voters.join("+")}/learners=${s.config.learners.join("+")}`;
    });
    throw new InvariantViolation(
      "liveness",
      `no fresh write applied by every member within ${this.#livenessTicks} ticks after healing (${
        fresh
          ? `write at ${fresh.index}/${fresh.term} acked=${fresh.acked}`
          : "no leader accepted a write"
      }); nodes: ${status.join(" ")}`,
    );
  }
}

function pick<T>(rng: SeededRng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

function bytesAsLength(_key: string, value: unknown): unknown {
  return value instanceof Uint8Array ? `<${value.length} bytes>` : value;
}
