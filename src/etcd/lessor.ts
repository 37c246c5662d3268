/**
 * The lessor: when each lease expires, on this node's clock. Every node follows every lease
 * (a grant or a keep-alive restarts its TTL where it applies), but only the leader acts: it
 * proposes the revoke of an expired lease through the log, so every replica deletes the same
 * keys at the same revision. A node that becomes leader first gives every lease its full TTL
 * again (as etcd's lessor does on promotion), so a leader change never expires a lease early;
 * at worst a lease lives one TTL longer than its last keep-alive.
 */
import { type Command, keyBytes } from "../kv/mod.ts";
import { type ComponentLogger, getLogger } from "../log/mod.ts";
import type { EtcdBackend } from "./backend.ts";

/** Shortest TTL granted, in seconds: shorter requests are raised to it, as etcd does. */
export const MIN_LEASE_TTL_SECONDS = 2;
/** Longest TTL granted, in seconds (etcd's MaxLeaseTTL). */
export const MAX_LEASE_TTL_SECONDS = 9_000_000_000;
/** Expired leases revoked per check, at most (the rest wait for the next check). */
const REVOKES_PER_CHECK = 256;

/** What the lessor needs of the node: its id, the local state machine, writes, Raft status. */
export type LessorBackend = Pick<
  EtcdBackend,
  "nodeId" | "store" | "apply" | "applyAsLeader" | "raftStatus"
>;

/** Settings of a {@link Lessor}. */
export interface LessorOptions {
  readonly backend: LessorBackend;
  /** Fields every command carries (see service.ts). */
  readonly stamp: () => { timeMs: number; clockSource: string };
  /** Monotonic milliseconds. Default `performance.now()`. */
  readonly nowMs?: () => number;
  /** How often expiry is checked. Default 250 ms. */
  readonly checkMs?: number;
  /**
   * Calls `fn` every `ms` until the returned function is called. Default `setInterval` (the
   * simulator passes a node's virtual clock).
   */
  readonly every?: (ms: number, fn: () => void) => () => void;
  /** Where renewals at promotion and revokes are logged. Default the `lessor` component. */
  readonly log?: ComponentLogger;
}

function everyInterval(ms: number, fn: () => void): () => void {
  const timer = setInterval(fn, ms);
  return () => clearInterval(timer);
}

/** Tracks lease deadlines and, on the leader, revokes what expired. See the module comment. */
export class Lessor {
  readonly #backend: LessorBackend;
  readonly #stamp: LessorOptions["stamp"];
  readonly #now: () => number;
  readonly #checkMs: number;
  readonly #every: (ms: number, fn: () => void) => () => void;
  readonly #log: ComponentLogger;
  readonly #deadline = new Map<number, number>();
  readonly #revoking = new Set<number>();
  /** The term this node last saw itself lead in (0: not leading at the last check). */
  #leadingTerm = 0;
  #cancelTimer: (() => void) | undefined;
  #unsubscribe: (() => void)[] = [];

  constructor(options: LessorOptions) {
    this.#backend = options.backend;
    this.#stamp = options.stamp;
    this.#now = options.nowMs ?? (() => performance.now());
    this.#checkMs = options.checkMs ?? 250;
    this.#every = options.every ?? everyInterval;
    this.#log = options.log ?? getLogger("lessor", options.backend.nodeId);
  }

  /** Starts following the store's leases and checking expiry. */
  start(): void {
    if (this.#cancelTimer !== undefined) return;
    const store = this.#backend.store;
    this.#renewAll();
    this.#unsubscribe = [
      store.onLease((e) => {
        if (e.type !== "revoke") {
          this.#deadline.set(e.leaseId, this.#now() + e.ttlSeconds * 1000);
          return;
        }
        this.#deadline.delete(e.leaseId);
        this.#log.info("lease revoked", {
          lease: e.leaseId,
          reason: e.expired ? "expired" : "revoked",
        });
      }),
      store.onReset(() => this.#renewAll()),
    ];
    this.#cancelTimer = this.#every(this.#checkMs, () => this.check());
  }

  /** Stops checking (the node is shutting down). */
  stop(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    for (const u of this.#unsubscribe) u();
    this.#unsubscribe = [];
  }

  /** Seconds until lease `id` expires by this node's clock (-1 when unknown), rounded up. */
  remainingSeconds(id: number): number {
    const d = this.#deadline.get(id);
    if (d === undefined) return -1;
    return Math.max(0, Math.ceil((d - this.#now()) / 1000));
  }

  /**
   * One expiry check: on the leader, proposes the revoke of every expired lease. A leadership
   * in a term other than the one of the last check is a new one, even if this node also led
   * then (it may have lost and won again between two checks): full TTLs first.
   */
  check(): void {
    const status = this.#backend.raftStatus();
    const leading = status.leader === this.#backend.nodeId;
    if (leading && status.term !== this.#leadingTerm) {
      this.#renewAll();
      this.#log.info("leading: every lease renewed for its full TTL", {
        term: status.term,
        leases: this.#deadline.size,
      });
    }
    this.#leadingTerm = leading ? status.term : 0;
    if (!leading) return;
    const now = this.#now();
    let started = 0;
    for (const [id, deadline] of this.#deadline) {
      if (deadline > now || this.#revoking.has(id)) continue;
      if (++started > REVOKES_PER_CHECK) break;
      this.#revoking.add(id);
      this.#log.info("lease expired: proposing its revoke", {
        lease: id,
        term: status.term,
        overdue_ms: Math.round(now - deadline),
      });
      // With the last renewal seen applied: one still in the log voids this expiry.
      const renewedIndex = this.#backend.store.lease(id)?.renewedIndex;
      const cmd: Command = {
        type: "leaseRevoke",
        key: "",
        leaseId: id,
        expired: true,
        ...(renewedIndex !== undefined ? { renewedIndex } : {}),
        ...this.#stamp(),
      };
      // A decision of this leadership: never forwarded to, or retried by, a later leader,
      // which gave the lease its full TTL again and decides for itself.
      const backend = this.#backend;
      const proposal = backend.applyAsLeader
        ? backend.applyAsLeader(cmd, status.term)
        : backend.apply(cmd);
      proposal.catch((err: unknown) => {
        this.#log.warn("revoke of an expired lease failed", {
          lease: id,
          error: err instanceof Error ? err.message : String(err),
        });
      }).finally(() => this.#revoking.delete(id));
    }
  }

  #renewAll(): void {
    const now = this.#now();
    this.#deadline.clear();
    for (const l of this.#backend.store.leases()) {
      this.#deadline.set(l.id, now + l.ttlSeconds * 1000);
    }
  }
}

/** A lease's attached keys as etcd returns them. */
export function leaseKeys(keys: ReadonlySet<string>): Uint8Array[] {
  return [...keys].sort().map((k) => keyBytes(k));
}
