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
} from "./messages.ts";
import { decodeRangeResponse } from "./kv_codec.ts";
import { adminServiceDefinition, healthServiceDefinition, kvServiceDefinition } from "./proto.ts";

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
