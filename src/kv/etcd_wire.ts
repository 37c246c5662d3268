/**
 * etcd v3's request and response shapes as the state machine sees them (the field names of
 * etcd's rpc.proto, as `@grpc/proto-loader` decodes them with mokv's options: `keepCase`,
 * enums as strings, int64 as numbers, bytes as Uint8Array), and the protobuf codec that
 * carries a transaction in a log entry and its result back to a forwarding follower. A Put,
 * a DeleteRange and a Txn are all one `txn` command: one entry, one revision.
 */
import protobuf from "protobufjs";
import { ETCD_KV_PROTO, ETCD_RPC_PROTO } from "../api/etcd_proto.ts";

/** mvccpb.KeyValue. */
export interface EtcdKeyValue {
  key: Uint8Array;
  create_revision: number;
  mod_revision: number;
  version: number;
  value: Uint8Array;
  lease: number;
}

/** etcdserverpb.RangeRequest. */
export interface RangeRequest {
  key: Uint8Array;
  range_end: Uint8Array;
  limit: number;
  revision: number;
  sort_order: "NONE" | "ASCEND" | "DESCEND";
  sort_target: "KEY" | "VERSION" | "CREATE" | "MOD" | "VALUE";
  serializable: boolean;
  keys_only: boolean;
  count_only: boolean;
  min_mod_revision: number;
  max_mod_revision: number;
  min_create_revision: number;
  max_create_revision: number;
}

/** etcdserverpb.RangeResponse (without its header, which the server adds). */
export interface RangeResponse {
  kvs: EtcdKeyValue[];
  more: boolean;
  count: number;
}

/** etcdserverpb.PutRequest. */
export interface PutRequest {
  key: Uint8Array;
  value: Uint8Array;
  lease: number;
  prev_kv: boolean;
  ignore_value: boolean;
  ignore_lease: boolean;
}

/** etcdserverpb.PutResponse (without header). */
export interface PutResponse {
  prev_kv?: EtcdKeyValue | null;
}

/** etcdserverpb.DeleteRangeRequest. */
export interface DeleteRangeRequest {
  key: Uint8Array;
  range_end: Uint8Array;
  prev_kv: boolean;
}

/** etcdserverpb.DeleteRangeResponse (without header). */
export interface DeleteRangeResponse {
  deleted: number;
  prev_kvs: EtcdKeyValue[];
}

/** etcdserverpb.RequestOp: exactly one of the four is set (`request` names it). */
export interface RequestOp {
  request?: "request_range" | "request_put" | "request_delete_range" | "request_txn";
  request_range?: RangeRequest | null;
  request_put?: PutRequest | null;
  request_delete_range?: DeleteRangeRequest | null;
  request_txn?: TxnRequest | null;
}

/** etcdserverpb.ResponseOp. */
export interface ResponseOp {
  response_range?: RangeResponse;
  response_put?: PutResponse;
  response_delete_range?: DeleteRangeResponse;
  response_txn?: TxnResponse;
}

/** etcdserverpb.Compare. */
export interface Compare {
  result: "EQUAL" | "GREATER" | "LESS" | "NOT_EQUAL";
  target: "VERSION" | "CREATE" | "MOD" | "VALUE" | "LEASE";
  key: Uint8Array;
  target_union?: "version" | "create_revision" | "mod_revision" | "value" | "lease";
  version: number;
  create_revision: number;
  mod_revision: number;
  value: Uint8Array;
  lease: number;
  range_end: Uint8Array;
}

/** etcdserverpb.TxnRequest. */
export interface TxnRequest {
  compare: Compare[];
  success: RequestOp[];
  failure: RequestOp[];
}

/** etcdserverpb.TxnResponse (without header). */
export interface TxnResponse {
  succeeded: boolean;
  responses: ResponseOp[];
}

const root = new protobuf.Root();
protobuf.parse(ETCD_KV_PROTO, root, { keepCase: true });
protobuf.parse(ETCD_RPC_PROTO, root, { keepCase: true });
root.resolveAll();
const TxnRequestType = root.lookupType("etcdserverpb.TxnRequest");
const TxnResponseType = root.lookupType("etcdserverpb.TxnResponse");
const RangeRequestType = root.lookupType("etcdserverpb.RangeRequest");

/** The conversion proto-loader applies for mokv's servers (see PROTO_LOADER_OPTIONS). */
const TO_OBJECT: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  arrays: true,
};

/** A transaction with any of its fields left out (defaults filled by {@link normalizeTxn}). */
export interface TxnInput {
  compare?: Partial<Compare>[];
  success?: OpInput[];
  failure?: OpInput[];
}

/** A RequestOp with any of its fields left out. */
export interface OpInput {
  request_range?: Partial<RangeRequest>;
  request_put?: Partial<PutRequest>;
  request_delete_range?: Partial<DeleteRangeRequest>;
  request_txn?: TxnInput;
}

/** Fills every default of a TxnRequest, as the server receives it from proto-loader. */
export function normalizeTxn(txn: TxnInput): TxnRequest {
  return TxnRequestType.toObject(TxnRequestType.fromObject(txn), TO_OBJECT) as TxnRequest;
}

/** A RangeRequest with every default filled, from any subset of its fields. */
export function rangeRequest(fields: Partial<RangeRequest>): RangeRequest {
  return RangeRequestType.toObject(RangeRequestType.fromObject(fields), TO_OBJECT) as RangeRequest;
}

/** A transaction for the log: etcd's own protobuf encoding. */
export function encodeTxn(txn: TxnRequest): Uint8Array {
  return TxnRequestType.encode(TxnRequestType.fromObject(txn)).finish();
}

/** Decodes what {@link encodeTxn} made; throws on bytes that are not a TxnRequest. */
export function decodeTxn(bytes: Uint8Array): TxnRequest {
  return TxnRequestType.toObject(TxnRequestType.decode(bytes), TO_OBJECT) as TxnRequest;
}

/** A transaction's result for the trip back to a forwarding follower. */
export function encodeTxnResponse(r: TxnResponse): Uint8Array {
  return TxnResponseType.encode(TxnResponseType.fromObject(r)).finish();
}

/** Decodes what {@link encodeTxnResponse} made. */
export function decodeTxnResponse(bytes: Uint8Array): TxnResponse {
  return TxnResponseType.toObject(TxnResponseType.decode(bytes), TO_OBJECT) as TxnResponse;
}
