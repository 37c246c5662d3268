/**
 * The Raft consensus core as a pure state machine (etcd-io/raft's RawNode pattern): no I/O,
 * no clock, no randomness of its own. The host calls `tick()` on a timer, `step()` for each
 * message received, `propose()`/`readIndex()` for clients, then drains `ready()`, persists,
 * sends, applies and calls `advance()`. Everything observable comes out of `ready()`.
 */
import { InvalidArgumentError, NotLeaderError, UnavailableError } from "../errors.ts";
import { applyChange, isMember, isVoter, members } from "./config.ts";
import { EMPTY_CONFIG, RaftInvariantError, RaftLog } from "./log.ts";
import { Progress, type ProgressState } from "./progress.ts";
import { committedIndex, majority, voteResult } from "./quorum.ts";
import type {
  Append,
  AppendResponse,
  Config,
  ConfigChange,
  Entry,
  HardState,
  Heartbeat,
  HeartbeatResponse,
  InstallSnapshot,
  Message,
  NodeId,
  PersistedState,
  Random,
  ReadIndexRequest,
  ReadIndexResponse,
  ReadState,
  Ready,
  Role,
  Snapshot,
  SnapshotMeta,
  SnapshotResponse,
  SoftState,
} from "./types.ts";

/** Heartbeat answers without replication progress before a pipelined follower is probed again. */
const STALLED_HEARTBEATS = 3;

/** Tunables of one Raft node. Time is counted in ticks; the host decides how long a tick is. */
export interface RaftOptions {
  /** This node's id. */
  readonly id: NodeId;
  /** Seeded random source for election timeouts. */
  readonly random: Random;
  /** Base election timeout; each term draws one in [electionTicks, 2 * electionTicks). Default 10. */
  readonly electionTicks?: number;
  /** Leader heartbeat interval. Default 1; must be below electionTicks. */
  readonly heartbeatTicks?: number;
  /** Unacknowledged append messages per follower in replicate state. Default 64. */
  readonly maxInflight?: number;
  /** Entry bytes per append message (at least one entry is always sent). Default 1 MiB. */
  readonly maxBatchBytes?: number;
  /** Snapshot bytes per InstallSnapshot chunk. Default 256 KiB. */
  readonly snapshotChunkBytes?: number;
  /** Run a pre-vote before bumping the term, so a rejoining node cannot disrupt. Default true. */
  readonly preVote?: boolean;
  /** A leader that has not heard from a quorum within an election timeout steps down. Default true. */
  readonly checkQuorum?: boolean;
  /**
   * Drop the latest snapshot's data once no transfer has used it for this many ticks, so the
   * node does not hold a second copy of its state; a follower that needs it later makes
   * {@link RaftNode.takeSnapshotWanted} true and the host supplies fresh data through
   * {@link RaftNode.compact}. Default 0: keep the data (for hosts that never supply it).
   */
  readonly releaseSnapshotTicks?: number;
}

/** Replication state of one follower, as `status()` shows it. */
export interface ProgressView {
  readonly match: number;
  readonly next: number;
  readonly state: ProgressState;
  readonly active: boolean;
}

/** A snapshot of the node's state for observers (metrics, GetServers, tests). */
export interface RaftStatus {
  readonly id: NodeId;
  readonly term: number;
  readonly vote: NodeId;
  readonly role: Role;
  readonly leader: NodeId;
  readonly commit: number;
  readonly applied: number;
  readonly firstIndex: number;
  readonly lastIndex: number;
  /** Highest index the host confirmed durable with advance() (on every role). */
  readonly durableIndex: number;
  readonly snapshotIndex: number;
  readonly snapshotTerm: number;
  /**
   * Bytes of command data in the entries the core holds in memory (since `snapshotIndex`);
   * evicted entries hold none (see `RaftNode.evictData`).
   */
  readonly logDataBytes: number;
  /** The eviction cursor: no entry above it is evicted (see `RaftNode.evictData`). */
  readonly evictedIndex: number;
  /** Bytes of the snapshot the core holds to send to followers (0 once released). */
  readonly snapshotDataBytes: number;
  readonly config: Config;
  readonly leadTransferee: NodeId;
  readonly progress: Readonly<Record<NodeId, ProgressView>>;
}

interface PendingRead {
  /** The asker's own number for the read: echoed back to it, never used to confirm. */
  readonly context: number;
  /** The leader's round: only answers to heartbeats of this round or later confirm it. */
  readonly round: number;
  readonly index: number;
  /** Who asked: this node, or a follower to answer with ReadIndexResponse. */
  readonly from: NodeId;
  readonly acks: Set<NodeId>;
}

interface IncomingSnapshot {
  readonly meta: SnapshotMeta;
  readonly chunks: Uint8Array[];
  received: number;
}

/** A Raft node. See the module comment for the driving loop. */
export class RaftNode {
  readonly id: NodeId;
  private readonly random: Random;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly maxInflight: number;
  private readonly maxBatchBytes: number;
  private readonly snapshotChunkBytes: number;
  private readonly releaseSnapshotTicks: number;
  /** Ticks since a snapshot transfer last needed `snapshotData`. */
  private snapshotUnusedTicks = 0;
  /** A follower needed a snapshot while its data was released. */
  private snapshotWanted = false;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;

  private term = 0;
  private vote: NodeId = "";
  private role: Role = "follower";
  private leader: NodeId = "";
  private readonly log: RaftLog;
  private config: Config;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTicks = 0;

  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();
  private pendingConfigIndex = 0;
  private leadTransferee: NodeId = "";
  private needsBroadcast = false;
  /** The commit index moved: followers with nothing new to receive get an empty append. */
  private commitAdvanced = false;

  /** Latest snapshot with data, to send to followers behind the log's start. */
  private snapshotData: Snapshot | undefined;
  /** Data the core dropped since the host last asked (see {@link takeReleasedSnapshotData}). */
  private releasedSnapshotData: Uint8Array[] = [];
  private incomingSnapshot: IncomingSnapshot | undefined;
  private snapshotToPersist: Snapshot | undefined;

  private pendingReads: PendingRead[] = [];
  /** Reads asked before this leader committed an entry of its term: served after that. */
  private readsAwaitingCommit: { context: number; from: NodeId }[] = [];
  /** Follower side: contexts sent to the leader and not answered yet. */
  private forwardedReads = new Set<number>();
  private readStates: ReadState[] = [];
  private droppedReads: number[] = [];

  private msgs: Message[] = [];
  /** Highest index the host confirmed durable (advance()); the leader counts only this far. */
  private persistedIndex: number;
  /** lastIndex when the outstanding Ready was taken; becomes persistedIndex on advance(). */
  private readyLastIndex = 0;
  /** Term of the entry at readyLastIndex then: a mismatch at advance() means it was replaced. */
  private readyLastTerm = 0;
  /** Leader: id of the latest ReadIndex round; heartbeats carry it, responses echo it. */
  private readRound = 0;
  private prevHardState: HardState;
  private prevSoftState: SoftState;

  constructor(options: RaftOptions, persisted?: PersistedState) {
    this.id = options.id;
    this.random = options.random;
    this.electionTicks = options.electionTicks ?? 10;
    this.heartbeatTicks = options.heartbeatTicks ?? 1;
    this.maxInflight = options.maxInflight ?? 64;
    this.maxBatchBytes = options.maxBatchBytes ?? 1024 * 1024;
    this.snapshotChunkBytes = options.snapshotChunkBytes ?? 256 * 1024;
    this.releaseSnapshotTicks = options.releaseSnapshotTicks ?? 0;
    this.preVote = options.preVote ?? true;
    this.checkQuorum = options.checkQuorum ?? true;
    if (this.heartbeatTicks < 1 || this.electionTicks <= this.heartbeatTicks) {
      throw new InvalidArgumentError("electionTicks must exceed heartbeatTicks >= 1");
    }
    const snapMeta = persisted?.snapshot?.meta ?? { index: 0, term: 0, config: EMPTY_CONFIG };
    this.log = new RaftLog(snapMeta, persisted?.entries ?? [], persisted?.hardState.commit ?? 0);
    if (this.log.committed > this.log.lastIndex()) {
      // The host persists entries before the commit index that covers them: a commit index
      // beyond the log means the disk lost entries, and serving from it would lose writes.
      throw new RaftInvariantError(
        `persisted commit index ${this.log.committed} is beyond the last log entry ${this.log.lastIndex()}`,
      );
    }
    this.snapshotData = persisted?.snapshot;
    this.term = persisted?.hardState.term ?? 0;
    this.vote = persisted?.hardState.vote ?? "";
    this.config = this.log.currentConfig();
    this.persistedIndex = this.log.lastIndex();
    this.prevHardState = this.hardState();
    this.prevSoftState = this.softState();
    this.resetRandomizedElectionTicks();
  }

  // ---------------------------------------------------------------------------------------
  // The host's interface

  /** On a node with no state at all, makes `config` the initial configuration (entry 1, term 1). */
  bootstrap(config: Config): void {
    if (this.log.lastIndex() !== 0 || this.term !== 0) {
      throw new InvalidArgumentError("bootstrap on a node that already has Raft state");
    }
    if (config.voters.length === 0) throw new InvalidArgumentError("bootstrap needs a voter");
    this.term = 1;
    this.log.append([{ type: "config", term: 1, index: 1, change: { type: "bootstrap" }, config }]);
    this.log.committed = 1;
    this.config = config;
  }

  /** Advances logical time by one tick: election timeouts, heartbeats, check-quorum. */
  tick(): void {
    if (this.role === "leader") this.tickLeader();
    else this.tickElection();
    if (this.releaseSnapshotTicks > 0 && this.snapshotData) {
      if (this.sendingSnapshot()) this.snapshotUnusedTicks = 0;
      else if (++this.snapshotUnusedTicks >= this.releaseSnapshotTicks) {
        this.dropSnapshotData();
        this.snapshotUnusedTicks = 0;
      }
    }
  }

  /**
   * Drops the latest snapshot's data now unless a transfer is using it (a node that just
   * restored it at start-up needs no second copy of its state): a follower that needs it later
   * makes {@link takeSnapshotWanted} true, as after `releaseSnapshotTicks`. True if dropped.
   */
  releaseSnapshotData(): boolean {
    if (!this.snapshotData || this.releaseSnapshotTicks <= 0 || this.sendingSnapshot()) {
      return false;
    }
    this.dropSnapshotData();
    return true;
  }

  /**
   * Snapshot data the core no longer references (released unused, or replaced by a newer
   * snapshot), each once: the host may free it once nothing of its own (a write in progress)
   * and no message still being encoded uses it. Kept only with `releaseSnapshotTicks` set, and
   * then until taken: a host that sets it takes them every tick.
   */
  takeReleasedSnapshotData(): Uint8Array[] {
    const out = this.releasedSnapshotData;
    if (out.length > 0) this.releasedSnapshotData = [];
    return out;
  }

  /** Whether this leader is sending the latest snapshot to a follower. */
  private sendingSnapshot(): boolean {
    if (this.role !== "leader") return false;
    for (const pr of this.progress.values()) if (pr.state === "snapshot") return true;
    return false;
  }

  private dropSnapshotData(): void {
    if (this.snapshotData) this.noteReleased(this.snapshotData.data);
    this.snapshotData = undefined;
  }

  private noteReleased(data: Uint8Array): void {
    if (this.releaseSnapshotTicks > 0) this.releasedSnapshotData.push(data);
  }

  /** Makes `snap` the latest snapshot with data, releasing the one it replaces. */
  private setSnapshotData(snap: Snapshot): void {
    if (this.snapshotData && this.snapshotData.data !== snap.data) {
      this.noteReleased(this.snapshotData.data);
    }
    this.snapshotData = snap;
  }

  /**
   * True (once) when a follower needed a snapshot whose data was released (see
   * `releaseSnapshotTicks`): the host should take one and hand it over with {@link compact}.
   */
  takeSnapshotWanted(): boolean {
    const wanted = this.snapshotWanted;
    this.snapshotWanted = false;
    return wanted;
  }

  /** Starts an election now (used by tests and after a leadership-transfer TimeoutNow). */
  campaign(): void {
    if (!this.promotable()) return;
    if (this.preVote) this.becomePreCandidate();
    else this.becomeCandidate(false);
  }

  /**
   * Appends `data` to the log. Only the leader accepts proposals: elsewhere this throws
   * NotLeaderError with the known leader, and during a leadership transfer UnavailableError.
   */
  propose(data: Uint8Array): { index: number; term: number } {
    this.checkCanPropose();
    const index = this.log.lastIndex() + 1;
    this.appendEntry({ type: "normal", term: this.term, index, data });
    return { index, term: this.term };
  }

  /**
   * Proposes a single-server membership change. It takes effect when appended; only one
   * may be pending (uncommitted) at a time, else UnavailableError.
   */
  proposeConfigChange(change: ConfigChange): { index: number; term: number } {
    this.checkCanPropose();
    if (this.log.term(this.log.committed) !== this.term) {
      // The single-server change rule needs an entry of this term committed first (Raft
      // thesis §4.1 with Ongaro's 2015 correction): otherwise a change appended by a
      // deposed leader and one of ours may both reach a majority of different configs.
      throw new UnavailableError("a new leader makes no membership change before its first commit");
    }
    if (this.pendingConfigIndex > this.log.committed) {
      throw new UnavailableError("a membership change is already in progress");
    }
    const config = applyChange(this.config, change);
    const index = this.log.lastIndex() + 1;
    this.appendEntry({ type: "config", term: this.term, index, change, config });
    this.pendingConfigIndex = index;
    return { index, term: this.term };
  }

  /**
   * Asks for a linearizable read. A ReadState with `context` comes out of a later `ready()`
   * once leadership is confirmed by a quorum, or the context is listed in `droppedReads`.
   * Throws NotLeaderError when no leader is known.
   */
  readIndex(context: number): void {
    if (this.role === "leader") {
      this.leaderReadIndex(context, this.id);
      return;
    }
    if (this.leader === "") throw new NotLeaderError(undefined);
    this.forwardedReads.add(context);
    this.send({ type: "readIndex", from: this.id, to: this.leader, term: this.term, context });
  }

  /**
   * Hands leadership to `target`: it is brought up to date, then told to campaign at once.
   * Proposals are refused until the transfer ends (success, or an election timeout).
   */
  transferLeadership(target: NodeId): void {
    if (this.role !== "leader") throw new NotLeaderError(this.leader || undefined);
    if (target === this.id) return;
    if (!isVoter(this.config, target)) {
      throw new InvalidArgumentError(`${target} is not a voter`);
    }
    this.leadTransferee = target;
    this.electionElapsed = 0;
    const pr = this.progress.get(target);
    if (pr && pr.match === this.log.lastIndex()) {
      this.send({ type: "timeoutNow", from: this.id, to: target, term: this.term });
    } else {
      this.sendAppend(target);
    }
  }

  /**
   * The application took a snapshot of its state machine at `index` (<= applied): keep it
   * to send to followers behind the log, and drop the log up to `index - keepEntries`. The
   * kept tail lets a follower that is only a little behind catch up from the log instead
   * of by a whole snapshot (etcd's SnapshotCatchUpEntries). Returns the snapshot (with the
   * metadata the core computed), which the host persists itself; undefined if not newer.
   */
  compact(index: number, data: Uint8Array, keepEntries = 0): Snapshot | undefined {
    // At the log's own start only when that snapshot's data was released and is supplied again.
    if (index <= (this.snapshotData?.meta.index ?? 0) || index < this.log.snapshot.index) {
      return undefined;
    }
    if (index === this.log.snapshot.index && (index === 0 || this.snapshotData)) return undefined;
    if (index > this.log.applied) {
      throw new InvalidArgumentError(`compact(${index}) beyond applied ${this.log.applied}`);
    }
    const meta: SnapshotMeta = {
      index,
      term: this.log.term(index) ?? 0,
      config: this.log.configAt(index),
    };
    this.setSnapshotData({ meta, data });
    this.snapshotUnusedTicks = 0;
    // The host's store drops its log up to `index` once this snapshot is written, so the tail
    // keeps no evicted entry at or below it (it could not be read back to be sent), and none
    // there is evicted later.
    const base = Math.max(index - Math.max(0, keepEntries), Math.min(this.log.lastEvicted, index));
    if (base > this.log.snapshot.index) {
      this.log.compact({
        index: base,
        term: this.log.term(base) ?? 0,
        config: this.log.configAt(base),
      });
    }
    this.log.skipEvictionThrough(index);
    return this.snapshotData;
  }

  /**
   * Drops from memory the command bytes of the normal entries up to `index` (config entries
   * stay whole): the host's log store holds them, and the host reads them back before it sends
   * an append that carries such an entry (see `isEvicted`). An evicted entry keeps its index,
   * term and size, so elections, conflicts and batch sizes are unchanged. Entries at or below
   * the latest snapshot the host took (`compact`) are never evicted: its store may have
   * dropped them. Only applied, durable entries: beyond {@link evictableIndex} this throws.
   * Returns how many entries were evicted.
   */
  evictData(index: number): number {
    const durable = Math.min(this.persistedIndex, this.log.lastIndex());
    if (index > this.evictableIndex()) {
      throw new RaftInvariantError(
        `evictData(${index}) beyond applied ${this.log.applied} or durable ${durable}`,
      );
    }
    return this.log.evict(index, durable);
  }

  /** The highest index {@link evictData} accepts: applied and durable here. */
  evictableIndex(): number {
    return Math.min(this.log.applied, this.persistedIndex, this.log.lastIndex());
  }

  /** The eviction cursor: entries above it are whole; see {@link evictData}. */
  evictedIndex(): number {
    return this.log.evictedIndex;
  }

  /** The transport could not deliver to `id`: stop pipelining to it and probe instead. */
  reportUnreachable(id: NodeId): void {
    const pr = this.progress.get(id);
    if (this.role === "leader" && pr && pr.state === "replicate") pr.becomeProbe();
  }

  /** Feeds one message received from the network. Unknown, stale or misaddressed input is ignored. */
  step(m: Message): void {
    if (m.to !== this.id) return;
    if (m.term > this.term) {
      if (!this.stepHigherTerm(m)) return;
    } else if (m.term < this.term) {
      this.stepLowerTerm(m);
      return;
    }
    switch (m.type) {
      case "preVote":
        this.handlePreVote(m);
        break;
      case "vote":
        this.handleVote(m);
        break;
      case "preVoteResponse":
      case "voteResponse":
        this.handleVoteResponse(m);
        break;
      case "append":
        this.becomeFollowerOf(m.from);
        this.handleAppend(m);
        break;
      case "appendResponse":
        this.handleAppendResponse(m);
        break;
      case "heartbeat":
        this.becomeFollowerOf(m.from);
        this.handleHeartbeat(m);
        break;
      case "heartbeatResponse":
        this.handleHeartbeatResponse(m);
        break;
      case "readIndex":
        this.handleReadIndexRequest(m);
        break;
      case "readIndexResponse":
        this.handleReadIndexResponse(m);
        break;
      case "snapshot":
        this.becomeFollowerOf(m.from);
        this.handleSnapshot(m);
        break;
      case "snapshotResponse":
        this.handleSnapshotResponse(m);
        break;
      case "timeoutNow":
        if (this.promotable()) this.becomeCandidate(true);
        break;
      default: {
        const never: never = m;
        throw new InvalidArgumentError(`unknown message ${JSON.stringify(never)}`);
      }
    }
  }

  /** Is there anything for the host to do? */
  hasReady(): boolean {
    this.flushAppends();
    return this.msgs.length > 0 || this.log.hasUnstable() || this.log.hasNextCommitted() ||
      this.readStates.length > 0 || this.droppedReads.length > 0 ||
      this.snapshotToPersist !== undefined ||
      !sameHardState(this.hardState(), this.prevHardState) ||
      !sameSoftState(this.softState(), this.prevSoftState);
  }

  /**
   * Takes what the host must do now. The host persists `hardState`, `entries` and
   * `snapshot` durably BEFORE sending `messages` (votes and acknowledgements in them promise
   * that state is on disk) — except a leader's append, heartbeat and snapshot messages, which
   * may go out first (see `isSafeBeforePersist`). It then restores `snapshot` into the state
   * machine, applies `committed` in order, serves `readStates` once applied that far, fails
   * `droppedReads`, and calls `advance()` once the durable part is on disk.
   */
  ready(): Ready {
    this.flushAppends();
    const hs = this.hardState();
    const ss = this.softState();
    const rd: Ready = {
      hardState: sameHardState(hs, this.prevHardState) ? undefined : hs,
      softState: sameSoftState(ss, this.prevSoftState) ? undefined : ss,
      entries: this.log.unstable(),
      snapshot: this.snapshotToPersist,
      messages: this.msgs,
      committed: this.log.nextCommitted(),
      readStates: this.readStates,
      droppedReads: this.droppedReads,
    };
    this.prevHardState = hs;
    this.prevSoftState = ss;
    this.readyLastIndex = this.log.lastIndex();
    this.readyLastTerm = this.log.lastTerm();
    this.log.stableIndex = this.log.lastIndex();
    this.log.applied = Math.max(this.log.applied, this.log.committed);
    this.snapshotToPersist = undefined;
    this.msgs = [];
    this.readStates = [];
    this.droppedReads = [];
    return rd;
  }

  /**
   * Hands out entries committed since the last `ready()` or `takeCommitted()`, so the host
   * can apply them at once instead of waiting for the next Ready (for example while it is
   * still persisting a batch). Committed entries are durable on a majority, so applying them
   * does not wait for this node's own fsync. Empty while a received snapshot is pending.
   */
  takeCommitted(): Entry[] {
    if (this.snapshotToPersist !== undefined || !this.log.hasNextCommitted()) return [];
    const entries = this.log.nextCommitted();
    this.log.applied = this.log.committed;
    return entries;
  }

  /** Acknowledges the last Ready: its durable part is on disk and its entries are applied. */
  advance(): void {
    // ready() already moved the apply and persist cursors. What advance() adds is the
    // leader's own durability: its entries count towards commit only from here on, which is
    // what lets the host send appends before its own fsync (Raft thesis §10.2.1).
    // Entries replaced while the Ready was being written (a new leader truncated them) are not
    // the ones on disk: only what still has the readied term counts (etcd's stableTo).
    const durable = Math.min(this.readyLastIndex, this.log.lastIndex());
    if (durable > this.persistedIndex && this.log.term(durable) === this.readyLastTerm) {
      this.persistedIndex = durable;
    }
    if (this.role === "leader" && this.maybeCommit()) this.commitAdvanced = true;
  }

  /** A copy of the node's state for observers. */
  status(): RaftStatus {
    const progress: Record<NodeId, ProgressView> = {};
    if (this.role === "leader") {
      for (const [id, pr] of this.progress) {
        progress[id] = {
          match: id === this.id ? this.selfMatch() : pr.match,
          next: pr.next,
          state: pr.state,
          active: id === this.id || pr.recentActive,
        };
      }
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      role: this.role,
      leader: this.leader,
      commit: this.log.committed,
      applied: this.log.applied,
      firstIndex: this.log.firstIndex(),
      lastIndex: this.log.lastIndex(),
      durableIndex: Math.min(this.persistedIndex, this.log.lastIndex()),
      snapshotIndex: this.log.snapshot.index,
      snapshotTerm: this.log.snapshot.term,
      logDataBytes: this.log.dataBytes,
      evictedIndex: this.log.evictedIndex,
      snapshotDataBytes: this.snapshotData?.data.length ?? 0,
      config: this.config,
      leadTransferee: this.leadTransferee,
      progress,
    };
  }

  /** Entries in [lo, hi) still in memory; evicted ones carry no command (see `isEvicted`). */
  entries(lo: number, hi: number): readonly Entry[] {
    return this.log.slice(lo, hi);
  }

  // ---------------------------------------------------------------------------------------
  // Roles and elections

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private softState(): SoftState {
    return { leader: this.leader, role: this.role, term: this.term };
  }

  /**
   * Only voters campaign: learners and removed nodes never disrupt the cluster. A node whose
   * own removal is appended but not committed still may: the others may not have the removal
   * and need its vote, which it refuses them (its log is longer), so without its own campaign
   * no leader is ever elected again. It wins only with a majority of the latest configuration,
   * commits its removal there, and then steps down (found by the simulator, seed 771).
   */
  private promotable(): boolean {
    return isVoter(this.config, this.id) ||
      isVoter(this.log.configAt(this.log.committed), this.id);
  }

  private resetRandomizedElectionTicks(): void {
    this.randomizedElectionTicks = this.electionTicks +
      Math.floor(this.random() * this.electionTicks);
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = "";
    }
    this.leader = "";
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTicks();
    this.votes = new Map();
    this.leadTransferee = "";
    this.progress = new Map();
    this.failPendingReads();
  }

  private becomeFollower(term: number, leader: NodeId): void {
    this.reset(term);
    this.role = "follower";
    this.leader = leader;
  }

  /** A message from the leader of our term arrived: make sure we follow it. */
  private becomeFollowerOf(leader: NodeId): void {
    if (this.role !== "follower") {
      this.becomeFollower(this.term, leader);
    } else if (this.leader !== leader) {
      this.failForwardedReads();
      this.leader = leader;
    }
    this.electionElapsed = 0;
  }

  private becomePreCandidate(): void {
    this.failPendingReads();
    this.role = "preCandidate";
    this.leader = "";
    this.votes = new Map([[this.id, true]]);
    this.electionElapsed = 0;
    this.resetRandomizedElectionTicks();
    if (voteResult(this.config.voters, this.votes) === "won") {
      this.becomeCandidate(false);
      return;
    }
    for (const to of this.config.voters) {
      if (to === this.id) continue;
      this.send({
        type: "preVote",
        from: this.id,
        to,
        term: this.term + 1,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
      });
    }
  }

  private becomeCandidate(transfer: boolean): void {
    this.reset(this.term + 1);
    this.role = "candidate";
    this.vote = this.id;
    this.votes = new Map([[this.id, true]]);
    if (voteResult(this.config.voters, this.votes) === "won") {
      this.becomeLeader();
      return;
    }
    for (const to of this.config.voters) {
      if (to === this.id) continue;
      this.send({
        type: "vote",
        from: this.id,
        to,
        term: this.term,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
        transfer,
      });
    }
  }

  private becomeLeader(): void {
    this.reset(this.term);
    this.role = "leader";
    this.leader = this.id;
    for (const id of members(this.config)) this.addProgress(id);
    this.readRound = 0;
    // The no-op of Raft §8: commits everything before it and enables ReadIndex.
    this.appendEntry({
      type: "normal",
      term: this.term,
      index: this.log.lastIndex() + 1,
      data: new Uint8Array(0),
    });
    // Changes already in the log may be uncommitted: allow no new one until the no-op commits.
    this.pendingConfigIndex = this.log.lastIndex();
  }

  private addProgress(id: NodeId): void {
    if (this.progress.has(id)) return;
    const pr = new Progress(this.log.lastIndex() + 1, this.maxInflight);
    pr.recentActive = true;
    this.progress.set(id, pr);
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTicks) {
      this.electionElapsed = 0;
      this.campaign();
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTicks) {
      this.electionElapsed = 0;
      if (this.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, "");
        return;
      }
      if (this.leadTransferee !== "") this.leadTransferee = ""; // the transfer timed out
    }
    for (const [id, pr] of this.progress) {
      if (
        pr.state === "snapshot" && id !== this.id && ++pr.snapshotIdleTicks >= this.electionTicks
      ) {
        pr.snapshotIdleTicks = 0;
        this.sendSnapshotChunk(id, pr); // a chunk or its answer was lost: send it again
      }
    }
    if (this.heartbeatElapsed >= this.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      // Carries the latest read round: its answers confirm every read registered before it.
      this.broadcastHeartbeat(this.pendingReads.length > 0 ? this.readRound : 0);
    }
  }

  /** Has a quorum of voters been heard from since the last check? Resets the marks. */
  private quorumActive(): boolean {
    let active = 0;
    for (const id of this.config.voters) {
      const pr = this.progress.get(id);
      if (id === this.id || pr?.recentActive) active++;
    }
    for (const [id, pr] of this.progress) if (id !== this.id) pr.recentActive = false;
    return active >= majority(this.config.voters.length);
  }

  /** Within an election timeout of hearing from a leader we ignore vote requests (leases). */
  private inLease(): boolean {
    return this.checkQuorum && this.leader !== "" && this.electionElapsed < this.electionTicks;
  }

  /** Returns whether to go on handling `m` after seeing its higher term. */
  private stepHigherTerm(m: Message): boolean {
    if (m.type === "preVote") return true; // a pre-vote never changes our term
    if (m.type === "preVoteResponse" && !m.reject) return true; // granted at our term + 1
    if (m.type === "vote" && !m.transfer && this.inLease()) return false;
    const fromLeader = m.type === "append" || m.type === "heartbeat" || m.type === "snapshot";
    this.becomeFollower(m.term, fromLeader ? m.from : "");
    return true;
  }

  private stepLowerTerm(m: Message): void {
    if (m.type === "append" || m.type === "heartbeat" || m.type === "snapshot") {
      // A deposed leader: tell it our term so it steps down (it may be partitioned
      // behind a pre-vote wall that would otherwise never show it a higher term).
      this.send({
        type: "appendResponse",
        from: this.id,
        to: m.from,
        term: this.term,
        reject: true,
        index: 0,
        hintIndex: 0,
        hintTerm: 0,
      });
    } else if (m.type === "preVote" || m.type === "vote") {
      // Reject with our term, so a candidate that fell behind learns the newer term (§5.1).
      const type = m.type === "preVote" ? "preVoteResponse" : "voteResponse";
      this.send({ type, from: this.id, to: m.from, term: this.term, reject: true });
    }
  }

  private handlePreVote(m: Message & { type: "preVote" }): void {
    const grant = m.term > this.term && !this.inLease() &&
      this.log.isUpToDate(m.lastIndex, m.lastTerm);
    this.send({
      type: "preVoteResponse",
      from: this.id,
      to: m.from,
      term: grant ? m.term : this.term,
      reject: !grant,
    });
  }

  private handleVote(m: Message & { type: "vote" }): void {
    const canVote = this.vote === m.from || (this.vote === "" && this.leader === "");
    const grant = canVote && this.log.isUpToDate(m.lastIndex, m.lastTerm);
    if (grant) {
      this.vote = m.from;
      this.electionElapsed = 0;
    }
    this.send({ type: "voteResponse", from: this.id, to: m.from, term: this.term, reject: !grant });
  }

  private handleVoteResponse(m: Message & { type: "preVoteResponse" | "voteResponse" }): void {
    const expected = this.role === "preCandidate" ? "preVoteResponse" : "voteResponse";
    if (m.type !== expected || (this.role !== "preCandidate" && this.role !== "candidate")) return;
    this.votes.set(m.from, !m.reject);
    switch (voteResult(this.config.voters, this.votes)) {
      case "won":
        if (this.role === "preCandidate") this.becomeCandidate(false);
        else this.becomeLeader();
        break;
      case "lost":
        this.becomeFollower(this.term, "");
        break;
      case "pending":
        break;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Log replication (leader side)

  private checkCanPropose(): void {
    if (this.role !== "leader") throw new NotLeaderError(this.leader || undefined);
    if (this.leadTransferee !== "") {
      throw new UnavailableError(`leadership is moving to ${this.leadTransferee}`);
    }
  }

  private appendEntry(e: Entry): void {
    this.log.append([e]);
    if (e.type === "config") this.applyConfig(e.config);
    this.needsBroadcast = true;
    this.maybeCommit();
  }

  /** A configuration takes effect as soon as its entry is in the log (Raft dissertation §4.1). */
  private applyConfig(config: Config): void {
    this.config = config;
    if (this.role !== "leader") return;
    for (const id of members(config)) this.addProgress(id);
    for (const id of [...this.progress.keys()]) {
      if (!isMember(config, id)) this.progress.delete(id);
    }
    if (this.leadTransferee !== "" && !isVoter(config, this.leadTransferee)) {
      this.leadTransferee = "";
    }
  }

  /** Sends appends that proposals or acknowledgements made possible (batched per ready). */
  private flushAppends(): void {
    if ((!this.needsBroadcast && !this.commitAdvanced) || this.role !== "leader") return;
    const sendIfEmpty = this.commitAdvanced;
    this.needsBroadcast = false;
    this.commitAdvanced = false;
    for (const id of this.progress.keys()) {
      if (id !== this.id) this.sendAppend(id, sendIfEmpty);
    }
  }

  /** Sends `to` whatever it lacks, as far as its progress state allows. */
  private sendAppend(to: NodeId, sendIfEmpty = false): void {
    const pr = this.progress.get(to);
    if (!pr) return;
    let sentAny = false;
    while (!pr.isPaused()) {
      const prevIndex = pr.next - 1;
      const prevTerm = this.log.term(prevIndex);
      if (prevTerm === undefined || pr.next < this.log.firstIndex()) {
        this.startSnapshot(to, pr);
        return;
      }
      const entries = this.log.slice(pr.next, this.log.lastIndex() + 1, this.maxBatchBytes);
      if (entries.length === 0 && (sentAny || !sendIfEmpty)) return;
      this.send({
        type: "append",
        from: this.id,
        to,
        term: this.term,
        prevIndex,
        prevTerm,
        entries,
        commit: this.log.committed,
      });
      sentAny = true;
      pr.sentEntries(prevIndex + entries.length, entries.length);
      if (entries.length === 0) return;
    }
  }

  private startSnapshot(to: NodeId, pr: Progress): void {
    if (!this.snapshotData) {
      this.snapshotWanted = this.releaseSnapshotTicks > 0;
      return;
    }
    pr.becomeSnapshot(this.snapshotData.meta.index);
    this.sendSnapshotChunk(to, pr);
  }

  private sendSnapshotChunk(to: NodeId, pr: Progress): void {
    const snap = this.snapshotData;
    if (!snap || snap.meta.index !== pr.snapshotIndex) {
      // Compacted again since the transfer began: restart it with the newer snapshot.
      pr.becomeProbe();
      this.sendAppend(to);
      return;
    }
    const end = Math.min(pr.snapshotOffset + this.snapshotChunkBytes, snap.data.length);
    this.send({
      type: "snapshot",
      from: this.id,
      to,
      term: this.term,
      meta: snap.meta,
      offset: pr.snapshotOffset,
      data: snap.data.subarray(pr.snapshotOffset, end),
      done: end === snap.data.length,
    });
  }

  private handleAppendResponse(m: AppendResponse): void {
    const pr = this.progress.get(m.from);
    if (this.role !== "leader" || !pr) return;
    pr.recentActive = true;
    if (m.reject) {
      const hint = m.hintTerm > 0
        ? this.log.lastIndexWithTermAtMost(m.hintIndex, m.hintTerm)
        : m.hintIndex;
      if (pr.maybeDecrTo(m.index, hint)) {
        if (pr.state === "replicate") {
          const next = pr.next;
          pr.becomeProbe();
          pr.next = next;
        }
        this.sendAppend(m.from);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (pr.maybeUpdate(m.index)) {
      if (pr.state === "probe") pr.becomeReplicate();
      if (this.maybeCommit()) this.commitAdvanced = true;
      if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
        this.send({ type: "timeoutNow", from: this.id, to: m.from, term: this.term });
      }
    }
    if (wasPaused || pr.next <= this.log.lastIndex()) this.sendAppend(m.from);
  }

  /** Advances the commit index to what a majority has, counting only current-term entries (§5.4.2). */
  private maybeCommit(): boolean {
    if (this.role !== "leader") return false;
    const self = this.selfMatch();
    const index = committedIndex(
      this.config.voters,
      (id) => id === this.id ? self : this.progress.get(id)?.match ?? 0,
    );
    if (index <= this.log.committed || this.log.term(index) !== this.term) return false;
    const firstOfTerm = this.log.committed < index &&
      this.log.term(this.log.committed) !== this.term;
    this.log.committed = index;
    if (firstOfTerm) this.releaseReadsAwaitingCommit();
    if (!isVoter(this.config, this.id) && this.log.lastConfigIndex() <= index) {
      // Our own removal is committed: step down; the others elect a leader among themselves.
      this.becomeFollower(this.term, "");
    }
    return true;
  }

  /** How far the leader's own log is durable. */
  private selfMatch(): number {
    return Math.min(this.persistedIndex, this.log.lastIndex());
  }

  // ---------------------------------------------------------------------------------------
  // Log replication (follower side)

  private handleAppend(m: Append): void {
    if (m.prevIndex < this.log.committed) {
      this.sendAppendResponse(m.from, false, this.log.committed);
      return;
    }
    if (this.log.matchTerm(m.prevIndex, m.prevTerm)) {
      const truncatedAt = this.log.mergeFrom(m.entries);
      if (truncatedAt > 0) {
        this.persistedIndex = Math.min(this.persistedIndex, truncatedAt - 1);
        if (this.readyLastIndex >= truncatedAt) {
          this.readyLastIndex = truncatedAt - 1;
          this.readyLastTerm = this.log.term(truncatedAt - 1) ?? 0;
        }
      }
      this.config = this.log.currentConfig();
      const lastNew = m.prevIndex + m.entries.length;
      this.commitTo(Math.min(m.commit, lastNew));
      this.sendAppendResponse(m.from, false, lastNew);
      return;
    }
    const hintIndex = this.log.lastIndexWithTermAtMost(
      Math.min(m.prevIndex, this.log.lastIndex()),
      m.prevTerm,
    );
    this.send({
      type: "appendResponse",
      from: this.id,
      to: m.from,
      term: this.term,
      reject: true,
      index: m.prevIndex,
      hintIndex,
      hintTerm: this.log.term(hintIndex) ?? 0,
    });
  }

  private sendAppendResponse(to: NodeId, reject: boolean, index: number): void {
    this.send({
      type: "appendResponse",
      from: this.id,
      to,
      term: this.term,
      reject,
      index,
      hintIndex: 0,
      hintTerm: 0,
    });
  }

  private commitTo(index: number): void {
    if (index > this.log.committed) this.log.committed = Math.min(index, this.log.lastIndex());
  }

  private handleHeartbeat(m: Heartbeat): void {
    this.commitTo(m.commit);
    this.send({
      type: "heartbeatResponse",
      from: this.id,
      to: m.from,
      term: this.term,
      context: m.context,
    });
  }

  private broadcastHeartbeat(context: number): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue;
      this.send({
        type: "heartbeat",
        from: this.id,
        to: id,
        term: this.term,
        // Never tell a follower to commit past what it is known to match.
        commit: Math.min(pr.match, this.log.committed),
        context,
      });
    }
  }

  private handleHeartbeatResponse(m: HeartbeatResponse): void {
    const pr = this.progress.get(m.from);
    if (this.role !== "leader" || !pr) return;
    pr.recentActive = true;
    if (pr.state === "probe") pr.probeSent = false;
    if (pr.state === "replicate" && pr.match < this.log.lastIndex()) {
      // Appends of a pipeline may be lost for good (a reconnect drops what was in flight);
      // several heartbeat rounds without progress mean exactly that: probe from the match.
      if (++pr.stalledHeartbeats >= STALLED_HEARTBEATS) pr.becomeProbe();
    }
    if (pr.state !== "snapshot" && pr.match < this.log.lastIndex()) this.sendAppend(m.from);
    if (m.context > 0) this.ackRead(m.context, m.from);
  }

  // ---------------------------------------------------------------------------------------
  // Snapshots

  private handleSnapshot(m: InstallSnapshot): void {
    const respond = (offset: number, done: boolean, reject: boolean) =>
      this.send({
        type: "snapshotResponse",
        from: this.id,
        to: m.from,
        term: this.term,
        index: m.meta.index,
        offset,
        done,
        reject,
      });
    if (m.meta.index <= this.log.committed) {
      // Already have everything it covers: tell the leader we are done with it.
      respond(0, true, false);
      return;
    }
    let inc = this.incomingSnapshot;
    if (!inc || inc.meta.index !== m.meta.index || inc.meta.term !== m.meta.term) {
      if (m.offset !== 0) {
        respond(0, false, false); // ask the leader to start over
        return;
      }
      inc = { meta: m.meta, chunks: [], received: 0 };
      this.incomingSnapshot = inc;
    }
    if (m.offset === inc.received) {
      inc.chunks.push(m.data.slice());
      inc.received += m.data.length;
    }
    if (!m.done || m.offset + m.data.length !== inc.received) {
      respond(inc.received, false, false);
      return;
    }
    const data = concat(inc.chunks, inc.received);
    this.incomingSnapshot = undefined;
    this.restoreSnapshot({ meta: m.meta, data });
    respond(inc.received, true, false);
  }

  private restoreSnapshot(snap: Snapshot): void {
    const meta = snap.meta;
    if (this.log.matchTerm(meta.index, meta.term)) {
      // Our log already holds the snapshot's last entry: just commit up to it (etcd does the same).
      this.commitTo(meta.index);
      return;
    }
    this.log.restore(meta);
    this.persistedIndex = Math.min(this.persistedIndex, meta.index);
    this.config = meta.config;
    this.setSnapshotData(snap);
    this.snapshotToPersist = snap;
  }

  private handleSnapshotResponse(m: SnapshotResponse): void {
    const pr = this.progress.get(m.from);
    if (this.role !== "leader" || !pr) return;
    pr.recentActive = true;
    if (pr.state !== "snapshot" || m.index !== pr.snapshotIndex) return;
    pr.snapshotIdleTicks = 0;
    if (m.reject) {
      pr.becomeProbe();
      this.sendAppend(m.from);
      return;
    }
    if (m.done) {
      pr.maybeUpdate(m.index);
      pr.becomeProbe();
      this.sendAppend(m.from);
      return;
    }
    // Equal offsets answer a chunk already answered (duplicates); the idle timer covers loss.
    if (m.offset === pr.snapshotOffset) return;
    pr.snapshotOffset = m.offset;
    this.sendSnapshotChunk(m.from, pr);
  }

  // ---------------------------------------------------------------------------------------
  // ReadIndex (Raft dissertation §6.4)

  private leaderReadIndex(context: number, from: NodeId): void {
    if (this.log.term(this.log.committed) !== this.term) {
      // Until an entry of this term commits, our commit index may lag the true one.
      this.readsAwaitingCommit.push({ context, from });
      return;
    }
    const read: PendingRead = {
      context,
      round: this.readRound + 1,
      index: this.log.committed,
      from,
      acks: new Set([this.id]),
    };
    if (this.hasQuorum(read.acks)) {
      this.releaseRead(read);
      return;
    }
    // A new round: heartbeats sent from now on carry its id, and an answer echoing it was
    // sent after the read was registered (Raft thesis §6.4). The asker's context never
    // confirms anything, so two askers choosing the same number cannot confuse rounds.
    this.readRound++;
    this.pendingReads.push(read);
    this.broadcastHeartbeat(this.readRound);
  }

  private releaseReadsAwaitingCommit(): void {
    const waiting = this.readsAwaitingCommit;
    this.readsAwaitingCommit = [];
    for (const r of waiting) this.leaderReadIndex(r.context, r.from);
  }

  private hasQuorum(acks: ReadonlySet<NodeId>): boolean {
    let n = 0;
    for (const id of this.config.voters) if (acks.has(id)) n++;
    return n >= majority(this.config.voters.length);
  }

  /**
   * `from` answered a heartbeat of `round`: it confirms every read of that round or older.
   * An older read has every ack a newer one has, so the confirmed reads are a prefix.
   */
  private ackRead(round: number, from: NodeId): void {
    let last = -1;
    for (let i = 0; i < this.pendingReads.length; i++) {
      const r = this.pendingReads[i];
      if (r.round > round) break; // pendingReads is in round order
      r.acks.add(from);
      if (this.hasQuorum(r.acks)) last = i;
    }
    const released = this.pendingReads.splice(0, last + 1);
    for (const r of released) this.releaseRead(r);
  }

  private releaseRead(read: PendingRead): void {
    if (read.from === this.id) {
      this.readStates.push({ context: read.context, index: read.index });
    } else {
      this.sendReadIndexResponse(read.from, read.context, read.index, false);
    }
  }

  private sendReadIndexResponse(to: NodeId, context: number, index: number, reject: boolean): void {
    this.send({
      type: "readIndexResponse",
      from: this.id,
      to,
      term: this.term,
      context,
      index,
      reject,
    });
  }

  private handleReadIndexRequest(m: ReadIndexRequest): void {
    if (this.role !== "leader") {
      this.sendReadIndexResponse(m.from, m.context, 0, true);
      return;
    }
    this.leaderReadIndex(m.context, m.from);
  }

  private handleReadIndexResponse(m: ReadIndexResponse): void {
    if (!this.forwardedReads.delete(m.context)) return;
    if (m.reject) this.droppedReads.push(m.context);
    else this.readStates.push({ context: m.context, index: m.index });
  }

  /** Leadership (or our knowledge of the leader) changed: no pending read can be confirmed. */
  private failPendingReads(): void {
    for (const r of [...this.pendingReads, ...this.readsAwaitingCommit]) {
      if (r.from === this.id) this.droppedReads.push(r.context);
      else this.sendReadIndexResponse(r.from, r.context, 0, true);
    }
    this.pendingReads = [];
    this.readsAwaitingCommit = [];
    this.failForwardedReads();
  }

  private failForwardedReads(): void {
    for (const c of this.forwardedReads) this.droppedReads.push(c);
    this.forwardedReads.clear();
  }

  private send(m: Message): void {
    this.msgs.push(m);
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function sameSoftState(a: SoftState, b: SoftState): boolean {
  return a.term === b.term && a.leader === b.leader && a.role === b.role;
}

function concat(chunks: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * May `m` be sent before the Ready it came in is persisted? A leader's replication messages
 * may: the leader counts its own entries towards commit only after `advance()`, and a
 * follower's acknowledgement is what promises durability. Everything else (votes, vote
 * answers, append answers) promises local state and must wait for the fsync.
 */
export function isSafeBeforePersist(m: Message): boolean {
  return m.type === "append" || m.type === "heartbeat" || m.type === "snapshot";
}
