/**
 * Assembles the gRPC server of a node: api.KV, api.Admin, grpc.health.v1.Health and server
 * reflection, with a receive limit large enough that oversized values get INVALID_ARGUMENT
 * instead of a dropped message.
 */
import * as grpc from "@grpc/grpc-js";
import { identitiesOf } from "./http2_guard.ts";
import { ReflectionService } from "@grpc/reflection";
import {
  adminServiceDefinition,
  healthServiceDefinition,
  kvServiceDefinition,
  packageDefinition,
} from "../api/mod.ts";
import { createHealthHandlers, type HealthServiceOptions } from "./health.ts";
import {
  createKvServiceHandlers,
  DEFAULT_MAX_KEY_BYTES,
  DEFAULT_MAX_VALUE_BYTES,
  type KvServiceOptions,
} from "./kv_service.ts";

/** Extra room above key + value for the rest of a request message. */
export const MESSAGE_SLACK_BYTES = 64 * 1024;

/** Settings of {@link createGrpcServer}. */
export interface GrpcServerOptions extends KvServiceOptions, HealthServiceOptions {}

/**
 * A grpc-js server with every mokv service added, not yet bound: bind it with `bindAsync`, or
 * feed it connections through {@link listenPort} (port.ts), which shares the port with Raft.
 */
export function createGrpcServer(options: GrpcServerOptions): grpc.Server {
  const maxKeyBytes = options.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  const server = new grpc.Server({
    // CompareAndSet carries two values.
    "grpc.max_receive_message_length": 2 * maxValueBytes + maxKeyBytes + MESSAGE_SLACK_BYTES,
  });
  const { kv, admin } = createKvServiceHandlers({
    identities: identitiesOf(server),
    ...options,
  });
  server.addService(kvServiceDefinition, kv);
  server.addService(adminServiceDefinition, admin);
  server.addService(healthServiceDefinition, createHealthHandlers(options.backend, options));
  new ReflectionService(packageDefinition).addToServer(server);
  return server;
}
