/**
 * Typed errors shared by every layer. They stay typed inside the node and become gRPC status
 * codes only at the server edge (src/server), so each layer can react to them precisely.
 */

/** Base class: every error mokv raises on purpose extends it. */
export class MokvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The node cannot serve this right now because it does not lead; retry on `leaderId`. */
export class NotLeaderError extends MokvError {
  constructor(
    /** The leader this node knows of, if any. */
    readonly leaderId?: string,
    /** The leader's RPC address, if known. */
    readonly leaderAddr?: string,
  ) {
    super(leaderId ? `not the leader; leader is ${leaderId}` : "not the leader; no leader known");
  }
}

/** The cluster cannot serve the request now (no leader, transfer in progress, shutting down); retryable. */
export class UnavailableError extends MokvError {}

/** The request is malformed; retrying it unchanged cannot succeed. */
export class InvalidArgumentError extends MokvError {}

/** The key is longer than the configured limit. */
export class KeyTooLargeError extends InvalidArgumentError {
  constructor(readonly sizeBytes: number, readonly maxBytes: number) {
    super(`key is ${sizeBytes} bytes; the limit is ${maxBytes}`);
  }
}

/** The value is longer than the configured limit. */
export class ValueTooLargeError extends InvalidArgumentError {
  constructor(readonly sizeBytes: number, readonly maxBytes: number) {
    super(`value is ${sizeBytes} bytes; the limit is ${maxBytes}`);
  }
}

/** A client_id longer than the session limit (sessions are bounded by bytes). */
export class ClientIdTooLargeError extends InvalidArgumentError {
  constructor(readonly sizeBytes: number, readonly maxBytes: number) {
    super(`client_id is ${sizeBytes} bytes; the limit is ${maxBytes}`);
  }
}

/**
 * The write would grow the stored data above the data-size quota (etcd's
 * `quota-backend-bytes`); deletes and shrinking writes still succeed. Not retryable as is.
 */
export class QuotaExceededError extends MokvError {
  constructor(readonly quotaBytes: number, readonly wouldBeBytes: number) {
    super(
      `data-size quota of ${quotaBytes} bytes exceeded (this write would store ${wouldBeBytes}); delete keys to free space`,
    );
  }
}

/** The key is empty. */
export class EmptyKeyError extends InvalidArgumentError {
  constructor() {
    super("key must not be empty");
  }
}

/** The key does not exist. */
export class KeyNotFoundError extends MokvError {
  constructor(readonly key: string) {
    super(`key not found: ${key}`);
  }
}

/** The subject may not perform the action on the object. */
export class PermissionDeniedError extends MokvError {
  constructor(readonly subject: string, readonly action: string, readonly object: string) {
    super(`${subject} may not ${action} ${object}`);
  }
}

/** A configuration value is wrong or missing; the message names the key. */
export class ConfigError extends MokvError {
  constructor(readonly key: string, message: string) {
    super(`config ${key}: ${message}`);
  }
}
