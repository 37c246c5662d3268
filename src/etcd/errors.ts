/**
 * etcd's errors on the wire: clientv3 and etcdctl recognise errors by gRPC code and message
 * (etcd's `rpctypes`), so mokv's typed errors are answered with etcd's own words here, in one
 * place, as status.ts does for api.KV.
 */
import * as grpc from "@grpc/grpc-js";
import {
  InvalidArgumentError,
  NotLeaderError,
  PermissionDeniedError,
  QuotaExceededError,
  UnavailableError,
} from "../errors.ts";
import { EtcdError, type EtcdFailure } from "../kv/mod.ts";
import type { GrpcStatus } from "../server/status.ts";

/** etcd's no-leader error (clientv3 retries on it). */
export const NO_LEADER = "etcdserver: no leader";
/** etcd's timeout error. */
export const REQUEST_TIMED_OUT = "etcdserver: request timed out";

const CODES: Readonly<Record<string, grpc.status>> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  OUT_OF_RANGE: grpc.status.OUT_OF_RANGE,
  NOT_FOUND: grpc.status.NOT_FOUND,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  UNIMPLEMENTED: grpc.status.UNIMPLEMENTED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
};

/** An etcd error the state machine returned in a result, thrown at the edge. */
export function failureError(f: EtcdFailure): EtcdError {
  return new EtcdError(f.code as EtcdError["code"], f.message);
}

/** Maps any error to the status etcd would answer with. */
export function toEtcdStatus(error: unknown): GrpcStatus {
  const metadata = new grpc.Metadata();
  if (error instanceof EtcdError) {
    return { code: CODES[error.code] ?? grpc.status.UNKNOWN, details: error.message, metadata };
  }
  if (error instanceof PermissionDeniedError) {
    return {
      code: grpc.status.PERMISSION_DENIED,
      details: "etcdserver: permission denied",
      metadata,
    };
  }
  if (error instanceof QuotaExceededError) {
    return {
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: "etcdserver: mvcc: database space exceeded",
      metadata,
    };
  }
  if (error instanceof InvalidArgumentError) {
    return {
      code: grpc.status.INVALID_ARGUMENT,
      details: `etcdserver: ${error.message}`,
      metadata,
    };
  }
  if (error instanceof NotLeaderError) {
    return { code: grpc.status.UNAVAILABLE, details: NO_LEADER, metadata };
  }
  if (error instanceof UnavailableError) {
    const timedOut = /timed out|in time/.test(error.message);
    return {
      code: grpc.status.UNAVAILABLE,
      details: timedOut ? REQUEST_TIMED_OUT : NO_LEADER,
      metadata,
    };
  }
  return { code: grpc.status.INTERNAL, details: "etcdserver: internal error", metadata };
}
