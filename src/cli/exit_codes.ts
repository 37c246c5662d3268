/**
 * Exit codes of the `mokv` client commands, stable for scripts:
 *
 * | code | meaning                                                              |
 * | ---- | -------------------------------------------------------------------- |
 * | 0    | success                                                              |
 * | 1    | any other error                                                      |
 * | 2    | usage: bad flags or arguments, or a request the server calls invalid |
 * | 3    | not found (the key, or the lease, does not exist)                    |
 * | 4    | permission denied (the certificate's CN may not do this)             |
 * | 5    | unavailable: no answer, no leader, or a node not SERVING             |
 * | 6    | compare failed (`kv cas` did not store the value)                    |
 * | 7    | lock lost (`mokv lock`: the lease ended while COMMAND ran)           |
 */
import * as grpc from "@grpc/grpc-js";
import {
  InvalidArgumentError,
  KeyNotFoundError,
  PermissionDeniedError,
  UnavailableError,
} from "../errors.ts";
import { LeaseNotFoundError, RpcError } from "../client/mod.ts";

/** The exit codes, by name. */
export const ExitCode = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  PERMISSION_DENIED: 4,
  UNAVAILABLE: 5,
  COMPARE_FAILED: 6,
  LOCK_LOST: 7,
} as const;

/** One of {@link ExitCode}'s values. */
export type ExitCodeValue = typeof ExitCode[keyof typeof ExitCode];

/** Wrong flags or arguments on the command line; exits with {@link ExitCode.USAGE}. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The exit code an error maps to (see the table above). */
export function exitCodeOf(error: unknown): ExitCodeValue {
  if (error instanceof UsageError || error instanceof InvalidArgumentError) return ExitCode.USAGE;
  if (error instanceof KeyNotFoundError || error instanceof LeaseNotFoundError) {
    return ExitCode.NOT_FOUND;
  }
  if (error instanceof PermissionDeniedError) return ExitCode.PERMISSION_DENIED;
  if (error instanceof UnavailableError) return ExitCode.UNAVAILABLE;
  if (error instanceof RpcError && error.code === grpc.status.DEADLINE_EXCEEDED) {
    return ExitCode.UNAVAILABLE;
  }
  return ExitCode.ERROR;
}
