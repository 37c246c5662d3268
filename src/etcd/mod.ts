/**
 * etcd v3's gRPC services on mokv's port (KV, Watch, Cluster, Maintenance), wire compatible
 * with etcd 3.4, over the same state machine as api.KV.
 */
export type { EtcdBackend, EtcdRaftStatus } from "./backend.ts";
export {
  createEtcdHandlers,
  ETCD_API_VERSION,
  type EtcdServiceOptions,
  header,
} from "./service.ts";
export {
  createWatchHandler,
  DEFAULT_PROGRESS_NOTIFY_MS,
  DEFAULT_WATCH_STREAM_BUFFER_BYTES,
  type WatchServiceOptions,
} from "./watch.ts";
export { CLUSTER_ID, memberId } from "./ids.ts";
export { localEtcdBackend } from "./local.ts";
export { createLeaseHandlers, type LeaseServiceOptions } from "./lease_service.ts";
export {
  Lessor,
  type LessorOptions,
  MAX_LEASE_TTL_SECONDS,
  MIN_LEASE_TTL_SECONDS,
} from "./lessor.ts";
export { prefixEnd, rangeObject, txnAuthz } from "./authz.ts";
export { toEtcdStatus } from "./errors.ts";
