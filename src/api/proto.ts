/**
 * The wire contract, embedded: the .proto texts (so a compiled binary never reads repo files),
 * loaded with protobufjs + `@grpc/proto-loader` into grpc-js package and service definitions.
 *
 * proto-loader options (see {@link PROTO_LOADER_OPTIONS}): `keepCase: true` (field names as in
 * the .proto, e.g. `client_id`, so reflection and JSON tools match the file), `longs: Number`
 * (uint64 versions and lengths are JS numbers; Raft indexes stay far below 2^53),
 * `enums: String` (`"LINEARIZABLE"`), `defaults: true` (every field present on decoded
 * messages, so an empty body decodes like google.protobuf.Empty with zero values), bytes as
 * Buffer (a Uint8Array).
 */
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";
import { ETCD_KV_PROTO, ETCD_RPC_PROTO } from "./etcd_proto.ts";

/** The text of proto/kv.proto (package api); a test keeps it identical to the file. */
export const KV_PROTO =
  `// mokv wire contract: package api, compatible with mökv's api.KV (same messages and field
// numbers); every extension is additive (new fields, new RPCs, compatible request messages).
syntax = "proto3";

package api;

import "google/protobuf/empty.proto";

// The key-value service. Errors: NOT_FOUND (missing key), INVALID_ARGUMENT (empty or oversized
// key or value), PERMISSION_DENIED (denied by policy), UNAVAILABLE (no leader yet; retry, using
// the trailing metadata mokv-leader-id / mokv-leader-addr when present).
service KV {
  rpc Get(GetRequest) returns (GetResponse) {}
  rpc Set(SetRequest) returns (SetResponse) {}
  rpc Delete(DeleteRequest) returns (DeleteResponse) {}
  // Streams entries in key order (UTF-8 byte order). An empty body lists everything, so mökv
  // clients that send google.protobuf.Empty keep working.
  rpc List(ListRequest) returns (stream GetResponse) {}
  rpc GetServers(google.protobuf.Empty) returns (GetServersResponse) {}
  // Appends value to the key's value, creating the key when absent.
  rpc Append(AppendRequest) returns (AppendResponse) {}
  // Stores value only if the key's current value (has_expect_value) or version matches;
  // expect_version 0 means the key must not exist.
  rpc CompareAndSet(CompareAndSetRequest) returns (CompareAndSetResponse) {}
  // Many entries per response, in key order (etcd's Range, paged): at most limit entries (0: as
  // many as fit the server's page), each page one consistent view at or after its own read
  // index. When more is true, ask again with start = next_key. Authorized per key as List is.
  rpc Range(RangeRequest) returns (RangeResponse) {}
}

// Cluster administration, served on the same port; every RPC needs the "admin" action except
// Members, which needs "consume".
service Admin {
  rpc Members(google.protobuf.Empty) returns (MembersResponse) {}
  rpc RemoveServer(RemoveServerRequest) returns (google.protobuf.Empty) {}
  rpc TransferLeadership(TransferLeadershipRequest) returns (TransferLeadershipResponse) {}
  rpc Leave(google.protobuf.Empty) returns (google.protobuf.Empty) {}
  // A consistent backup of the state machine, in chunks; concatenate the data fields.
  rpc Snapshot(google.protobuf.Empty) returns (stream SnapshotChunk) {}
}

enum Consistency {
  LINEARIZABLE = 0;
  STALE = 1;
}

message GetRequest {
  string key = 1;
  Consistency consistency = 2;
}

message GetResponse {
  string key = 1;
  bytes value = 2;
  // Raft index of the key's last write.
  uint64 version = 3;
}

// client_id and seq make a retried write exactly-once: at most one write in flight per
// client_id, seq strictly increasing from 1. An empty client_id disables deduplication.
message SetRequest {
  string key = 1;
  bytes value = 2;
  string client_id = 3;
  uint64 seq = 4;
  // Attach the key to this lease (etcd's Lease service grants them); 0 = none.
  int64 lease = 5;
}

message SetResponse {
  bool ok = 1;
  uint64 version = 2;
}

message DeleteRequest {
  string key = 1;
  string client_id = 2;
  uint64 seq = 3;
}

message DeleteResponse {
  bool ok = 1;
  uint64 version = 2;
  bool existed = 3;
}

message ListRequest {
  string prefix = 1;
  // Inclusive lower bound.
  string start = 2;
  // 0 = no limit.
  uint32 limit = 3;
  Consistency consistency = 4;
}

message Server {
  string id = 1;
  string rpc_addr = 2;
  bool is_leader = 3;
  bool is_voter = 4;
}

message GetServersResponse {
  repeated Server servers = 1;
}

message AppendRequest {
  string key = 1;
  bytes value = 2;
  string client_id = 3;
  uint64 seq = 4;
}

message AppendResponse {
  bool ok = 1;
  uint64 version = 2;
  // Byte length of the value after the append.
  uint64 length = 3;
}

message CompareAndSetRequest {
  string key = 1;
  bytes value = 2;
  bytes expect_value = 3;
  uint64 expect_version = 4;
  bool has_expect_value = 5;
  string client_id = 6;
  uint64 seq = 7;
}

message CompareAndSetResponse {
  bool ok = 1;
  // On success the new version; on failure the current one (0 when the key is absent).
  uint64 version = 2;
  // On failure, the current value (empty when the key is absent).
  bytes current_value = 3;
}

message Member {
  string name = 1;
  string gossip_addr = 2;
  string rpc_addr = 3;
  // "alive", "suspect", "failed" or "left".
  string state = 4;
}

message MembersResponse {
  repeated Member members = 1;
}

message RemoveServerRequest {
  string id = 1;
}

message TransferLeadershipRequest {
  // Empty = any up-to-date voter.
  string id = 1;
}

message TransferLeadershipResponse {
  string leader_id = 1;
}

message SnapshotChunk {
  bytes data = 1;
}

message RangeRequest {
  string prefix = 1;
  // Inclusive lower bound; the next page starts at the previous response's next_key.
  string start = 2;
  // At most this many entries in this response; 0 = as many as fit the server's page.
  uint32 limit = 3;
  Consistency consistency = 4;
}

message RangeResponse {
  repeated GetResponse kvs = 1;
  // True when keys after this page may match: ask again with start = next_key.
  bool more = 2;
  // The first key not yet examined (empty when more is false).
  string next_key = 3;
}
`;

/** The text of proto/health.proto (grpc.health.v1). */
export const HEALTH_PROTO =
  `// The standard gRPC health checking protocol (grpc.health.v1), as Kubernetes gRPC probes use it.
syntax = "proto3";

package grpc.health.v1;

message HealthCheckRequest {
  string service = 1;
}

message HealthCheckResponse {
  enum ServingStatus {
    UNKNOWN = 0;
    SERVING = 1;
    NOT_SERVING = 2;
    SERVICE_UNKNOWN = 3;
  }
  ServingStatus status = 1;
}

service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
`;

/** The text of proto/empty.proto (google.protobuf.Empty, as kv.proto imports it). */
export const EMPTY_PROTO = `// google/protobuf/empty.proto, reduced to the one message mokv uses.
syntax = "proto3";

package google.protobuf;

message Empty {}
`;

/** The proto-loader options every mokv server and client uses. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});

/** File names the descriptors carry (what reflection clients see), and their imports. */
const FILES = [
  { pkg: "google.protobuf", name: "google/protobuf/empty.proto", text: EMPTY_PROTO, deps: [] },
  { pkg: "api", name: "kv.proto", text: KV_PROTO, deps: ["google/protobuf/empty.proto"] },
  { pkg: "grpc.health.v1", name: "grpc/health/v1/health.proto", text: HEALTH_PROTO, deps: [] },
  { pkg: "mvccpb", name: "etcd/kv.proto", text: ETCD_KV_PROTO, deps: [] },
  { pkg: "etcdserverpb", name: "etcd/rpc.proto", text: ETCD_RPC_PROTO, deps: ["etcd/kv.proto"] },
] as const;

interface FileDescriptorLike {
  name?: string;
  dependency: string[];
}

function load(): protoLoader.PackageDefinition {
  const root = new protobuf.Root();
  for (const file of FILES) {
    protobuf.parse(file.text, root, { keepCase: true });
    (root.lookup(file.pkg) as protobuf.Namespace).filename = file.name;
  }
  root.resolveAll();
  const definition = protoLoader.fromJSON(root.toJSON(), PROTO_LOADER_OPTIONS);
  // proto-loader's fromJSON loses file names and imports; reflection clients (grpcurl) need
  // both, so the descriptors are rebuilt from the named root and put in place of its own.
  // deno-lint-ignore no-explicit-any -- protobufjs's descriptor extension is untyped
  const set = (root as any).toDescriptor("proto3") as { file: FileDescriptorLike[] };
  const fileDescriptorProtos = set.file.map((file) => {
    const known = FILES.find((f) => f.name === file.name);
    if (!known) throw new Error(`unexpected proto file ${file.name}`);
    file.dependency = [...known.deps];
    return descriptor.FileDescriptorProto.encode(file).finish();
  });
  for (const def of Object.values(definition)) {
    if ("fileDescriptorProtos" in def) {
      (def as { fileDescriptorProtos: unknown }).fileDescriptorProtos = fileDescriptorProtos;
    } else {
      for (const method of Object.values(def)) {
        (method.requestType as { fileDescriptorProtos: unknown }).fileDescriptorProtos =
          fileDescriptorProtos;
        (method.responseType as { fileDescriptorProtos: unknown }).fileDescriptorProtos =
          fileDescriptorProtos;
      }
    }
  }
  return definition;
}

/**
 * Every message, enum and service of api (KV, Admin), grpc.health.v1 and google.protobuf,
 * keyed by full name; feed it to `grpc.loadPackageDefinition` or `@grpc/reflection`.
 */
export const packageDefinition: protoLoader.PackageDefinition = load();

function service(name: string): grpc.ServiceDefinition {
  const def = packageDefinition[name];
  if (!def || "format" in def) throw new Error(`no service ${name} in the embedded protos`);
  return def as grpc.ServiceDefinition;
}

/** The grpc-js definition of service `api.KV` (for `server.addService` or `makeGenericClientConstructor`). */
export const kvServiceDefinition: grpc.ServiceDefinition = service("api.KV");
/** The grpc-js definition of service `api.Admin`. */
export const adminServiceDefinition: grpc.ServiceDefinition = service("api.Admin");
/** The grpc-js definitions of etcd v3's services (package etcdserverpb), by service name. */
export const etcdServiceDefinitions = {
  KV: service("etcdserverpb.KV"),
  Watch: service("etcdserverpb.Watch"),
  Lease: service("etcdserverpb.Lease"),
  Cluster: service("etcdserverpb.Cluster"),
  Maintenance: service("etcdserverpb.Maintenance"),
} as const;
/** The grpc-js definition of service `grpc.health.v1.Health`. */
export const healthServiceDefinition: grpc.ServiceDefinition = service("grpc.health.v1.Health");
