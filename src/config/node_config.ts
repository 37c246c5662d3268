/**
 * The validated configuration of one mokv node. `parseConfig` is the only way to make one from
 * flags and a YAML file; every field is documented with its unit and default, and the whole
 * object is readonly so no layer can change what the operator asked for.
 */

/** How much the node logs: `debug` < `info` < `warn` < `error`. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Log line format; `auto` is text on a terminal and JSON otherwise. */
export type LogFormat = "json" | "text" | "auto";

/** A host and a port, e.g. from `127.0.0.1:8401` or `[::1]:8401` (IPv6 without brackets). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** The three PEM files of one TLS identity, as absolute paths that existed at start-up. */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
}

/**
 * Transport security. `mutual` (the default) needs the server files; the peer files default to
 * the server files, and `peerAllowedCns` to the Common Name of the peer certificate.
 * `insecure` is plaintext for development and is only chosen by `insecure: true`.
 */
export type TlsConfig =
  | {
    readonly mode: "mutual";
    /** Identity for the client-facing gRPC side of `rpc-port`. */
    readonly server: TlsFiles;
    /** Identity used between Raft peers (both as server and as client). */
    readonly peer: TlsFiles;
    /** Certificate Common Names accepted from Raft peers; never empty. */
    readonly peerAllowedCns: readonly string[];
  }
  | { readonly mode: "insecure" };

/** The Casbin model and policy files; present only when both are configured. */
export interface AclFiles {
  readonly modelFile: string;
  readonly policyFile: string;
}

/** One node's configuration: validated, defaults applied, paths absolute and expanded. */
export interface NodeConfig {
  /** Directory of the node's Deno KV file (created if missing). Default `~/.mokv/data/<node-name>`. */
  readonly dataDir: string;
  /** Unique node id, used as the Raft id and gossip name. Default: the host name. */
  readonly nodeName: string;
  /** UDP address gossip binds to. Default `127.0.0.1:8401`. */
  readonly bindAddr: HostPort;
  /** TCP port serving gRPC and Raft. Default 8400. */
  readonly rpcPort: number;
  /** Open connections on `rpc-port`, more are closed on arrival. Unset: 4096. */
  readonly maxConnections?: number;
  /** Connections on `rpc-port` still in their TLS handshake, more are closed. Unset: 256. */
  readonly maxPendingHandshakes?: number;
  /** Host other nodes use to reach this one. Default: the host of `bindAddr` (host name if unspecified). */
  readonly advertiseAddr: string;
  /** Gossip addresses to join at start-up. Default none. */
  readonly startJoinAddrs: readonly HostPort[];
  /** Bootstrap a one-node cluster from this node (mökv style). Default false. */
  readonly bootstrap: boolean;
  /** Wait for this many members, then bootstrap (Consul style); 0 = off. Default 0. */
  readonly bootstrapExpect: number;
  /** Casbin model and policy, or undefined when authorization is not configured. */
  readonly acl: AclFiles | undefined;
  /** TLS identities, or plaintext development mode. */
  readonly tls: TlsConfig;
  /** TCP port of the Prometheus `/metrics` and `/healthz` endpoint; 0 = off. Default 4000. */
  readonly metricsPort: number;
  /** Gossip keys (32 bytes each); the first encrypts, all decrypt. Empty = plaintext gossip. */
  readonly gossipKeyring: readonly Uint8Array[];
  /**
   * Run gossip without a key although TLS is on (`gossip-insecure`). Default false: a node with
   * TLS and no gossip key refuses to start, since anyone who can send it UDP could forge members.
   */
  readonly gossipInsecure: boolean;
  /** Most gossip members held; new ones beyond are ignored and counted. Default 1024. */
  readonly gossipMaxMembers: number;
  /** Minimum level logged. Default `info`. */
  readonly logLevel: LogLevel;
  /** Log line format. Default `auto`. */
  readonly logFormat: LogFormat;
  /** Largest accepted key, in bytes (UTF-8). Default 4096. */
  readonly maxKeyBytes: number;
  /**
   * Largest accepted value, in bytes (also the largest Append result). Default 1048576 (1 MiB);
   * at most what one Raft peer frame carries (see `maxValueBytesLimit`).
   */
  readonly maxValueBytes: number;
  /**
   * Data-size quota in bytes (keys plus values, as etcd's `quota-backend-bytes`): writes that
   * would grow the data above it get RESOURCE_EXHAUSTED; deletes still work. Default 2 GiB.
   */
  readonly quotaBytes: number;
  /**
   * Most applied entries between two snapshots; one comes sooner once the log since the last
   * holds more bytes than the state and 64 MiB. Default 100,000 (etcd's snapshot-count).
   */
  readonly snapshotEntries: number;
  /**
   * Applied Raft log entries whose commands stay in memory; the commands of older ones are
   * dropped from memory and read back from the data file when a follower needs them. Default
   * 5,000 (the log tail a snapshot keeps).
   */
  readonly memoryLogEntries: number;
  /** Length of one Raft tick, in milliseconds. Default 50. */
  readonly raftTickMs: number;
  /**
   * How often the node hands memory the C allocator holds free back to the OS (glibc's
   * malloc_trim), in milliseconds; 0 never. Default 10,000.
   */
  readonly mallocTrimIntervalMs: number;
  /** Ticks without a leader before a follower campaigns (randomized up to twice). Default 6. */
  readonly raftElectionTicks: number;
  /** Ticks between leader heartbeats; less than `raftElectionTicks`. Default 1. */
  readonly raftHeartbeatTicks: number;
  /** Length of one gossip protocol tick, in milliseconds. Default 100. */
  readonly gossipTickMs: number;
  /** Leave the cluster (removed from Raft) on SIGTERM instead of restarting as a member. Default false. */
  readonly leaveOnTerminate: boolean;
  /** Let the leader remove failed voters automatically. Default false. */
  readonly deadServerCleanup: boolean;
  /** Dead-server cleanup never shrinks the voters below this count. Default 3. */
  readonly deadServerMinQuorum: number;
}
