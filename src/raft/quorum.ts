/**
 * Majority arithmetic over a set of voters (etcd-io/raft's quorum/): the committed index is
 * the highest index a majority has matched, and a vote is won or lost once a majority agrees.
 */
import type { NodeId } from "./types.ts";

/** The size of a majority of `n` voters. */
export function majority(n: number): number {
  return Math.floor(n / 2) + 1;
}

/** The highest index that a majority of `voters` has matched (0 with no voters). */
export function committedIndex(voters: readonly NodeId[], match: (id: NodeId) => number): number {
  if (voters.length === 0) return 0;
  const indexes = voters.map(match).sort((a, b) => b - a);
  return indexes[majority(voters.length) - 1];
}

/** Outcome of a vote so far. */
export type VoteResult = "won" | "lost" | "pending";

/** Tallies granted and rejected votes among `voters`; votes from non-voters do not count. */
export function voteResult(
  voters: readonly NodeId[],
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  const q = majority(voters.length);
  if (granted >= q) return "won";
  if (rejected > voters.length - q) return "lost";
  return "pending";
}
