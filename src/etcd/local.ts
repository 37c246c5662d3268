/**
 * etcd's services over a {@link LocalBackend}: one process, no Raft (tests and the
 * single-process development mode). Term 1, always its own leader.
 */
import type { LocalBackend } from "../server/local_backend.ts";
import type { EtcdBackend } from "./backend.ts";

/** An EtcdBackend applying straight to `local`'s state machine. */
export function localEtcdBackend(local: LocalBackend): EtcdBackend {
  return {
    nodeId: local.nodeId,
    store: local.stateMachine,
    scheme: "http",
    apply: (cmd) => local.apply(cmd),
    readBarrier: (c) => local.readBarrier(c),
    raftStatus: () => ({
      term: 1,
      leader: local.nodeId,
      commit: local.stateMachine.appliedIndex,
      applied: local.stateMachine.appliedIndex,
      isLearner: false,
    }),
    servers: () => local.servers(),
    removeServer: (id) => local.removeServer(id),
    transferLeadership: (id) => local.transferLeadership(id),
    snapshot: () => local.snapshot(),
  };
}
