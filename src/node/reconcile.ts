/**
 * The leader's membership reconciler (Consul's leader loop and autopilot, in small): from the
 * gossip view and the Raft configuration it decides the next single-server change. It is a
 * pure function, so every rule is tested without a cluster; the node executes the action.
 *
 * Gossip only informs: nothing gossip says removes a voter by itself. A member that left on
 * purpose is removed by its own request over mutual TLS (`mokv leave`, `leave-on-terminate`:
 * the leaving node calls RemoveServer on itself) or by the operator's RemoveServer, never
 * because gossip reports it `left`. The only removal decided here is the opt-in dead-server
 * cleanup, and only for a voter the leader itself no longer hears from over Raft.
 */
import type { Config, NodeId } from "../raft/mod.ts";

/** A gossip member as the reconciler needs it. */
export interface ReconcileMember {
  readonly name: NodeId;
  readonly rpcAddr: string;
  readonly state: "alive" | "suspect" | "failed" | "left";
  /** The member holds Raft state (gossip tag `raft_state`): a cluster already exists. */
  readonly hasState?: boolean;
}

/** The next membership change, or nothing to do. */
export type ReconcileAction =
  | { readonly type: "addLearner"; readonly id: NodeId; readonly address: string }
  | { readonly type: "promote"; readonly id: NodeId }
  | { readonly type: "remove"; readonly id: NodeId; readonly reason: "dead" };

/** Everything the decision depends on. */
export interface ReconcileInput {
  readonly selfId: NodeId;
  readonly config: Config;
  /** Highest index each member is known to have (leader's progress). */
  readonly match: Readonly<Record<NodeId, number>>;
  readonly commitIndex: number;
  readonly members: readonly ReconcileMember[];
  /** Members the leader has reached over the peer transport (mutual TLS when configured). */
  readonly verified: ReadonlySet<NodeId>;
  /**
   * Voters the leader has heard from over Raft recently (progress `active`). Dead-server
   * cleanup never removes one of them, whatever gossip says: a forged gossip `dead` cannot
   * remove a voter that still answers the leader.
   */
  readonly active?: ReadonlySet<NodeId>;
  /** Remove failed voters while at least `deadServerMinQuorum` voters remain (opt-in). */
  readonly deadServerCleanup: boolean;
  readonly deadServerMinQuorum: number;
  /** A learner within this many entries of the commit index counts as caught up. */
  readonly promoteLagEntries?: number;
}

/**
 * Decides one change, in order of urgency: add alive members that are not in the
 * configuration as learners (once verified reachable over the peer transport); promote
 * learners that caught up; when dead-server cleanup is on, remove a voter gossip reports
 * failed and the leader no longer hears from, above the minimum quorum. A member gossip
 * reports `left` is never removed here (its own RemoveServer request does that). Returns the
 * members to verify when an addition waits on reachability.
 */
export function nextReconcileAction(
  input: ReconcileInput,
): { action?: ReconcileAction; verify: NodeId[] } {
  const { config, selfId } = input;
  const inConfig = (id: NodeId) => config.voters.includes(id) || config.learners.includes(id);
  const byName = new Map(input.members.map((m) => [m.name, m]));

  const verify: NodeId[] = [];
  for (const m of input.members) {
    if (m.state !== "alive" || m.rpcAddr === "" || inConfig(m.name)) continue;
    if (input.verified.has(m.name)) {
      return { action: { type: "addLearner", id: m.name, address: m.rpcAddr }, verify: [] };
    }
    verify.push(m.name);
  }

  const lag = input.promoteLagEntries ?? 64;
  for (const id of config.learners) {
    const m = byName.get(id);
    if (m?.state !== "alive") continue;
    if ((input.match[id] ?? 0) + lag >= input.commitIndex) {
      return { action: { type: "promote", id }, verify };
    }
  }

  if (input.deadServerCleanup) {
    for (const id of config.voters) {
      const m = byName.get(id);
      if (id === selfId || m?.state !== "failed" || input.active?.has(id)) continue;
      if (config.voters.length - 1 >= input.deadServerMinQuorum) {
        return { action: { type: "remove", id, reason: "dead" }, verify };
      }
    }
  }
  return { verify };
}

/** What {@link verificationsToStart} decides from. */
export interface VerifyInput {
  /** Members waiting to be checked over the peer transport, in the reconciler's order. */
  readonly candidates: readonly NodeId[];
  /** Members being checked now. */
  readonly inFlight: ReadonlySet<NodeId>;
  /** When each member's last check failed (ms, the caller's clock). */
  readonly failedAtMs: ReadonlyMap<NodeId, number>;
  readonly nowMs: number;
  /** Most checks in flight at once. */
  readonly maxConcurrent: number;
  /** A member whose check failed is not checked again for this long, in ms. */
  readonly retryMs: number;
}

/**
 * The members to start checking now: never more than `maxConcurrent` in flight, none twice
 * at once, none whose last check failed less than `retryMs` ago. So members made up by gossip
 * cost a bounded number of dials and never hold up the change the reconciler decided.
 */
export function verificationsToStart(input: VerifyInput): NodeId[] {
  const out: NodeId[] = [];
  let inFlight = input.inFlight.size;
  for (const id of input.candidates) {
    if (inFlight >= input.maxConcurrent) break;
    if (input.inFlight.has(id) || out.includes(id)) continue;
    const failedAt = input.failedAtMs.get(id);
    if (failedAt !== undefined && input.nowMs - failedAt < input.retryMs) continue;
    out.push(id);
    inFlight++;
  }
  return out;
}

/**
 * The configuration `bootstrap-expect` nodes agree on: the first `expect` alive members with
 * an RPC address, in natural name order (mokv-2 before mokv-10). Undefined until enough are
 * seen, when this node is not among them, or when any other member already holds Raft state
 * (as Consul does): then a cluster exists, and this node waits for its leader to add it. So
 * a node that lost its volume, or a late one, can never start a second cluster.
 */
export function expectedBootstrapConfig(
  selfId: NodeId,
  members: readonly ReconcileMember[],
  expect: number,
): Config | undefined {
  if (members.some((m) => m.name !== selfId && m.hasState && m.state !== "left")) {
    return undefined;
  }
  const alive = members
    .filter((m) => m.state === "alive" && m.rpcAddr !== "")
    .sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }));
  if (alive.length < expect) return undefined;
  const chosen = alive.slice(0, expect);
  if (!chosen.some((m) => m.name === selfId)) return undefined;
  return {
    voters: chosen.map((m) => m.name),
    learners: [],
    addresses: Object.fromEntries(chosen.map((m) => [m.name, m.rpcAddr])),
  };
}
