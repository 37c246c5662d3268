/**
 * What the replication host plugs in, as hashicorp/raft's `NewRaft(conf, fsm, logs, stable,
 * snaps, trans)` does: a log store, a transport, a state machine and a clock. Production wires
 * Deno KV (`RaftStorage`), TLS sockets (`PeerTransport`), the KV map and the wall clock; the
 * deterministic simulator wires a simulated disk, network and virtual clock around the very
 * same host, so it tests the real loop and the real persistence policy.
 */
import type { Entry, HardState, Message, NodeId, PersistedState, Snapshot } from "../raft/mod.ts";
import type { TransportStats } from "./transport.ts";

/**
 * Raft's stable storage: hard state, log entries and snapshots. Each write resolves once
 * durable; a rejected write means the store can no longer be trusted (the host stops).
 */
export interface LogStore {
  /** Everything a restarting node needs: hard state, latest snapshot, the log after it. */
  load(): Promise<PersistedState>;
  /** Persists one Ready's durable part (see `RaftStorage.save` for the exact rules). */
  save(batch: {
    readonly hardState?: HardState;
    readonly entries: readonly Entry[];
    readonly snapshot?: Snapshot;
  }): Promise<void>;
  /** Stores a snapshot the host took itself and drops the log entries it covers. */
  saveSnapshot(snapshot: Snapshot): Promise<void>;
  /**
   * Optional: the stored entries [lo, hi], or undefined when some are not stored (any more).
   * With it the host keeps only a tail of the log's commands in memory and reads older ones
   * back to send them (`memoryLogEntries`); a store without it keeps the whole log in memory.
   */
  readEntries?(lo: number, hi: number): Promise<readonly Entry[] | undefined>;
}

/** What a transport calls back into the host with. */
export interface TransportHandlers {
  /** Raft messages received from a peer, in the order they were sent. */
  readonly onMessages: (msgs: Message[]) => void;
  /** A request from a peer (a forwarded write, an admin action, a ping); resolves with the answer. */
  readonly onRequest: (from: string, kind: number, payload: Uint8Array) => Promise<Uint8Array>;
}

/**
 * Peer messaging. `send` is fire and forget (a transport may queue while a peer is down and
 * flush on reconnect, or drop); `request` is a call with an answer. A failure the remote
 * handler raised rejects `request` with a `RemoteError` carrying the wire form of the error.
 */
export interface Transport {
  /** Queues `msgs` for peer `to` at `addr`, in order. */
  send(to: NodeId, addr: string, msgs: readonly Message[]): void;
  /** Sends a request to `addr` and waits at most `timeoutMs` for its answer. */
  request(addr: string, kind: number, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Peers found unreachable since the last call (the core then probes them gently). */
  takeUnreachable(): NodeId[];
  /** Counters for metrics. */
  stats(): TransportStats;
  /** Drops the connection, queue and counters of `addr` (a peer gone for good). */
  forget(addr: string): void;
  /** Closes every connection; pending requests fail. */
  close(): Promise<void>;
}

/** Builds the host's transport around the host's own handlers. */
export type TransportFactory = (handlers: TransportHandlers) => Transport;

/**
 * The replicated state machine (hashicorp/raft's `FSM`). Applies are deterministic and in
 * index order; `restore` replaces the whole state, never merges into it. `R` is the result a
 * proposer receives; the host treats it as opaque.
 */
export interface StateMachine<R> {
  /** Index of the last entry applied or marked (0 when empty). */
  readonly appliedIndex: number;
  /** Applies the command `data` of the entry at `index` and returns its result. */
  apply(index: number, data: Uint8Array): R;
  /** The entry at `index` carried no command (a no-op or a configuration change). */
  markApplied(index: number): void;
  /** A point-in-time image of the whole state. */
  snapshot(): Uint8Array;
  /**
   * Optional: the image `snapshot()` would return now, built in steps (each `step()` does a
   * slice of the work and returns the image once complete), so that the host encodes a
   * large state a slice per event-loop turn instead of in one long pause. Applies may go on
   * between steps; they must not show in the image.
   */
  snapshotSteps?(): { step(): Uint8Array | undefined };
  /** Replaces the whole state with a snapshot's. */
  restore(data: Uint8Array): void;
}

/** How a result crosses the wire when a follower forwards a write to the leader. */
export interface ResultCodec<R> {
  encode(result: R): Uint8Array;
  decode(bytes: Uint8Array): R;
}

/** An opaque timer handle of a {@link Clock}: only ever handed back to the same clock. */
export type TimerId = unknown;

/**
 * Time as the host sees it: a monotonic millisecond clock for deadlines and durations, and
 * timers. The simulator's clock is virtual and may run skewed or stall per node.
 */
export interface Clock {
  /** Monotonic milliseconds (any origin). */
  now(): number;
  setInterval(fn: () => void, ms: number): TimerId;
  clearInterval(id: TimerId): void;
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
}
