/**
 * The mokv client library: {@link MokvClient} with leader/follower routing, retries and
 * exactly-once writes, its options, and the errors it raises.
 */
export {
  type AppendResult,
  type CasExpectation,
  type CasResult,
  type DeleteResult,
  type KvEntry,
  type ListOptions,
  type MemberEntry,
  MokvClient,
  type RangePageResult,
  type ReadConsistency,
  type ReadOptions,
  type ServerEntry,
  type SetOptions,
  type ValueInput,
  type WriteResult,
} from "./mokv_client.ts";
export {
  checkAddr,
  configDir,
  type ConnectOptions,
  DEFAULT_ATTEMPT_TIMEOUT_MS,
  DEFAULT_MAX_RETRIES,
  DEFAULT_MAX_SESSIONS,
  DEFAULT_REFRESH_MS,
  loadTls,
  type TlsOptions,
} from "./options.ts";
export type { CallKind, NodeStats } from "./node_connection.ts";
export type { KeepAliveStats, KeepOptions } from "./lease_keeper.ts";
export { type KnownServer, Picker, type Route } from "./picker.ts";
export { errorCode, RpcError, toClientError } from "./rpc_error.ts";
export { type SessionLease, SessionPool } from "./session_pool.ts";
export {
  type HeldLock,
  LeaseExpiredError,
  type LeaseGrant,
  type LeaseInfo,
  LeaseNotFoundError,
  type LockOptions,
  WatchCompactedError,
  type WatchEvent,
  type WatchOptions,
} from "./etcd_types.ts";
