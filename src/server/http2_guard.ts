/**
 * Works around a crash of Deno 2.9.6's HTTP/2 server (nghttp2 asserts in
 * `find_stream_on_goaway_func`, or `free(): invalid pointer`, killing the process) when a
 * client sends GOAWAY while other connections are open. That is what every grpc-js client
 * does when it closes a channel, so without this guard any client could stop a node.
 *
 * The guard sits between the socket and the gRPC server and drops GOAWAY frames (type 0x7)
 * that clients send; everything else passes unchanged. A client that sends GOAWAY closes its
 * connection right after, and the server handles the close as usual. Reproduced and measured
 * here: 5 crashes in 6 runs without the guard, none with it. See denoland/deno#36788.
 *
 * Because grpc-js reads the client certificate only from a real TLSSocket, a guarded
 * connection's certificate subject is kept in a {@link PeerIdentities} registry keyed the way
 * grpc-js names the peer (`call.getPeer()`).
 */
import { Duplex } from "node:stream";

const PREFACE_BYTES = 24; // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
const FRAME_HEADER_BYTES = 9;
const GOAWAY = 0x7;
/** Beyond this, a frame header claims more than any HTTP/2 peer may send (2^24 - 1 + slack). */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024 + 64 * 1024;

/** The socket properties grpc-js and node:http2 read from a session's socket. */
interface SocketLike extends Duplex {
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly remoteFamily?: string;
  readonly localAddress?: string;
  readonly localPort?: number;
  setNoDelay?(noDelay?: boolean): unknown;
  setKeepAlive?(enable?: boolean, delayMs?: number): unknown;
  setTimeout?(ms: number, cb?: () => void): unknown;
}

/**
 * Certificate subjects of guarded connections, keyed by `remoteAddress:remotePort` exactly as
 * grpc-js's `call.getPeer()` prints it. One registry per listening port.
 */
export class PeerIdentities {
  readonly #subjects = new Map<string, string>();

  set(peer: string, subject: string): void {
    this.#subjects.set(peer, subject);
  }

  delete(peer: string): void {
    this.#subjects.delete(peer);
  }

  /** The subject of the connection `peer` names, or undefined. */
  get(peer: string): string | undefined {
    return this.#subjects.get(peer);
  }

  get size(): number {
    return this.#subjects.size;
  }
}

const registries = new WeakMap<object, PeerIdentities>();

/** The identity registry shared by a gRPC server and the port that feeds it connections. */
export function identitiesOf(grpcServer: object): PeerIdentities {
  let r = registries.get(grpcServer);
  if (!r) {
    r = new PeerIdentities();
    registries.set(grpcServer, r);
  }
  return r;
}

/** grpc-js's name for the peer at the other end of `socket`. */
export function peerName(socket: SocketLike): string {
  if (!socket.remoteAddress) return "unknown";
  return socket.remotePort ? `${socket.remoteAddress}:${socket.remotePort}` : socket.remoteAddress;
}

/**
 * Wraps the server side of an HTTP/2 connection so that client GOAWAY frames never reach the
 * HTTP/2 implementation. Reads pause the socket when the consumer applies back-pressure.
 * A frame that claims an impossible length destroys the connection.
 */
export function guardHttp2Socket(socket: SocketLike): Duplex {
  let prefaceLeft = PREFACE_BYTES;
  let pending: Uint8Array = new Uint8Array(0);
  const guarded = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Uint8Array, _encoding, cb) {
      socket.write(chunk, (err?: Error | null) => cb(err ?? null));
    },
    // While one write is in flight, the frames HTTP/2 produces meanwhile (headers, data and
    // trailers of many responses) queue up and go out here as one write: one syscall.
    writev(chunks: { chunk: Uint8Array }[], cb) {
      let total = 0;
      for (const c of chunks) total += c.chunk.length;
      const joined = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) {
        joined.set(c.chunk, at);
        at += c.chunk.length;
      }
      socket.write(joined, (err?: Error | null) => cb(err ?? null));
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  // What node:http2 and grpc-js look up on a session's socket.
  for (
    const name of ["remoteAddress", "remotePort", "remoteFamily", "localAddress", "localPort"]
  ) {
    Object.defineProperty(guarded, name, {
      get: () => (socket as unknown as Record<string, unknown>)[name],
    });
  }
  Object.assign(guarded, {
    setNoDelay: (v?: boolean) => (socket.setNoDelay?.(v), guarded),
    setKeepAlive: (v?: boolean, d?: number) => (socket.setKeepAlive?.(v, d), guarded),
    setTimeout: (ms: number, cb?: () => void) => (socket.setTimeout?.(ms, cb), guarded),
  });

  const push = (bytes: Uint8Array) => {
    if (bytes.length > 0 && !guarded.push(bytes)) socket.pause();
  };

  socket.on("data", (chunk: Uint8Array) => {
    let data = chunk;
    if (prefaceLeft > 0) {
      const n = Math.min(prefaceLeft, data.length);
      push(data.subarray(0, n));
      prefaceLeft -= n;
      data = data.subarray(n);
      if (data.length === 0) return;
    }
    let buf: Uint8Array;
    if (pending.length === 0) {
      buf = data;
    } else {
      buf = new Uint8Array(pending.length + data.length);
      buf.set(pending);
      buf.set(data, pending.length);
    }
    let at = 0;
    let passFrom = 0;
    while (buf.length - at >= FRAME_HEADER_BYTES) {
      const length = (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2];
      if (buf.length - at < FRAME_HEADER_BYTES + length) break;
      if (buf[at + 3] === GOAWAY) {
        push(buf.subarray(passFrom, at));
        passFrom = at + FRAME_HEADER_BYTES + length;
      }
      at += FRAME_HEADER_BYTES + length;
    }
    push(buf.subarray(passFrom, at));
    pending = buf.slice(at);
    if (pending.length > MAX_BUFFERED_BYTES) socket.destroy();
  });
  socket.on("end", () => guarded.push(null));
  socket.on("close", () => guarded.destroy());
  socket.on("error", (err: Error) => guarded.destroy(err));
  guarded.on("error", () => {});
  return guarded;
}
