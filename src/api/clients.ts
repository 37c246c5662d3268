/**
 * Typed grpc-js client constructors for the embedded services, built from the same service
 * definitions the server registers, so client and server can never disagree on the contract.
 */
import * as grpc from "@grpc/grpc-js";
import type {
  AdminClient as AdminClientType,
  ClientConstructor,
  HealthClient as HealthClientType,
  KvClient as KvClientType,
  UnaryMethod,
} from "./messages.ts";
import { decodeRangeResponse } from "./kv_codec.ts";
import {
  adminServiceDefinition,
  etcdServiceDefinitions,
  healthServiceDefinition,
  kvServiceDefinition,
} from "./proto.ts";

function constructor<C extends grpc.Client>(
  definition: grpc.ServiceDefinition,
  name: string,
): ClientConstructor<C> {
  return grpc.makeGenericClientConstructor(definition, name) as unknown as ClientConstructor<C>;
}

/** api.KV with Range responses decoded by the hand-written codec (kv_codec.ts). */
function withFastRange(definition: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const range = definition.Range;
  if (!range) return definition;
  return {
    ...definition,
    Range: { ...range, responseDeserialize: (bytes: Uint8Array) => decodeRangeResponse(bytes) },
  };
}

/** `new KvClient(address, credentials)`: a typed client of api.KV. */
export const KvClient: ClientConstructor<KvClientType> = constructor(
  withFastRange(kvServiceDefinition),
  "api.KV",
);
/** `new AdminClient(address, credentials)`: a typed client of api.Admin. */
export const AdminClient: ClientConstructor<AdminClientType> = constructor(
  adminServiceDefinition,
  "api.Admin",
);
/** `new HealthClient(address, credentials)`: a typed client of grpc.health.v1.Health. */
export const HealthClient: ClientConstructor<HealthClientType> = constructor(
  healthServiceDefinition,
  "grpc.health.v1.Health",
);

/** etcd's mvccpb.KeyValue as proto-loader decodes it (int64 as numbers). */
export interface EtcdKeyValue {
  readonly key: Uint8Array;
  readonly create_revision: number;
  readonly mod_revision: number;
  readonly version: number;
  readonly value: Uint8Array;
  readonly lease: number;
}

/** etcd's ResponseHeader. */
export interface EtcdHeader {
  readonly revision: number;
}

/** etcd's RangeResponse. */
export interface EtcdRangeResponse {
  readonly header: EtcdHeader;
  readonly kvs: readonly EtcdKeyValue[];
  readonly more: boolean;
  readonly count: number;
}

/** etcd's PutResponse. */
export interface EtcdPutResponse {
  readonly header: EtcdHeader;
  readonly prev_kv: EtcdKeyValue | null;
}

/** etcd's DeleteRangeResponse. */
export interface EtcdDeleteRangeResponse {
  readonly header: EtcdHeader;
  readonly deleted: number;
}

/** etcd's ResponseOp (one of its fields is set). */
export interface EtcdResponseOp {
  readonly response_range?: EtcdRangeResponse | null;
  readonly response_put?: EtcdPutResponse | null;
  readonly response_delete_range?: EtcdDeleteRangeResponse | null;
}

/** etcd's TxnResponse. */
export interface EtcdTxnResponse {
  readonly header: EtcdHeader;
  readonly succeeded: boolean;
  readonly responses: readonly EtcdResponseOp[];
}

/** etcd's mvccpb.Event. */
export interface EtcdEvent {
  readonly type: "PUT" | "DELETE";
  readonly kv: EtcdKeyValue | null;
  readonly prev_kv: EtcdKeyValue | null;
}

/** etcd's WatchResponse. */
export interface EtcdWatchResponse {
  readonly header: EtcdHeader | null;
  readonly watch_id: number;
  readonly created: boolean;
  readonly canceled: boolean;
  readonly compact_revision: number;
  readonly cancel_reason: string;
  readonly events: readonly EtcdEvent[];
}

/** etcd's LeaseGrantResponse. */
export interface EtcdLeaseGrantResponse {
  readonly header: EtcdHeader;
  readonly ID: number;
  readonly TTL: number;
  readonly error: string;
}

/** etcd's LeaseKeepAliveResponse. */
export interface EtcdLeaseKeepAliveResponse {
  readonly header: EtcdHeader;
  readonly ID: number;
  readonly TTL: number;
}

/** etcd's LeaseTimeToLiveResponse. */
export interface EtcdLeaseTimeToLiveResponse {
  readonly header: EtcdHeader;
  readonly ID: number;
  readonly TTL: number;
  readonly grantedTTL: number;
  readonly keys: readonly Uint8Array[];
}

/**
 * An etcd request as proto-loader encodes it (plain objects, field names as in rpc.proto).
 * Loosely typed at this library boundary; the client library builds them in one place.
 */
export type EtcdRequest = Record<string, unknown>;

/** A bidirectional stream of an etcd service. */
export type EtcdDuplexMethod<Res> = (
  metadata?: grpc.Metadata,
  options?: Partial<grpc.CallOptions>,
) => grpc.ClientDuplexStream<EtcdRequest, Res>;

/** The typed grpc-js client of etcdserverpb.KV (the methods mokv's client uses). */
export interface EtcdKvClientType extends grpc.Client {
  Range: UnaryMethod<EtcdRequest, EtcdRangeResponse>;
  Put: UnaryMethod<EtcdRequest, EtcdPutResponse>;
  DeleteRange: UnaryMethod<EtcdRequest, EtcdDeleteRangeResponse>;
  Txn: UnaryMethod<EtcdRequest, EtcdTxnResponse>;
}

/** The typed grpc-js client of etcdserverpb.Watch. */
export interface EtcdWatchClientType extends grpc.Client {
  Watch: EtcdDuplexMethod<EtcdWatchResponse>;
}

/** The typed grpc-js client of etcdserverpb.Lease. */
export interface EtcdLeaseClientType extends grpc.Client {
  LeaseGrant: UnaryMethod<EtcdRequest, EtcdLeaseGrantResponse>;
  LeaseRevoke: UnaryMethod<EtcdRequest, { readonly header: EtcdHeader }>;
  LeaseTimeToLive: UnaryMethod<EtcdRequest, EtcdLeaseTimeToLiveResponse>;
  LeaseKeepAlive: EtcdDuplexMethod<EtcdLeaseKeepAliveResponse>;
}

/** `new EtcdKvClient(address, credentials)`: a client of etcd's KV service. */
export const EtcdKvClient: ClientConstructor<EtcdKvClientType> = constructor(
  etcdServiceDefinitions.KV,
  "etcdserverpb.KV",
);
/** `new EtcdWatchClient(address, credentials)`: a client of etcd's Watch service. */
export const EtcdWatchClient: ClientConstructor<EtcdWatchClientType> = constructor(
  etcdServiceDefinitions.Watch,
  "etcdserverpb.Watch",
);
/** `new EtcdLeaseClient(address, credentials)`: a client of etcd's Lease service. */
export const EtcdLeaseClient: ClientConstructor<EtcdLeaseClientType> = constructor(
  etcdServiceDefinitions.Lease,
  "etcdserverpb.Lease",
);
