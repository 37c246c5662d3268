/**
 * The wire contract: embedded .proto texts, the loaded grpc-js definitions, typed message
 * shapes and typed client constructors for api.KV, api.Admin and grpc.health.v1.Health.
 */
export {
  adminServiceDefinition,
  EMPTY_PROTO,
  etcdServiceDefinitions,
  HEALTH_PROTO,
  healthServiceDefinition,
  KV_PROTO,
  kvServiceDefinition,
  packageDefinition,
  PROTO_LOADER_OPTIONS,
} from "./proto.ts";
export {
  AdminClient,
  type EtcdDeleteRangeResponse,
  type EtcdDuplexMethod,
  type EtcdEvent,
  type EtcdHeader,
  type EtcdKeyValue,
  EtcdKvClient,
  type EtcdKvClientType,
  EtcdLeaseClient,
  type EtcdLeaseClientType,
  type EtcdLeaseGrantResponse,
  type EtcdLeaseKeepAliveResponse,
  type EtcdLeaseTimeToLiveResponse,
  type EtcdPutResponse,
  type EtcdRangeResponse,
  type EtcdRequest,
  type EtcdResponseOp,
  type EtcdTxnResponse,
  EtcdWatchClient,
  type EtcdWatchClientType,
  type EtcdWatchResponse,
  HealthClient,
  KvClient,
} from "./clients.ts";
export { ETCD_KV_PROTO, ETCD_RPC_PROTO } from "./etcd_proto.ts";
export {
  decodeGetResponse,
  decodeRangeResponse,
  encodeGetResponse,
  type GetResponseSize,
  GRPC_FRAME_HEADER_BYTES,
  type KvWireEntry,
  type RangePage,
  RangeResponseWriter,
  sizeGetResponse,
  WireFormatError,
  writeFrameHeader,
  writeGetResponse,
} from "./kv_codec.ts";
export type * from "./messages.ts";
