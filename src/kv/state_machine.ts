/**
 * The replicated KV state machine (the FSM of hashicorp/raft's fsm.go): an ordered map of
 * key -> {value, version} plus client sessions, changed only by applying committed log entries
 * in index order. Every replica that applies the same entries reaches the same state.
 */
import sortedBtree from "sorted-btree";
import bulkLoadModule from "sorted-btree/extended/bulkLoad.js";
import { InvalidArgumentError } from "../errors.ts";
import { BinaryReader, BinaryWriter, utf8Length } from "./_binary.ts";
import {
  type Command,
  type CommandResult,
  decodeCommand,
  type Refusal,
  type RefusalReason,
} from "./commands.ts";
import { compareKeys } from "./key_order.ts";
import { ValueArena } from "./value_arena.ts";
import {
  DEFAULT_HISTORY_BYTES,
  DEFAULT_HISTORY_REVISIONS,
  EventHistory,
  type KvEvent,
  type RevisionEvents,
} from "./history.ts";
import { ETCD_ERRORS, EtcdError, evaluateRange, executeTxn, type TxnStore } from "./etcd_txn.ts";
import type { RangeRequest, RangeResponse } from "./etcd_wire.ts";

/**
 * A stored value with etcd's metadata. Never mutated in place (the event history shares it).
 * Revisions are Raft indexes: every key one entry writes gets that entry's index.
 */
export interface KvEntry {
  readonly value: Uint8Array;
  /** Revision of the key's last write (mökv's `version`, etcd's `mod_revision`). */
  readonly version: number;
  /** Revision that created the key since it last did not exist (etcd's `create_revision`). */
  readonly created: number;
  /** Writes since creation, 1 on creation (etcd's `version`). */
  readonly writes: number;
  /** Lease the key is attached to; 0 for none. */
  readonly lease: number;
}

/**
 * How the state machine stores a {@link KvEntry}: the value's place in an arena slab rather
 * than a view of it. A Uint8Array view is about 100 bytes of heap and one more object for the
 * garbage collector to mark per key (30 MiB at 300,000 keys); `value` makes a view on each
 * read instead, which dies young.
 */
class StoredEntry implements KvEntry {
  private readonly buffer: ArrayBufferLike;
  private readonly offset: number;
  private readonly length: number;
  readonly version: number;
  readonly created: number;
  readonly writes: number;
  readonly lease: number;

  /** `value` is one the arena returned (it stays the arena's; this keeps only its place). */
  constructor(value: Uint8Array, version: number, created: number, writes: number, lease: number) {
    this.buffer = value.buffer;
    this.offset = value.byteOffset;
    this.length = value.length;
    this.version = version;
    this.created = created;
    this.writes = writes;
    this.lease = lease;
  }

  get value(): Uint8Array {
    return new Uint8Array(this.buffer, this.offset, this.length);
  }
}

/** One item of {@link KvStateMachine.list}. */
export interface KvListItem extends KvEntry {
  readonly key: string;
}

/** Which keys {@link KvStateMachine.list} yields. */
export interface ListOptions {
  /** Only keys starting with this prefix (default: all). */
  readonly prefix?: string;
  /** Only keys >= start (inclusive; default: from the first key). */
  readonly start?: string;
  /** At most this many items; 0 or absent means no limit. */
  readonly limit?: number;
}

/**
 * Session settings. They change what `apply` computes, so every replica of a cluster must use
 * the same values.
 */
export interface KvStateMachineOptions {
  /** A session unused for this long in log time (see {@link KvStateMachine}) is forgotten. Default 1 h. */
  readonly sessionTtlMs?: number;
  /**
   * At most this many sessions per subject; beyond, the subject's least recently used goes
   * first. Default 100,000.
   */
  readonly maxSessionsPerSubject?: number;
  /**
   * At most this many session bytes per subject (see {@link SESSION_OVERHEAD_BYTES}); beyond,
   * the subject's least recently used go first. Default 16 MiB.
   */
  readonly maxSessionBytesPerSubject?: number;
  /**
   * At most this many session bytes in all; beyond, the least recently used session of the
   * subject holding the most bytes goes first, so a subject within its share is never evicted
   * by another. Default 256 MiB.
   */
  readonly maxSessionBytes?: number;
  /** Revisions the event history keeps for watches and ranges at a revision. Default 100,000. */
  readonly historyRevisions?: number;
  /** Bytes the event history may account for. Default 64 MiB. */
  readonly historyBytes?: number;
  /** Leases that may exist at once; a grant beyond is refused. Default 100,000. */
  readonly maxLeases?: number;
  /** Keys one lease may hold; attaching more is refused. Default 10,000. */
  readonly maxKeysPerLease?: number;
}

/** A lease as the state machine keeps it (etcd's). */
export interface LeaseInfo {
  readonly id: number;
  readonly ttlSeconds: number;
  /** The subject that granted it: only it (or an admin) keeps it alive or revokes it. */
  readonly owner: string;
  /** The keys attached to it. */
  readonly keys: ReadonlySet<string>;
  /** Index of its grant or of its last keep-alive applied. */
  readonly renewedIndex: number;
}

/** A lease command applied: every node's lessor restarts or drops its TTL clock on it. */
export interface LeaseEvent {
  readonly type: "grant" | "keepalive" | "revoke";
  readonly leaseId: number;
  readonly ttlSeconds: number;
  /** A revoke only: the leader's lessor revoked it on expiry (not a client's LeaseRevoke). */
  readonly expired?: boolean;
}

/** Default {@link KvStateMachineOptions.maxLeases}. */
export const DEFAULT_MAX_LEASES = 100_000;
/** Default {@link KvStateMachineOptions.maxKeysPerLease}. */
export const DEFAULT_MAX_KEYS_PER_LEASE = 10_000;

interface Lease {
  readonly id: number;
  readonly ttlSeconds: number;
  readonly owner: string;
  readonly keys: Set<string>;
  renewedIndex: number;
}

/**
 * Default data-size quota (2 GiB, etcd's default `quota-backend-bytes`): the `quota-bytes`
 * a proposing node puts in its commands unless configured otherwise.
 */
export const DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024;
/** Default {@link KvStateMachineOptions.sessionTtlMs}: one hour. */
export const DEFAULT_SESSION_TTL_MS = 3_600_000;
/** Default {@link KvStateMachineOptions.maxSessionsPerSubject}. */
export const DEFAULT_MAX_SESSIONS_PER_SUBJECT = 100_000;
/** Default {@link KvStateMachineOptions.maxSessionBytesPerSubject}: 16 MiB. */
export const DEFAULT_MAX_SESSION_BYTES_PER_SUBJECT = 16 * 1024 * 1024;
/** Default {@link KvStateMachineOptions.maxSessionBytes}: 256 MiB. */
export const DEFAULT_MAX_SESSION_BYTES = 256 * 1024 * 1024;
/**
 * What one session is charged beyond its subject, client id and cached value bytes: the map
 * entries and objects that hold it (an estimate, the same on every replica).
 */
export const SESSION_OVERHEAD_BYTES = 128;
/**
 * Most log time one command can add (1 min): even a clock source whose readings jump ahead
 * (a resumed VM, a stepped clock) needs many commands to move log time by a session TTL.
 */
export const MAX_CLOCK_STEP_MS = 60_000;
/** Clock sources remembered (least recently used forgotten; a forgotten one re-anchors). */
export const MAX_CLOCK_SOURCES = 64;

// CommonJS interop: the default import is module.exports, whose `default` is the class.
const BTree = sortedBtree.default;
const { bulkLoad } = bulkLoadModule;
/** sorted-btree's default node size, also used when restoring in bulk. */
const BTREE_NODE_SIZE = 64;
type Tree = InstanceType<typeof BTree<string, KvEntry>>;

interface Session {
  readonly subject: string;
  readonly clientId: string;
  readonly lastSeq: number;
  readonly lastUsedMs: number;
  readonly result: CommandResult;
  /** What this session counts against its subject's and the global byte budgets. */
  readonly costBytes: number;
}

/** One subject's sessions, least recently used first, and what they cost. */
interface SubjectSessions {
  readonly sessions: Map<string, Session>;
  bytes: number;
}

/** Where a clock source's readings map onto log time: `readingMs` was read at `logTimeMs`. */
interface ClockAnchor {
  readonly readingMs: number;
  readonly logTimeMs: number;
}

const NOT_APPLIED: CommandResult = Object.freeze({ ok: false, version: 0 });
const SNAPSHOT_MAGIC = [0x4d, 0x4b, 0x56, 0x53]; // "MKVS"
/**
 * Version 3 adds etcd's key metadata (create revision, writes, lease) and the store revision;
 * version 2 added clock anchors, session subjects and refusals; versions 1 and 2 still restore.
 */
const SNAPSHOT_VERSION = 4;
/** Before leases kept the index of their last renewal. */
const SNAPSHOT_VERSION_3 = 3;
const SNAPSHOT_VERSION_2 = 2;
const LEGACY_SNAPSHOT_VERSION = 1;
const R_OK = 1, R_VALUE = 2, R_HAS_EXISTED = 4, R_EXISTED = 8, R_LENGTH = 16, R_REFUSED = 32;
const REFUSAL_CODES: Readonly<Record<RefusalReason, number>> = {
  "value-too-large": 1,
  "quota-exceeded": 2,
};

/** The map key of a session: unambiguous for any subject and client id. */
function sessionKey(subject: string, clientId: string): string {
  return `${subject.length}:${subject}${clientId}`;
}

function sessionCost(subject: string, clientId: string, result: CommandResult): number {
  return SESSION_OVERHEAD_BYTES + utf8Length(subject) + utf8Length(clientId) +
    (result.value?.length ?? 0);
}

/**
 * Ordered in-memory map driven by the Raft log.
 *
 * Guarantees: `apply` is deterministic (same entries and options → same state and results on
 * every replica) and never throws, so a bad entry can never wedge the log; keys are kept in
 * {@link compareKeys} order; `restore` replaces the whole state.
 *
 * Limits travel in the commands (`maxValueBytes`, `quotaBytes`, set by the proposing node
 * from its configuration) rather than in this object's options: the log entry alone decides,
 * so replicas whose configurations differ (a rolling change) still apply identically. A write
 * whose value would exceed `maxValueBytes`, or that grows the stored bytes above
 * `quotaBytes`, changes nothing and answers `refused`; deletes and shrinking writes always
 * apply.
 *
 * Client sessions give exactly-once writes: a command with `session {subject, clientId, seq}`
 * whose seq equals the session's last applied seq returns that seq's cached result (refusals
 * included) without applying again. Only the last result per client is kept, so a client must
 * have at most one write in flight per clientId; a seq lower than the last one (a stale
 * duplicate nobody waits for) is not applied and returns `{ok: false, version: 0}`. Sessions
 * are keyed by subject and client id and bounded per subject (count and bytes) and in all
 * (bytes): a subject over its budget evicts only its own least recently used sessions, and over
 * the global budget the subject holding the most bytes gives one up first.
 *
 * Log time, which expires sessions after `sessionTtlMs` without use, never follows a node's
 * wall clock: each command's `timeMs` is a reading of its `clockSource`, and only the time
 * elapsed between two readings of the same source advances log time, by at most
 * {@link MAX_CLOCK_STEP_MS} per command. A source seen for the first time (a new node, a
 * restarted process, a clock an hour ahead) is anchored at the current log time and moves
 * nothing; a reading that goes backwards re-anchors. So one node with a skewed clock cannot
 * expire sessions early: it can only add the time that really passed on it (a clock running
 * fast by a factor f shortens a TTL by that factor, never to zero at once). Expiry is decided
 * by the log alone, hence deterministic.
 */
export class KvStateMachine {
  readonly sessionTtlMs: number;
  readonly maxSessionsPerSubject: number;
  readonly maxSessionBytesPerSubject: number;
  readonly maxSessionBytes: number;
  #tree: Tree = new BTree<string, KvEntry>(undefined, compareKeys);
  /** Holds the bytes of every stored value (values never view a log entry or a snapshot). */
  #arena = new ValueArena();
  /** All sessions; insertion order is least recently used first (a use re-inserts at the end). */
  #sessions = new Map<string, Session>();
  /** The same sessions by subject, each in least-recently-used order. */
  #bySubject = new Map<string, SubjectSessions>();
  #sessionBytes = 0;
  /** Clock sources by name, least recently used first. */
  #clocks = new Map<string, ClockAnchor>();
  #appliedIndex = 0;
  #logTimeMs = 0;
  #byteCount = 0;
  #quotaAlarm = false;
  /** Bumped on every change of the tree so running `list` iterators can re-seek. */
  #mutations = 0;
  /** Revision of the last entry that changed a key (etcd's store revision). */
  #revision = 0;
  /** etcd's compacted revision: ranges and watches at or below it are refused. */
  #compacted = 0;
  #history: EventHistory;
  /** Changes of the entry being applied, published once it is done. */
  #events: KvEvent[] = [];
  #eventListeners: ((rev: RevisionEvents) => void)[] = [];
  #resetListeners: ((revision: number) => void)[] = [];
  #leases = new Map<number, Lease>();
  /** Callers waiting until the applied index reaches theirs (see whenApplied). */
  #appliedWaiters: { index: number; resolve: () => void }[] = [];
  #leaseListeners: ((e: LeaseEvent) => void)[] = [];
  readonly maxLeases: number;
  readonly maxKeysPerLease: number;

  constructor(options: KvStateMachineOptions = {}) {
    this.sessionTtlMs = options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
    this.maxSessionsPerSubject = options.maxSessionsPerSubject ??
      DEFAULT_MAX_SESSIONS_PER_SUBJECT;
    this.maxSessionBytesPerSubject = options.maxSessionBytesPerSubject ??
      DEFAULT_MAX_SESSION_BYTES_PER_SUBJECT;
    this.maxSessionBytes = options.maxSessionBytes ?? DEFAULT_MAX_SESSION_BYTES;
    this.maxLeases = options.maxLeases ?? DEFAULT_MAX_LEASES;
    this.maxKeysPerLease = options.maxKeysPerLease ?? DEFAULT_MAX_KEYS_PER_LEASE;
    this.#history = new EventHistory(
      options.historyRevisions ?? DEFAULT_HISTORY_REVISIONS,
      options.historyBytes ?? DEFAULT_HISTORY_BYTES,
    );
    if (!(this.sessionTtlMs > 0)) throw new InvalidArgumentError("sessionTtlMs must be > 0");
    for (
      const [name, v] of [
        ["maxSessionsPerSubject", this.maxSessionsPerSubject],
        ["maxSessionBytesPerSubject", this.maxSessionBytesPerSubject],
        ["maxSessionBytes", this.maxSessionBytes],
      ] as const
    ) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new InvalidArgumentError(`${name} must be an integer >= 1`);
      }
    }
  }

  /** Index of the last log entry applied (or marked applied, or restored). */
  get appliedIndex(): number {
    return this.#appliedIndex;
  }

  /** Revision of the last write that changed a key (etcd's header revision); 0 when none. */
  get revision(): number {
    return this.#revision;
  }

  /**
   * Highest revision no longer answerable: a Range at it or below, or a watch from it or
   * below, is refused as compacted. Rises with `Compact`, with the history's bounds, and to
   * the store revision of a restored snapshot (whose history is not carried).
   */
  get compactedRevision(): number {
    return Math.max(this.#compacted, this.#history.floor);
  }

  /** The event history (read-only use: watches and ranges at a revision). */
  get history(): EventHistory {
    return this.#history;
  }

  /**
   * Calls `listener` after every applied entry that changed keys, with all its changes (a
   * transaction's together), in revision order. Returns a function that unsubscribes.
   */
  onEvents(listener: (rev: RevisionEvents) => void): () => void {
    this.#eventListeners.push(listener);
    return () => {
      this.#eventListeners = this.#eventListeners.filter((l) => l !== listener);
    };
  }

  /**
   * Calls `listener` when a snapshot replaced the whole state (its store revision given):
   * events between the old state and the new were never seen, so watchers behind must resync.
   */
  onReset(listener: (revision: number) => void): () => void {
    this.#resetListeners.push(listener);
    return () => {
      this.#resetListeners = this.#resetListeners.filter((l) => l !== listener);
    };
  }

  /** The lease `id`, or undefined. */
  lease(id: number): LeaseInfo | undefined {
    return this.#leases.get(id);
  }

  /** Every lease, in grant order. */
  leases(): LeaseInfo[] {
    return [...this.#leases.values()];
  }

  /** Calls `listener` after every applied lease grant, keep-alive and revoke. */
  onLease(listener: (e: LeaseEvent) => void): () => void {
    this.#leaseListeners.push(listener);
    return () => {
      this.#leaseListeners = this.#leaseListeners.filter((l) => l !== listener);
    };
  }

  /** Number of keys stored. */
  get keyCount(): number {
    return this.#tree.size;
  }

  /** Sum of the UTF-8 key lengths and value lengths stored, in bytes (what the quota counts). */
  get byteCount(): number {
    return this.#byteCount;
  }

  /** Number of client sessions remembered. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Bytes the remembered sessions are charged (see {@link SESSION_OVERHEAD_BYTES}). */
  get sessionBytes(): number {
    return this.#sessionBytes;
  }

  /** Log time in milliseconds: what session expiry is measured in (see the class comment). */
  get logTimeMs(): number {
    return this.#logTimeMs;
  }

  /**
   * True once a write was refused for the data-size quota, until a write frees space (etcd's
   * NOSPACE alarm). Observational only: not part of snapshots, never changes a result.
   */
  get quotaAlarm(): boolean {
    return this.#quotaAlarm;
  }

  /**
   * Applies the log entry at `index` (which must exceed `appliedIndex`; an older index is
   * ignored and answers `{ok: false, version: 0}`). An entry that does not decode still
   * advances `appliedIndex` and answers `{ok: false, version: 0}`.
   */
  apply(index: number, data: Uint8Array): CommandResult {
    if (!(index > this.#appliedIndex)) return NOT_APPLIED;
    this.#appliedIndex = index;
    if (this.#appliedWaiters.length > 0) queueMicrotask(() => this.#releaseWaiters());
    let cmd: Command;
    try {
      cmd = decodeCommand(data);
    } catch {
      return NOT_APPLIED;
    }
    this.#advanceClock(cmd.clockSource ?? "", cmd.timeMs);
    this.#expireSessions();
    const session = cmd.session;
    const key = session ? sessionKey(session.subject ?? "", session.clientId) : "";
    if (session) {
      const known = this.#sessions.get(key);
      if (known && session.seq <= known.lastSeq) {
        this.#touch(known.subject, known.clientId, known.lastSeq, known.result);
        return session.seq === known.lastSeq ? known.result : NOT_APPLIED;
      }
    }
    const result = this.#execute(index, cmd);
    if (session) this.#touch(session.subject ?? "", session.clientId, session.seq, result);
    this.#publish(index);
    if (this.#arena.wasteful) this.#compactValues();
    return result;
  }

  /**
   * Re-copies the values that sit in slabs less than half live, so that overwritten values
   * stop pinning old slabs: afterwards the slabs hold at most about twice the live bytes.
   * Runs once the arena pins 2.5 times the live bytes, so its cost is amortised over at least
   * as many bytes written as it copies.
   */
  #compactValues(): void {
    const moved: [string, KvEntry][] = [];
    this.#tree.forEachPair((key, entry) => {
      if (this.#arena.sparse(entry.value)) moved.push([key, entry]);
    });
    for (const [key, entry] of moved) {
      const value = this.#arena.copy(entry.value);
      this.#arena.release(entry.value);
      this.#tree.set(
        key,
        new StoredEntry(value, entry.version, entry.created, entry.writes, entry.lease),
      );
    }
    if (moved.length > 0) this.#mutations++;
  }

  /** Records the changes the entry at `index` made, as one revision, and tells listeners. */
  #publish(index: number): void {
    if (this.#events.length === 0) return;
    // A copy of exact length: the working array grew to hold them and keeps its capacity
    // (a one-event array that grew by push holds 17 slots; the history keeps 100,000 of them).
    const rev: RevisionEvents = { revision: index, events: this.#events.slice() };
    this.#events.length = 0;
    this.#revision = index;
    this.#history.push(rev);
    for (const l of this.#eventListeners) l(rev);
  }

  /**
   * Records that the entry at `index` carried no command (a leader's no-op, a configuration
   * change), so `appliedIndex` and snapshots stay in step with the log. Older indexes are ignored.
   */
  markApplied(index: number): void {
    if (index > this.#appliedIndex) this.#appliedIndex = index;
    if (this.#appliedWaiters.length > 0) this.#releaseWaiters();
  }

  /**
   * Resolves once the entry at `index` is applied here. A follower's forwarded write is
   * answered when the leader applied it; what the same client does next on this node (a
   * keep-alive of the lease it just granted, a serializable read) must see it too.
   */
  whenApplied(index: number): Promise<void> {
    if (index <= this.#appliedIndex) return Promise.resolve();
    return new Promise((resolve) => this.#appliedWaiters.push({ index, resolve }));
  }

  #releaseWaiters(): void {
    const still: { index: number; resolve: () => void }[] = [];
    for (const w of this.#appliedWaiters) {
      if (w.index <= this.#appliedIndex) w.resolve();
      else still.push(w);
    }
    this.#appliedWaiters = still;
  }

  /** The value and version under `key`, or undefined. */
  get(key: string): KvEntry | undefined {
    return this.#tree.get(key);
  }

  /**
   * Yields entries in key order, as they were when the iteration began: it walks an O(1)
   * copy-on-write clone of the tree, so applies that happen while a caller waits between two
   * steps (a stream under back-pressure) never show up in it — one consistent view, whatever
   * the listing's length. Nodes the clone shares are copied once when written meanwhile.
   */
  *list(options: ListOptions = {}): Generator<KvListItem> {
    const prefix = options.prefix ?? "";
    const start = options.start ?? "";
    const limit = options.limit && options.limit > 0 ? options.limit : Infinity;
    const from = compareKeys(start, prefix) > 0 ? start : prefix;
    const view = this.#tree.clone();
    let count = 0;
    for (const [key, entry] of view.entries(from)) {
      if (count >= limit || !key.startsWith(prefix)) return;
      count++;
      yield {
        key,
        value: entry.value,
        version: entry.version,
        created: entry.created,
        writes: entry.writes,
        lease: entry.lease,
      };
    }
  }

  /**
   * A point-in-time binary image of the whole state: entries, sessions, clock anchors,
   * `appliedIndex` and log time. {@link restore} on any replica reproduces this exact state.
   */
  snapshot(): Uint8Array {
    const steps = this.snapshotSteps();
    for (;;) {
      const image = steps.step();
      if (image) return image;
    }
  }

  /**
   * The image {@link snapshot} would return now, built in steps of about
   * {@link SNAPSHOT_STEP_KEYS} keys, so that encoding a large state (300,000 keys take
   * 0.3 s) need not stop the event loop: the host runs one step per turn while it goes on
   * applying. The state is captured at once and cheaply (a copy-on-write clone of the tree,
   * copies of the small maps); entries and values are never changed in place and the arena's
   * bytes are never reused, so later writes do not show through.
   */
  snapshotSteps(): SnapshotSteps {
    return new SnapshotEncoder({
      tree: this.#tree.clone(),
      appliedIndex: this.#appliedIndex,
      logTimeMs: this.#logTimeMs,
      revision: this.#revision,
      compacted: this.#compacted,
      // Copies: a lease's renewedIndex changes in place as keep-alives apply.
      leases: [...this.#leases.values()].map((l) => ({ ...l })),
      clocks: [...this.#clocks],
      sessions: [...this.#sessions.values()],
    });
  }

  /**
   * Replaces ALL state (entries, sessions, clock anchors, appliedIndex, log time) with a
   * {@link snapshot} image; nothing of the previous state survives. Version 1 images (before
   * session subjects) still restore: their sessions belong to subject "" and they carry no
   * clock anchors. Throws InvalidArgumentError for bytes that are not a valid snapshot,
   * leaving the current state untouched.
   */
  restore(data: Uint8Array): void {
    const r = new BinaryReader(data);
    for (const b of SNAPSHOT_MAGIC) {
      if (r.u8() !== b) throw new InvalidArgumentError("not a mokv KV snapshot");
    }
    const version = r.u8();
    if (
      version !== SNAPSHOT_VERSION && version !== SNAPSHOT_VERSION_3 &&
      version !== SNAPSHOT_VERSION_2 && version !== LEGACY_SNAPSHOT_VERSION
    ) {
      throw new InvalidArgumentError(`unknown snapshot version ${version}`);
    }
    const legacy = version === LEGACY_SNAPSHOT_VERSION;
    const withMeta = version === SNAPSHOT_VERSION || version === SNAPSHOT_VERSION_3;
    const withRenewals = version === SNAPSHOT_VERSION;
    const appliedIndex = r.u53();
    const logTimeMs = r.u53();
    let revision = withMeta ? r.u53() : 0;
    const compacted = withMeta ? r.u53() : 0;
    const entryCount = r.u53();
    // Keys arrive sorted: build the tree bottom-up in O(n) rather than by n insertions.
    const arena = new ValueArena();
    const keys: string[] = [];
    const values: KvEntry[] = [];
    let byteCount = 0;
    let previous: string | undefined;
    for (let i = 0; i < entryCount; i++) {
      const key = r.str();
      if (previous !== undefined && compareKeys(previous, key) >= 0) {
        throw new InvalidArgumentError("snapshot keys are not in strictly increasing order");
      }
      previous = key;
      const entryVersion = r.u53();
      // Before version 3 nothing was recorded of a key's history: it counts as created by
      // its last write, once.
      const created = withMeta ? r.u53() : entryVersion;
      const writes = withMeta ? r.u53() : 1;
      const lease = withMeta ? r.u53() : 0;
      if (!withMeta && entryVersion > revision) revision = entryVersion;
      // Copied into the arena's slabs: no small buffer per value, and no value pins the
      // snapshot, which can go as soon as the restore is done.
      const value = arena.copy(r.blobView());
      keys.push(key);
      values.push(new StoredEntry(value, entryVersion, created, writes, lease));
      byteCount += utf8Length(key) + value.length;
    }
    const tree: Tree = keys.length === 0
      ? new BTree<string, KvEntry>(undefined, compareKeys)
      : bulkLoad(keys, values, BTREE_NODE_SIZE, compareKeys) as Tree;
    const leases = new Map<number, Lease>();
    const leaseCount = withMeta ? r.u32() : 0;
    for (let i = 0; i < leaseCount; i++) {
      const id = r.u53();
      const ttlSeconds = r.u53();
      const owner = r.str();
      const renewedIndex = withRenewals ? r.u53() : 0;
      leases.set(id, { id, ttlSeconds, owner, keys: new Set(), renewedIndex });
    }
    // Attachments live in the keys' metadata: rebuild each lease's key set from them.
    for (let i = 0; i < keys.length; i++) {
      if (values[i].lease !== 0) leases.get(values[i].lease)?.keys.add(keys[i]);
    }
    const clocks = new Map<string, ClockAnchor>();
    const clockCount = legacy ? 0 : r.u32();
    for (let i = 0; i < clockCount; i++) {
      const source = r.str();
      clocks.set(source, { readingMs: r.u53(), logTimeMs: r.u53() });
    }
    const sessionCount = r.u32();
    const sessions: Session[] = [];
    for (let i = 0; i < sessionCount; i++) {
      const subject = legacy ? "" : r.str();
      const clientId = r.str();
      const lastSeq = r.u53();
      const lastUsedMs = r.u53();
      const flags = r.u8();
      const resultVersion = r.u53();
      const result: {
        ok: boolean;
        version: number;
        value?: Uint8Array;
        existed?: boolean;
        length?: number;
        refused?: Refusal;
      } = { ok: (flags & R_OK) !== 0, version: resultVersion };
      if (flags & R_VALUE) result.value = r.blob();
      if (flags & R_HAS_EXISTED) result.existed = (flags & R_EXISTED) !== 0;
      if (flags & R_LENGTH) result.length = r.u53();
      if (flags & R_REFUSED) result.refused = readRefusal(r);
      sessions.push({
        subject,
        clientId,
        lastSeq,
        lastUsedMs,
        result,
        costBytes: sessionCost(subject, clientId, result),
      });
    }
    r.end();
    this.#tree = tree;
    this.#arena = arena;
    this.#sessions = new Map();
    this.#bySubject = new Map();
    this.#sessionBytes = 0;
    for (const s of sessions) this.#insertSession(s);
    this.#clocks = clocks;
    this.#appliedIndex = appliedIndex;
    this.#logTimeMs = logTimeMs;
    this.#byteCount = byteCount;
    this.#quotaAlarm = false;
    this.#mutations++;
    this.#revision = revision;
    this.#compacted = compacted;
    this.#leases = leases;
    this.#events = [];
    // The history of a replaced state says nothing about the new one.
    this.#history.reset(revision);
    for (const l of this.#resetListeners) l(revision);
    this.#releaseWaiters();
  }

  /** Moves log time by what elapsed on `source` since its last reading (see the class comment). */
  #advanceClock(source: string, readingMs: number): void {
    const anchor = this.#clocks.get(source);
    if (anchor !== undefined && readingMs >= anchor.readingMs) {
      const elapsedMs = Math.min(readingMs - anchor.readingMs, MAX_CLOCK_STEP_MS);
      const candidateMs = anchor.logTimeMs + elapsedMs;
      if (candidateMs > this.#logTimeMs) this.#logTimeMs = candidateMs;
    }
    this.#clocks.delete(source);
    this.#clocks.set(source, { readingMs, logTimeMs: this.#logTimeMs });
    if (this.#clocks.size > MAX_CLOCK_SOURCES) {
      this.#clocks.delete(this.#clocks.keys().next().value as string);
    }
  }

  #insertSession(s: Session): void {
    this.#sessions.set(sessionKey(s.subject, s.clientId), s);
    let owner = this.#bySubject.get(s.subject);
    if (!owner) {
      owner = { sessions: new Map(), bytes: 0 };
      this.#bySubject.set(s.subject, owner);
    }
    owner.sessions.set(s.clientId, s);
    owner.bytes += s.costBytes;
    this.#sessionBytes += s.costBytes;
  }

  #removeSession(s: Session): void {
    this.#sessions.delete(sessionKey(s.subject, s.clientId));
    const owner = this.#bySubject.get(s.subject);
    if (!owner) return;
    owner.sessions.delete(s.clientId);
    owner.bytes -= s.costBytes;
    this.#sessionBytes -= s.costBytes;
    if (owner.sessions.size === 0) this.#bySubject.delete(s.subject);
  }

  /** Records a use of the session (re-inserting it as most recent), then enforces the budgets. */
  #touch(subject: string, clientId: string, lastSeq: number, result: CommandResult): void {
    const known = this.#sessions.get(sessionKey(subject, clientId));
    if (known) this.#removeSession(known);
    this.#insertSession({
      subject,
      clientId,
      lastSeq,
      lastUsedMs: this.#logTimeMs,
      result,
      costBytes: sessionCost(subject, clientId, result),
    });
    const owner = this.#bySubject.get(subject)!;
    while (
      owner.sessions.size > 1 &&
      (owner.sessions.size > this.maxSessionsPerSubject ||
        owner.bytes > this.maxSessionBytesPerSubject)
    ) {
      this.#removeSession(owner.sessions.values().next().value as Session);
    }
    while (this.#sessionBytes > this.maxSessionBytes && this.#sessions.size > 1) {
      let largest: SubjectSessions | undefined;
      for (const candidate of this.#bySubject.values()) {
        if (!largest || candidate.bytes > largest.bytes) largest = candidate;
      }
      this.#removeSession(largest!.sessions.values().next().value as Session);
    }
  }

  #expireSessions(): void {
    const cutoffMs = this.#logTimeMs - this.sessionTtlMs;
    for (const s of this.#sessions.values()) {
      if (s.lastUsedMs >= cutoffMs) return;
      this.#removeSession(s);
    }
  }

  #put(
    key: string,
    value: Uint8Array,
    version: number,
    previous: KvEntry | undefined,
    lease = 0,
  ): void {
    if (previous) this.#arena.release(previous.value);
    const entry: KvEntry = new StoredEntry(
      this.#arena.copy(value),
      version,
      previous ? previous.created : version,
      previous ? previous.writes + 1 : 1,
      lease,
    );
    this.#tree.set(key, entry);
    if (previous?.lease) this.#leases.get(previous.lease)?.keys.delete(key);
    if (lease) this.#leases.get(lease)?.keys.add(key);
    this.#events.push(
      previous ? { type: "put", key, entry, prev: previous } : { type: "put", key, entry },
    );
    const deltaBytes = previous
      ? value.length - previous.value.length
      : utf8Length(key) + value.length;
    this.#byteCount += deltaBytes;
    if (deltaBytes < 0) this.#quotaAlarm = false;
    this.#mutations++;
  }

  #remove(key: string, current: KvEntry): void {
    this.#tree.delete(key);
    if (current.lease) this.#leases.get(current.lease)?.keys.delete(key);
    this.#arena.release(current.value);
    this.#byteCount -= utf8Length(key) + current.value.length;
    this.#quotaAlarm = false;
    this.#mutations++;
    this.#events.push({ type: "delete", key, prev: current });
  }

  /** What an etcd transaction sees of the store and may change (see etcd_txn.ts). */
  #txnStore(index: number): TxnStore {
    return {
      revision: () => this.#revision,
      compactedRevision: () => this.compactedRevision,
      get: (key) => this.#tree.get(key),
      entries: (from) => this.#tree.entries(from),
      history: this.#history,
      byteCount: () => this.#byteCount,
      put: (key, value, lease, previous) => this.#put(key, value, index, previous, lease),
      remove: (key, current) => this.#remove(key, current),
      compact: (revision) => {
        if (revision > this.#compacted) this.#compacted = revision;
        this.#history.compact(revision);
      },
      noteQuotaAlarm: () => {
        this.#quotaAlarm = true;
      },
      leaseRoom: (id, key) => {
        const l = this.#leases.get(id);
        if (!l) return "missing";
        return l.keys.has(key) || l.keys.size < this.maxKeysPerLease ? "ok" : "full";
      },
    };
  }

  #leaseEvent(e: LeaseEvent): void {
    for (const l of this.#leaseListeners) l(e);
  }

  /** An etcd request refused at apply: nothing changed, the store's revision as it is. */
  #etcdFailure(e: EtcdError): CommandResult {
    return {
      ok: false,
      version: 0,
      etcdError: { code: e.code, message: e.message },
      revision: this.#revision,
    };
  }

  /**
   * The store as a read-only etcd transaction sees it (a Txn without writes is served from
   * local state after a read barrier, never through the log). Writes through it throw.
   */
  txnView(): TxnStore {
    const refuse = () => {
      throw new InvalidArgumentError("read-only view");
    };
    return { ...this.#txnStore(this.#appliedIndex), put: refuse, remove: refuse, compact: refuse };
  }

  /**
   * Answers an etcd Range from the local state (after the caller's read barrier, for a
   * linearizable one), at the current revision or, within the history, an older one.
   */
  range(req: RangeRequest): RangeResponse {
    return evaluateRange(this.#txnStore(this.#appliedIndex), req);
  }

  /**
   * Why writing `valueBytes` under `key` (replacing `current`) must be refused by the limits
   * `cmd` carries, or undefined when it may go ahead.
   */
  #refusal(cmd: Command, valueBytes: number, current: KvEntry | undefined): Refusal | undefined {
    if (cmd.maxValueBytes !== undefined && valueBytes > cmd.maxValueBytes) {
      return { reason: "value-too-large", sizeBytes: valueBytes, limitBytes: cmd.maxValueBytes };
    }
    const deltaBytes = current
      ? valueBytes - current.value.length
      : utf8Length(cmd.key) + valueBytes;
    const afterBytes = this.#byteCount + deltaBytes;
    if (cmd.quotaBytes !== undefined && deltaBytes > 0 && afterBytes > cmd.quotaBytes) {
      this.#quotaAlarm = true;
      return { reason: "quota-exceeded", sizeBytes: afterBytes, limitBytes: cmd.quotaBytes };
    }
    return undefined;
  }

  #execute(index: number, cmd: Command): CommandResult {
    const current = this.#tree.get(cmd.key);
    switch (cmd.type) {
      case "set": {
        const refused = this.#refusal(cmd, cmd.value.length, current);
        if (refused) return { ok: false, version: 0, refused };
        const lease = cmd.lease ?? 0;
        if (lease) {
          const l = this.#leases.get(lease);
          if (!l) return this.#etcdFailure(new EtcdError("NOT_FOUND", `lease ${lease} not found`));
          if (!l.keys.has(cmd.key) && l.keys.size >= this.maxKeysPerLease) {
            return this.#etcdFailure(
              new EtcdError("RESOURCE_EXHAUSTED", "the lease holds as many keys as it may"),
            );
          }
        }
        this.#put(cmd.key, cmd.value, index, current, lease);
        return { ok: true, version: index, existed: current !== undefined };
      }
      case "delete":
        if (!current) return { ok: true, version: 0, existed: false };
        this.#remove(cmd.key, current);
        return { ok: true, version: index, existed: true };
      case "append": {
        const lengthBytes = (current?.value.length ?? 0) + cmd.value.length;
        // Checked before copying: a refused append costs no allocation of the whole value.
        const refused = this.#refusal(cmd, lengthBytes, current);
        if (refused) return { ok: false, version: 0, refused };
        let value = cmd.value;
        if (current) {
          value = new Uint8Array(lengthBytes);
          value.set(current.value, 0);
          value.set(cmd.value, current.value.length);
        }
        this.#put(cmd.key, value, index, current);
        return { ok: true, version: index, length: value.length };
      }
      case "cas": {
        const matches = cmd.expectValue !== undefined
          ? current !== undefined && bytesEqual(current.value, cmd.expectValue)
          : cmd.expectVersion === 0
          ? current === undefined
          : current?.version === cmd.expectVersion;
        if (matches) {
          const refused = this.#refusal(cmd, cmd.value.length, current);
          if (refused) return { ok: false, version: 0, refused };
          this.#put(cmd.key, cmd.value, index, current);
          return { ok: true, version: index, existed: current !== undefined };
        }
        return current
          ? { ok: false, version: current.version, value: current.value, existed: true }
          : { ok: false, version: 0, existed: false };
      }
      case "txn": {
        const mark = this.#events.length;
        const bytesBefore = this.#byteCount;
        try {
          const txn = executeTxn(this.#txnStore(index), cmd.txn, cmd);
          const changed = this.#events.length > mark;
          return { ok: true, version: index, txn, revision: changed ? index : this.#revision };
        } catch (err) {
          this.#undo(mark, bytesBefore);
          return this.#etcdFailure(
            err instanceof EtcdError ? err : new EtcdError("INVALID_ARGUMENT", String(err)),
          );
        }
      }
      case "compact":
        if (cmd.revision > this.#revision) return this.#etcdFailure(ETCD_ERRORS.futureRevision());
        if (cmd.revision <= this.compactedRevision) {
          return this.#etcdFailure(ETCD_ERRORS.compacted());
        }
        this.#compacted = cmd.revision;
        this.#history.compact(cmd.revision);
        return { ok: true, version: index, revision: this.#revision };
      case "leaseGrant": {
        if (this.#leases.has(cmd.leaseId)) {
          return this.#etcdFailure(
            new EtcdError("FAILED_PRECONDITION", "etcdserver: lease already exists"),
          );
        }
        if (this.#leases.size >= this.maxLeases) {
          return this.#etcdFailure(
            new EtcdError("RESOURCE_EXHAUSTED", `mokv: at most ${this.maxLeases} leases may exist`),
          );
        }
        const l = {
          id: cmd.leaseId,
          ttlSeconds: cmd.ttlSeconds,
          owner: cmd.owner,
          keys: new Set<string>(),
          renewedIndex: index,
        };
        this.#leases.set(l.id, l);
        this.#leaseEvent({ type: "grant", leaseId: l.id, ttlSeconds: l.ttlSeconds });
        return { ok: true, version: index, ttlSeconds: l.ttlSeconds, revision: this.#revision };
      }
      case "leaseKeepAlive": {
        const l = this.#leases.get(cmd.leaseId);
        if (!l) {
          return this.#etcdFailure(ETCD_ERRORS.leaseNotFound());
        }
        l.renewedIndex = index;
        this.#leaseEvent({ type: "keepalive", leaseId: l.id, ttlSeconds: l.ttlSeconds });
        return { ok: true, version: index, ttlSeconds: l.ttlSeconds, revision: this.#revision };
      }
      case "leaseRevoke": {
        const l = this.#leases.get(cmd.leaseId);
        if (!l) {
          return this.#etcdFailure(ETCD_ERRORS.leaseNotFound());
        }
        // An expiry decided before a renewal that applied since (a keep-alive already in the
        // log then) is void: that keep-alive was acknowledged with a full TTL.
        if (cmd.expired && cmd.renewedIndex !== undefined && l.renewedIndex > cmd.renewedIndex) {
          return this.#etcdFailure(
            new EtcdError(
              "FAILED_PRECONDITION",
              `mokv: lease ${l.id} was renewed at ${l.renewedIndex}, after its expiry was decided`,
            ),
          );
        }
        // Every key of the lease is deleted at this revision (watchers see the DELETEs).
        for (const key of [...l.keys].sort(compareKeys)) {
          const current = this.#tree.get(key);
          if (current) this.#remove(key, current);
        }
        this.#leases.delete(l.id);
        this.#leaseEvent({
          type: "revoke",
          leaseId: l.id,
          ttlSeconds: l.ttlSeconds,
          expired: cmd.expired,
        });
        const changed = this.#events.length > 0;
        return { ok: true, version: index, revision: changed ? index : this.#revision };
      }
      default: {
        const never: never = cmd;
        return never;
      }
    }
  }

  /** Undoes the changes recorded since event `mark` (a transaction that failed half-way). */
  #undo(mark: number, bytesBefore: number): void {
    for (let i = this.#events.length - 1; i >= mark; i--) {
      const e = this.#events[i];
      if (e.entry) this.#arena.release(e.entry.value);
      if (e.entry?.lease) this.#leases.get(e.entry.lease)?.keys.delete(e.key);
      if (e.prev?.lease) this.#leases.get(e.prev.lease)?.keys.add(e.key);
      if (e.prev) {
        this.#arena.reacquire(e.prev.value);
        this.#tree.set(e.key, e.prev as KvEntry);
      } else this.#tree.delete(e.key);
    }
    this.#events.length = mark;
    this.#byteCount = bytesBefore;
    this.#mutations++;
  }
}

function readRefusal(r: BinaryReader): Refusal {
  const code = r.u8();
  const reason = (Object.keys(REFUSAL_CODES) as RefusalReason[]).find((k) =>
    REFUSAL_CODES[k] === code
  );
  if (reason === undefined) throw new InvalidArgumentError(`unknown refusal code ${code}`);
  return { reason, sizeBytes: r.u53(), limitBytes: r.u53() };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Keys sized or written per step of {@link KvStateMachine.snapshotSteps}. */
export const SNAPSHOT_STEP_KEYS = 20_000;

/** A snapshot being built: call `step()` until it returns the image. */
export interface SnapshotSteps {
  /** Does about {@link SNAPSHOT_STEP_KEYS} keys of work; the image once complete. */
  step(): Uint8Array | undefined;
}

/** What a snapshot captures of the state machine, frozen at its start. */
interface CapturedState {
  readonly tree: Tree;
  readonly appliedIndex: number;
  readonly logTimeMs: number;
  readonly revision: number;
  readonly compacted: number;
  readonly leases: readonly Lease[];
  readonly clocks: readonly (readonly [string, ClockAnchor])[];
  readonly sessions: readonly Session[];
}

/** Two passes over the captured tree: the exact size, then the bytes. */
class SnapshotEncoder implements SnapshotSteps {
  readonly #state: CapturedState;
  #entries: IterableIterator<[string, KvEntry]>;
  #size = SNAPSHOT_MAGIC.length + 1 + 8 + 8 + 8 + 8 + 8;
  #w: BinaryWriter | undefined;

  constructor(state: CapturedState) {
    this.#state = state;
    this.#entries = state.tree.entries();
  }

  step(): Uint8Array | undefined {
    return this.#w === undefined ? this.#sizeStep() : this.#writeStep(this.#w);
  }

  #sizeStep(): undefined {
    for (let n = 0; n < SNAPSHOT_STEP_KEYS; n++) {
      const next = this.#entries.next();
      if (next.done) {
        this.#startWriting();
        return undefined;
      }
      const [key, entry] = next.value;
      this.#size += 4 + utf8Length(key) + 8 + 8 + 8 + 8 + 4 + entry.value.length;
    }
    return undefined;
  }

  #startWriting(): void {
    const st = this.#state;
    let size = this.#size + 4;
    for (const l of st.leases) size += 8 + 8 + 4 + utf8Length(l.owner) + 8;
    size += 4;
    for (const [source] of st.clocks) size += 4 + utf8Length(source) + 8 + 8;
    size += 4;
    for (const s of st.sessions) {
      size += 4 + utf8Length(s.subject) + 4 + utf8Length(s.clientId) + 8 + 8 + 1 + 8;
      if (s.result.value) size += 4 + s.result.value.length;
      if (s.result.length !== undefined) size += 8;
      if (s.result.refused) size += 1 + 8 + 8;
    }
    const w = new BinaryWriter(size);
    for (const b of SNAPSHOT_MAGIC) w.u8(b);
    w.u8(SNAPSHOT_VERSION);
    w.u53(st.appliedIndex);
    w.u53(st.logTimeMs);
    w.u53(st.revision);
    // Explicit compactions only: after a restore the history starts at `revision` anyway.
    w.u53(st.compacted);
    w.u53(st.tree.size);
    this.#w = w;
    this.#entries = st.tree.entries();
  }

  #writeStep(w: BinaryWriter): Uint8Array | undefined {
    for (let n = 0; n < SNAPSHOT_STEP_KEYS; n++) {
      const next = this.#entries.next();
      if (next.done) return this.#finish(w);
      const [key, entry] = next.value;
      w.str(key, utf8Length(key));
      w.u53(entry.version);
      w.u53(entry.created);
      w.u53(entry.writes);
      w.u53(entry.lease);
      w.blob(entry.value);
    }
    return undefined;
  }

  #finish(w: BinaryWriter): Uint8Array {
    const st = this.#state;
    w.u32(st.leases.length);
    for (const l of st.leases) {
      w.u53(l.id);
      w.u53(l.ttlSeconds);
      w.str(l.owner, utf8Length(l.owner));
      w.u53(l.renewedIndex);
    }
    w.u32(st.clocks.length);
    for (const [source, anchor] of st.clocks) {
      w.str(source, utf8Length(source));
      w.u53(anchor.readingMs);
      w.u53(anchor.logTimeMs);
    }
    w.u32(st.sessions.length);
    for (const s of st.sessions) {
      w.str(s.subject, utf8Length(s.subject));
      w.str(s.clientId, utf8Length(s.clientId));
      w.u53(s.lastSeq);
      w.u53(s.lastUsedMs);
      const r = s.result;
      w.u8(
        (r.ok ? R_OK : 0) | (r.value ? R_VALUE : 0) |
          (r.existed !== undefined ? R_HAS_EXISTED : 0) | (r.existed ? R_EXISTED : 0) |
          (r.length !== undefined ? R_LENGTH : 0) | (r.refused ? R_REFUSED : 0),
      );
      w.u53(r.version);
      if (r.value) w.blob(r.value);
      if (r.length !== undefined) w.u53(r.length);
      if (r.refused) {
        w.u8(REFUSAL_CODES[r.refused.reason]);
        w.u53(r.refused.sizeBytes);
        w.u53(r.refused.limitBytes);
      }
    }
    if (w.offset !== w.bytes.length) {
      throw new Error(`snapshot size mismatch: wrote ${w.offset} of ${w.bytes.length} bytes`);
    }
    return w.bytes;
  }
}
