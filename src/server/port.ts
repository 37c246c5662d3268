/**
 * One port for gRPC and Raft (DESIGN.md "One port").
 *
 * With TLS, the port is one `node:tls` server requiring a client certificate from the CA and
 * offering ALPN "h2" and "mokv-raft": after the handshake, a "mokv-raft" socket is a Raft peer
 * connection and every other socket goes to the gRPC server through an insecure connection
 * injector (grpc-js still sees the TLS socket, so the client's CN reaches the handlers).
 * Without TLS (development only), the first byte decides: 0x01 is Raft, anything else gRPC.
 */
import * as grpc from "@grpc/grpc-js";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { UnavailableError } from "../errors.ts";
import {
  type ConnectionIdentity,
  guardHttp2Socket,
  requireConnectionIdentity,
} from "./http2_guard.ts";

/** ALPN protocol a Raft peer connection negotiates. */
export const RAFT_ALPN = "mokv-raft";
/** First byte of a plaintext Raft connection. */
export const RAFT_PREFIX_BYTE = 0x01;
/**
 * Default time a new socket has to finish its TLS handshake or send its first byte, and then a
 * gRPC connection to send its whole HTTP/2 preface.
 */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default limit on open sockets of one port (gRPC and Raft, handshaking or not). */
export const DEFAULT_MAX_CONNECTIONS = 4096;
/** Default limit on sockets of one port still in their TLS handshake (or first byte). */
export const DEFAULT_MAX_PENDING_HANDSHAKES = 256;

/** PEM material (contents, not paths). */
export interface TlsMaterial {
  readonly cert: Uint8Array | string;
  readonly key: Uint8Array | string;
  readonly ca: Uint8Array | string;
}

/** Who is at the other end of a Raft socket: the peer certificate's CN ("" in plaintext). */
export interface RaftPeer {
  readonly cn: string;
}

/** Settings of {@link listenPort}. */
export interface ListenPortOptions {
  readonly host: string;
  /** 0 picks a free port (see the returned `port`). */
  readonly port: number;
  readonly grpcServer: grpc.Server;
  /** Absent: plaintext development mode. */
  readonly tls?: TlsMaterial;
  /** Receives every Raft connection; it owns the socket from then on. */
  readonly onRaftSocket: (socket: Duplex, peer: RaftPeer) => void;
  /** Default {@link DEFAULT_HANDSHAKE_TIMEOUT_MS}. */
  readonly handshakeTimeoutMs?: number;
  /** Sockets beyond this many open ones are closed at once; default {@link DEFAULT_MAX_CONNECTIONS}. */
  readonly maxConnections?: number;
  /**
   * New sockets beyond this many still handshaking are closed at once; default
   * {@link DEFAULT_MAX_PENDING_HANDSHAKES}.
   */
  readonly maxPendingHandshakes?: number;
}

/** What a port holds now, for tests and metrics. */
export interface PortStats {
  /** Accepted sockets not yet closed. */
  readonly openConnections: number;
  /** Of those, the ones still in their TLS handshake (or before their first byte). */
  readonly pendingHandshakes: number;
}

/** A listening shared port. */
export interface ListeningPort {
  readonly port: number;
  /** Counts of the sockets this port holds now. */
  stats(): PortStats;
  /**
   * Stops accepting, destroys every socket accepted on this port (gRPC and Raft alike) and
   * resolves once the listener is closed. Shut the gRPC server down first for a graceful drain.
   */
  close(): Promise<void>;
}

const text = (pem: Uint8Array | string): string =>
  typeof pem === "string" ? pem : new TextDecoder().decode(pem);

const ignore = () => {};

/**
 * Listens on host:port and routes each connection to gRPC or Raft. Guarantees: a socket that
 * fails its handshake, sends garbage, stays silent, or half-closes never affects the listener or
 * other connections (every socket has an error handler and a handshake timeout); at most
 * `maxConnections` sockets are open and at most `maxPendingHandshakes` are handshaking (more
 * are closed on arrival); with TLS, a client certificate without a Common Name is refused (the
 * CN is the subject, and an empty subject would read as plaintext mode's ""), and every gRPC
 * connection carries the certificate it verified (http2_guard.ts).
 */
export function listenPort(options: ListenPortOptions): Promise<ListeningPort> {
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const maxPendingHandshakes = options.maxPendingHandshakes ?? DEFAULT_MAX_PENDING_HANDSHAKES;
  const injector = options.grpcServer.createConnectionInjector(
    grpc.ServerCredentials.createInsecure(),
  );
  if (options.tls) requireConnectionIdentity(options.grpcServer);
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  // Raw sockets, counted from accept to close, and those still handshaking: until routed, or
  // closed, or past the handshake timeout (whichever comes first, so the count cannot leak).
  let open = 0;
  const handshaking = new Map<net.Socket, ReturnType<typeof setTimeout>>();
  const handshakeOver = (raw: net.Socket) => {
    clearTimeout(handshaking.get(raw));
    handshaking.delete(raw);
  };
  /** Admits a newly accepted raw socket, or closes it when a limit is reached. */
  const admit = (socket: net.Socket): boolean => {
    socket.on("error", ignore);
    if (open >= maxConnections || handshaking.size >= maxPendingHandshakes) {
      socket.destroy();
      return false;
    }
    open++;
    handshaking.set(socket, setTimeout(() => handshaking.delete(socket), handshakeTimeoutMs));
    socket.once("close", () => {
      open--;
      handshakeOver(socket);
    });
    track(socket);
    return true;
  };

  const toGrpc = (socket: net.Socket, identity: ConnectionIdentity) => {
    try {
      socket.setNoDelay(true);
      injector.injectConnection(
        guardHttp2Socket(socket, { identity, prefaceTimeoutMs: handshakeTimeoutMs }),
      );
    } catch {
      socket.destroy();
    }
  };

  const toRaft = (socket: Duplex, peer: RaftPeer) => {
    try {
      // Answers to forwarded writes go back on this connection: no Nagle delay on them.
      (socket as Duplex & { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      options.onRaftSocket(socket, peer);
    } catch {
      socket.destroy();
    }
  };

  let server: net.Server;
  if (options.tls) {
    const material = options.tls;
    server = tls.createServer({
      cert: text(material.cert),
      key: text(material.key),
      ca: text(material.ca),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ["h2", RAFT_ALPN],
      handshakeTimeout: handshakeTimeoutMs,
    }, (socket: tls.TLSSocket) => {
      socket.on("error", ignore);
      if (!socket.authorized) {
        socket.destroy();
        return;
      }
      const certificate = socket.getPeerCertificate();
      const cn = certificate?.subject?.CN;
      if (typeof cn !== "string" || cn === "") {
        socket.destroy();
        return;
      }
      if (socket.alpnProtocol === RAFT_ALPN) {
        toRaft(socket, { cn });
      } else {
        toGrpc(socket, { kind: "tls", certificate });
      }
    });
    server.on("tlsClientError", (_error: Error, socket: tls.TLSSocket) => socket?.destroy());
    // Raw sockets, before and during the handshake.
    server.on("connection", (socket: net.Socket) => {
      admit(socket);
    });
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      // node:tls keeps the accepted raw socket as `_parent` (Deno too); without it the entry
      // still leaves `handshaking` at the handshake timeout.
      const raw = (socket as unknown as { _parent?: unknown })._parent;
      if (raw instanceof net.Socket) handshakeOver(raw);
      track(socket);
    });
  } else {
    server = net.createServer((socket) => {
      if (!admit(socket)) return;
      socket.setTimeout(handshakeTimeoutMs, () => socket.destroy());
      // Peek one byte in paused mode, so the socket reaches its new owner with the rest of its
      // data still buffered and flowing left to that owner's first "data" listener.
      const onReadable = () => {
        const first = socket.read(1) as Uint8Array | null;
        if (first === null) return;
        socket.off("readable", onReadable);
        socket.off("end", onEnd);
        socket.setTimeout(0);
        handshakeOver(socket);
        if (first[0] === RAFT_PREFIX_BYTE) {
          toRaft(socket, { cn: "" });
        } else {
          socket.unshift(first);
          toGrpc(socket, { kind: "plaintext" });
        }
      };
      const onEnd = () => socket.destroy();
      socket.on("readable", onReadable);
      socket.once("end", onEnd);
    });
  }
  server.on("error", ignore);

  return new Promise((resolve, reject) => {
    const onListenError = (error: Error) => reject(error);
    server.once("error", onListenError);
    server.listen(options.port, options.host, () => {
      server.off("error", onListenError);
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : options.port;
      resolve({
        port,
        stats: () => ({ openConnections: open, pendingHandshakes: handshaking.size }),
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const socket of sockets) socket.destroy();
            sockets.clear();
          }),
      });
    });
  });
}

/** Settings of {@link dialRaft}. */
export interface DialRaftOptions {
  readonly host: string;
  readonly port: number;
  /** This node's peer certificate and key, and the CA to check the remote one with. */
  readonly tls?: TlsMaterial & { readonly servername?: string };
  /** Default {@link DEFAULT_HANDSHAKE_TIMEOUT_MS}. */
  readonly timeoutMs?: number;
}

/**
 * Opens a Raft connection to a peer's shared port: TLS with ALPN "mokv-raft" and this node's
 * peer certificate (the remote certificate is verified against the CA, and the remote must pick
 * "mokv-raft"), or plaintext with the 0x01 prefix already written. Rejects with
 * UnavailableError on any failure or timeout.
 */
export function dialRaft(options: DialRaftOptions): Promise<Duplex> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (socket: net.Socket, reason: string) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new UnavailableError(`raft dial ${options.host}:${options.port}: ${reason}`));
    };
    const succeed = (socket: net.Socket) => {
      if (settled) return;
      settled = true;
      socket.setTimeout(0);
      socket.removeListener("error", onError);
      socket.on("error", ignore);
      resolve(socket);
    };
    let onError: (error: Error) => void;
    if (options.tls) {
      const material = options.tls;
      const servername = material.servername ??
        (net.isIP(options.host) ? undefined : options.host);
      const socket = tls.connect({
        host: options.host,
        port: options.port,
        cert: text(material.cert),
        key: text(material.key),
        ca: text(material.ca),
        ALPNProtocols: [RAFT_ALPN],
        ...(servername ? { servername } : {}),
      });
      onError = (error) => fail(socket, error.message);
      socket.on("error", onError);
      socket.setTimeout(timeoutMs, () => fail(socket, "timed out"));
      socket.once("secureConnect", () => {
        if (socket.alpnProtocol !== RAFT_ALPN) {
          fail(socket, `peer did not accept ALPN ${RAFT_ALPN}`);
          return;
        }
        succeed(socket);
      });
    } else {
      const socket = net.connect({ host: options.host, port: options.port });
      onError = (error) => fail(socket, error.message);
      socket.on("error", onError);
      socket.setTimeout(timeoutMs, () => fail(socket, "timed out"));
      socket.once("connect", () => {
        socket.write(new Uint8Array([RAFT_PREFIX_BYTE]));
        succeed(socket);
      });
    }
  });
}
