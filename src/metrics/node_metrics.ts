/**
 * Every metric family a mokv node updates, on a registry of its own (never prom-client's
 * global one), so several nodes can live in one process and each exports only its own numbers.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** A node's Raft role, exported as `mokv_raft_role{role="..."}` = 1 for the current one. */
export type RaftRole = "follower" | "candidate" | "leader" | "learner";

const ROLES: readonly RaftRole[] = ["follower", "candidate", "leader", "learner"];

/** Latency buckets in seconds: 0.5 ms to 5 s. */
const LATENCY_BUCKETS_SECONDS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
];
/** Batch-size buckets in entries: powers of two up to 4096. */
const BATCH_BUCKETS_ENTRIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/** Snapshot duration buckets in seconds: 10 ms to 2 min. */
const SNAPSHOT_BUCKETS_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Event-loop lag: a healthy loop stays in the first buckets; a stall shows in the last. */
const LAG_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Options of `createNodeMetrics`. */
export interface NodeMetricsOptions {
  /** Labels added to every series of this registry (e.g. `{ node: "n1" }`). */
  readonly defaultLabels?: Readonly<Record<string, string>>;
  /** Collect prom-client's default process metrics (CPU, memory, event loop). Default true. */
  readonly processMetrics?: boolean;
}

/**
 * The metric families of one node, all in `registry`. Names follow Prometheus conventions:
 * `mokv_` prefix, base units (seconds, bytes), `_total` on counters.
 */
export interface NodeMetrics {
  readonly registry: Registry;

  /** Current Raft term. */
  readonly raftTerm: Gauge;
  /** 1 for the node's current role, 0 for the others (label `role`); set with `setRole`. */
  readonly raftRole: Gauge<"role">;
  /** Highest log index known committed. */
  readonly raftCommitIndex: Gauge;
  /** Highest log index applied to the state machine. */
  readonly raftAppliedIndex: Gauge;
  /** Times this node saw the leader change. */
  readonly raftLeaderChangesTotal: Counter;
  /** Proposals this node accepted as leader. */
  readonly raftProposalsTotal: Counter;
  /** Time from proposal to commit and apply, in seconds. */
  readonly raftProposalCommitSeconds: Histogram;
  /** Entries per append (one Deno KV commit / one append message). */
  readonly raftAppendBatchEntries: Histogram;
  /** Latency of one Deno KV atomic commit (fsync included), in seconds. */
  readonly denoKvCommitSeconds: Histogram;
  /** Snapshots taken. */
  readonly snapshotsTotal: Counter;
  /** Time to write one snapshot, in seconds. */
  readonly snapshotDurationSeconds: Histogram;
  /** Size of the latest snapshot, in bytes. */
  readonly snapshotSizeBytes: Gauge;
  /** Entries a follower is behind the leader's last index (label `peer`; leader only). */
  readonly replicationLagEntries: Gauge<"peer">;
  /** Failed sends or connections to a peer (label `peer`). */
  readonly transportErrorsTotal: Counter<"peer">;
  /** Gossip members by state (label `state`: alive, suspect, failed, left). */
  readonly gossipMembers: Gauge<"state">;
  /** Gossip probes that got no acknowledgement in time. */
  readonly gossipProbeFailuresTotal: Counter;
  /** Gossip packets dropped (label `reason`: `decode` for malformed, `auth` for bad key). */
  readonly gossipPacketFailuresTotal: Counter<"reason">;
  /** Finished gRPC calls (labels `method`, `code` as the gRPC status name). */
  readonly grpcRequestsTotal: Counter<"method" | "code">;
  /** gRPC call duration in seconds (label `method`). */
  readonly grpcRequestDurationSeconds: Histogram<"method">;
  /** Requests refused by authorization (label `action`). */
  readonly deniedRequestsTotal: Counter<"action">;
  /** Keys in the state machine. */
  readonly storeKeys: Gauge;
  /** Bytes of keys and values in the state machine. */
  readonly storeBytes: Gauge;
  /** The data-size quota (`quota-bytes`) that `mokv_store_bytes` is held under, in bytes. */
  readonly quotaBytes: Gauge;
  /** 1 while the data-size quota refuses writes (etcd's NOSPACE alarm), else 0. */
  readonly quotaAlarm: Gauge;
  /** Largest event-loop lag over the last sampling interval, in seconds. */
  readonly eventLoopLagSeconds: Gauge;
  /** Every lag the event-loop probe measured (one every 100 ms), in seconds. */
  readonly eventLoopDelaySeconds: Histogram;
  /** Memory held outside the V8 heap by ArrayBuffers and the like (Deno's `external`). */
  readonly processExternalMemoryBytes: Gauge;
  /** Time spent handing freed C-allocator memory back to the OS (malloc_trim), in seconds. */
  readonly processMallocTrimSecondsTotal: Counter;
  /**
   * Bytes of command data in the Raft log entries held in memory: the last
   * `memory-log-entries` applied ones and those not applied yet.
   */
  readonly raftLogMemoryBytes: Gauge;
  /** Bytes of the snapshot the Raft core holds for followers (0 once released). */
  readonly raftSnapshotMemoryBytes: Gauge;

  /** Sets `mokv_raft_role` so exactly `role` reads 1. */
  setRole(role: RaftRole): void;
}

/**
 * Makes a fresh registry holding every node family (and, unless turned off, the default
 * process metrics). Calling it twice gives two independent registries.
 */
export function createNodeMetrics(options: NodeMetricsOptions = {}): NodeMetrics {
  const registry = new Registry();
  if (options.defaultLabels !== undefined) registry.setDefaultLabels({ ...options.defaultLabels });
  if (options.processMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const gauge = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
    new Gauge<L>({ name, help, labelNames, registers });
  const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers });
  const histogram = <L extends string = never>(
    name: string,
    help: string,
    buckets: number[],
    labelNames: L[] = [],
  ) => new Histogram<L>({ name, help, buckets, labelNames, registers });

  const raftRole = gauge("mokv_raft_role", "1 for the node's current Raft role, else 0.", [
    "role",
  ]);
  const setRole = (role: RaftRole): void => {
    for (const r of ROLES) raftRole.set({ role: r }, r === role ? 1 : 0);
  };
  setRole("follower");

  return {
    registry,
    raftTerm: gauge("mokv_raft_term", "Current Raft term."),
    raftRole,
    raftCommitIndex: gauge("mokv_raft_commit_index", "Highest log index known committed."),
    raftAppliedIndex: gauge("mokv_raft_applied_index", "Highest log index applied."),
    raftLeaderChangesTotal: counter(
      "mokv_raft_leader_changes_total",
      "Times this node saw the leader change.",
    ),
    raftProposalsTotal: counter("mokv_raft_proposals_total", "Proposals accepted as leader."),
    raftProposalCommitSeconds: histogram(
      "mokv_raft_proposal_commit_seconds",
      "Time from proposal to commit and apply, in seconds.",
      LATENCY_BUCKETS_SECONDS,
    ),
    raftAppendBatchEntries: histogram(
      "mokv_raft_append_batch_entries",
      "Log entries per append batch.",
      BATCH_BUCKETS_ENTRIES,
    ),
    denoKvCommitSeconds: histogram(
      "mokv_deno_kv_commit_seconds",
      "Latency of one Deno KV atomic commit, in seconds.",
      LATENCY_BUCKETS_SECONDS,
    ),
    snapshotsTotal: counter("mokv_snapshots_total", "Snapshots taken."),
    snapshotDurationSeconds: histogram(
      "mokv_snapshot_duration_seconds",
      "Time to write one snapshot, in seconds.",
      SNAPSHOT_BUCKETS_SECONDS,
    ),
    snapshotSizeBytes: gauge("mokv_snapshot_size_bytes", "Size of the latest snapshot, in bytes."),
    replicationLagEntries: gauge(
      "mokv_replication_lag_entries",
      "Entries a follower is behind the leader's last log index.",
      ["peer"],
    ),
    transportErrorsTotal: counter(
      "mokv_transport_errors_total",
      "Failed sends or connections to a Raft peer.",
      ["peer"],
    ),
    gossipMembers: gauge("mokv_gossip_members", "Gossip members by state.", ["state"]),
    gossipProbeFailuresTotal: counter(
      "mokv_gossip_probe_failures_total",
      "Gossip probes that got no acknowledgement in time.",
    ),
    gossipPacketFailuresTotal: counter(
      "mokv_gossip_packet_failures_total",
      "Gossip packets dropped because they did not decode or authenticate.",
      ["reason"],
    ),
    grpcRequestsTotal: counter("mokv_grpc_requests_total", "Finished gRPC calls.", [
      "method",
      "code",
    ]),
    grpcRequestDurationSeconds: histogram(
      "mokv_grpc_request_duration_seconds",
      "gRPC call duration, in seconds.",
      LATENCY_BUCKETS_SECONDS,
      ["method"],
    ),
    deniedRequestsTotal: counter(
      "mokv_denied_requests_total",
      "Requests refused by authorization.",
      ["action"],
    ),
    storeKeys: gauge("mokv_store_keys", "Keys in the state machine."),
    storeBytes: gauge("mokv_store_bytes", "Bytes of keys and values in the state machine."),
    quotaBytes: gauge("mokv_quota_bytes", "Data-size quota (quota-bytes), in bytes."),
    quotaAlarm: gauge(
      "mokv_quota_alarm",
      "1 while the data-size quota refuses writes that grow the data (delete keys to clear).",
    ),
    eventLoopLagSeconds: gauge(
      "mokv_event_loop_lag_seconds",
      "Largest event-loop lag over the last sampling interval (1 s), in seconds.",
    ),
    eventLoopDelaySeconds: histogram(
      "mokv_event_loop_delay_seconds",
      "Event-loop lag as a 100 ms timer measured it, every time it fired, in seconds.",
      LAG_BUCKETS_SECONDS,
    ),
    processExternalMemoryBytes: gauge(
      "mokv_process_external_memory_bytes",
      "Memory outside the V8 heap held by ArrayBuffers and the like (Deno.memoryUsage().external).",
    ),
    processMallocTrimSecondsTotal: counter(
      "mokv_process_malloc_trim_seconds_total",
      "Time spent in glibc malloc_trim, handing freed C-allocator memory back to the OS (malloc-trim-interval-ms), in seconds.",
    ),
    raftLogMemoryBytes: gauge(
      "mokv_raft_log_memory_bytes",
      "Bytes of command data in the Raft log entries held in memory (the last memory-log-entries applied ones and those not applied yet).",
    ),
    raftSnapshotMemoryBytes: gauge(
      "mokv_raft_snapshot_memory_bytes",
      "Bytes of the snapshot the Raft core holds to send to followers (0 once released).",
    ),
    setRole,
  };
}
