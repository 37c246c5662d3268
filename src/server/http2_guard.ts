/**
 * The guard between a client's socket and the gRPC server's HTTP/2 layer.
 *
 * 1. It works around a crash of Deno 2.9.6's HTTP/2 server (nghttp2 asserts in
 *    `find_stream_on_goaway_func`, or `free(): invalid pointer`, killing the process) when a
 *    client sends GOAWAY while other connections are open. That is what every grpc-js client
 *    does when it closes a channel, so without this guard any client could stop a node. The
 *    guard drops GOAWAY frames (type 0x7) that clients send; everything else passes unchanged.
 *    A client that sends GOAWAY closes its connection right after, and the server handles the
 *    close as usual. Reproduced and measured here: 5 crashes in 6 runs without the guard, none
 *    with it. See denoland/deno#36788.
 * 2. It bounds what one connection can make the node do before any request is authorized: the
 *    client preface must be exact and arrive within a deadline, and a frame longer than
 *    {@link MAX_FRAME_PAYLOAD_BYTES} closes the connection (HTTP/2 FRAME_SIZE_ERROR, RFC 9113
 *    §4.2). The guard never holds a frame: it parses frame headers as bytes stream by and passes
 *    payload bytes on at once, so its work is linear in the bytes received and it buffers at most
 *    one frame header per connection.
 * 3. It carries the connection's identity: grpc-js reads the client certificate only from a real
 *    TLSSocket, so the guarded socket itself holds the certificate the TLS handshake verified
 *    ({@link identityOfSocket}), and nothing is looked up by address.
 */
import type { PeerCertificate } from "node:tls";
import { Duplex } from "node:stream";

/** The client connection preface every HTTP/2 connection starts with (RFC 9113 §3.4). */
const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const FRAME_HEADER_BYTES = 9;
const GOAWAY = 0x7;

/**
 * Largest frame payload a client may send: SETTINGS_MAX_FRAME_SIZE's initial value (RFC 9113
 * §6.5.2). Neither grpc-js's server nor Deno's HTTP/2 advertises a larger one (tests/server/
 * port_limits_test.ts reads the server's SETTINGS to prove it), so no conforming client sends a
 * longer frame; gRPC messages of any size travel as many frames.
 */
export const MAX_FRAME_PAYLOAD_BYTES = 16_384;

/**
 * Bytes the guard takes from HTTP/2 ahead of the socket before it holds HTTP/2 back (the
 * socket's own buffer counts).
 */
const WRITE_AHEAD_BYTES = 1024 * 1024;

/** Default time from injection until the whole client preface has arrived. */
export const DEFAULT_PREFACE_TIMEOUT_MS = 10_000;

/** Who is at the other end of a guarded connection, as the port established it. */
export type ConnectionIdentity =
  | {
    readonly kind: "tls";
    /** The client certificate the TLS handshake verified (its CN is the subject). */
    readonly certificate: PeerCertificate;
  }
  | { readonly kind: "plaintext" };

/** The property of a guarded socket that holds its {@link ConnectionIdentity}. */
const IDENTITY = Symbol("mokv.connectionIdentity");

/**
 * The identity the port attached to `socket` (a guarded socket, or the view of it node:http2
 * gives as `session.socket`), or undefined for any other socket.
 */
export function identityOfSocket(socket: unknown): ConnectionIdentity | undefined {
  if (typeof socket !== "object" || socket === null) return undefined;
  try {
    const value = (socket as { [IDENTITY]?: unknown })[IDENTITY];
    return isIdentity(value) ? value : undefined;
  } catch {
    return undefined; // a closed session's socket view may throw on access
  }
}

function isIdentity(value: unknown): value is ConnectionIdentity {
  if (typeof value !== "object" || value === null) return false;
  const kind = (value as { kind?: unknown }).kind;
  return kind === "plaintext" ||
    (kind === "tls" && typeof (value as { certificate?: unknown }).certificate === "object");
}

const identityRequired = new WeakSet<object>();

/**
 * Marks `grpcServer` as fed by a TLS port: from now on it refuses (UNAUTHENTICATED) a call on a
 * connection that carries no verified certificate, whatever the reason.
 */
export function requireConnectionIdentity(grpcServer: object): void {
  identityRequired.add(grpcServer);
}

/** Whether {@link requireConnectionIdentity} was called for `grpcServer`. */
export function isConnectionIdentityRequired(grpcServer: object): boolean {
  return identityRequired.has(grpcServer);
}

/**
 * Certificate subjects by peer name, the old way of finding a connection's identity.
 *
 * @deprecated Nothing registers here any more: identities travel with the socket
 * ({@link identityOfSocket}) and reach handlers through `call.getAuthContext()`
 * (grpc_server.ts), because two connections can share an `addr:port` name. `get` always
 * answers undefined; the type stays until kv_service.ts drops its `identities` option.
 */
export class PeerIdentities {
  /** Always undefined (see the class comment). */
  get(_peer: string): string | undefined {
    return undefined;
  }
}

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

/** Settings of {@link guardHttp2Socket}. */
export interface GuardOptions {
  /** Who the port found at the other end; carried on the guarded socket. */
  readonly identity: ConnectionIdentity;
  /** Default {@link DEFAULT_PREFACE_TIMEOUT_MS}. */
  readonly prefaceTimeoutMs?: number;
}

/**
 * Wraps the server side of an HTTP/2 connection (see the module comment). Reads pause the
 * socket when the consumer applies back-pressure. A wrong preface, a preface later than the
 * deadline, or a frame longer than {@link MAX_FRAME_PAYLOAD_BYTES} destroys the connection.
 */
export function guardHttp2Socket(socket: SocketLike, options: GuardOptions): Duplex {
  const out = new WriteCoalescer(socket);
  const guarded = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Uint8Array, _encoding, cb) {
      out.add(chunk, cb);
    },
    writev(chunks: { chunk: Uint8Array }[], cb) {
      for (let i = 0; i < chunks.length - 1; i++) out.add(chunks[i].chunk);
      out.add(chunks[chunks.length - 1].chunk, cb);
    },
    final(cb) {
      out.flush();
      socket.end();
      cb();
    },
    destroy(err, cb) {
      clearTimeout(prefaceTimer);
      out.drop();
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
  Object.defineProperty(guarded, IDENTITY, { value: Object.freeze({ ...options.identity }) });
  Object.assign(guarded, {
    setNoDelay: (v?: boolean) => (socket.setNoDelay?.(v), guarded),
    setKeepAlive: (v?: boolean, d?: number) => (socket.setKeepAlive?.(v, d), guarded),
    setTimeout: (ms: number, cb?: () => void) => (socket.setTimeout?.(ms, cb), guarded),
  });

  const prefaceTimer = setTimeout(
    () => socket.destroy(),
    options.prefaceTimeoutMs ?? DEFAULT_PREFACE_TIMEOUT_MS,
  );
  const parser = new FrameFilter(
    (bytes) => {
      if (bytes.length > 0 && !guarded.push(bytes)) socket.pause();
    },
    () => clearTimeout(prefaceTimer),
  );
  socket.on("data", (chunk: Uint8Array) => {
    if (!parser.feed(chunk)) socket.destroy();
  });
  socket.on("end", () => guarded.push(null));
  socket.on("close", () => guarded.destroy());
  socket.on("error", (err: Error) => guarded.destroy(err));
  guarded.on("error", () => {});
  return guarded;
}

/**
 * Joins everything HTTP/2 writes in one turn of the event loop (the headers, data and trailers
 * of every response finished in that turn) into one socket write: one TLS record and one
 * syscall instead of one per frame, and a response's trailers never wait for an earlier
 * write's callback. Writes are acknowledged at once while less than
 * {@link WRITE_AHEAD_BYTES} wait, else once the socket drains. The bytes are copied: a
 * writer may reuse its buffer after the callback.
 */
class WriteCoalescer {
  #buf = new Uint8Array(16 * 1024);
  #len = 0;
  #queued = false;

  constructor(private readonly socket: SocketLike) {}

  /** Takes `chunk` for the next flush; `cb` runs once more may be written. */
  add(chunk: Uint8Array, cb?: (err: Error | null) => void): void {
    if (this.#len + chunk.length > this.#buf.length) {
      let size = this.#buf.length * 2;
      while (size < this.#len + chunk.length) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(chunk, this.#len);
    this.#len += chunk.length;
    if (!this.#queued) {
      this.#queued = true;
      queueMicrotask(() => this.flush());
    }
    if (!cb) return;
    if (this.socket.writableLength + this.#len <= WRITE_AHEAD_BYTES) cb(null);
    else this.socket.once("drain", () => cb(null));
  }

  /** Writes what is waiting, now. */
  flush(): void {
    this.#queued = false;
    if (this.#len === 0) return;
    const data = this.#buf.slice(0, this.#len);
    this.#len = 0;
    if (this.#buf.length > 64 * 1024) this.#buf = new Uint8Array(16 * 1024);
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Forgets what is waiting (the connection is gone). */
  drop(): void {
    this.#len = 0;
  }
}

/**
 * The byte-stream parser of {@link guardHttp2Socket}: checks the preface, drops GOAWAY frames,
 * refuses oversized frames. Holds no more than one frame header between chunks.
 */
class FrameFilter {
  #prefaceAt = 0;
  /** A frame header split across chunks, and how much of it has arrived. */
  readonly #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerFill = 0;
  /** Payload bytes of the current frame still to come, and whether they are dropped. */
  #payloadLeft = 0;
  #dropping = false;

  constructor(
    private readonly pass: (bytes: Uint8Array) => void,
    private readonly onPreface: () => void,
  ) {}

  /** Passes on what HTTP/2 may see of `chunk`; false: the connection must be closed. */
  feed(chunk: Uint8Array): boolean {
    let at = 0;
    while (this.#prefaceAt < PREFACE.length && at < chunk.length) {
      if (chunk[at] !== PREFACE[this.#prefaceAt]) return false;
      this.#prefaceAt++;
      at++;
      if (this.#prefaceAt === PREFACE.length) this.onPreface();
    }
    let passFrom = 0;
    while (at < chunk.length) {
      if (this.#payloadLeft > 0) {
        const n = Math.min(this.#payloadLeft, chunk.length - at);
        if (this.#dropping) {
          this.pass(chunk.subarray(passFrom, at));
          passFrom = at + n;
        }
        at += n;
        this.#payloadLeft -= n;
        continue;
      }
      if (this.#headerFill === 0 && chunk.length - at >= FRAME_HEADER_BYTES) {
        // The common case: a whole header inside this chunk; it passes on with its payload.
        if (!this.#startFrame(chunk, at)) return false;
        if (this.#dropping) {
          this.pass(chunk.subarray(passFrom, at));
          passFrom = at + FRAME_HEADER_BYTES;
        }
        at += FRAME_HEADER_BYTES;
        continue;
      }
      // A header split across chunks: collect it, pass it on once it is whole.
      this.pass(chunk.subarray(passFrom, at));
      const n = Math.min(FRAME_HEADER_BYTES - this.#headerFill, chunk.length - at);
      this.#header.set(chunk.subarray(at, at + n), this.#headerFill);
      this.#headerFill += n;
      at += n;
      passFrom = at;
      if (this.#headerFill === FRAME_HEADER_BYTES) {
        this.#headerFill = 0;
        if (!this.#startFrame(this.#header, 0)) return false;
        if (!this.#dropping) this.pass(this.#header.slice());
      }
    }
    this.pass(chunk.subarray(passFrom, at));
    return true;
  }

  /** Reads the frame header at bytes[at]; false when the frame is longer than allowed. */
  #startFrame(bytes: Uint8Array, at: number): boolean {
    const length = (bytes[at] << 16) | (bytes[at + 1] << 8) | bytes[at + 2];
    if (length > MAX_FRAME_PAYLOAD_BYTES) return false;
    this.#payloadLeft = length;
    this.#dropping = bytes[at + 3] === GOAWAY;
    return true;
  }
}
