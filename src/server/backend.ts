/**
 * What the server edge needs from the node: replicated writes, read barriers, a local reader
 * and cluster administration. The replication layer implements it; {@link LocalBackend} in
 * local_backend.ts implements it for one process without Raft.
 */
import type { Command, CommandResult } from "../kv/mod.ts";

/** "linearizable": a ReadIndex barrier first; "stale": local state at once. */
export type ReadConsistency = "linearizable" | "stale";

/** One Raft server as GetServers reports it. */
export interface ServerInfo {
  id: string;
  rpcAddr: string;
  isLeader: boolean;
  isVoter: boolean;
}

/** One gossip member as Admin.Members reports it. */
export interface MemberInfo {
  name: string;
  gossipAddr: string;
  rpcAddr: string;
  state: "alive" | "suspect" | "failed" | "left";
}

/** Read access to the local state machine. */
export interface KvReader {
  get(key: string): { value: Uint8Array; version: number } | undefined;
  list(
    opts: { prefix?: string; start?: string; limit?: number },
  ): Iterable<{ key: string; value: Uint8Array; version: number }>;
}

/** The node as the gRPC edge sees it. */
export interface KvBackend {
  readonly nodeId: string;
  /** Replicates cmd; resolves after commit and local apply. Rejects NotLeaderError/UnavailableError (retryable) or InvalidArgumentError. */
  apply(cmd: Command): Promise<CommandResult>;
  /** Resolves once the local state reflects every write committed before the call (ReadIndex); "stale" resolves at once. */
  readBarrier(consistency: ReadConsistency): Promise<void>;
  readonly reader: KvReader;
  servers(): Promise<ServerInfo[]>;
  members(): MemberInfo[];
  removeServer(id: string): Promise<void>;
  transferLeadership(id?: string): Promise<string>;
  leave(): Promise<void>;
  /** Consistent backup bytes of the state machine (after a linearizable barrier). */
  snapshot(): Promise<Uint8Array>;
  /** True when the node knows a leader and has caught up: health SERVING. */
  isHealthy(): boolean;
}
