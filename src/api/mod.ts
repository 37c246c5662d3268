/**
 * The wire contract: embedded .proto texts, the loaded grpc-js definitions, typed message
 * shapes and typed client constructors for api.KV, api.Admin and grpc.health.v1.Health.
 */
export {
  adminServiceDefinition,
  EMPTY_PROTO,
  HEALTH_PROTO,
  healthServiceDefinition,
  KV_PROTO,
  kvServiceDefinition,
  packageDefinition,
  PROTO_LOADER_OPTIONS,
} from "./proto.ts";
export { AdminClient, HealthClient, KvClient } from "./clients.ts";
export type * from "./messages.ts";
