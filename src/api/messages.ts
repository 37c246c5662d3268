/**
 * TypeScript shapes of the api, grpc.health.v1 and google.protobuf messages as the embedded
 * loader decodes them (keepCase, longs as numbers, enums as strings, defaults filled in): every
 * field is present on a received message. To send one, build a {@link MessageInput}.
 */
import type * as grpc from "@grpc/grpc-js";

/** What a sender may pass for message `T`: every field optional, bytes as any Uint8Array. */
export type MessageInput<T> = {
  [K in keyof T]?: T[K] extends Uint8Array ? Uint8Array
    : T[K] extends readonly (infer E)[] ? MessageInput<E>[]
    : T[K];
};

/** google.protobuf.Empty. */
export type Empty = Record<string, never>;

/** api.Consistency: LINEARIZABLE (default, ReadIndex) or STALE (local state at once). */
export type Consistency = "LINEARIZABLE" | "STALE";

/** api.GetRequest. */
export interface GetRequest {
  key: string;
  consistency: Consistency;
}

/** api.GetResponse; also each item of the List stream. */
export interface GetResponse {
  key: string;
  value: Uint8Array;
  /** Raft index of the key's last write. */
  version: number;
}

/** api.SetRequest; `client_id` + `seq` (from 1) make retries exactly-once. */
export interface SetRequest {
  key: string;
  value: Uint8Array;
  client_id: string;
  seq: number;
  /** The lease to attach the key to; 0 = none. */
  lease?: number;
}

/** api.SetResponse. */
export interface SetResponse {
  ok: boolean;
  version: number;
}

/** api.DeleteRequest. */
export interface DeleteRequest {
  key: string;
  client_id: string;
  seq: number;
}

/** api.DeleteResponse: `ok` is always true; `existed` tells whether a value was removed. */
export interface DeleteResponse {
  ok: boolean;
  version: number;
  existed: boolean;
}

/** api.ListRequest: an empty body lists everything (what mökv clients send). */
export interface ListRequest {
  prefix: string;
  /** Inclusive lower bound. */
  start: string;
  /** 0 = no limit. */
  limit: number;
  consistency: Consistency;
}

/** api.RangeRequest: one page of a paged read; the next starts at the last `next_key`. */
export interface RangeRequest {
  prefix: string;
  /** Inclusive lower bound. */
  start: string;
  /** At most this many entries in this page; 0 = as many as fit the server's page. */
  limit: number;
  consistency: Consistency;
}

/** api.RangeResponse: one page of entries in key order. */
export interface RangeResponse {
  kvs: GetResponse[];
  /** Keys after this page may match: ask again with `start = next_key`. */
  more: boolean;
  /** The first key not yet examined ("" when `more` is false). */
  next_key: string;
}

/** api.Server: one Raft server. */
export interface Server {
  id: string;
  rpc_addr: string;
  is_leader: boolean;
  is_voter: boolean;
}

/** api.GetServersResponse. */
export interface GetServersResponse {
  servers: Server[];
}

/** api.AppendRequest. */
export interface AppendRequest {
  key: string;
  value: Uint8Array;
  client_id: string;
  seq: number;
}

/** api.AppendResponse: `length` is the value's byte length after the append. */
export interface AppendResponse {
  ok: boolean;
  version: number;
  length: number;
}

/** api.CompareAndSetRequest: compares the value when `has_expect_value`, else the version. */
export interface CompareAndSetRequest {
  key: string;
  value: Uint8Array;
  expect_value: Uint8Array;
  expect_version: number;
  has_expect_value: boolean;
  client_id: string;
  seq: number;
}

/** api.CompareAndSetResponse: on failure, the current version and value. */
export interface CompareAndSetResponse {
  ok: boolean;
  version: number;
  current_value: Uint8Array;
}

/** api.Member: one gossip member. */
export interface Member {
  name: string;
  gossip_addr: string;
  rpc_addr: string;
  state: string;
}

/** api.MembersResponse. */
export interface MembersResponse {
  members: Member[];
}

/** api.RemoveServerRequest. */
export interface RemoveServerRequest {
  id: string;
}

/** api.TransferLeadershipRequest: an empty id means any voter. */
export interface TransferLeadershipRequest {
  id: string;
}

/** api.TransferLeadershipResponse. */
export interface TransferLeadershipResponse {
  leader_id: string;
}

/** api.SnapshotChunk: concatenate `data` of every chunk to get the backup. */
export interface SnapshotChunk {
  data: Uint8Array;
}

/** grpc.health.v1.HealthCheckResponse.ServingStatus. */
export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

/** grpc.health.v1.HealthCheckRequest. */
export interface HealthCheckRequest {
  service: string;
}

/** grpc.health.v1.HealthCheckResponse. */
export interface HealthCheckResponse {
  status: ServingStatus;
}

/** A unary client method in grpc-js's callback style. */
export interface UnaryMethod<Req, Res> {
  (
    request: MessageInput<Req>,
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null, response?: Res) => void,
  ): grpc.ClientUnaryCall;
  (
    request: MessageInput<Req>,
    callback: (error: grpc.ServiceError | null, response?: Res) => void,
  ): grpc.ClientUnaryCall;
}

/** A server-streaming client method. */
export type StreamMethod<Req, Res> = (
  request: MessageInput<Req>,
  metadata?: grpc.Metadata,
  options?: Partial<grpc.CallOptions>,
) => grpc.ClientReadableStream<Res>;

/** A typed grpc-js client of api.KV (construct it with `KvClient` from clients.ts). */
export interface KvClient extends grpc.Client {
  Get: UnaryMethod<GetRequest, GetResponse>;
  Set: UnaryMethod<SetRequest, SetResponse>;
  Delete: UnaryMethod<DeleteRequest, DeleteResponse>;
  List: StreamMethod<ListRequest, GetResponse>;
  GetServers: UnaryMethod<Empty, GetServersResponse>;
  Append: UnaryMethod<AppendRequest, AppendResponse>;
  CompareAndSet: UnaryMethod<CompareAndSetRequest, CompareAndSetResponse>;
  Range: UnaryMethod<RangeRequest, RangeResponse>;
}

/** A typed grpc-js client of api.Admin. */
export interface AdminClient extends grpc.Client {
  Members: UnaryMethod<Empty, MembersResponse>;
  RemoveServer: UnaryMethod<RemoveServerRequest, Empty>;
  TransferLeadership: UnaryMethod<TransferLeadershipRequest, TransferLeadershipResponse>;
  Leave: UnaryMethod<Empty, Empty>;
  Snapshot: StreamMethod<Empty, SnapshotChunk>;
}

/** A typed grpc-js client of grpc.health.v1.Health. */
export interface HealthClient extends grpc.Client {
  Check: UnaryMethod<HealthCheckRequest, HealthCheckResponse>;
  Watch: StreamMethod<HealthCheckRequest, HealthCheckResponse>;
}

/** Constructs a typed client: `new ctor(address, credentials, options)`. */
export type ClientConstructor<C extends grpc.Client> = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => C;
