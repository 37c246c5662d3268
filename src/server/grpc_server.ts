/**
 * Assembles the gRPC server of a node: api.KV, api.Admin, grpc.health.v1.Health and server
 * reflection, with a receive limit large enough that oversized values get INVALID_ARGUMENT
 * instead of a dropped message, a bound on concurrent streams per connection, an idle timeout
 * per connection, a wire-format check before every api.KV and api.Admin request is decoded
 * (wire_check.ts), and the identity interceptor: a call on a connection from the TLS port sees
 * that connection's verified client certificate in `call.getAuthContext()`, and a call whose
 * connection carries none is refused (UNAUTHENTICATED) before any handler runs.
 */
import * as grpc from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import { identityOfSocket, isConnectionIdentityRequired } from "./http2_guard.ts";
import { withWireCheck } from "./wire_check.ts";
import { ReflectionService } from "@grpc/reflection";
import {
  adminServiceDefinition,
  etcdServiceDefinitions,
  healthServiceDefinition,
  kvServiceDefinition,
  packageDefinition,
} from "../api/mod.ts";
import { createHealthHandlers, type HealthServiceOptions } from "./health.ts";
import { DEFAULT_QUOTA_BYTES } from "../kv/mod.ts";
import {
  createEtcdHandlers,
  createLeaseHandlers,
  createWatchHandler,
  type EtcdBackend,
  Lessor,
} from "../etcd/mod.ts";
import {
  createKvServiceHandlers,
  DEFAULT_MAX_KEY_BYTES,
  DEFAULT_MAX_VALUE_BYTES,
  type KvServiceOptions,
  withPreEncodedResponses,
} from "./kv_service.ts";

/** Extra room above key + value for the rest of a request message. */
export const MESSAGE_SLACK_BYTES = 64 * 1024;

/** Default limit on concurrent streams (calls) of one HTTP/2 connection. */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 1024;
/** Default time an HTTP/2 connection with no call open is kept before the server closes it. */
export const DEFAULT_HTTP2_IDLE_TIMEOUT_MS = 5 * 60_000;

/** Settings of {@link createGrpcServer}. */
export interface GrpcServerOptions extends KvServiceOptions, HealthServiceOptions {
  /** Default {@link DEFAULT_MAX_CONCURRENT_STREAMS} (`grpc.max_concurrent_streams`). */
  readonly maxConcurrentStreams?: number;
  /** Default {@link DEFAULT_HTTP2_IDLE_TIMEOUT_MS} (`grpc.max_connection_idle_ms`). */
  readonly http2IdleTimeoutMs?: number;
  /** The node as etcd's services see it; absent: etcd's services are not offered. */
  readonly etcd?: EtcdBackend;
  /** How often idle etcd watchers that asked for it get a progress notification. */
  readonly watchProgressNotifyMs?: number;
}

/** A call that reports its connection's client certificate, which grpc-js cannot see itself. */
class IdentifiedCall extends grpc.ServerInterceptingCall {
  readonly #auth: ReturnType<grpc.ServerInterceptingCall["getAuthContext"]>;

  constructor(next: grpc.ServerInterceptingCallInterface, certificate: PeerCertificate) {
    super(next);
    this.#auth = Object.freeze({ transportSecurityType: "ssl", sslPeerCertificate: certificate });
  }

  override getAuthContext(): ReturnType<grpc.ServerInterceptingCall["getAuthContext"]> {
    return this.#auth;
  }
}

/**
 * The socket of the HTTP/2 session under `call`. grpc-js has no public accessor, so this reads
 * the first intercepting call's `stream` (library boundary); if that ever changes, identities
 * come back unknown and TLS-fed servers refuse calls, never grant them.
 */
function sessionSocketOf(call: grpc.ServerInterceptingCallInterface): unknown {
  const stream = (call as unknown as { stream?: { session?: { socket?: unknown } } }).stream;
  return stream?.session?.socket;
}

/** Refuses `call` with UNAUTHENTICATED and hands the handler nothing. */
function refuse(call: grpc.ServerInterceptingCallInterface): grpc.ServerInterceptingCall {
  const swallow = () => {};
  return new grpc.ServerInterceptingCall(call, {
    start: (next) => {
      next({
        onReceiveMetadata: swallow,
        onReceiveMessage: swallow,
        onReceiveHalfClose: swallow,
      });
      call.sendStatus({
        code: grpc.status.UNAUTHENTICATED,
        details: "the connection has no verified client certificate",
      });
    },
  });
}

/** Attaches each call's connection identity (see the module comment). */
function identityInterceptor(server: grpc.Server): grpc.ServerInterceptor {
  return (_method, call) => {
    // grpc-js's own TLS (bindAsync) already reports the certificate.
    const known = call.getAuthContext().sslPeerCertificate !== undefined;
    const identity = known ? undefined : identityOfSocket(sessionSocketOf(call));
    if (identity?.kind === "tls") return new IdentifiedCall(call, identity.certificate);
    // A server fed by a TLS port serves only connections with a verified certificate, so a
    // plaintext connection reaching it by any other route is refused too.
    if (known || !isConnectionIdentityRequired(server)) {
      return new grpc.ServerInterceptingCall(call);
    }
    return refuse(call);
  };
}

/**
 * A grpc-js server with every mokv service added, not yet bound: bind it with `bindAsync`, or
 * feed it connections through {@link listenPort} (port.ts), which shares the port with Raft.
 */
export function createGrpcServer(options: GrpcServerOptions): grpc.Server {
  const maxKeyBytes = options.maxKeyBytes ?? DEFAULT_MAX_KEY_BYTES;
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  const interceptors: grpc.ServerInterceptor[] = [];
  const server = new grpc.Server({
    // CompareAndSet carries two values.
    "grpc.max_receive_message_length": 2 * maxValueBytes + maxKeyBytes + MESSAGE_SLACK_BYTES,
    "grpc.max_concurrent_streams": options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS,
    "grpc.max_connection_idle_ms": options.http2IdleTimeoutMs ?? DEFAULT_HTTP2_IDLE_TIMEOUT_MS,
    interceptors,
  });
  interceptors.push(identityInterceptor(server));
  const { kv, admin } = createKvServiceHandlers(options);
  server.addService(withPreEncodedResponses(withWireCheck(kvServiceDefinition)), kv);
  server.addService(withWireCheck(adminServiceDefinition), admin);
  server.addService(healthServiceDefinition, createHealthHandlers(options.backend, options));
  if (options.etcd) {
    const clockSource = `${options.backend.nodeId}#etcd-${crypto.randomUUID().slice(0, 8)}`;
    const stamp = () => ({ timeMs: Math.floor(performance.now()), clockSource });
    const etcd = createEtcdHandlers({
      backend: options.etcd,
      authorize: options.authorize,
      onRequest: options.onRequest,
      maxKeyBytes,
      maxValueBytes,
      quotaBytes: options.quotaBytes ?? DEFAULT_QUOTA_BYTES,
      stamp,
    });
    // Lease expiry runs as long as the server does.
    const lessor = new Lessor({ backend: options.etcd, stamp });
    lessor.start();
    const forceShutdown = server.forceShutdown.bind(server);
    const tryShutdown = server.tryShutdown.bind(server);
    server.forceShutdown = () => {
      lessor.stop();
      forceShutdown();
    };
    server.tryShutdown = (cb) => {
      lessor.stop();
      tryShutdown(cb);
    };
    server.addService(
      withWireCheck(etcdServiceDefinitions.Lease),
      createLeaseHandlers({
        backend: options.etcd,
        lessor,
        authorize: options.authorize,
        onRequest: options.onRequest,
        stamp,
      }),
    );
    server.addService(withWireCheck(etcdServiceDefinitions.KV), etcd.kv);
    server.addService(withWireCheck(etcdServiceDefinitions.Cluster), etcd.cluster);
    server.addService(withWireCheck(etcdServiceDefinitions.Maintenance), etcd.maintenance);
    server.addService(
      withWireCheck(etcdServiceDefinitions.Watch),
      createWatchHandler({
        backend: options.etcd,
        authorize: options.authorize,
        onRequest: options.onRequest,
        progressNotifyMs: options.watchProgressNotifyMs,
      }),
    );
  }
  new ReflectionService(packageDefinition).addToServer(server);
  return server;
}
