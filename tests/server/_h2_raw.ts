/**
 * Raw HTTP/2 on a socket, for tests that must send what no well-behaved client sends: frames
 * built by hand (an HPACK header block of literal fields, no Huffman), and a reader that tells
 * when the server closed the connection.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import { Buffer } from "node:buffer";

/** The client connection preface (RFC 9113 §3.4). */
export const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** Frame types used here. */
export const DATA = 0x0, HEADERS = 0x1, SETTINGS = 0x4;
/** Frame flags used here. */
export const END_STREAM = 0x1, END_HEADERS = 0x4;

/** One HTTP/2 frame: 9-byte header and payload. */
export function frame(type: number, flags: number, streamId: number, payload: Uint8Array) {
  const out = new Uint8Array(9 + payload.length);
  out[0] = (payload.length >> 16) & 0xff;
  out[1] = (payload.length >> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, streamId & 0x7fffffff);
  out.set(payload, 9);
  return out;
}

/** Only the 9-byte header of a frame that claims `length` payload bytes. */
export function frameHeader(type: number, flags: number, streamId: number, length: number) {
  const out = frame(type, flags, streamId, new Uint8Array(0));
  out[0] = (length >> 16) & 0xff;
  out[1] = (length >> 8) & 0xff;
  out[2] = length & 0xff;
  return out;
}

const te = new TextEncoder();

/** HPACK "literal header field without indexing, new name" for each pair (RFC 7541 §6.2.2). */
export function headerBlock(fields: readonly [string, string][]): Uint8Array {
  const parts: number[] = [];
  const str = (s: string) => {
    const b = te.encode(s);
    if (b.length >= 127) throw new Error("header string too long for this encoder");
    parts.push(b.length, ...b);
  };
  for (const [name, value] of fields) {
    parts.push(0x00);
    str(name);
    str(value);
  }
  return new Uint8Array(parts);
}

/** The HEADERS frame of a gRPC call to `path` on stream `streamId`. */
export function grpcHeaders(streamId: number, path: string): Uint8Array {
  return frame(
    HEADERS,
    END_HEADERS,
    streamId,
    headerBlock([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ]),
  );
}

/** A gRPC length-prefixed message (uncompressed). */
export function grpcMessage(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(1, body.length);
  out.set(body, 5);
  return out;
}

/** A raw client connection: what the server sent so far and whether it has closed. */
export interface RawConnection {
  readonly socket: net.Socket;
  /** Bytes received so far. */
  received(): Uint8Array;
  readonly closed: Promise<void>;
  isClosed(): boolean;
  /** Resolves true once closed, false after `timeoutMs`. */
  closedWithin(timeoutMs: number): Promise<boolean>;
  /** Writes and resolves when written (false if the socket is gone). */
  write(bytes: Uint8Array): Promise<boolean>;
  destroy(): void;
}

/** TLS client settings: PEM contents and the ALPN protocol to offer. */
export interface RawTls {
  readonly cert?: string;
  readonly key?: string;
  readonly ca: string;
  readonly alpn: string;
}

/** Connects to 127.0.0.1:port, plain or TLS; resolves once connected (handshake done). */
export function connectRaw(port: number, tlsOptions?: RawTls): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let closed = false;
    let onClose: () => void = () => {};
    const closedPromise = new Promise<void>((r) => (onClose = r));
    const socket: net.Socket = tlsOptions
      ? tls.connect({
        host: "127.0.0.1",
        port,
        servername: "localhost",
        ca: tlsOptions.ca,
        cert: tlsOptions.cert,
        key: tlsOptions.key,
        ALPNProtocols: [tlsOptions.alpn],
      })
      : net.connect({ host: "127.0.0.1", port });
    let connected = false;
    socket.on("data", (d: Uint8Array) => chunks.push(new Uint8Array(d)));
    socket.on("error", (e: Error) => {
      if (!connected) reject(e);
    });
    socket.on("close", () => {
      closed = true;
      onClose();
      if (!connected) reject(new Error("closed before connecting"));
    });
    socket.once(tlsOptions ? "secureConnect" : "connect", () => {
      connected = true;
      resolve({
        socket,
        received: () => Buffer.concat(chunks),
        closed: closedPromise,
        isClosed: () => closed,
        closedWithin: (timeoutMs) => {
          let timer: ReturnType<typeof setTimeout> | undefined;
          return Promise.race([
            closedPromise.then(() => true),
            new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
          ]).finally(() => clearTimeout(timer));
        },
        write: (bytes) =>
          new Promise((r) => {
            if (closed || socket.destroyed) return r(false);
            socket.write(bytes, (err?: Error | null) => r(!err));
          }),
        destroy: () => socket.destroy(),
      });
    });
  });
}

/** Parses complete frames out of `bytes` (what a server sent). */
export function parseFrames(
  bytes: Uint8Array,
): { type: number; flags: number; streamId: number; payload: Uint8Array }[] {
  const frames = [];
  let at = 0;
  while (bytes.length - at >= 9) {
    const length = (bytes[at] << 16) | (bytes[at + 1] << 8) | bytes[at + 2];
    if (bytes.length - at < 9 + length) break;
    const view = new DataView(bytes.buffer, bytes.byteOffset + at);
    frames.push({
      type: bytes[at + 3],
      flags: bytes[at + 4],
      streamId: view.getUint32(5) & 0x7fffffff,
      payload: bytes.slice(at + 9, at + 9 + length),
    });
    at += 9 + length;
  }
  return frames;
}
