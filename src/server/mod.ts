/**
 * The server edge: the backend interface the node implements, a single-node backend, the
 * api.KV/api.Admin/health/reflection gRPC server, the error-to-status mapping, and the one port
 * shared by gRPC and Raft.
 */
export type { KvBackend, KvReader, MemberInfo, ReadConsistency, ServerInfo } from "./backend.ts";
export { LocalBackend, type LocalBackendOptions } from "./local_backend.ts";
export {
  type AuthAction,
  type AuthorizeFn,
  createKvServiceHandlers,
  DEFAULT_MAX_KEY_BYTES,
  DEFAULT_MAX_VALUE_BYTES,
  type KvServiceHandlers,
  type KvServiceOptions,
  LIST_BATCH_BYTES,
  LIST_MAX_BUFFERED_BYTES,
  LIST_YIELD_KEYS,
  RANGE_PAGE_BYTES,
  RANGE_PAGE_EXAMINED_KEYS,
  type RequestInfo,
  SNAPSHOT_CHUNK_BYTES,
  subjectOf,
  withPreEncodedResponses,
} from "./kv_service.ts";
export { createHealthHandlers, HEALTH_SERVICES, type HealthServiceOptions } from "./health.ts";
export {
  createGrpcServer,
  DEFAULT_HTTP2_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_CONCURRENT_STREAMS,
  type GrpcServerOptions,
  MESSAGE_SLACK_BYTES,
} from "./grpc_server.ts";
export { MAX_FRAME_PAYLOAD_BYTES } from "./http2_guard.ts";
export {
  type GrpcStatus,
  LEADER_ADDR_METADATA,
  LEADER_ID_METADATA,
  toGrpcStatus,
} from "./status.ts";
export {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_PENDING_HANDSHAKES,
  dialRaft,
  type DialRaftOptions,
  type ListeningPort,
  listenPort,
  type ListenPortOptions,
  type PortStats,
  RAFT_ALPN,
  RAFT_PREFIX_BYTE,
  type RaftPeer,
  type TlsMaterial,
} from "./port.ts";
