/**
 * What MokvClient's watch, lease and lock calls (over etcd's v3 services) hand out and raise,
 * and the small helpers they share.
 */
import { MokvError } from "../errors.ts";

/** One change seen by {@link MokvClient.watch}. */
export interface WatchEvent {
  readonly type: "put" | "delete";
  readonly key: string;
  /** The value after a put; empty for a delete. */
  readonly value: Uint8Array;
  /** The revision of the write (for a delete, the revision of the deletion). */
  readonly revision: number;
  /** The key's create revision (0 for a delete). */
  readonly createRevision: number;
  /** Writes since creation (0 for a delete). */
  readonly version: number;
  /** The value before the event, when asked for with `prevValue` and the key existed. */
  readonly prevValue?: Uint8Array;
}

/** Options of {@link MokvClient.watch}. */
export interface WatchOptions {
  /** Watch every key starting with the key. */
  readonly prefix?: boolean;
  /** First revision to deliver (older events replay from the server's history); default: now. */
  readonly startRevision?: number;
  /** Attach the previous value to every event. */
  readonly prevValue?: boolean;
  /** Aborting ends the iterator (and cancels the stream). */
  readonly signal?: AbortSignal;
}

/** The watch asked for a revision the server no longer has: resume from `compactRevision`. */
export class WatchCompactedError extends MokvError {
  constructor(
    /** The oldest revision the server can still deliver. */
    readonly compactRevision: number,
    requested: number,
  ) {
    super(
      `watch from revision ${requested}: the revision has been compacted; the oldest ` +
        `revision available is ${compactRevision}`,
    );
  }
}

/** The lease does not exist (never granted, revoked, or expired). */
export class LeaseNotFoundError extends MokvError {
  constructor(
    readonly leaseId: number,
    message = `lease ${leaseId.toString(16)} not found (expired or revoked)`,
  ) {
    super(message);
  }
}

/**
 * The lease's TTL passed with no renewal answered (the cluster or the network did not answer
 * in time): the server has expired it, or will, so keys and locks on it must be taken as gone.
 */
export class LeaseExpiredError extends LeaseNotFoundError {
  constructor(leaseId: number, lateMs: number) {
    super(
      leaseId,
      `lease ${leaseId.toString(16)} expired: no renewal was answered within its TTL` +
        (lateMs >= 1000 ? ` (noticed ${Math.round(lateMs / 1000)} s late)` : ""),
    );
  }
}

/** A granted lease. */
export interface LeaseGrant {
  readonly id: number;
  /** The TTL the server granted (it raises a TTL below its minimum). */
  readonly ttlSeconds: number;
  /**
   * When the grant was sent (`performance.now()` time): the lease expires no earlier than
   * `ttlSeconds` after it, so a keep-alive can count from here.
   */
  readonly grantedAtMs: number;
}

/** What {@link MokvClient.leaseTimeToLive} reports. */
export interface LeaseInfo {
  readonly id: number;
  /** Seconds until expiry. */
  readonly ttlSeconds: number;
  readonly grantedTtlSeconds: number;
  /** The keys attached to the lease (only when asked for). */
  readonly keys: readonly string[];
}

/** Options of {@link MokvClient.lock}. */
export interface LockOptions {
  /** TTL of the lock's lease: a holder that dies loses the lock this long after; default 60. */
  readonly ttlSeconds?: number;
  /** Aborting gives up waiting (the queued key is removed). */
  readonly signal?: AbortSignal;
}

/** A held lock. */
export interface HeldLock {
  /** The lock key, `name/<lease id in hex>`. */
  readonly key: string;
  /**
   * The fencing token: the lock key's create revision. Every later holder has a larger one,
   * so a resource that remembers the largest it saw can refuse a stale holder's writes.
   */
  readonly revision: number;
  /** The lease that keeps the lock; kept alive until release(). */
  readonly leaseId: number;
  /**
   * Aborted when the lock is lost: the server says its lease is gone (revoked or expired), or
   * the lease's TTL passed with no renewal answered. Its `reason` is the
   * {@link LeaseNotFoundError} (or {@link LeaseExpiredError}) that says which. From then on
   * another client may hold the lock, so the holder must stop acting under it.
   */
  readonly lost: AbortSignal;
  /** Revokes the lease, which deletes the key (waiters see the DELETE). */
  release(): Promise<void>;
}

/** The end of the range of keys starting with `key` (its last byte below 0xff plus one). */
export function prefixEnd(key: Uint8Array): Uint8Array {
  const end = new Uint8Array(key);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return new Uint8Array([0]);
}

/** An unbounded-until-read queue of stream items with one waiting reader. */
export class StreamQueue<T> {
  readonly #items: T[] = [];
  #wake: (() => void) | undefined;

  push(item: T): void {
    this.#items.push(item);
    this.#wake?.();
    this.#wake = undefined;
  }

  /** The next item, waiting for one. */
  async next(): Promise<T> {
    while (this.#items.length === 0) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    return this.#items.shift()!;
  }
}
