/**
 * The Raft core's vocabulary: node ids, log entries, configurations, messages and the
 * `Ready` batch. Everything here crosses the boundary between the pure core and its host,
 * so it is plain readonly data that the host can encode, persist and send as it likes.
 */

/** A node's stable identity (mokv uses the node name). */
export type NodeId = string;

/** The cluster configuration: who votes, who only learns, and how to reach each node. */
export interface Config {
  /** Nodes whose votes and acknowledgements count towards quorum. */
  readonly voters: readonly NodeId[];
  /** Non-voting members that receive the log (a node catching up before promotion). */
  readonly learners: readonly NodeId[];
  /** Opaque address per member (mokv stores the RPC address); carried, never interpreted. */
  readonly addresses: Readonly<Record<NodeId, string>>;
}

/**
 * A single-server membership change, in effect as soon as its entry is appended.
 * "bootstrap" only marks the initial configuration of a new cluster (entry 1).
 */
export type ConfigChange =
  | { readonly type: "bootstrap" }
  | { readonly type: "addVoter"; readonly id: NodeId; readonly address: string }
  | { readonly type: "addLearner"; readonly id: NodeId; readonly address: string }
  | { readonly type: "promote"; readonly id: NodeId }
  | { readonly type: "remove"; readonly id: NodeId };

/** A normal entry carries application data; an empty `data` is the leader's no-op. */
export interface NormalEntry {
  readonly type: "normal";
  readonly term: number;
  readonly index: number;
  readonly data: Uint8Array;
}

/** A configuration entry carries the whole configuration that results from `change`. */
export interface ConfigEntry {
  readonly type: "config";
  readonly term: number;
  readonly index: number;
  readonly change: ConfigChange;
  readonly config: Config;
}

/** One log entry. */
export type Entry = NormalEntry | ConfigEntry;

/** What must survive a crash besides the log: the current term, the vote, the commit index. */
export interface HardState {
  readonly term: number;
  /** Whom this node voted for in `term`, or "" for nobody. */
  readonly vote: NodeId;
  readonly commit: number;
}

/** Describes the log prefix a snapshot replaces. */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly config: Config;
}

/** An application snapshot: the state machine as of `meta.index`, opaque to the core. */
export interface Snapshot {
  readonly meta: SnapshotMeta;
  readonly data: Uint8Array;
}

/** A confirmed read: once the state machine has applied `index`, the read `context` may be served. */
export interface ReadState {
  readonly context: number;
  readonly index: number;
}

/** A node's role. "preCandidate" is the pre-vote phase, which does not bump the term. */
export type Role = "follower" | "preCandidate" | "candidate" | "leader";

/** Volatile state the host may show (metrics, GetServers); never needs persisting. */
export interface SoftState {
  readonly leader: NodeId;
  readonly role: Role;
  readonly term: number;
}

interface Envelope {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
}

/** Pre-vote request: would you vote for me at `term` (my term + 1, not yet taken)? */
export interface PreVote extends Envelope {
  readonly type: "preVote";
  readonly lastIndex: number;
  readonly lastTerm: number;
}

/** Vote request. `transfer` marks an election started by TimeoutNow, which ignores leases. */
export interface Vote extends Envelope {
  readonly type: "vote";
  readonly lastIndex: number;
  readonly lastTerm: number;
  readonly transfer: boolean;
}

/** Answer to a PreVote or Vote. */
export interface VoteResponse extends Envelope {
  readonly type: "preVoteResponse" | "voteResponse";
  readonly reject: boolean;
}

/** Log replication; an empty `entries` still carries `commit`. */
export interface Append extends Envelope {
  readonly type: "append";
  readonly prevIndex: number;
  readonly prevTerm: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
}

/**
 * Answer to an Append. On success `index` is the follower's last matching index. On reject,
 * `index` is the rejected `prevIndex`, and the hint lets the leader skip whole conflicting
 * terms at once (etcd-io/raft's findConflictByTerm): `hintIndex` is the follower's largest
 * index <= prevIndex whose term is <= the leader's prevTerm, and `hintTerm` that entry's term.
 */
export interface AppendResponse extends Envelope {
  readonly type: "appendResponse";
  readonly reject: boolean;
  readonly index: number;
  readonly hintIndex: number;
  readonly hintTerm: number;
}

/** Leader liveness and commit propagation; `context` > 0 confirms leadership for ReadIndex. */
export interface Heartbeat extends Envelope {
  readonly type: "heartbeat";
  readonly commit: number;
  readonly context: number;
}

/** Answer to a Heartbeat, echoing its context. */
export interface HeartbeatResponse extends Envelope {
  readonly type: "heartbeatResponse";
  readonly context: number;
}

/** A follower asks the leader for a read index for its `context`. */
export interface ReadIndexRequest extends Envelope {
  readonly type: "readIndex";
  readonly context: number;
}

/** The leader's answer: serve `context` once `index` is applied, or `reject` (not leader). */
export interface ReadIndexResponse extends Envelope {
  readonly type: "readIndexResponse";
  readonly context: number;
  readonly index: number;
  readonly reject: boolean;
}

/** One chunk of a snapshot; the follower installs it when `done` arrives after all chunks. */
export interface InstallSnapshot extends Envelope {
  readonly type: "snapshot";
  readonly meta: SnapshotMeta;
  readonly offset: number;
  readonly data: Uint8Array;
  readonly done: boolean;
}

/** Acknowledges a snapshot chunk (`offset` = bytes received so far) or rejects the transfer. */
export interface SnapshotResponse extends Envelope {
  readonly type: "snapshotResponse";
  readonly index: number;
  readonly offset: number;
  readonly reject: boolean;
  readonly done: boolean;
}

/** Leadership transfer: the target starts an election at once. */
export interface TimeoutNow extends Envelope {
  readonly type: "timeoutNow";
}

/** Every message Raft nodes exchange. */
export type Message =
  | PreVote
  | Vote
  | VoteResponse
  | Append
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse
  | ReadIndexRequest
  | ReadIndexResponse
  | InstallSnapshot
  | SnapshotResponse
  | TimeoutNow;

/** The `type` tags of every message. */
export type MessageType = Message["type"];

/**
 * What the host must do next. The persistence contract: the host makes `hardState`,
 * `entries` and `snapshot` durable (in that one batch) BEFORE it sends `messages`, because
 * votes and append acknowledgements in them promise that state is on disk. The one
 * exception is a leader's replication traffic (`isSafeBeforePersist`): the leader counts its
 * own entries towards commit only after `advance()`, so its appends may overlap its fsync.
 * It then applies `committed` in order (after restoring `snapshot`, if any), serves the
 * reads in `readStates` once applied far enough, and calls `advance()`.
 */
export interface Ready {
  /** Present when term, vote or commit changed since the last Ready. */
  readonly hardState?: HardState;
  /** Entries to append to stable storage; they replace any stored entries from `entries[0].index` on. */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader: persist it, drop the log it covers, restore the state machine. */
  readonly snapshot?: Snapshot;
  /** Messages to send once the above is durable. */
  readonly messages: readonly Message[];
  /** Committed entries to apply to the state machine, in order. */
  readonly committed: readonly Entry[];
  /** Confirmed reads. */
  readonly readStates: readonly ReadState[];
  /** Read contexts that can no longer be confirmed (leadership lost, request refused): fail them. */
  readonly droppedReads: readonly number[];
  /** Present when leader, role or term changed since the last Ready. */
  readonly softState?: SoftState;
}

/** What a restarting node read back from stable storage. */
export interface PersistedState {
  readonly hardState: HardState;
  /** The latest snapshot's metadata, if a snapshot was taken or installed. */
  readonly snapshot?: Snapshot;
  /** Log entries after the snapshot, in index order, without gaps. */
  readonly entries: readonly Entry[];
}

/** A seeded random source in [0, 1); injected so the core stays deterministic. */
export type Random = () => number;
