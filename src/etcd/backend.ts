/**
 * What etcd's services need from the node: the local state machine (ranges, revisions, the
 * event history watches read), replicated writes, read barriers, the Raft status etcd reports
 * in headers, and cluster administration. `node.ts` provides it; tests build one over a
 * LocalBackend.
 */
import type { Command, CommandResult, KvStateMachine } from "../kv/mod.ts";
import type { ReadConsistency, ServerInfo } from "../server/backend.ts";

/** The Raft facts etcd's headers and Status carry, as this node knows them now. */
export interface EtcdRaftStatus {
  readonly term: number;
  /** Node id of the leader; "" when none is known. */
  readonly leader: string;
  readonly commit: number;
  readonly applied: number;
  /** This node is a learner (non-voting). */
  readonly isLearner: boolean;
}

/** The node as etcd's services see it. */
export interface EtcdBackend {
  readonly nodeId: string;
  /** The local state machine: read after a barrier, never written here. */
  readonly store: KvStateMachine;
  /** "https" with TLS, "http" in the plaintext development mode (member URLs). */
  readonly scheme: "http" | "https";
  apply(cmd: Command): Promise<CommandResult>;
  /**
   * Applies a decision this node took as leader of `term` (a lease expiry): only while it
   * still leads that term, never forwarded or retried (see `ReplicationHost.apply`). Without
   * it (a single process, always its own leader) the lessor uses `apply`.
   */
  applyAsLeader?(cmd: Command, term: number): Promise<CommandResult>;
  readBarrier(consistency: ReadConsistency): Promise<void>;
  raftStatus(): EtcdRaftStatus;
  servers(): Promise<ServerInfo[]>;
  removeServer(id: string): Promise<void>;
  transferLeadership(id: string): Promise<string>;
  /** Consistent backup of the state machine (after a linearizable barrier). */
  snapshot(): Promise<Uint8Array>;
}

/**
 * Applies `cmd` and resolves once this node has applied it too: on a follower, a forwarded
 * write is answered as soon as the leader applied it, and the client's next request here
 * (a keep-alive of the lease it was just granted, a serializable read) must see it.
 */
export async function applyHere(backend: EtcdBackend, cmd: Command): Promise<CommandResult> {
  const result = await backend.apply(cmd);
  if (result.version > 0) await backend.store.whenApplied(result.version);
  return result;
}
