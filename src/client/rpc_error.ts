/**
 * How a failed call reaches the caller: gRPC statuses become mokv's typed errors
 * (KeyNotFoundError, PermissionDeniedError, InvalidArgumentError, UnavailableError), anything
 * else an {@link RpcError}; {@link errorCode} names the status of any of them.
 */
import * as grpc from "@grpc/grpc-js";
import {
  InvalidArgumentError,
  KeyNotFoundError,
  MokvError,
  PermissionDeniedError,
  UnavailableError,
} from "../errors.ts";
import { LEADER_ADDR_METADATA, LEADER_ID_METADATA } from "../server/mod.ts";

/** A failed call whose status has no typed mokv error (DEADLINE_EXCEEDED, INTERNAL, ...). */
export class RpcError extends MokvError {
  constructor(
    /** The gRPC status code. */
    readonly code: grpc.status,
    /** The server's (or grpc-js's) description. */
    readonly details: string,
  ) {
    super(`${grpc.status[code] ?? code}: ${details}`);
  }
}

/** The leader hint a server attaches to UNAVAILABLE, when it knows one. */
export interface LeaderHint {
  readonly leaderId?: string;
  readonly leaderAddr?: string;
}

/** True for grpc-js errors (they carry a numeric `code` and `metadata`). */
export function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as Partial<grpc.ServiceError>).code === "number";
}

/** Reads the leader hint of a failed call (trailing metadata), if any. */
export function leaderHintOf(error: grpc.ServiceError): LeaderHint {
  const metadata = error.metadata;
  if (!metadata) return {};
  const id = metadata.get(LEADER_ID_METADATA)[0];
  const addr = metadata.get(LEADER_ADDR_METADATA)[0];
  return {
    ...(typeof id === "string" && id !== "" ? { leaderId: id } : {}),
    ...(typeof addr === "string" && addr !== "" ? { leaderAddr: addr } : {}),
  };
}

const PERMISSION = /^(.*) may not (\S+) (.*)$/;

/**
 * Converts a grpc-js error into the typed error the caller sees. `key` names the key of a
 * NOT_FOUND. Errors that are not grpc-js errors pass through unchanged.
 */
export function toClientError(error: unknown, key = ""): Error {
  if (!isServiceError(error)) return error instanceof Error ? error : new Error(String(error));
  const details = error.details || error.message;
  switch (error.code) {
    case grpc.status.NOT_FOUND:
      return new KeyNotFoundError(key);
    case grpc.status.INVALID_ARGUMENT:
      return new InvalidArgumentError(details);
    case grpc.status.PERMISSION_DENIED: {
      const m = PERMISSION.exec(details);
      return m
        ? new PermissionDeniedError(m[1], m[2], m[3])
        : new PermissionDeniedError("client", "access", details);
    }
    case grpc.status.UNAVAILABLE:
      return new UnavailableError(details);
    default:
      return new RpcError(error.code, details);
  }
}

/** The gRPC status name an error stands for ("NOT_FOUND", "UNAVAILABLE", ..., "UNKNOWN"). */
export function errorCode(error: unknown): string {
  if (error instanceof KeyNotFoundError) return "NOT_FOUND";
  if (error instanceof InvalidArgumentError) return "INVALID_ARGUMENT";
  if (error instanceof PermissionDeniedError) return "PERMISSION_DENIED";
  if (error instanceof UnavailableError) return "UNAVAILABLE";
  if (error instanceof RpcError || isServiceError(error)) {
    return grpc.status[error.code] ?? String(error.code);
  }
  return "UNKNOWN";
}
