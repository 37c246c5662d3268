/**
 * What the safety checker sees of a real host, shared by the two simulators (host_sim.ts,
 * the seeded fault simulator, and cluster.ts, the hand-driven scenario cluster): the host's
 * soft-state and apply hooks, its real RaftStorage with a mirror of what the host handed it,
 * and its real KvStateMachine with the checker told of every restore and apply.
 */
import type { CommandResult, KvStateMachine } from "../../../src/kv/mod.ts";
import type {
  Entry,
  HardState,
  NodeId,
  PersistedState,
  Ready,
  Snapshot,
} from "../../../src/raft/mod.ts";
import type {
  LogStore,
  RaftStorage,
  ReplicationHost,
  StateMachine,
} from "../../../src/replication/mod.ts";
import { InvariantViolation, type SafetyChecker } from "./checker.ts";
import { Disk } from "./disk.ts";
import { entryText, leaseKey, leaseText, REVISION_KEY } from "./kv_model.ts";

/** One node as the checker follows it across crashes. */
export interface ObservedNode {
  readonly id: NodeId;
  /** Bumped on every crash: late callbacks of an older incarnation are ignored. */
  readonly generation: number;
  /** What the checker reads as the node's durable log. */
  mirror: Disk;
  /** A leadership seen in a Ready, checked once that Ready's save is durable. */
  pendingLeaderTerm?: number;
  readonly host?: ReplicationHost<CommandResult>;
}

/** The simulator around the observed hosts. */
export interface Observer {
  readonly checker: SafetyChecker;
  /** Runs `fn`, keeping the first failure (callbacks run inside the hosts). */
  guard(fn: () => void): void;
}

/** Batch of a `save()`, as the host hands it to its store. */
type SaveBatch = {
  readonly hardState?: HardState;
  readonly entries: readonly Entry[];
  readonly snapshot?: Snapshot;
};

/** Extra behaviour of one simulator around the shared observation. */
export interface ObservedOptions {
  /** Called with every soft state of the live incarnation, before the checker sees it. */
  readonly onSoftState?: (ss: { leader: string; role: string; term: number }) => void;
  /** Called when the live incarnation becomes leader of `term`. */
  readonly onLeader?: (term: number) => void;
  /** Called before each save of the live incarnation goes to the storage (a fault trap). */
  readonly beforeSave?: (batch: SaveBatch) => void;
  /**
   * Awaited before each read of log entries goes to the storage (a slow read, to race it
   * with a compaction); undefined reads at once.
   */
  readonly beforeRead?: () => Promise<void> | undefined;
  /** Compare the whole state after applying `data` (default: after every entry). */
  readonly compareAfter?: (data: Uint8Array) => boolean;
  /**
   * Hand the host the state machine's stepped snapshot build (default true). The scenario
   * cluster turns it off: its steps run on the node's timer, which a scenario advances only
   * when it ticks that node, and its scenarios expect a due snapshot to be taken at once.
   */
  readonly steppedSnapshots?: boolean;
}

/** The host hooks that tell the checker of roles and applied entries. */
export function observedHooks(
  node: ObservedNode,
  generation: number,
  obs: Observer,
  options: ObservedOptions = {},
) {
  return {
    onSoftState: (ss: { leader: string; role: string; term: number }) =>
      obs.guard(() => {
        if (node.generation !== generation) return;
        options.onSoftState?.(ss);
        if (ss.role === "leader") {
          node.pendingLeaderTerm = ss.term;
          options.onLeader?.(ss.term);
        } else {
          node.pendingLeaderTerm = undefined;
          obs.checker.roleObserved(node.id, ss.term, false, node.mirror);
        }
      }),
    onApply: (entries: readonly Entry[]) =>
      obs.guard(() => {
        if (node.generation !== generation || !node.host) return;
        obs.checker.committedObserved(node.id, node.host.status().term, entries);
        for (const e of entries) obs.checker.entryApplied(node.id, e);
      }),
  };
}

/** The real storage, with the checker watching what the host hands it. */
export function observedStore(
  node: ObservedNode,
  storage: RaftStorage,
  generation: number,
  obs: Observer,
  options: ObservedOptions = {},
): LogStore {
  const live = () => node.generation === generation;
  return {
    load: async (): Promise<PersistedState> => {
      const state = await storage.load();
      if (live()) obs.guard(() => obs.checker.termLoaded(node.id, state.hardState.term));
      const mirror = new Disk();
      mirror.hardState = state.hardState;
      mirror.snapshot = state.snapshot;
      mirror.entries = [...state.entries];
      if (live()) node.mirror = mirror;
      return state;
    },
    save: (batch: SaveBatch): Promise<void> => {
      const first = batch.entries[0]?.index ?? 0;
      const prevTerm = first > 0 ? node.mirror.termAt(first - 1) ?? -1 : -1;
      if (live()) options.beforeSave?.(batch);
      try {
        node.mirror.persist(batch as Ready);
      } catch {
        // The real storage refuses it too; the loop's failure is what the checker sees.
      }
      // A leadership counts once the Ready that made it is durable: a sole voter elects
      // itself, votes and leads in one Ready, and if it dies before that write lands it
      // comes back in its old term and may lose the same term to another node. That lost
      // leadership did nothing: the durable-term check proves it sent nothing in that
      // term, and its writes of that term are gone with the unfinished save.
      const leaderTerm = live() && node.host ? node.pendingLeaderTerm : undefined;
      if (leaderTerm !== undefined) node.pendingLeaderTerm = undefined;
      return storage.save(batch).then(() => {
        if (!live()) return;
        obs.guard(() => obs.checker.entriesStored(node.id, prevTerm, batch.entries));
        if (leaderTerm !== undefined) {
          obs.guard(() => obs.checker.roleObserved(node.id, leaderTerm, true, node.mirror));
        }
      });
    },
    saveSnapshot: (snapshot: Snapshot): Promise<void> => {
      node.mirror.installSnapshot(snapshot);
      return storage.saveSnapshot(snapshot);
    },
    readEntries: async (lo: number, hi: number): Promise<readonly Entry[] | undefined> => {
      await options.beforeRead?.();
      const got = await storage.readEntries(lo, hi);
      if (got && live()) {
        // What the host will send must be what it was handed to store.
        obs.guard(() => {
          for (const e of got) {
            const t = node.mirror.termAt(e.index);
            if (t !== undefined && t !== e.term) {
              throw new InvariantViolation(
                "log read",
                `${node.id} read entry ${e.index} of term ${e.term}, stored term ${t}`,
              );
            }
          }
        });
      }
      return got;
    },
  };
}

/**
 * The real state machine, with the checker told of every restore and, after the entries
 * `compareAfter` picks, of the whole state: every replica at an index holds the same keys,
 * etcd metadata, revision and leases, so a transaction applied in part, or a key gone some
 * other way, shows there. The store revision never goes back.
 */
export function observedFsm(
  node: ObservedNode,
  fsm: KvStateMachine,
  generation: number,
  obs: Observer,
  options: ObservedOptions = {},
): StateMachine<CommandResult> {
  const { checker } = obs;
  let revision = fsm.revision;
  const stepped = options.steppedSnapshots ?? true;
  return {
    get appliedIndex() {
      return fsm.appliedIndex;
    },
    apply: (index, data) => {
      const result = fsm.apply(index, data);
      if (node.generation === generation) {
        obs.guard(() => {
          if (options.compareAfter?.(data) ?? true) {
            checker.stateObserved(node.id, fsm.appliedIndex, stateOf(fsm));
          }
          if (fsm.revision < revision) {
            throw new InvariantViolation(
              "revisions",
              `${node.id}'s store revision went from ${revision} to ${fsm.revision} applying ${index}`,
            );
          }
          revision = fsm.revision;
        });
      }
      return result;
    },
    markApplied: (index) => fsm.markApplied(index),
    snapshot: () => fsm.snapshot(),
    ...(stepped ? { snapshotSteps: () => fsm.snapshotSteps() } : {}),
    restore(data) {
      fsm.restore(data);
      revision = fsm.revision;
      obs.guard(() => checker.stateRestored(node.id, fsm.appliedIndex, stateOf(fsm)));
    },
  };
}

/**
 * A replica's whole state as the checker compares it: every key with its etcd metadata, the
 * store revision and every lease with its keys (see kv_model.ts).
 */
export function stateOf(fsm: KvStateMachine): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of fsm.list()) out.set(item.key, entryText(item));
  if (fsm.revision > 0) out.set(REVISION_KEY, String(fsm.revision));
  for (const l of fsm.leases()) out.set(leaseKey(l.id), leaseText(l.ttlSeconds, l.keys));
  return out;
}
