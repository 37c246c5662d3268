/**
 * One simulated Raft host: a `RaftNode`, its {@link Disk}, a {@link KvStateMachine} and the
 * client bookkeeping a real host keeps (pending proposals and reads). `process()` is the
 * host's driving loop, following the `Ready` contract exactly, and reports every durable
 * and observable effect to the {@link SafetyChecker}.
 */
import { isSafeBeforePersist, RaftNode, type RaftOptions } from "../../../src/raft/mod.ts";
import type { Config, Entry, Message, NodeId, Ready, Role } from "../../../src/raft/mod.ts";
import type { SafetyChecker } from "./checker.ts";
import { Disk, PersistenceContractError } from "./disk.ts";
import { encodeOp, type KvOp, KvStateMachine } from "./kv_state_machine.ts";

/** Tunables of a simulated node: the Raft options except identity and randomness. */
export type SimRaftOptions = Omit<RaftOptions, "id" | "random">;

/** A write the client is waiting on: acknowledged when applied at `index` with `term`. */
interface PendingWrite {
  readonly op: KvOp;
  readonly term: number;
}

/** A read the client is waiting on; `readIndex` is set once the ReadState arrives. */
interface PendingRead {
  readonly readId: number;
  readonly key: string;
  readIndex?: number;
}

/** A read as the client saw it complete. */
export interface CompletedRead {
  readonly readId: number;
  readonly key: string;
  readonly value: string | undefined;
  readonly readIndex: number;
  readonly appliedIndex: number;
}

/** Counters of what a node's clients saw, for reports. */
export interface ClientOutcomes {
  acked: number;
  failedWrites: number;
  readsServed: number;
  readsFailed: number;
}

/** A simulated host around one Raft node. Dead between `crash()` and `restart()`. */
export class SimNode {
  readonly id: NodeId;
  readonly disk = new Disk();
  readonly sm = new KvStateMachine();
  /** Index of the last entry applied to `sm` (or restored from a snapshot). */
  applied = 0;
  /** The current incarnation; undefined while crashed. */
  #raft: RaftNode | undefined;
  readonly #options: SimRaftOptions;
  readonly #random: () => () => number;
  readonly #checker: SafetyChecker | undefined;
  #commitSeen = 0;
  #role: Role = "follower";
  #term = 0;
  #writes = new Map<number, PendingWrite>();
  #reads = new Map<number, PendingRead>();
  /** Reads completed since the last `takeCompletedReads()`. */
  #completed: CompletedRead[] = [];
  readonly outcomes: ClientOutcomes = { acked: 0, failedWrites: 0, readsServed: 0, readsFailed: 0 };
  /** Called for each acknowledged write (opId, index). */
  onAck: ((op: KvOp, index: number) => void) | undefined;

  /**
   * `random` makes one seeded source per incarnation; `checker`, if given, sees every
   * durable and observable effect of this node.
   */
  constructor(
    id: NodeId,
    options: SimRaftOptions,
    random: () => () => number,
    checker?: SafetyChecker,
  ) {
    this.id = id;
    this.#options = options;
    this.#random = random;
    this.#checker = checker;
    this.#raft = new RaftNode({ ...options, id, random: random() });
    checker?.stateRestored(id, 0, this.sm.state());
  }

  /** Is the node running? */
  get alive(): boolean {
    return this.#raft !== undefined;
  }

  /** The running Raft node; throws while crashed. */
  get raft(): RaftNode {
    if (!this.#raft) throw new Error(`${this.id} is crashed`);
    return this.#raft;
  }

  /** The role last reported by a Ready. */
  get role(): Role {
    return this.#role;
  }

  /** The term last reported by a Ready. */
  get term(): number {
    return this.#term;
  }

  /** Bootstraps a fresh node with `config` and processes the result. */
  bootstrap(config: Config): Message[] {
    this.raft.bootstrap(config);
    return this.process();
  }

  /** Proposes a client write on this node; throws what `RaftNode.propose` throws. */
  propose(op: KvOp): { index: number; term: number } {
    const at = this.raft.propose(encodeOp(op));
    this.#writes.set(at.index, { op, term: at.term });
    return at;
  }

  /** Starts a linearizable read of `key`; throws what `RaftNode.readIndex` throws. */
  read(readId: number, key: string): void {
    this.#checker?.readInvoked(readId);
    try {
      this.raft.readIndex(readId);
    } catch (err) {
      this.#checker?.readAbandoned(readId);
      throw err;
    }
    this.#reads.set(readId, { readId, key });
  }

  /** Reads completed since the last call. */
  takeCompletedReads(): CompletedRead[] {
    const out = this.#completed;
    this.#completed = [];
    return out;
  }

  /** Number of reads still waiting. */
  get pendingReads(): number {
    return this.#reads.size;
  }

  /**
   * The host loop: while the node has a Ready, persist it, collect its messages, restore its
   * snapshot, apply its committed entries, serve reads, and advance. Returns the messages to
   * send (copies, as if serialized). With `earlySend`, a leader's replication traffic
   * (`isSafeBeforePersist`) goes out before the fsync, as the contract allows. `crash` makes
   * the host die inside the first Ready: before persisting (after any early send) or after
   * persisting but before sending the rest; the messages already sent are returned.
   */
  process(
    options: { earlySend?: boolean; crash?: "beforePersist" | "afterPersist" } = {},
  ): Message[] {
    const out: Message[] = [];
    while (this.#raft?.hasReady()) {
      const rd = this.#raft.ready();
      const early = options.earlySend ? rd.messages.filter(isSafeBeforePersist) : [];
      for (const m of early) out.push(structuredClone(m));
      if (options.crash === "beforePersist") {
        this.crash();
        return out;
      }
      this.#persist(rd);
      if (options.crash === "afterPersist") {
        this.crash();
        return out;
      }
      for (const m of rd.messages) {
        if (!options.earlySend || !isSafeBeforePersist(m)) out.push(structuredClone(m));
      }
      this.#applyReady(rd);
      this.#raft.advance();
    }
    return out;
  }

  #persist(rd: Ready): void {
    this.disk.persist(rd);
    const checker = this.#checker;
    if (rd.entries.length > 0) {
      const prevTerm = this.disk.termAt(rd.entries[0].index - 1) ?? -1;
      checker?.entriesStored(this.id, prevTerm, rd.entries);
    }
    const hs = this.disk.hardState;
    if (hs.commit > this.disk.lastIndex()) {
      throw new PersistenceContractError(
        `${this.id} persisted commit ${hs.commit} beyond its durable log (last index ${this.disk.lastIndex()})`,
      );
    }
    if (hs.commit > this.#commitSeen) {
      const from = Math.max(this.#commitSeen, this.disk.snapshotIndex) + 1;
      const entries: Entry[] = [];
      for (let i = from; i <= hs.commit; i++) entries.push(this.disk.entryAt(i)!);
      this.#commitSeen = hs.commit;
      checker?.committedObserved(this.id, hs.term, entries);
    }
    if (rd.softState) {
      this.#role = rd.softState.role;
      this.#term = rd.softState.term;
      checker?.roleObserved(this.id, this.#term, this.#role === "leader", this.disk);
    }
  }

  #applyReady(rd: Ready): void {
    const checker = this.#checker;
    if (rd.snapshot) {
      this.sm.restore(rd.snapshot.data);
      this.applied = rd.snapshot.meta.index;
      checker?.stateRestored(this.id, this.applied, this.sm.state());
      for (const index of [...this.#writes.keys()]) {
        if (index <= this.applied) this.#failWrite(index);
      }
    }
    for (const entry of rd.committed) {
      if (entry.index <= this.applied) continue; // covered by the snapshot just restored
      this.sm.apply(entry);
      this.applied = entry.index;
      checker?.entryApplied(this.id, entry);
      const write = this.#writes.get(entry.index);
      if (write === undefined) continue;
      this.#writes.delete(entry.index);
      if (write.term === entry.term) {
        checker?.writeAcknowledged(write.op.opId, entry.index, entry.term);
        this.outcomes.acked++;
        this.onAck?.(write.op, entry.index);
      } else {
        this.outcomes.failedWrites++;
      }
    }
    for (const rs of rd.readStates) {
      const read = this.#reads.get(rs.context);
      if (read) read.readIndex = rs.index;
    }
    for (const context of rd.droppedReads) {
      if (this.#reads.delete(context)) {
        checker?.readAbandoned(context);
        this.outcomes.readsFailed++;
      }
    }
    for (const read of this.#reads.values()) {
      if (read.readIndex === undefined || read.readIndex > this.applied) continue;
      this.#reads.delete(read.readId);
      const done: CompletedRead = {
        readId: read.readId,
        key: read.key,
        value: this.sm.get(read.key),
        readIndex: read.readIndex,
        appliedIndex: this.applied,
      };
      checker?.readServed({ ...done, node: this.id });
      this.outcomes.readsServed++;
      this.#completed.push(done);
    }
  }

  #failWrite(index: number): void {
    this.#writes.delete(index);
    this.outcomes.failedWrites++;
  }

  /**
   * The application snapshots its state at `applied` when at least `minEntries` entries were
   * applied since the last snapshot: the core and the disk both drop the log up to there.
   * Returns whether it compacted.
   */
  compact(minEntries: number): boolean {
    if (!this.#raft || this.applied - this.disk.snapshotIndex < minEntries) return false;
    const data = this.sm.snapshot();
    this.#raft.compact(this.applied, data);
    this.disk.compact(this.applied, data);
    return true;
  }

  /** Loses everything not on disk: the Raft node, pending client requests, the state machine. */
  crash(): void {
    this.#raft = undefined;
    this.#role = "follower";
    for (const index of [...this.#writes.keys()]) this.#failWrite(index);
    for (const readId of this.#reads.keys()) this.#checker?.readAbandoned(readId);
    this.outcomes.readsFailed += this.#reads.size;
    this.#reads.clear();
    this.#checker?.nodeCrashed(this.id);
  }

  /** Starts a new incarnation from the disk: snapshot restored, then the log replayed by Raft. */
  restart(): Message[] {
    if (this.#raft) throw new Error(`${this.id} is running`);
    const persisted = this.disk.toPersisted();
    this.#raft = new RaftNode({ ...this.#options, id: this.id, random: this.#random() }, persisted);
    this.sm.restore(persisted.snapshot?.data ?? new Uint8Array());
    this.applied = persisted.snapshot?.meta.index ?? 0;
    this.#commitSeen = persisted.hardState.commit;
    this.#term = persisted.hardState.term;
    this.#checker?.stateRestored(this.id, this.applied, this.sm.state());
    return this.process();
  }
}
