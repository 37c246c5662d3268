/**
 * The lease keeper of one MokvClient: every lease the client keeps alive is renewed over one
 * bidirectional LeaseKeepAlive stream (as etcd's clientv3 lessor does), a request per lease
 * every third of its TTL, answers read as they come. A broken or silent stream is replaced
 * (on another node when the client's fail-over says so) and renewal goes on; a lease is
 * declared lost only when the server says it is gone (TTL <= 0) or when its TTL has passed
 * since the last renewal the server answered.
 */
import * as grpc from "@grpc/grpc-js";
import type { EtcdLeaseKeepAliveResponse } from "../api/mod.ts";
import { UnavailableError } from "../errors.ts";
import { LeaseExpiredError, LeaseNotFoundError } from "./etcd_types.ts";
import type { NodeConnection } from "./node_connection.ts";
import { isServiceError, toClientError } from "./rpc_error.ts";

/** What the keeper needs from its client: a node to talk to and the client's fail-over. */
export interface LeaseKeeperHost {
  /** The connection to open the next stream on (the leader, as far as the client knows). */
  connect(): NodeConnection;
  /** Called after a stream failed on `addr`: avoid the node, follow a leader hint, refresh. */
  onFailure(addr: string, error: grpc.ServiceError): void;
  /** Avoid `addr` for a while (it stopped answering). */
  markDown(addr: string): void;
  /** Delay before the `attempt`-th reconnect (0-based). */
  backoffMs(attempt: number): number;
  /** How long a sent keep-alive may wait for its answer before the stream is replaced. */
  readonly answerTimeoutMs: number;
}

/** Options of {@link LeaseKeeper.keep}. */
export interface KeepOptions {
  /** The lease's TTL when known (e.g. just granted): the first renewal is due at a third of it. */
  readonly ttlSeconds?: number;
  /** When the lease was last granted or renewed (`performance.now()` time); default now. */
  readonly renewedAtMs?: number;
  /** Called with the TTL after each renewal the server answered. */
  readonly onRenew?: (ttlSeconds: number) => void;
}

/** Counters of the keeper, for tests and metrics. */
export interface KeepAliveStats {
  /** LeaseKeepAlive streams opened so far. */
  readonly streamsOpened: number;
  /** Renewals the server answered with a positive TTL. */
  readonly renewals: number;
  /** Streams that broke, ended, or stopped answering. */
  readonly streamFailures: number;
  /** Leases kept alive now. */
  readonly leases: number;
  /** The node the open stream is on, if one is open. */
  readonly addr: string | undefined;
}

/** Someone waiting on a lease: a long-lived keep or a single renewal. */
interface Holder {
  readonly once: boolean;
  readonly onRenew?: (ttlSeconds: number) => void;
  readonly onLost: (error: Error) => void;
}

/** One lease being renewed. */
interface KeptLease {
  readonly id: number;
  /** The TTL of the last answer (or the grant), 0 while unknown. */
  ttlMs: number;
  /** Declared lost at this time (the TTL since the last answered renewal). */
  deadlineMs: number;
  /** The next request is due at this time. */
  nextSendMs: number;
  /** Sent on the current stream at this time and not yet answered. */
  sentAtMs: number | undefined;
  readonly holders: Set<Holder>;
}

/** The current stream and what ends its tracking on the connection. */
interface OpenStream {
  readonly conn: NodeConnection;
  readonly call: grpc.ClientDuplexStream<{ ID: number }, EtcdLeaseKeepAliveResponse>;
  readonly untrack: () => void;
}

/** Renews a client's leases over one stream. See the module comment. */
export class LeaseKeeper {
  readonly #host: LeaseKeeperHost;
  readonly #leases = new Map<number, KeptLease>();
  #stream: OpenStream | undefined;
  #retryAtMs = 0;
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  #streamsOpened = 0;
  #renewals = 0;
  #streamFailures = 0;

  constructor(host: LeaseKeeperHost) {
    this.#host = host;
  }

  /** A copy of the counters. */
  stats(): KeepAliveStats {
    return {
      streamsOpened: this.#streamsOpened,
      renewals: this.#renewals,
      streamFailures: this.#streamFailures,
      leases: this.#leases.size,
      addr: this.#stream?.conn.addr,
    };
  }

  /**
   * Keeps lease `id` alive until `signal` aborts (then resolves). Rejects with
   * {@link LeaseNotFoundError} when the server says the lease is gone, with
   * {@link LeaseExpiredError} when its TTL passed with no renewal answered, or with a
   * non-retryable error of the stream (PERMISSION_DENIED, ...).
   */
  keep(id: number, signal: AbortSignal, options: KeepOptions = {}): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const holder: Holder = {
        once: false,
        ...(options.onRenew ? { onRenew: options.onRenew } : {}),
        onLost: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        this.#drop(id, holder);
        resolve();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#add(id, holder, options.ttlSeconds, options.renewedAtMs);
    });
  }

  /**
   * Renews lease `id` once, now, on the shared stream; resolves with its TTL. Rejects as
   * {@link keep} does (an unknown TTL gets `firstAnswerMs` for the first answer).
   */
  renewOnce(id: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const holder: Holder = {
        once: true,
        onRenew: resolve,
        onLost: reject,
      };
      this.#add(id, holder, undefined, undefined);
      const lease = this.#leases.get(id);
      if (lease && lease.sentAtMs === undefined) lease.nextSendMs = 0;
      this.#pump();
    });
  }

  /** Stops renewing: cancels the stream; every holder is rejected with UnavailableError. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#closeStream();
    const error = new UnavailableError("client closed");
    for (const lease of [...this.#leases.values()]) this.#lose(lease, error);
  }

  #add(id: number, holder: Holder, ttlSeconds?: number, renewedAtMs?: number): void {
    if (this.#closed) {
      holder.onLost(new UnavailableError("client closed"));
      return;
    }
    let lease = this.#leases.get(id);
    if (!lease) {
      const now = performance.now();
      const known = ttlSeconds !== undefined && ttlSeconds > 0;
      const from = renewedAtMs ?? now;
      lease = {
        id,
        ttlMs: known ? ttlSeconds * 1000 : 0,
        deadlineMs: known ? from + ttlSeconds * 1000 : now + 2 * this.#host.answerTimeoutMs,
        nextSendMs: known ? from + ttlSeconds * 1000 / 3 : now,
        sentAtMs: undefined,
        holders: new Set(),
      };
      this.#leases.set(id, lease);
    }
    lease.holders.add(holder);
    this.#pump();
  }

  #drop(id: number, holder: Holder): void {
    const lease = this.#leases.get(id);
    if (!lease) return;
    lease.holders.delete(holder);
    if (lease.holders.size === 0) this.#leases.delete(id);
    this.#pump();
  }

  #lose(lease: KeptLease, error: Error): void {
    this.#leases.delete(lease.id);
    for (const h of lease.holders) h.onLost(error);
    lease.holders.clear();
  }

  /** Does whatever is due now (expiry, reconnect, requests) and sets the timer for the next. */
  #pump(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = performance.now();
    for (const lease of [...this.#leases.values()]) {
      if (now >= lease.deadlineMs) {
        this.#lose(lease, new LeaseExpiredError(lease.id, now - lease.deadlineMs));
      }
    }
    if (this.#leases.size === 0) {
      this.#closeStream();
      return;
    }
    const stream = this.#stream;
    if (stream) {
      for (const lease of this.#leases.values()) {
        const timeoutMs = this.#answerTimeoutMs(lease);
        if (lease.sentAtMs !== undefined && now - lease.sentAtMs >= timeoutMs) {
          this.#host.markDown(stream.conn.addr);
          this.#fail(stream, {
            code: grpc.status.DEADLINE_EXCEEDED,
            details: `keep-alive of lease ${lease.id.toString(16)} not answered in ${timeoutMs} ms`,
          });
          break;
        }
      }
    }
    if (!this.#stream && now >= this.#retryAtMs) this.#open();
    let next = Infinity;
    const open = this.#stream;
    for (const lease of this.#leases.values()) {
      next = Math.min(next, lease.deadlineMs);
      if (!open) continue;
      if (lease.sentAtMs !== undefined) {
        next = Math.min(next, lease.sentAtMs + this.#answerTimeoutMs(lease));
      } else if (lease.nextSendMs <= now) {
        lease.sentAtMs = now;
        open.call.write({ ID: lease.id });
        next = Math.min(next, now + this.#answerTimeoutMs(lease));
      } else {
        next = Math.min(next, lease.nextSendMs);
      }
    }
    if (!open) next = Math.min(next, this.#retryAtMs);
    const delayMs = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(next - now)));
    this.#timer = setTimeout(() => this.#pump(), delayMs);
  }

  /**
   * How long `lease`'s request may go unanswered before the stream is replaced: the client's
   * attempt timeout, but at most a third of the TTL (at least 1 s), so a silent node leaves
   * time to renew through another before the lease runs out.
   */
  #answerTimeoutMs(lease: KeptLease): number {
    const timeoutMs = this.#host.answerTimeoutMs;
    return lease.ttlMs > 0 ? Math.min(timeoutMs, Math.max(1000, lease.ttlMs / 3)) : timeoutMs;
  }

  #open(): void {
    const conn = this.#host.connect();
    const call = conn.etcdLease.LeaseKeepAlive(new grpc.Metadata()) as OpenStream["call"];
    let untrack!: () => void;
    conn.track(new Promise<void>((resolve) => (untrack = resolve))).catch(() => {});
    const stream: OpenStream = { conn, call, untrack };
    this.#stream = stream;
    this.#streamsOpened++;
    call.on("data", (r: EtcdLeaseKeepAliveResponse) => this.#answer(stream, r));
    call.on("error", (error: Error) => {
      if (this.#stream !== stream) return;
      this.#fail(stream, error);
      this.#pump();
    });
    call.on("end", () => {
      if (this.#stream !== stream) return;
      this.#fail(stream, {
        code: grpc.status.UNAVAILABLE,
        details: `keep-alive stream on ${conn.addr} ended`,
      });
      this.#pump();
    });
  }

  #answer(stream: OpenStream, r: EtcdLeaseKeepAliveResponse): void {
    if (this.#stream !== stream) return;
    const lease = this.#leases.get(r.ID);
    if (!lease || lease.sentAtMs === undefined) return;
    const sentAtMs = lease.sentAtMs;
    lease.sentAtMs = undefined;
    this.#failures = 0;
    if (r.TTL <= 0) {
      this.#lose(lease, new LeaseNotFoundError(lease.id));
    } else {
      this.#renewals++;
      stream.conn.count("write");
      const now = performance.now();
      // The server restarted the TTL no earlier than the request left.
      lease.ttlMs = r.TTL * 1000;
      lease.deadlineMs = sentAtMs + r.TTL * 1000;
      lease.nextSendMs = now + r.TTL * 1000 / 3;
      for (const h of [...lease.holders]) {
        if (h.once) lease.holders.delete(h);
        h.onRenew?.(r.TTL);
      }
      if (lease.holders.size === 0) this.#leases.delete(lease.id);
    }
    this.#pump();
  }

  /** Gives up `stream`: requests in flight are sent again on the next one, after a backoff. */
  #fail(stream: OpenStream, error: Error | { code: grpc.status; details: string }): void {
    this.#stream = undefined;
    stream.call.cancel();
    stream.untrack();
    stream.conn.countFailure();
    this.#streamFailures++;
    const serviceError = asServiceError(error);
    const retryable = RETRYABLE.has(serviceError.code);
    for (const lease of [...this.#leases.values()]) {
      if (lease.sentAtMs === undefined) continue;
      lease.sentAtMs = undefined;
      lease.nextSendMs = 0;
      if (!retryable) this.#lose(lease, toClientError(serviceError));
    }
    this.#host.onFailure(stream.conn.addr, serviceError as grpc.ServiceError);
    this.#retryAtMs = performance.now() + this.#host.backoffMs(this.#failures++);
  }

  #closeStream(): void {
    const stream = this.#stream;
    if (!stream) return;
    this.#stream = undefined;
    stream.call.cancel();
    stream.untrack();
  }
}

/** A stream failure as a grpc-js ServiceError (an error without a status counts as UNKNOWN). */
function asServiceError(error: Error | { code: grpc.status; details: string }): grpc.ServiceError {
  if (isServiceError(error)) return error;
  const status = error instanceof Error
    ? { code: grpc.status.UNKNOWN, details: error.message }
    : error;
  return Object.assign(new Error(status.details), status, { metadata: new grpc.Metadata() });
}

/** Longest timer delay (setTimeout fires at once beyond 2^31 - 1 ms; a TTL may be years). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Stream failures after which another stream (maybe on another node) may do better. */
const RETRYABLE: ReadonlySet<grpc.status> = new Set([
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.ABORTED,
  grpc.status.RESOURCE_EXHAUSTED,
]);
