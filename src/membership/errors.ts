/** Typed errors of the membership layer. */
import { InvalidArgumentError, MokvError } from "../errors.ts";

/** A datagram is not a well-formed gossip message; the host drops and counts it. */
export class GossipDecodeError extends MokvError {
  constructor(readonly reason: string, readonly offset: number) {
    super(`malformed gossip datagram at byte ${offset}: ${reason}`);
  }
}

/** A datagram failed authentication under every key of the keyring; the host drops it. */
export class GossipAuthError extends MokvError {
  constructor(reason: string) {
    super(`gossip datagram rejected: ${reason}`);
  }
}

/** The local member (name, address, tags) would not fit in one datagram. */
export class MemberTooLargeError extends InvalidArgumentError {
  constructor(readonly sizeBytes: number, readonly maxBytes: number) {
    super(`member record is ${sizeBytes} bytes encoded; the limit is ${maxBytes}`);
  }
}

/**
 * A sealed datagram that authenticates but was sent outside the replay window, or was seen
 * already: a replay of a recorded datagram. The host drops and counts it.
 */
export class GossipReplayError extends GossipAuthError {
  constructor(reason: string) {
    super(reason);
  }
}
