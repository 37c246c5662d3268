/**
 * The ONE place where mokv's typed errors become gRPC status codes; handlers never pick codes
 * themselves. A leader hint travels in trailing metadata so clients can retry on the leader.
 */
import * as grpc from "@grpc/grpc-js";
import {
  InvalidArgumentError,
  KeyNotFoundError,
  NotLeaderError,
  PermissionDeniedError,
  QuotaExceededError,
  UnavailableError,
} from "../errors.ts";

/** Trailing metadata key carrying the current leader's node id on UNAVAILABLE. */
export const LEADER_ID_METADATA = "mokv-leader-id";
/** Trailing metadata key carrying the current leader's RPC address on UNAVAILABLE. */
export const LEADER_ADDR_METADATA = "mokv-leader-addr";

/** A status ready to hand to a grpc-js callback or a stream's "error" event. */
export interface GrpcStatus {
  readonly code: grpc.status;
  readonly details: string;
  readonly metadata: grpc.Metadata;
}

/**
 * Maps an error to its status: KeyNotFoundError → NOT_FOUND, InvalidArgumentError →
 * INVALID_ARGUMENT, PermissionDeniedError → PERMISSION_DENIED, QuotaExceededError →
 * RESOURCE_EXHAUSTED, NotLeaderError and
 * UnavailableError → UNAVAILABLE (with the leader hint), anything else → INTERNAL with a
 * generic message (the caller logs the real one).
 */
export function toGrpcStatus(error: unknown): GrpcStatus {
  const metadata = new grpc.Metadata();
  if (error instanceof KeyNotFoundError) {
    return { code: grpc.status.NOT_FOUND, details: error.message, metadata };
  }
  if (error instanceof InvalidArgumentError) {
    return { code: grpc.status.INVALID_ARGUMENT, details: error.message, metadata };
  }
  if (error instanceof PermissionDeniedError) {
    return { code: grpc.status.PERMISSION_DENIED, details: error.message, metadata };
  }
  if (error instanceof QuotaExceededError) {
    return { code: grpc.status.RESOURCE_EXHAUSTED, details: error.message, metadata };
  }
  if (error instanceof NotLeaderError) {
    if (error.leaderId) metadata.set(LEADER_ID_METADATA, error.leaderId);
    if (error.leaderAddr) metadata.set(LEADER_ADDR_METADATA, error.leaderAddr);
    return { code: grpc.status.UNAVAILABLE, details: error.message, metadata };
  }
  if (error instanceof UnavailableError) {
    return { code: grpc.status.UNAVAILABLE, details: error.message, metadata };
  }
  return { code: grpc.status.INTERNAL, details: "internal error", metadata };
}
