/**
 * The replication host: everything around the pure Raft core that touches the world. It owns
 * the tick timer and the futures of pending proposals and reads, and drives the collaborators
 * it is given as interfaces (log store, transport, state machine, clock: see interfaces.ts). Its loop is the Ready contract: take `ready()`, persist it
 * (one atomic commit per batch), send, apply, `advance()`. Proposals and reads that arrive
 * while a batch is being persisted simply join the next batch, which is what makes writes
 * cheap under load.
 */
import { InvalidArgumentError, NotLeaderError, UnavailableError } from "../errors.ts";
import {
  type Config,
  type ConfigChange,
  type Entry,
  type HardState,
  isEvicted,
  isMember,
  isSafeBeforePersist,
  isVoter,
  type Message,
  type NodeId,
  RaftInvariantError,
  RaftNode,
  type RaftOptions,
  type RaftStatus,
  type Random,
  type Ready,
  type Snapshot,
  type SoftState,
} from "../raft/mod.ts";
import { type AdminRequest, errorFromWire, errorToWire, RequestKind } from "./forward.ts";
import { systemClock } from "./clock.ts";
import type {
  Clock,
  LogStore,
  ResultCodec,
  StateMachine,
  TimerId,
  Transport,
  TransportFactory,
} from "./interfaces.ts";
import { RemoteError } from "./transport.ts";

/** Writes waiting for commit on the leader, and reads waiting for a ReadIndex, at most. */
const MAX_PENDING_PROPOSALS = 16_384;
/**
 * Bytes of writes waiting for commit on the leader, at most (etcd's uncommitted-entries
 * limit): beyond, writes are refused as retryable, so no producer can fill a node's memory
 * with large pending proposals whatever their count.
 */
export const MAX_PENDING_PROPOSAL_BYTES = 64 * 1024 * 1024;
const MAX_PENDING_READS = 16_384;
/**
 * Default `snapshotEntries`: etcd's snapshot-count. It bounds the log kept in memory; the size
 * rule (`snapshotMinLogBytes`) takes over for small entries.
 */
export const DEFAULT_SNAPSHOT_ENTRIES = 100_000;
/** Default `snapshotMinLogBytes`: 64 MiB. */
export const DEFAULT_SNAPSHOT_MIN_LOG_BYTES = 64 * 1024 * 1024;
/** Proposals are copied into slabs of this size (see `copyProposal`). */
const PROPOSAL_SLAB_BYTES = 256 * 1024;
/** Larger proposals keep their own buffer. */
const MAX_SLAB_PROPOSAL_BYTES = 4096;
/** What an entry is counted beyond its data (index, term and framing in the log). */
const ENTRY_OVERHEAD_BYTES = 32;

/**
 * Default `memoryLogEntries`: the applied log entries whose commands stay in memory. It
 * matches the tail a snapshot keeps (see maybeSnapshot), so in the steady state that tail is
 * whole and a follower a little behind is served from memory.
 */
export const DEFAULT_MEMORY_LOG_ENTRIES = 5000;
/**
 * Entries evicted at once, at most `memoryLogEntries` (at least 1): eviction runs once this
 * many more entries are evictable, not once per entry.
 */
const EVICT_BATCH_ENTRIES = 1024;
/**
 * Messages to one peer waiting behind a read of evicted entries, at most: beyond, new ones are
 * dropped (Raft resends what matters), so a slow store cannot grow the queue without bound.
 */
const MAX_FILL_QUEUE_MESSAGES = 1024;

/** A node within this many entries of the commit index counts as caught up (health). */
const CAUGHT_UP_LAG_ENTRIES = 1024;

/** What the host reports to metrics and logs; every hook is optional. */
export interface ReplicationHooks {
  /** Leader, role or term changed. */
  onSoftState?(state: SoftState): void;
  /** Committed entries about to be applied, in index order (tracing, the simulator's checker). */
  onApply?(entries: readonly Entry[]): void;
  /** Entries were applied; the commit and applied indexes now. */
  onCommitted?(commitIndex: number, appliedIndex: number): void;
  /** A local proposal was applied, `seconds` after it was proposed. */
  onProposalCommitted?(seconds: number): void;
  /** A batch of `entries` log entries was made durable in one commit. */
  onAppendBatch?(entries: number): void;
  /** One Deno KV commit took `seconds`. */
  onStorageCommit?(seconds: number): void;
  /** A snapshot was taken and the log compacted. */
  onSnapshot?(info: { index: number; bytes: number; seconds: number }): void;
  /** A configuration was appended or restored. */
  onConfig?(config: Config): void;
  log?(
    level: "debug" | "info" | "warn" | "error",
    message: string,
    props?: Record<string, unknown>,
  ): void;
}

/**
 * Options of a replication host: its collaborators and its timing. Times are in milliseconds
 * or ticks, as named. `R` is the state machine's result type, opaque to the host.
 */
export interface ReplicationOptions<R> {
  readonly nodeId: NodeId;
  /** This node's RPC address as peers reach it ("host:port"); stored in the Raft config. */
  readonly rpcAddr: string;
  /** Durable Raft state (`RaftStorage` on Deno KV in production). */
  readonly storage: LogStore;
  readonly fsm: StateMachine<R>;
  /** Carries results back to a follower that forwarded a write. */
  readonly results: ResultCodec<R>;
  /** Builds the peer transport around the host's handlers (`PeerTransport` in production). */
  readonly transport: TransportFactory;
  /** Deadlines, durations and timers. Default: the system clock. */
  readonly clock?: Clock;
  /** Length of one tick. Default 50 ms. */
  readonly tickMs?: number;
  /** Election timeout base in ticks. Default 6 (300 to 600 ms with 50 ms ticks). */
  readonly electionTicks?: number;
  /** Heartbeat interval in ticks. Default 1. */
  readonly heartbeatTicks?: number;
  /**
   * Most applied entries between two snapshots (and log compactions): a bound on the log the
   * core keeps in memory. Default {@link DEFAULT_SNAPSHOT_ENTRIES}. A snapshot usually comes
   * first, by size: see `snapshotMinLogBytes`.
   */
  readonly snapshotEntries?: number;
  /**
   * A snapshot is also taken once the entries applied since the last one hold more bytes than
   * that snapshot and than this floor, so the bytes snapshots write stay proportional to the
   * bytes written, not to their square. Default {@link DEFAULT_SNAPSHOT_MIN_LOG_BYTES}.
   */
  readonly snapshotMinLogBytes?: number;
  /** How long a client request may wait for a leader, a commit or a read. Default 5000 ms. */
  readonly requestTimeoutMs?: number;
  /**
   * Free each snapshot buffer (detach its ArrayBuffer) once the core released it, the Readies
   * that may still hold it are done and no storage write uses it, instead of leaving it to
   * the garbage collector: V8 returns an ArrayBuffer's memory only at a full collection,
   * which an idle process may not run for a long time (a 1 GiB node held its loaded 1 GiB
   * snapshot beside its state after a restart). Safe only when the storage and the transport
   * copy what they keep before the next tick
   * (`RaftStorage` on Deno KV and `PeerTransport` do; the simulator's in-memory disk and
   * network keep references, so it runs without). Default false.
   */
  readonly freeSnapshotBytes?: boolean;
  /**
   * Applied, durable log entries whose commands stay in memory: the commands of older ones
   * are dropped from the core's log (their index, term and size stay) and read back from the
   * store when a follower needs them (hashicorp/raft reads its LogStore the same way), so the
   * in-memory log costs its entry headers, not its bytes. Only with a store that has
   * `readEntries`. Default {@link DEFAULT_MEMORY_LOG_ENTRIES}.
   */
  readonly memoryLogEntries?: number;
  readonly random?: Random;
  readonly hooks?: ReplicationHooks;
  /** More Raft core tunables (pre-vote, check quorum, batching), for tests. Default: the core's. */
  readonly raftOptions?: Omit<RaftOptions, "id" | "random" | "electionTicks" | "heartbeatTicks">;
}

interface PendingProposal<R> {
  readonly term: number;
  /** The command's size, counted against MAX_PENDING_PROPOSAL_BYTES until it settles. */
  readonly bytes?: number;
  readonly startedMs: number;
  readonly deadlineMs: number;
  /** `undefined` for an entry without a command (a configuration change). */
  readonly resolve: (r: R | undefined) => void;
  readonly reject: (e: Error) => void;
}

interface ReadWaiter {
  readonly deadlineMs: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/** The node's replicated log: proposals, reads and membership go through here. */
export class ReplicationHost<R> {
  readonly nodeId: NodeId;
  readonly rpcAddr: string;
  readonly transport: Transport;
  private readonly raft: RaftNode;
  private readonly storage: LogStore;
  private readonly fsm: StateMachine<R>;
  private readonly results: ResultCodec<R>;
  private readonly clock: Clock;
  private readonly tickMs: number;
  private readonly electionTicks: number;
  private readonly snapshotEntries: number;
  private readonly snapshotMinLogBytes: number;
  private readonly freeSnapshotBytes: boolean;
  private readonly memoryLogEntries: number;
  /** Evict once this many more entries are evictable (see EVICT_BATCH_ENTRIES). */
  private readonly evictBatchEntries: number;
  /**
   * Peers with a read of evicted entries in flight, each with the message lists waiting for
   * it (the head one is being filled): later messages to that peer queue behind, in order.
   */
  private readonly fillQueues = new Map<NodeId, Message[][]>();
  /** The drains of `fillQueues` running now, awaited by close(). */
  private readonly fillsInFlight = new Set<Promise<void>>();
  /** A drain of `fillQueues` failed beyond a lost message (a bug): the loop stops on it. */
  private fillError: Error | undefined;
  /**
   * Snapshot buffers the core released (`freeSnapshotBytes`), each with `readiesDone` when the
   * host took it: freed once two more Readies are done (see collectReleasedSnapshots).
   */
  private releasedSnapshotBytes: { data: Uint8Array; readiesDone: number }[] = [];
  /**
   * Readies done (stored, restored, sent), counting a turn of the loop with none. A buffer
   * the core released may still be used by the Ready being done then (a leader's snapshot
   * waiting for the host's own snapshot write, or in a long save) and by the next one (what
   * the core held for it: a leader's snapshot to restore, InstallSnapshot chunks, views of
   * the buffer); both are done once this moved twice.
   */
  private readiesDone = 0;
  /** Buffers of the snapshots a storage write is using now: never freed under it. */
  private readonly snapshotBytesInWrite = new Set<ArrayBufferLike>();
  /** Where `copyProposal` puts the next small proposal. */
  private proposalSlab = new Uint8Array(PROPOSAL_SLAB_BYTES);
  private proposalSlabOffset = 0;
  /** Bytes of the entries applied since the state of the latest snapshot was captured. */
  private logBytesSinceSnapshot = 0;
  /** Size of the latest snapshot taken, installed or loaded: the size of the state. */
  private stateBytes = 0;
  private readonly requestTimeoutMs: number;
  private readonly hooks: ReplicationHooks;
  private readonly hadState: boolean;

  private timer: TimerId | undefined;
  private running = false;
  private loopDone: Promise<void> = Promise.resolve();
  private wakeResolve: (() => void) | undefined;
  private wakePending = false;
  private fatal: Error | undefined;

  private proposals = new Map<number, PendingProposal<R>>();
  /** Sum of `bytes` over `proposals`. */
  private pendingProposalBytes = 0;
  private readQueue: ReadWaiter[] = [];
  private readRetry: ReadWaiter[] = [];
  private readInFlight: { context: number; sentTick: number; waiters: ReadWaiter[] } | undefined;
  private appliedWaiters: { index: number; waiters: ReadWaiter[] }[] = [];
  /** Context of this node's latest ReadIndex request; starts at random (see the constructor). */
  private readSeq: number;
  /** State captured for a snapshot, written once the log is durable up to its index. */
  private pendingSnapshot: { index: number; data: Uint8Array; startedMs: number } | undefined;
  /**
   * The snapshot being written, beside the loop: its chunks and the deletes of the log it
   * covers are many commits, and the log's own saves go between them (see
   * `RaftStorage.saveSnapshot`). At most one at a time.
   */
  private snapshotWrite: Promise<void> | undefined;
  /** Why `snapshotWrite` failed: the loop stops on it as on any storage failure. */
  private snapshotWriteError: Error | undefined;
  /** A snapshot being encoded a step per event-loop turn (`StateMachine.snapshotSteps`). */
  private snapshotBuild:
    | { index: number; steps: { step(): Uint8Array | undefined }; startedMs: number }
    | undefined;
  private ticks = 0;
  private lastSnapshotIndex: number;
  private softState: SoftState = { leader: "", role: "follower", term: 0 };
  /** The last leader this node knew of (admin requests still reach it after we lose it). */
  private lastLeader: NodeId = "";
  /** Addresses learned outside the Raft config (gossip), for nodes not yet in it. */
  private readonly addressBook = new Map<NodeId, string>();
  private configListeners: ((config: Config) => void)[] = [];
  private fatalListeners: ((error: Error) => void)[] = [];
  /** The hard state last made durable, and a commit-only change not yet written. */
  private persistedHardState: HardState;
  private deferredHardState: HardState | undefined;

  private constructor(opts: ReplicationOptions<R>, raft: RaftNode, hadState: boolean) {
    this.nodeId = opts.nodeId;
    this.rpcAddr = opts.rpcAddr;
    this.raft = raft;
    this.storage = opts.storage;
    this.fsm = opts.fsm;
    this.results = opts.results;
    this.clock = opts.clock ?? systemClock;
    this.tickMs = opts.tickMs ?? 50;
    this.electionTicks = opts.electionTicks ?? 6;
    this.snapshotEntries = opts.snapshotEntries ?? DEFAULT_SNAPSHOT_ENTRIES;
    this.snapshotMinLogBytes = opts.snapshotMinLogBytes ?? DEFAULT_SNAPSHOT_MIN_LOG_BYTES;
    this.freeSnapshotBytes = opts.freeSnapshotBytes ?? false;
    this.memoryLogEntries = opts.storage.readEntries
      ? Math.max(0, opts.memoryLogEntries ?? DEFAULT_MEMORY_LOG_ENTRIES)
      : Infinity;
    this.evictBatchEntries = Math.max(1, Math.min(EVICT_BATCH_ENTRIES, this.memoryLogEntries));
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    this.hooks = opts.hooks ?? {};
    this.hadState = hadState;
    this.lastSnapshotIndex = raft.status().snapshotIndex;
    // Answers to a previous run's read requests may still arrive (the leader's transport
    // queues frames while we are down): a fresh random start keeps them from matching ours.
    this.readSeq = Math.floor((opts.random ?? Math.random)() * 2 ** 40);
    const st = raft.status();
    this.persistedHardState = { term: st.term, vote: st.vote, commit: st.commit };
    this.transport = opts.transport({
      onMessages: (msgs) => this.receive(msgs),
      onRequest: (from, kind, payload) => this.handleRequest(from, kind, payload),
    });
  }

  /**
   * Loads the persisted state (restoring the latest snapshot into `fsm`, then letting the
   * log tail replay through the first Ready) and builds the host. Does not start it.
   */
  static async open<R>(opts: ReplicationOptions<R>): Promise<ReplicationHost<R>> {
    const persisted = await opts.storage.load();
    if (persisted.snapshot) opts.fsm.restore(persisted.snapshot.data);
    const hadState = persisted.hardState.term > 0 || persisted.entries.length > 0 ||
      persisted.snapshot !== undefined;
    const raft = new RaftNode(
      {
        id: opts.nodeId,
        random: opts.random ?? Math.random,
        electionTicks: opts.electionTicks ?? 6,
        heartbeatTicks: opts.heartbeatTicks ?? 1,
        // No second copy of the state between transfers: maybeSnapshot supplies one on demand.
        releaseSnapshotTicks: 4 * (opts.electionTicks ?? 6),
        ...opts.raftOptions,
      },
      hadState ? persisted : undefined,
    );
    const host = new ReplicationHost(opts, raft, hadState);
    host.stateBytes = persisted.snapshot?.data.length ?? 0;
    // The state now holds what the loaded snapshot holds: no second copy is kept for followers
    // that may never need it (one that does gets a fresh snapshot, see maybeSnapshot).
    raft.releaseSnapshotData();
    return host;
  }

  /** True when this node had Raft state on disk: such a node never bootstraps again. */
  hasState(): boolean {
    // A term counts too: a node that heard from a leader of term 2 before any entry reached
    // it is part of a cluster already (and the Raft core refuses to bootstrap it).
    const st = this.raft.status();
    return this.hadState || st.lastIndex > 0 || st.term > 0;
  }

  /** Makes `config` the first configuration of a new cluster; refused if there is any state. */
  bootstrap(config: Config): void {
    if (this.hasState()) throw new InvalidArgumentError("this node already has Raft state");
    this.raft.bootstrap(config);
    this.wake();
  }

  /** Starts the tick timer and the Ready loop. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.timer = this.clock.setInterval(() => this.onTick(), this.tickMs);
    this.loopDone = this.loop();
  }

  /** Stops ticking, lets the current batch finish, fails what is pending, closes the transport. */
  async close(): Promise<void> {
    if (!this.running) {
      await this.transport.close();
      return;
    }
    this.running = false;
    this.clock.clearInterval(this.timer);
    this.wake();
    await this.loopDone;
    // Fills still reading drop their messages (the host stopped); let them finish first.
    await Promise.all([...this.fillsInFlight]);
    if (this.snapshotWrite) await this.snapshotWrite;
    if (this.deferredHardState && !this.fatal) {
      // Flush: a clean stop leaves the commit index on disk too.
      await this.storage.save({ hardState: this.deferredHardState, entries: [] });
      this.deferredHardState = undefined;
    }
    const err = new UnavailableError("node is shutting down");
    for (const p of this.proposals.values()) p.reject(err);
    this.forgetAllProposals();
    this.failReads(err);
    await this.transport.close();
  }

  /** Remembers how to reach a node that may not be in the Raft config yet (from gossip). */
  setAddress(id: NodeId, addr: string): void {
    this.addressBook.set(id, addr);
  }

  /**
   * Forgets a node that gossip reaped (gone for good), unless it is in the Raft
   * configuration: its address-book entry goes, and the transport drops its connection,
   * queue and counters, so departed members leave nothing behind.
   */
  forgetAddress(id: NodeId): void {
    const addr = this.addressBook.get(id);
    const config = this.raft.status().config;
    if (isMember(config, id)) return;
    this.addressBook.delete(id);
    if (addr !== undefined && !Object.values(config.addresses).includes(addr)) {
      this.transport.forget(addr);
    }
  }

  /** Called with the new configuration whenever one is appended or restored. */
  onConfigChange(listener: (config: Config) => void): void {
    this.configListeners.push(listener);
  }

  /**
   * Called once if the Ready loop stops for good (storage failed, or a Raft invariant
   * broke): the node then serves nothing and is unhealthy, and should exit so that a
   * supervisor restarts it from its disk.
   */
  onFatal(listener: (error: Error) => void): void {
    this.fatalListeners.push(listener);
  }

  /**
   * For tests and the simulator only: runs `fn` on the Raft core (to campaign, step a
   * crafted message, read the log), then wakes the loop to handle what it produced.
   */
  withCore<T>(fn: (raft: RaftNode) => T): T {
    try {
      return fn(this.raft);
    } finally {
      this.wake();
    }
  }

  /** The Raft core's status (role, term, indexes, configuration, follower progress). */
  status(): RaftStatus {
    return this.raft.status();
  }

  /** The RPC address of a member, from the Raft config or the address book. */
  addressOf(id: NodeId): string | undefined {
    return this.raft.status().config.addresses[id] ?? this.addressBook.get(id);
  }

  /** Has this node a leader and applied everything it knows committed? Never once failed. */
  isCaughtUp(): boolean {
    if (this.fatal) return false;
    const st = this.raft.status();
    // Under load the commit index runs a batch or two ahead of apply; that is not lagging.
    return st.leader !== "" && this.fsm.appliedIndex + CAUGHT_UP_LAG_ENTRIES >= st.commit;
  }

  // ---------------------------------------------------------------------------------------
  // Writes

  /**
   * Replicates the command `data` and resolves with its result once committed and applied
   * here. On a follower the write is forwarded to the leader. Waits for a leader up to the
   * request timeout; retries only where the write certainly did not happen.
   *
   * With `leaderTerm`, the write is a decision this node took as leader of that term (a lease
   * expiry on its clock): it is appended here only while this node still leads that term,
   * never forwarded and never retried, so no later leader carries out a deposed one's
   * decision. Otherwise it fails with {@link NotLeaderError}.
   */
  async apply(data: Uint8Array, options: { leaderTerm?: number } = {}): Promise<R> {
    const deadline = this.clock.now() + this.requestTimeoutMs;
    const leaderTerm = options.leaderTerm;
    for (let attempt = 0;; attempt++) {
      this.throwIfFatal();
      if (!this.running) throw new UnavailableError("node is shutting down");
      const st = this.raft.status();
      if (leaderTerm !== undefined) {
        if (st.role !== "leader" || st.term !== leaderTerm) throw new NotLeaderError(undefined);
        return await this.proposeLocal(data, deadline);
      }
      try {
        if (st.role === "leader") return await this.proposeLocal(data, deadline);
        const addr = st.leader === "" ? undefined : this.addressOf(st.leader);
        if (addr === undefined) throw new NotLeaderError(undefined);
        const reply = await this.transport.request(
          addr,
          RequestKind.apply,
          data,
          Math.max(1, deadline - this.clock.now()),
        );
        return this.results.decode(reply);
      } catch (err) {
        const retryable = err instanceof NotLeaderError ||
          (err instanceof UnavailableError && (err as RetryableMarker).notApplied === true);
        const remote = err instanceof RemoteError ? errorFromWire(err.message) : undefined;
        if (!retryable && !(remote instanceof NotLeaderError)) {
          throw remote ?? (err instanceof Error ? err : new UnavailableError(String(err)));
        }
        if (this.clock.now() + this.tickMs > deadline) {
          throw new UnavailableError("no leader could take the write in time; retry");
        }
        await this.sleep(Math.min(this.tickMs * Math.min(attempt + 1, 4), 200));
      }
    }
  }

  /**
   * A copy of a small proposal in a shared slab. The log keeps entries until a compaction,
   * which frees them in index order, so neighbours in a slab go together; an ArrayBuffer of
   * its own per entry would cost about twice the entry's bytes again.
   */
  private copyProposal(data: Uint8Array): Uint8Array {
    const n = data.length;
    if (n > MAX_SLAB_PROPOSAL_BYTES) return data;
    if (this.proposalSlabOffset + n > PROPOSAL_SLAB_BYTES) {
      this.proposalSlab = new Uint8Array(PROPOSAL_SLAB_BYTES);
      this.proposalSlabOffset = 0;
    }
    const out = this.proposalSlab.subarray(this.proposalSlabOffset, this.proposalSlabOffset + n);
    out.set(data);
    this.proposalSlabOffset += n;
    return out;
  }

  /** Leader: appends and waits for the entry to be applied. */
  private proposeLocal(data: Uint8Array, deadlineMs: number): Promise<R> {
    if (this.proposals.size >= MAX_PENDING_PROPOSALS) {
      // Back-pressure instead of an unbounded queue: the client retries later.
      throw new UnavailableError(`too many writes in flight (${MAX_PENDING_PROPOSALS}); retry`);
    }
    if (
      this.pendingProposalBytes > 0 &&
      this.pendingProposalBytes + data.length > MAX_PENDING_PROPOSAL_BYTES
    ) {
      const err = new UnavailableError(
        `too many bytes of writes in flight (over ${MAX_PENDING_PROPOSAL_BYTES}); retry`,
      );
      (err as RetryableMarker).notApplied = true;
      throw err;
    }
    let index: number, term: number;
    try {
      ({ index, term } = this.raft.propose(this.copyProposal(data)));
    } catch (err) {
      // Refused before anything was appended (not leader, transfer in progress): retryable.
      if (err instanceof UnavailableError) (err as RetryableMarker).notApplied = true;
      throw err;
    }
    return new Promise((resolve, reject) => {
      this.trackProposal(index, {
        term,
        bytes: data.length,
        startedMs: this.clock.now(),
        deadlineMs,
        resolve: (r) => {
          if (r === undefined) reject(new UnavailableError("the write's entry carried no command"));
          else resolve(r);
        },
        reject,
      });
    });
  }

  /**
   * Waits for the entry at `index`. An older proposal still waiting at the same index lost
   * its entry to a new leader's log (the index was reused), so it certainly did not apply:
   * it fails as retryable instead of never settling.
   */
  private trackProposal(index: number, p: PendingProposal<R>): void {
    const old = this.proposals.get(index);
    if (old) {
      const err = new UnavailableError("leadership changed before the write committed; retry");
      (err as RetryableMarker).notApplied = true;
      this.forgetProposal(index);
      old.reject(err);
    }
    this.proposals.set(index, p);
    this.pendingProposalBytes += p.bytes ?? 0;
    this.wake();
  }

  private forgetProposal(index: number): void {
    const p = this.proposals.get(index);
    if (!p) return;
    this.proposals.delete(index);
    this.pendingProposalBytes -= p.bytes ?? 0;
  }

  private forgetAllProposals(): void {
    this.proposals.clear();
    this.pendingProposalBytes = 0;
  }

  /** Leader only: proposes a membership change and waits until it is applied. */
  async changeConfig(change: ConfigChange): Promise<void> {
    const { index, term } = this.raft.proposeConfigChange(change);
    await new Promise<R | undefined>((resolve, reject) => {
      this.trackProposal(index, {
        term,
        startedMs: this.clock.now(),
        deadlineMs: this.clock.now() + this.requestTimeoutMs,
        resolve,
        reject,
      });
    });
  }

  /** Removes a member; forwarded to the leader from a follower. */
  async removeServer(id: NodeId): Promise<void> {
    await this.admin({ type: "remove", id });
  }

  /**
   * Moves leadership to `id` (or to the most caught-up voter when empty) and resolves with the
   * new leader's id once it leads. Forwarded to the leader from a follower.
   */
  async transferLeadership(id = ""): Promise<string> {
    return await this.admin({ type: "transfer", id });
  }

  private async admin(req: AdminRequest): Promise<string> {
    const st = this.raft.status();
    if (st.role === "leader") return await this.adminLocal(req);
    // A node on its way out (removed, no longer hearing heartbeats) still knows who led.
    const leaderId = st.leader !== "" ? st.leader : this.lastLeader;
    const addr = leaderId === "" ? undefined : this.addressOf(leaderId);
    if (addr === undefined) throw new UnavailableError("no leader known; retry");
    try {
      const reply = await this.transport.request(
        addr,
        RequestKind.admin,
        new TextEncoder().encode(JSON.stringify(req)),
        this.requestTimeoutMs,
      );
      return new TextDecoder().decode(reply);
    } catch (err) {
      const e = err instanceof RemoteError ? errorFromWire(err.message) : err;
      if (e instanceof NotLeaderError && e.leaderId) this.lastLeader = e.leaderId;
      throw e;
    }
  }

  private async adminLocal(req: AdminRequest): Promise<string> {
    switch (req.type) {
      case "remove":
        if (
          !this.raft.status().config.voters.includes(req.id) &&
          !this.raft.status().config.learners.includes(req.id)
        ) {
          throw new InvalidArgumentError(`${req.id} is not a member`);
        }
        await this.changeConfig({ type: "remove", id: req.id });
        return req.id;
      case "transfer":
        return await this.transferLocal(req.id);
      default: {
        const never: never = req;
        throw new InvalidArgumentError(`unknown admin request ${JSON.stringify(never)}`);
      }
    }
  }

  private async transferLocal(target: NodeId): Promise<string> {
    const st = this.raft.status();
    let to = target;
    if (to === "") {
      let best = -1;
      for (const id of st.config.voters) {
        const m = st.progress[id]?.match ?? 0;
        if (id !== this.nodeId && m > best) {
          best = m;
          to = id;
        }
      }
      if (to === "") throw new UnavailableError("no other voter to transfer leadership to");
    }
    if (to === this.nodeId) return to;
    this.raft.transferLeadership(to);
    this.wake();
    const deadline = this.clock.now() + this.tickMs * this.electionTicks * 3;
    while (this.clock.now() < deadline) {
      await this.sleep(this.tickMs);
      const now = this.raft.status();
      if (now.leader === to) return to;
      if (now.role !== "leader" && now.leader !== "" && now.leader !== this.nodeId) {
        return now.leader;
      }
      if (now.role === "leader" && now.leadTransferee === "") break;
    }
    throw new UnavailableError(`leadership transfer to ${to} did not complete`);
  }

  /**
   * Checks that a peer is reachable over the peer transport in BOTH directions (mutual TLS
   * when configured): we reach it, and it answers only after reaching us back with its own
   * peer certificate. Resolves with the peer's node id.
   */
  async ping(addr: string): Promise<string> {
    const reply = await this.transport.request(
      addr,
      RequestKind.ping,
      new TextEncoder().encode(this.rpcAddr),
      4000,
    );
    return new TextDecoder().decode(reply);
  }

  private async handleRequest(
    _from: string,
    kind: number,
    payload: Uint8Array,
  ): Promise<Uint8Array> {
    try {
      switch (kind) {
        case RequestKind.apply: {
          if (this.raft.status().role !== "leader") {
            throw new NotLeaderError(this.raft.status().leader || undefined);
          }
          const r = await this.proposeLocal(payload, this.clock.now() + this.requestTimeoutMs);
          return this.results.encode(r);
        }
        case RequestKind.ping: {
          const callback = new TextDecoder().decode(payload);
          if (callback !== "") {
            // Prove that our own peer certificate is accepted by the asker, too.
            await this.transport.request(callback, RequestKind.ping, new Uint8Array(0), 2000);
          }
          return new TextEncoder().encode(this.nodeId);
        }
        case RequestKind.admin: {
          if (this.raft.status().role !== "leader") {
            throw new NotLeaderError(this.raft.status().leader || undefined);
          }
          const req = JSON.parse(new TextDecoder().decode(payload)) as AdminRequest;
          return new TextEncoder().encode(await this.adminLocal(req));
        }
        default:
          throw new InvalidArgumentError(`unknown request kind ${kind}`);
      }
    } catch (err) {
      throw new Error(errorToWire(err));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Reads

  /**
   * Resolves once this node's state machine reflects every write committed before the call
   * (ReadIndex: the leader confirms its leadership with a quorum; a follower asks the leader
   * for the index and waits to apply it). Reads arriving together share one round.
   */
  readBarrier(consistency: "linearizable" | "stale"): Promise<void> {
    if (consistency === "stale") return Promise.resolve();
    this.throwIfFatal();
    if (this.pendingReads() >= MAX_PENDING_READS) {
      return Promise.reject(
        new UnavailableError(`too many reads in flight (${MAX_PENDING_READS}); retry`),
      );
    }
    return new Promise((resolve, reject) => {
      this.readQueue.push({
        deadlineMs: this.clock.now() + this.requestTimeoutMs,
        resolve,
        reject,
      });
      this.wake();
    });
  }

  private pendingReads(): number {
    let n = this.readQueue.length + this.readRetry.length +
      (this.readInFlight?.waiters.length ?? 0);
    for (const aw of this.appliedWaiters) n += aw.waiters.length;
    return n;
  }

  /** Starts a ReadIndex round for every queued read, unless one is already out. */
  private issueReads(): void {
    if (this.readInFlight !== undefined || this.readQueue.length === 0) return;
    const waiters = this.readQueue;
    this.readQueue = [];
    const context = ++this.readSeq;
    try {
      this.raft.readIndex(context);
      this.readInFlight = { context, sentTick: this.ticks, waiters };
    } catch {
      this.readRetry.push(...waiters); // no leader known yet: try again next tick
    }
  }

  private handleReads(rd: Ready): void {
    for (const rs of rd.readStates) {
      if (this.readInFlight?.context !== rs.context) continue;
      const { waiters } = this.readInFlight;
      this.readInFlight = undefined;
      if (this.fsm.appliedIndex >= rs.index) { for (const w of waiters) w.resolve(); }
      else this.appliedWaiters.push({ index: rs.index, waiters });
    }
    for (const c of rd.droppedReads) {
      if (this.readInFlight?.context !== c) continue;
      this.readRetry.push(...this.readInFlight.waiters);
      this.readInFlight = undefined;
    }
  }

  private resolveAppliedWaiters(): void {
    if (this.appliedWaiters.length === 0) return;
    const applied = this.fsm.appliedIndex;
    const still: typeof this.appliedWaiters = [];
    for (const aw of this.appliedWaiters) {
      if (applied >= aw.index) { for (const w of aw.waiters) w.resolve(); }
      else still.push(aw);
    }
    this.appliedWaiters = still;
  }

  private failReads(err: Error): void {
    const all = [
      ...this.readQueue,
      ...this.readRetry,
      ...(this.readInFlight?.waiters ?? []),
      ...this.appliedWaiters.flatMap((a) => a.waiters),
    ];
    this.readQueue = [];
    this.readRetry = [];
    this.readInFlight = undefined;
    this.appliedWaiters = [];
    for (const w of all) w.reject(err);
  }

  // ---------------------------------------------------------------------------------------
  // The loop

  private receive(msgs: readonly Message[]): void {
    if (!this.running) return;
    for (const m of msgs) this.raft.step(m);
    // An acknowledgement may have committed entries: answer their clients now, even while
    // the loop is busy writing the next batch.
    this.applyEntries(this.raft.takeCommitted());
    this.wake();
  }

  private onTick(): void {
    this.ticks++;
    this.raft.tick();
    this.collectReleasedSnapshots();
    for (const id of this.transport.takeUnreachable()) this.raft.reportUnreachable(id);
    // Reads whose round went unanswered (a lost message) or found no leader go again.
    if (this.readInFlight && this.ticks - this.readInFlight.sentTick > this.electionTicks * 2) {
      this.readRetry.push(...this.readInFlight.waiters);
      this.readInFlight = undefined;
    }
    if (this.readRetry.length > 0) {
      this.readQueue.push(...this.readRetry);
      this.readRetry = [];
    }
    if (this.ticks % 10 === 0) this.expireRequests();
    this.wake();
  }

  /**
   * Frees the snapshot buffers whose Readies are done (the transport encoded their messages
   * at once, before this tick) and that no write uses, then takes what the core released
   * since. Without `freeSnapshotBytes` it only drops the references.
   */
  private collectReleasedSnapshots(): void {
    if (this.releasedSnapshotBytes.length > 0) {
      const kept: typeof this.releasedSnapshotBytes = [];
      for (const r of this.releasedSnapshotBytes) {
        const used = this.readiesDone - r.readiesDone < 2 ||
          this.snapshotBytesInWrite.has(r.data.buffer);
        if (used) kept.push(r);
        else freeBytes(r.data);
      }
      this.releasedSnapshotBytes = kept;
    }
    const released = this.raft.takeReleasedSnapshotData();
    if (this.freeSnapshotBytes) {
      const readiesDone = this.readiesDone;
      for (const data of released) this.releasedSnapshotBytes.push({ data, readiesDone });
    }
  }

  private expireRequests(): void {
    const now = this.clock.now();
    const err = new UnavailableError("request timed out waiting for the cluster; retry");
    for (const [index, p] of this.proposals) {
      if (p.deadlineMs < now) {
        this.forgetProposal(index);
        p.reject(err);
      }
    }
    const keep = (w: ReadWaiter) => {
      if (w.deadlineMs >= now) return true;
      w.reject(err);
      return false;
    };
    this.readQueue = this.readQueue.filter(keep);
    this.readRetry = this.readRetry.filter(keep);
    for (const aw of this.appliedWaiters) aw.waiters = aw.waiters.filter(keep);
  }

  private wake(): void {
    const r = this.wakeResolve;
    if (r) {
      this.wakeResolve = undefined;
      r();
    } else {
      this.wakePending = true;
    }
  }

  private async loop(): Promise<void> {
    while (this.running) {
      if (!this.wakePending) await new Promise<void>((r) => (this.wakeResolve = r));
      this.wakePending = false;
      try {
        if (this.fillError) throw this.fillError;
        this.issueReads();
        await this.drainReady();
        // A follower may need a snapshot while nothing else is ready (see takeSnapshotWanted).
        this.maybeSnapshot();
        this.readiesDone++;
      } catch (err) {
        // Storage failed: the node cannot keep its promises any more, so it stops serving.
        this.fatal = err instanceof Error ? err : new Error(String(err));
        this.hooks.log?.("error", "replication loop stopped", { error: this.fatal.message });
        this.running = false;
        this.clock.clearInterval(this.timer);
        const unavailable = new UnavailableError(`node failed: ${this.fatal.message}`);
        for (const p of this.proposals.values()) p.reject(unavailable);
        this.forgetAllProposals();
        this.failReads(unavailable);
        for (const l of this.fatalListeners) l(this.fatal);
      }
    }
  }

  private async drainReady(): Promise<void> {
    while (this.raft.hasReady()) {
      if (this.snapshotWriteError) throw this.snapshotWriteError;
      const rd = this.raft.ready();
      // A leader's replication messages overlap its own fsync (see isSafeBeforePersist),
      // but never in a Ready that changes term or vote: a sole voter elects itself and
      // appends in one tick, and a crash before this fsync would let it win the same term
      // again and write a different entry at an index its appends already announced.
      const durableHs = this.persistedHardState;
      const termOrVoteChanged = rd.hardState !== undefined &&
        (rd.hardState.term !== durableHs.term || rd.hardState.vote !== durableHs.vote);
      // In such a Ready every message waits for the fsync (none is dropped: appends a core
      // queued before it stepped down to a newer term are stale, and their receivers say so).
      const early = termOrVoteChanged ? [] : rd.messages.filter(isSafeBeforePersist);
      const late = termOrVoteChanged
        ? rd.messages
        : early.length === rd.messages.length
        ? []
        : rd.messages.filter((m) => !isSafeBeforePersist(m));
      this.send(early);
      // The state machine is volatile and committed entries are durable on a majority, so
      // restoring and applying do not wait for this node's fsync: clients get their answers
      // while the next batch is being written.
      if (rd.snapshot) this.restoreSnapshot(rd.snapshot);
      this.applyEntries(rd.committed);
      this.handleReads(rd);
      if (rd.softState) {
        this.softState = rd.softState;
        if (rd.softState.leader !== "") this.lastLeader = rd.softState.leader;
        this.hooks.onSoftState?.(rd.softState);
      }
      // A Ready that only moves the commit index needs no fsync: the commit index is
      // recoverable from the leader after a crash, so it rides along with the next batch of
      // entries instead. Term and vote changes, entries and snapshots are always durable
      // before the messages that depend on them are sent.
      let hardState = rd.hardState;
      if (hardState) {
        if (!termOrVoteChanged && rd.entries.length === 0 && !rd.snapshot) {
          this.deferredHardState = hardState;
          hardState = undefined;
        }
      }
      if (!hardState && (rd.entries.length > 0 || rd.snapshot) && this.deferredHardState) {
        hardState = this.deferredHardState;
      }
      if (hardState || rd.entries.length > 0 || rd.snapshot) {
        // A snapshot from the leader replaces ours: our own must be on disk first.
        if (rd.snapshot && this.snapshotWrite) await this.snapshotWrite;
        if (this.snapshotWriteError) throw this.snapshotWriteError;
        const t0 = this.clock.now();
        if (rd.snapshot) this.snapshotBytesInWrite.add(rd.snapshot.data.buffer);
        try {
          await this.storage.save({ hardState, entries: rd.entries, snapshot: rd.snapshot });
        } finally {
          if (rd.snapshot) this.snapshotBytesInWrite.delete(rd.snapshot.data.buffer);
        }
        if (hardState) {
          this.persistedHardState = hardState;
          this.deferredHardState = undefined;
        }
        this.hooks.onStorageCommit?.((this.clock.now() - t0) / 1000);
        if (rd.entries.length > 0) this.hooks.onAppendBatch?.(rd.entries.length);
      }
      this.send(late);
      this.raft.advance();
      // Entries committed while we were writing (acknowledgements arrive meanwhile).
      this.applyEntries(this.raft.takeCommitted());
      this.maybeSnapshot();
      this.maybeEvict();
      this.readiesDone++;
    }
  }

  private restoreSnapshot(snap: Snapshot): void {
    this.fsm.restore(snap.data);
    this.snapshotBuild = undefined; // it was encoding the state just replaced
    this.lastSnapshotIndex = snap.meta.index;
    this.stateBytes = snap.data.length;
    this.logBytesSinceSnapshot = 0;
    this.hooks.log?.("info", "installed a snapshot from the leader", {
      index: snap.meta.index,
      bytes: snap.data.length,
    });
    for (const [index, p] of this.proposals) {
      if (index <= snap.meta.index) {
        this.forgetProposal(index);
        p.reject(new UnavailableError("leadership changed; outcome unknown, retry"));
      }
    }
    this.emitConfig(snap.meta.config);
    // Reads waiting to apply up to an index the snapshot covers are served now.
    this.resolveAppliedWaiters();
  }

  /** Applies committed entries in order, resolves their proposals and waiting reads. */
  private applyEntries(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    this.hooks.onApply?.(entries);
    for (const e of entries) this.applyEntry(e);
    this.resolveAppliedWaiters();
    this.hooks.onCommitted?.(this.raft.status().commit, this.fsm.appliedIndex);
  }

  private send(msgs: readonly Message[]): void {
    if (msgs.length === 0) return;
    const byPeer = new Map<NodeId, Message[]>();
    for (const m of msgs) {
      const list = byPeer.get(m.to);
      if (list) list.push(m);
      else byPeer.set(m.to, [m]);
    }
    for (const [to, list] of byPeer) {
      const queue = this.fillQueues.get(to);
      if (queue) {
        this.queueBehindFill(to, queue, list);
      } else if (list.some(carriesEvicted)) {
        const fresh = [list.map(ownSnapshotChunk)];
        this.fillQueues.set(to, fresh);
        const drain = this.drainFills(to, fresh);
        this.fillsInFlight.add(drain);
        void drain.finally(() => this.fillsInFlight.delete(drain));
      } else {
        this.sendNow(to, list);
      }
    }
  }

  private sendNow(to: NodeId, list: readonly Message[]): void {
    if (list.length === 0) return;
    const addr = this.addressOf(to);
    if (addr === undefined) {
      this.hooks.log?.("debug", "no address for peer; dropping messages", { peer: to });
      return;
    }
    this.transport.send(to, addr, list);
  }

  /**
   * Queues `list` behind the read in flight for `to`. A snapshot chunk is copied: the buffer
   * it views may be freed before it leaves (`freeSnapshotBytes` frees it after two Readies).
   * Beyond MAX_FILL_QUEUE_MESSAGES the list is dropped.
   */
  private queueBehindFill(to: NodeId, queue: Message[][], list: Message[]): void {
    let queued = 0;
    for (const l of queue) queued += l.length;
    if (queued + list.length > MAX_FILL_QUEUE_MESSAGES) {
      this.hooks.log?.("debug", "too many messages waiting for a log read; dropping", {
        peer: to,
        messages: list.length,
      });
      return;
    }
    queue.push(list.map(ownSnapshotChunk));
  }

  /**
   * Sends the message lists queued for `to` in order, filling each append that carries
   * evicted entries with their commands read back from the store first. An append whose
   * entries cannot be read (gone: a snapshot compacted them meanwhile; or the read failed) is
   * dropped: Raft takes a lost message in its stride (the leader probes again and, once the
   * entries are gone, sends a snapshot).
   */
  private async drainFills(to: NodeId, queue: Message[][]): Promise<void> {
    try {
      while (queue.length > 0) {
        const list = queue[0];
        const out: Message[] = [];
        for (const m of list) {
          const filled = m.type === "append" && m.entries.some(isEvicted)
            ? await this.fillAppend(m)
            : m;
          if (filled) out.push(filled);
        }
        queue.shift();
        if (!this.running) return;
        this.sendNow(to, out);
      }
    } catch (err) {
      // Not a lost message (fillAppend takes those): the transport refused, or a bug.
      this.fillError = err instanceof Error ? err : new Error(String(err));
      this.wake();
    } finally {
      this.fillQueues.delete(to);
    }
  }

  /** `m` with its evicted entries read back from the store, or undefined if they cannot be. */
  private async fillAppend(m: Message & { type: "append" }): Promise<Message | undefined> {
    const entries = m.entries;
    let lo = -1;
    let hi = -1;
    for (const e of entries) {
      if (!isEvicted(e)) continue;
      if (lo < 0) lo = e.index;
      hi = e.index;
    }
    let stored: readonly Entry[] | undefined;
    try {
      stored = await this.storage.readEntries!(lo, hi);
    } catch (err) {
      this.hooks.log?.("debug", "could not read log entries to send; dropping the append", {
        peer: m.to,
        from: lo,
        to: hi,
        error: err instanceof Error ? err.message : String(err),
      });
      return undefined;
    }
    if (stored === undefined) {
      this.hooks.log?.("debug", "log entries to send are compacted; dropping the append", {
        peer: m.to,
        from: lo,
        to: hi,
      });
      return undefined;
    }
    const out = entries.slice();
    for (let i = 0; i < out.length; i++) {
      const e = out[i];
      if (!isEvicted(e)) continue;
      const s = stored[e.index - lo];
      if (s === undefined || s.index !== e.index || s.term !== e.term || s.type !== "normal") {
        this.hooks.log?.("debug", "stored log entry differs from the log's; dropping the append", {
          peer: m.to,
          index: e.index,
          term: e.term,
          storedTerm: s?.term,
        });
        return undefined;
      }
      out[i] = s;
    }
    return { ...m, entries: out };
  }

  /**
   * Drops the commands of applied, durable entries beyond the last `memoryLogEntries` from
   * the core's log (in batches of `evictBatchEntries`): the store holds them.
   */
  private maybeEvict(): void {
    if (this.memoryLogEntries === Infinity) return;
    const target = Math.min(this.raft.evictableIndex(), this.fsm.appliedIndex) -
      this.memoryLogEntries;
    if (target - this.raft.evictedIndex() >= this.evictBatchEntries) this.raft.evictData(target);
  }

  private applyEntry(e: Entry): void {
    if (isEvicted(e)) throw new RaftInvariantError(`entry ${e.index} to apply is evicted`);
    let result: R | undefined;
    this.logBytesSinceSnapshot += e.type === "normal" ? e.data.length + ENTRY_OVERHEAD_BYTES : 0;
    if (e.type === "normal" && e.data.length > 0) {
      result = this.fsm.apply(e.index, e.data);
    } else {
      this.fsm.markApplied(e.index);
      if (e.type === "config") this.emitConfig(e.config);
    }
    const p = this.proposals.get(e.index);
    if (!p) return;
    this.forgetProposal(e.index);
    if (p.term === e.term) {
      this.hooks.onProposalCommitted?.((this.clock.now() - p.startedMs) / 1000);
      p.resolve(result);
    } else {
      const err = new UnavailableError("leadership changed before the write committed; retry");
      (err as RetryableMarker).notApplied = true;
      p.reject(err);
    }
  }

  private emitConfig(config: Config): void {
    this.hooks.onConfig?.(config);
    for (const l of this.configListeners) l(config);
  }

  /**
   * Takes a snapshot once the log since the last one outgrew the state (or the floor), or
   * once `snapshotEntries` entries were applied since. Entries are
   * applied before this node's own fsync (they are durable on a majority), so the applied
   * index may run ahead of the local log on disk; a snapshot there would move the log's
   * start past entries not yet written and leave a gap. So the state is captured at the
   * applied index, and the snapshot is handed to the core and written only once the log is
   * durable that far (a later turn of the loop, after the next save). The write itself runs
   * beside the loop (`snapshotWrite`).
   */
  private maybeSnapshot(): void {
    const applied = this.fsm.appliedIndex;
    // The core released the latest snapshot's data and a follower needs it: take one now.
    const wanted = this.raft.takeSnapshotWanted();
    const due = applied - this.lastSnapshotIndex >= this.snapshotEntries ||
      this.logBytesSinceSnapshot >= Math.max(this.snapshotMinLogBytes, this.stateBytes);
    if (
      !this.pendingSnapshot && !this.snapshotBuild &&
      (wanted || (due && applied > this.lastSnapshotIndex))
    ) {
      this.logBytesSinceSnapshot = 0;
      if (this.fsm.snapshotSteps) {
        this.snapshotBuild = {
          index: applied,
          steps: this.fsm.snapshotSteps(),
          startedMs: this.clock.now(),
        };
        const build = this.snapshotBuild;
        this.clock.setTimeout(() => this.snapshotStep(build), 0);
      } else {
        this.pendingSnapshot = {
          index: applied,
          data: this.fsm.snapshot(),
          startedMs: this.clock.now(),
        };
      }
    }
    if (this.snapshotWriteError) throw this.snapshotWriteError;
    const pending = this.pendingSnapshot;
    if (!pending || this.raft.status().durableIndex < pending.index) return;
    // One snapshot write at a time; the loop wakes when it is done and comes back here.
    if (this.snapshotWrite) return;
    this.pendingSnapshot = undefined;
    // The same index again: data for a snapshot already on disk, handed back to the core.
    const resupplied = pending.index === this.lastSnapshotIndex;
    this.lastSnapshotIndex = Math.max(this.lastSnapshotIndex, pending.index);
    // Keep a tail of the log so followers a little behind catch up without a snapshot.
    const keep = Math.min(this.snapshotEntries, 5000);
    const snap = this.raft.compact(pending.index, pending.data, keep);
    if (!snap) return;
    this.stateBytes = snap.data.length;
    if (resupplied) return;
    const t0 = pending.startedMs;
    // Not awaited: the loop goes on persisting and sending while the snapshot is written.
    this.snapshotBytesInWrite.add(snap.data.buffer);
    this.snapshotWrite = this.storage.saveSnapshot(snap).then(
      () => {
        this.hooks.onSnapshot?.({
          index: snap.meta.index,
          bytes: snap.data.length,
          seconds: (this.clock.now() - t0) / 1000,
        });
      },
      (err) => {
        this.snapshotWriteError = err instanceof Error ? err : new Error(String(err));
      },
    ).finally(() => {
      this.snapshotBytesInWrite.delete(snap.data.buffer);
      this.snapshotWrite = undefined;
      this.wake();
    });
  }

  /** Encodes one step of `snapshotBuild`; once complete it becomes `pendingSnapshot`. */
  private snapshotStep(build: NonNullable<typeof this.snapshotBuild>): void {
    if (this.snapshotBuild !== build || !this.running) return;
    let data: Uint8Array | undefined;
    try {
      data = build.steps.step();
    } catch (err) {
      this.snapshotBuild = undefined;
      this.snapshotWriteError = err instanceof Error ? err : new Error(String(err));
      this.wake();
      return;
    }
    if (!data) {
      this.clock.setTimeout(() => this.snapshotStep(build), 0);
      return;
    }
    this.snapshotBuild = undefined;
    this.pendingSnapshot = { index: build.index, data, startedMs: build.startedMs };
    this.wake();
  }

  /** A consistent copy of the state machine, after a linearizable read barrier. */
  async backup(): Promise<Uint8Array> {
    await this.readBarrier("linearizable");
    return this.fsm.snapshot();
  }

  /** Is `id` a voter in the current configuration? */
  isVoter(id: NodeId): boolean {
    return isVoter(this.raft.status().config, id);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((r) => this.clock.setTimeout(r, ms));
  }

  private throwIfFatal(): void {
    if (this.fatal) throw new UnavailableError(`node failed: ${this.fatal.message}`);
  }
}

/** `m`, a snapshot chunk with a copy of its data (that can wait while its buffer is freed). */
function ownSnapshotChunk(m: Message): Message {
  return m.type === "snapshot" ? { ...m, data: m.data.slice() } : m;
}

/** Does `m` carry an entry whose command the core evicted (to be read back before sending)? */
function carriesEvicted(m: Message): boolean {
  return m.type === "append" && m.entries.some(isEvicted);
}

/**
 * Returns the memory of `data` at once by detaching its ArrayBuffer (`transfer(0)`), when
 * `data` spans its whole buffer (a view into a larger one shares it and is left alone).
 */
function freeBytes(data: Uint8Array): void {
  const buf = data.buffer;
  if (!(buf instanceof ArrayBuffer) || buf.detached) return;
  if (data.byteOffset !== 0 || data.byteLength !== buf.byteLength) return;
  buf.transfer(0);
}

/** Marks an UnavailableError for a write that certainly was not applied (safe to retry). */
interface RetryableMarker {
  notApplied?: boolean;
}
