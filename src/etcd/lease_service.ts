/**
 * etcd's Lease service (wire compatible with etcd 3.4): LeaseGrant, LeaseRevoke,
 * LeaseKeepAlive (the bidirectional stream), LeaseTimeToLive, LeaseLeases. Grants, keep-alives
 * and revokes are log entries, so they reach the leader from any node and every replica
 * agrees; expiry is the leader's (lessor.ts).
 *
 * Authorization: granting needs `produce` on the object `lease`; a lease belongs to the
 * subject that granted it, and only that subject (or one allowed `admin` on `*`) may keep it
 * alive, revoke it, read its TTL or see it listed. Attaching a key to it needs `produce` on
 * the key, as any put.
 */
import * as grpc from "@grpc/grpc-js";
import { PermissionDeniedError, UnavailableError } from "../errors.ts";
import { EtcdError } from "../kv/mod.ts";
import { type ComponentLogger, getLogger } from "../log/mod.ts";
import type { AuthorizeFn, RequestInfo } from "../server/kv_service.ts";
import { subjectOf } from "../server/kv_service.ts";
import { applyHere, type EtcdBackend } from "./backend.ts";
import { failureError, toEtcdStatus } from "./errors.ts";
import { leaseKeys, type Lessor, MAX_LEASE_TTL_SECONDS, MIN_LEASE_TTL_SECONDS } from "./lessor.ts";
import { header } from "./service.ts";

/** Settings of the Lease service. */
export interface LeaseServiceOptions {
  readonly backend: EtcdBackend;
  readonly lessor: Lessor;
  readonly authorize?: AuthorizeFn;
  readonly onRequest?: (info: RequestInfo) => void;
  readonly stamp: () => { timeMs: number; clockSource: string };
  /** Lease ids for grants that ask for none. Default: random in [1, 2^52). */
  readonly newLeaseId?: () => number;
  /** Where slow and failed keep-alives are logged. Default the `lease` component. */
  readonly log?: ComponentLogger;
}

/** A keep-alive answered later than this is logged (a TTL is 2 s at least). */
const SLOW_KEEPALIVE_MS = 1000;
/** Keep-alives of one stream being renewed at once; beyond it the stream stops reading. */
export const MAX_KEEPALIVES_IN_FLIGHT = 128;

/** How one pipelined keep-alive ended. */
type KeepAliveOutcome =
  | { readonly ttl: number; readonly doneMs: number }
  | { readonly error: unknown; readonly doneMs: number }
  | { readonly skipped: true };
/**
 * How long a keep-alive goes again while no leader can take it, in ms: etcd's follower also
 * retries its forward to the leader within its request timeout rather than fail the stream.
 */
const KEEPALIVE_RETRY_MS = 5000;
/** Pause between those tries (etcd's 50 ms). */
const KEEPALIVE_RETRY_PAUSE_MS = 50;

/**
 * Whether a keep-alive that failed with `error` may go again: only when this node could not
 * get it to a leader (none yet, the forward's connection to a dead leader lost, the write
 * timed out). A keep-alive only restarts its lease's TTL, so one applied twice does no harm;
 * etcd's answers (lease not found) and refusals are final.
 */
export function retryableKeepAlive(error: unknown): boolean {
  return error instanceof UnavailableError;
}

const NOT_FOUND = () => new EtcdError("NOT_FOUND", "etcdserver: requested lease not found");

/** Builds the handlers of `etcdserverpb.Lease`. */
export function createLeaseHandlers(opts: LeaseServiceOptions): grpc.UntypedServiceImplementation {
  const { backend, lessor } = opts;
  const log = opts.log ?? getLogger("lease", backend.nodeId);
  const newId = opts.newLeaseId ?? (() => 1 + Math.floor(Math.random() * (2 ** 52 - 1)));

  async function mayUse(subject: string, leaseId: number): Promise<void> {
    let lease = backend.store.lease(leaseId);
    if (!lease) {
      // Granted through another node a moment ago? Catch up with the leader before saying no.
      await backend.readBarrier("linearizable");
      lease = backend.store.lease(leaseId);
    }
    if (!lease) throw NOT_FOUND();
    if (!opts.authorize || lease.owner === subject) return;
    if (await opts.authorize(subject, "*", "admin")) return;
    throw new PermissionDeniedError(subject || "anonymous", "use lease", String(leaseId));
  }

  function report(method: string, startedMs: number, subject: string, error?: unknown) {
    try {
      opts.onRequest?.({
        method,
        code: error === undefined ? grpc.status.OK : toEtcdStatus(error).code,
        durationMs: performance.now() - startedMs,
        subject,
        ...(error === undefined
          ? {}
          : { error: error instanceof Error ? error : new Error(String(error)) }),
      });
    } catch {
      // a hook failure never fails the request
    }
  }

  function unary<Req, Res>(
    method: string,
    handle: (req: Req, subject: string) => Promise<Res>,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const startedMs = performance.now();
      const subject = subjectOf(call);
      handle(call.request, subject).then(
        (res) => {
          callback(null, res);
          report(method, startedMs, subject);
        },
        (error: unknown) => {
          const st = toEtcdStatus(error);
          callback({ code: st.code, details: st.details, metadata: st.metadata });
          report(method, startedMs, subject, error);
        },
      );
    };
  }

  async function keepAlive(subject: string, id: number): Promise<number> {
    await mayUse(subject, id);
    const r = await applyHere(backend, {
      type: "leaseKeepAlive",
      key: "",
      leaseId: id,
      ...opts.stamp(),
    });
    if (r.etcdError) throw failureError(r.etcdError);
    // Applied here too by now (a forwarded result does not carry the TTL): read it locally.
    return backend.store.lease(id)?.ttlSeconds ?? 0;
  }

  /** `keepAlive`, tried again through a leader change while the stream is `open`. */
  async function keepAliveThroughElection(
    subject: string,
    id: number,
    open: () => boolean,
  ): Promise<number> {
    const deadline = performance.now() + KEEPALIVE_RETRY_MS;
    for (let attempt = 1;; attempt++) {
      try {
        const ttl = await keepAlive(subject, id);
        if (attempt > 1) log.info("keep-alive went through on a retry", { lease: id, attempt });
        return ttl;
      } catch (error) {
        if (!retryableKeepAlive(error) || !open() || performance.now() >= deadline) throw error;
        if (attempt === 1) {
          log.info("keep-alive found no leader: retrying", {
            lease: id,
            error: error instanceof Error ? error.message : String(error),
          });
        }
        await new Promise((r) => setTimeout(r, KEEPALIVE_RETRY_PAUSE_MS));
      }
    }
  }

  return {
    LeaseGrant: unary<{ TTL: number; ID: number }, unknown>(
      "/etcdserverpb.Lease/LeaseGrant",
      async (req, subject) => {
        if (opts.authorize && !(await opts.authorize(subject, "lease", "produce"))) {
          throw new PermissionDeniedError(subject || "anonymous", "produce", "lease");
        }
        if (req.TTL > MAX_LEASE_TTL_SECONDS) {
          throw new EtcdError("OUT_OF_RANGE", "etcdserver: too large lease TTL");
        }
        if (req.ID < 0 || !Number.isSafeInteger(req.ID)) {
          throw new EtcdError("INVALID_ARGUMENT", "mokv: lease IDs are integers in [1, 2^53)");
        }
        const ttlSeconds = Math.max(MIN_LEASE_TTL_SECONDS, Math.ceil(req.TTL));
        const leaseId = req.ID > 0 ? req.ID : newId();
        const r = await applyHere(backend, {
          type: "leaseGrant",
          key: "",
          leaseId,
          ttlSeconds,
          owner: subject,
          ...opts.stamp(),
        });
        if (r.etcdError) throw failureError(r.etcdError);
        return { header: header(backend, r.revision), ID: leaseId, TTL: ttlSeconds, error: "" };
      },
    ),
    LeaseRevoke: unary<{ ID: number }, unknown>(
      "/etcdserverpb.Lease/LeaseRevoke",
      async (req, subject) => {
        await mayUse(subject, req.ID);
        const r = await applyHere(backend, {
          type: "leaseRevoke",
          key: "",
          leaseId: req.ID,
          expired: false,
          ...opts.stamp(),
        });
        if (r.etcdError) throw failureError(r.etcdError);
        return { header: header(backend, r.revision) };
      },
    ),
    LeaseTimeToLive: unary<{ ID: number; keys: boolean }, unknown>(
      "/etcdserverpb.Lease/LeaseTimeToLive",
      async (req, subject) => {
        const lease = backend.store.lease(req.ID);
        // etcd answers an unknown lease with TTL -1, not an error.
        if (!lease) {
          return { header: header(backend), ID: req.ID, TTL: -1, grantedTTL: 0, keys: [] };
        }
        await mayUse(subject, req.ID);
        return {
          header: header(backend),
          ID: req.ID,
          TTL: lessor.remainingSeconds(req.ID),
          grantedTTL: lease.ttlSeconds,
          keys: req.keys ? leaseKeys(lease.keys) : [],
        };
      },
    ),
    LeaseLeases: unary<unknown, unknown>(
      "/etcdserverpb.Lease/LeaseLeases",
      async (_req, subject) => {
        const all = !opts.authorize || await opts.authorize(subject, "*", "admin");
        const leases = backend.store.leases().filter((l) => all || l.owner === subject);
        return { header: header(backend), leases: leases.map((l) => ({ ID: l.id })) };
      },
    ),
    LeaseKeepAlive: (call: grpc.ServerDuplexStream<{ ID: number }, unknown>) => {
      const startedMs = performance.now();
      const subject = subjectOf(call);
      // Keep-alives are pipelined: each starts its Raft round trip as it arrives (at most
      // MAX_KEEPALIVES_IN_FLIGHT per stream; beyond that the stream stops reading), and only
      // the answers are chained, so they go out in request order.
      let queue: Promise<void> = Promise.resolve();
      let closed = false;
      let inFlight = 0;
      call.on("data", (req: { ID: number }) => {
        const arrived = performance.now();
        if (++inFlight >= MAX_KEEPALIVES_IN_FLIGHT) call.pause();
        const outcome = closed
          ? Promise.resolve<KeepAliveOutcome>({ skipped: true })
          : keepAliveThroughElection(subject, req.ID, () => !closed).then(
            (ttl): KeepAliveOutcome => ({ ttl, doneMs: performance.now() }),
            (error: unknown): KeepAliveOutcome => ({ error, doneMs: performance.now() }),
          );
        queue = queue.then(async () => {
          const r = await outcome;
          if (--inFlight < MAX_KEEPALIVES_IN_FLIGHT && !closed) call.resume();
          if (closed || "skipped" in r) return;
          const tookMs = r.doneMs - arrived;
          const queuedMs = Math.round(performance.now() - r.doneMs);
          let ttl = 0;
          if ("error" in r) {
            const error = r.error;
            // etcd answers a keep-alive of an unknown lease with TTL 0 (the client then
            // treats the lease as expired); a denied or failed one ends the stream with its
            // status, and the client opens a new one. (grpc-js sends the status of an
            // emitted "error"; call.destroy() would leave the client's stream open and
            // unanswered: its keep-alives unread until its lease expired.)
            if (!(error instanceof EtcdError && error.code === "NOT_FOUND")) {
              const st = toEtcdStatus(error);
              log.info("keep-alive failed: stream closed", {
                lease: req.ID,
                took_ms: Math.round(tookMs),
                error: error instanceof Error ? error.message : String(error),
              });
              closed = true;
              call.emit("error", Object.assign(new Error(st.details), st));
              report("/etcdserverpb.Lease/LeaseKeepAlive", startedMs, subject, error);
              return;
            }
          } else {
            ttl = r.ttl;
          }
          const fields = { lease: req.ID, took_ms: Math.round(tookMs), queued_ms: queuedMs, ttl };
          if (tookMs + queuedMs > SLOW_KEEPALIVE_MS) log.warn("slow keep-alive", fields);
          else if (log.isEnabled("debug")) log.debug("keep-alive", fields);
          call.write({ header: header(backend), ID: req.ID, TTL: ttl });
        });
      });
      const end = () => {
        if (closed) return;
        closed = true;
        report("/etcdserverpb.Lease/LeaseKeepAlive", startedMs, subject);
      };
      call.on("end", () => {
        end();
        call.end();
      });
      call.on("cancelled", end);
      call.on("error", end);
    },
  };
}
