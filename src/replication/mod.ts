/**
 * The replication layer: the host around the Raft core, the interfaces it plugs its
 * collaborators in through, and the production implementations (Deno KV storage, the TLS
 * peer transport, the system clock).
 */
export {
  DEFAULT_MEMORY_LOG_ENTRIES,
  MAX_PENDING_PROPOSAL_BYTES,
  type ReplicationHooks,
  ReplicationHost,
  type ReplicationOptions,
} from "./host.ts";
export type {
  Clock,
  LogStore,
  ResultCodec,
  StateMachine,
  TimerId,
  Transport,
  TransportFactory,
  TransportHandlers,
} from "./interfaces.ts";
export { systemClock } from "./clock.ts";
export { RaftStorage, StorageError, type StorageOptions, type StorageStats } from "./storage.ts";
export {
  emptyTransportStats,
  PeerTransport,
  RemoteError,
  TransportError,
  type TransportOptions,
  type TransportStats,
} from "./transport.ts";
export { decodeResult, encodeResult, errorFromWire, errorToWire, RequestKind } from "./forward.ts";
