/**
 * The Raft consensus core: a pure state machine driven by `tick()` and `step()`, handing
 * out `ready()` batches. See `raft.ts` for the driving loop and `types.ts` for the data.
 */
export {
  isSafeBeforePersist,
  type ProgressView,
  RaftNode,
  type RaftOptions,
  type RaftStatus,
} from "./raft.ts";
export { applyChange, isMember, isVoter, members } from "./config.ts";
export {
  commandBytes,
  EMPTY_CONFIG,
  EVICTED_DATA,
  type EvictedEntry,
  isEvicted,
  RaftInvariantError,
} from "./log.ts";
export type { ProgressState } from "./progress.ts";
export * from "./types.ts";
