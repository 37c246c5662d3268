/**
 * The peer transport: Raft messages and forwarded requests between nodes over persistent,
 * pipelined stream connections (TLS sockets from the one-port server in production; any
 * `Duplex` works).
 *
 * Each node dials one connection per peer address and sends on it; it receives on the
 * connections others dialed to it (`accept`). A dialed connection carries, dialer → acceptor,
 * a hello frame (the dialer's node id), message batches and requests; acceptor → dialer,
 * responses and error responses. Frames are `[u32 length][u8 kind][payload]` (see
 * `_frame.ts`), at most 16 MiB + 64 KiB; a bad frame closes that one connection.
 *
 * Everything is bounded. Messages sent in one event-loop turn are coalesced into one frame and
 * one socket write. While a peer is unreachable its frames wait in a queue of at most
 * `maxQueueBytes`; when that is full the OLDEST frames are dropped (Raft retransmits, and the
 * newest messages carry the freshest term and commit), and every drop is counted and reported
 * through `takeUnreachable`. On a live connection, frames are dropped instead of queued once
 * the socket's own buffer holds `maxQueueBytes` (a peer that does not read).
 */
import type { Duplex } from "node:stream";
import type { Message, NodeId } from "../raft/types.ts";
import { MokvError, UnavailableError } from "../errors.ts";
import { ByteReader, ByteWriter, CodecError } from "./_binary.ts";
import { CODEC_VERSION, readMessage, writeMessage } from "./codec.ts";
import { beginFrame, endFrame, type Frame, FrameDecoder, FrameKind } from "./_frame.ts";
import type { Transport } from "./interfaces.ts";

/** A request could not be completed over the transport (timeout, connection lost, closed). */
export class TransportError extends UnavailableError {}

/** The peer's request handler failed; `message` is the peer's error message. */
export class RemoteError extends MokvError {}

/** Options of `PeerTransport`. */
export interface TransportOptions {
  /** This node's id, sent in the hello frame so receivers know who forwards requests. */
  readonly selfId: NodeId;
  /** Opens a stream to a peer's "host:port" (production: the one-port server's `dialRaft`). */
  readonly dial: (addr: string) => Promise<Duplex>;
  /** Receives incoming Raft messages, in arrival order per connection. */
  readonly onMessages: (msgs: Message[]) => void;
  /** Serves a forwarded request; a throw becomes an error frame carrying its message. */
  readonly onRequest: (from: string, kind: number, payload: Uint8Array) => Promise<Uint8Array>;
  /** Certificate CNs allowed to connect; others are dropped by `accept`. Unset: everyone. */
  readonly allowedPeerCns?: readonly string[];
  /** Bytes that may wait per peer (queued while down, or in the socket buffer). Default 64 MiB. */
  readonly maxQueueBytes?: number;
  /** Reconnect delay bounds in ms; doubles per failure, with jitter. Default 50..2000. */
  readonly reconnectBackoffMs?: { readonly min: number; readonly max: number };
  /** Gives up on a dial after this long. Default 5000 ms. */
  readonly dialTimeoutMs?: number;
  /** Outstanding `request` calls per peer; more are refused at once. Default 10,000. */
  readonly maxPendingRequests?: number;
  /** Requests served concurrently per incoming connection; more get an error frame. Default 1024. */
  readonly maxServedRequests?: number;
  /** Random source in [0, 1) for the backoff jitter. Default Math.random. */
  readonly random?: () => number;
}

/** Figures about one peer address this node sends to. */
export interface PeerStats {
  readonly connected: boolean;
  /** Frames handed to the socket. */
  readonly sentFrames: number;
  readonly sentBytes: number;
  /** Frames and bytes dropped because the queue was full or a message too large. */
  readonly droppedFrames: number;
  readonly droppedBytes: number;
  /** Bytes waiting for a connection. */
  readonly queuedBytes: number;
  /** Failed dials, lost connections and protocol errors. */
  readonly errors: number;
  /** Successful connections made. */
  readonly connects: number;
}

/** Figures about connections other nodes dialed to this one. */
export interface InboundStats {
  readonly open: number;
  readonly accepted: number;
  /** Connections dropped because the CN is not allowed (or the transport was closed). */
  readonly rejected: number;
  /** Connections closed because of a bad frame. */
  readonly protocolErrors: number;
  readonly receivedFrames: number;
  readonly receivedMessages: number;
  /** Times `onMessages` threw (a host bug; the connection stays up). */
  readonly handlerErrors: number;
}

/** Everything `PeerTransport.stats` reports. */
export interface TransportStats {
  readonly peers: Readonly<Record<string, PeerStats>>;
  readonly inbound: InboundStats;
}

/** The stats of a transport with no peers and nothing received (simulated transports). */
export function emptyTransportStats(): TransportStats {
  return {
    peers: {},
    inbound: {
      open: 0,
      accepted: 0,
      rejected: 0,
      protocolErrors: 0,
      receivedFrames: 0,
      receivedMessages: 0,
      handlerErrors: 0,
    },
  };
}

const DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024;
const DEFAULT_BACKOFF_MS = { min: 50, max: 2000 };
const DEFAULT_DIAL_TIMEOUT_MS = 5000;
const DEFAULT_MAX_PENDING_REQUESTS = 10_000;
const DEFAULT_MAX_SERVED_REQUESTS = 1024;
/** A message batch frame is closed and a new one started beyond this size. */
const SOFT_FRAME_BYTES = 4 * 1024 * 1024;
/** Largest single message; bigger ones are dropped (Raft's own limits keep far below). */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const CLOSE_WAIT_MS = 1000;

const textDecoder = new TextDecoder("utf-8", { fatal: true });
const textEncoder = new TextEncoder();

type Timer = ReturnType<typeof setTimeout>;

interface PendingRequest {
  readonly resolve: (v: Uint8Array) => void;
  readonly reject: (e: Error) => void;
  readonly timer: Timer;
}

interface Queued {
  readonly bytes: Uint8Array;
  readonly frames: number;
}

type PeerState = "idle" | "connecting" | "connected" | "backoff";

/** One peer address this node sends to: its connection, queue and pending requests. */
class OutboundPeer {
  state: PeerState = "idle";
  socket: Duplex | undefined;
  dialing: Promise<void> | undefined;
  timer: Timer | undefined;
  failures = 0;
  readonly ids = new Set<NodeId>();
  pendingMessages: Message[] = [];
  pendingFrames: Uint8Array[] = [];
  queue: Queued[] = [];
  queuedBytes = 0;
  readonly requests = new Map<number, PendingRequest>();
  nextRequestId = 1;
  sentFrames = 0;
  sentBytes = 0;
  droppedFrames = 0;
  droppedBytes = 0;
  errors = 0;
  connects = 0;
  /** Dropped by `forget`: a dial still in flight closes its socket at once. */
  forgotten = false;

  constructor(readonly addr: string) {}
}

interface InboundConn {
  readonly socket: Duplex;
  readonly decoder: FrameDecoder;
  from: string;
  served: number;
}

function sockClosed(s: Duplex): boolean {
  return (s as Duplex & { closed?: boolean }).closed === true;
}

/** Sends Raft messages and requests to peers and receives theirs. See the module doc. */
export class PeerTransport implements Transport {
  readonly #opts: TransportOptions;
  readonly #maxQueueBytes: number;
  readonly #backoff: { readonly min: number; readonly max: number };
  readonly #random: () => number;
  readonly #peers = new Map<string, OutboundPeer>();
  readonly #inbound = new Set<InboundConn>();
  readonly #dirty = new Set<OutboundPeer>();
  readonly #unreachable = new Set<NodeId>();
  readonly #writer = new ByteWriter(64 * 1024);
  #flushScheduled = false;
  #closed = false;
  #accepted = 0;
  #rejected = 0;
  #protocolErrors = 0;
  #receivedFrames = 0;
  #receivedMessages = 0;
  #handlerErrors = 0;

  constructor(opts: TransportOptions) {
    this.#opts = opts;
    this.#maxQueueBytes = opts.maxQueueBytes ?? DEFAULT_MAX_QUEUE_BYTES;
    this.#backoff = opts.reconnectBackoffMs ?? DEFAULT_BACKOFF_MS;
    this.#random = opts.random ?? Math.random;
  }

  /**
   * Sends `msgs` to node `to` at `addr`, in order after earlier sends to the same address.
   * Never blocks or throws: delivery is best effort, as Raft expects; what cannot be
   * delivered is dropped, counted, and `to` is reported by `takeUnreachable`.
   */
  send(to: NodeId, addr: string, msgs: readonly Message[]): void {
    if (this.#closed || msgs.length === 0) return;
    const p = this.#peer(addr);
    p.ids.add(to);
    for (const m of msgs) p.pendingMessages.push(m);
    this.#schedule(p);
  }

  /**
   * Sends a request of `kind` to the peer at `addr` and resolves with its response. Rejects
   * with `RemoteError` if the peer's handler failed, `TransportError` on timeout, connection
   * loss, too many outstanding requests, or after `close`.
   */
  request(addr: string, kind: number, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(new TransportError("transport closed"));
    const p = this.#peer(addr);
    const max = this.#opts.maxPendingRequests ?? DEFAULT_MAX_PENDING_REQUESTS;
    if (p.requests.size >= max) {
      return Promise.reject(new TransportError(`${max} requests already pending to ${addr}`));
    }
    let id = p.nextRequestId;
    while (p.requests.has(id)) id = id >= 0xffff_ffff ? 1 : id + 1;
    p.nextRequestId = id >= 0xffff_ffff ? 1 : id + 1;
    const w = new ByteWriter(payload.length + 16);
    const at = beginFrame(w, FrameKind.request);
    w.u32(id);
    w.varint(kind);
    w.raw(payload);
    try {
      endFrame(w, at);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        p.requests.delete(id);
        reject(new TransportError(`request to ${addr} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      p.requests.set(id, { resolve, reject, timer });
      p.pendingFrames.push(w.finish());
      this.#schedule(p);
    });
  }

  /**
   * Takes a connection another node dialed (from the one-port server). It is destroyed at once
   * if `peer.cn` is not in `allowedPeerCns` or the transport is closed.
   */
  accept(socket: Duplex, peer: { readonly cn: string }): void {
    const allowed = this.#opts.allowedPeerCns;
    if (this.#closed || (allowed !== undefined && !allowed.includes(peer.cn))) {
      this.#rejected++;
      socket.destroy();
      return;
    }
    this.#accepted++;
    const conn: InboundConn = { socket, decoder: new FrameDecoder(), from: peer.cn, served: 0 };
    this.#inbound.add(conn);
    socket.on("error", () => {});
    socket.on("close", () => this.#inbound.delete(conn));
    socket.on("data", (chunk: Uint8Array) => this.#onInboundData(conn, chunk));
    // The one-port server pauses a socket while it peeks at it; take it out of that state.
    socket.resume();
  }

  /** Node ids that could not be reached since the last call (for `raft.reportUnreachable`). */
  takeUnreachable(): NodeId[] {
    const out = [...this.#unreachable];
    this.#unreachable.clear();
    return out;
  }

  /** Per-peer and inbound figures for metrics. */
  stats(): TransportStats {
    const peers: Record<string, PeerStats> = {};
    for (const p of this.#peers.values()) {
      peers[p.addr] = {
        connected: p.state === "connected",
        sentFrames: p.sentFrames,
        sentBytes: p.sentBytes,
        droppedFrames: p.droppedFrames,
        droppedBytes: p.droppedBytes,
        queuedBytes: p.queuedBytes,
        errors: p.errors,
        connects: p.connects,
      };
    }
    return {
      peers,
      inbound: {
        open: this.#inbound.size,
        accepted: this.#accepted,
        rejected: this.#rejected,
        protocolErrors: this.#protocolErrors,
        receivedFrames: this.#receivedFrames,
        receivedMessages: this.#receivedMessages,
        handlerErrors: this.#handlerErrors,
      },
    };
  }

  /**
   * Closes every connection, cancels reconnects and rejects pending requests with
   * `TransportError`; resolves once the sockets are closed. Later sends are ignored.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const sockets: Duplex[] = [];
    const dials: Promise<void>[] = [];
    for (const p of this.#peers.values()) {
      if (p.timer !== undefined) clearTimeout(p.timer);
      p.timer = undefined;
      this.#failRequests(p, "transport closed");
      p.queue = [];
      p.queuedBytes = 0;
      p.pendingMessages = [];
      p.pendingFrames = [];
      if (p.dialing) dials.push(p.dialing);
      if (p.socket) sockets.push(p.socket);
    }
    for (const c of this.#inbound) sockets.push(c.socket);
    await Promise.all(dials);
    await Promise.all(sockets.map((s) => destroyAndWait(s)));
  }

  /**
   * Drops everything kept for `addr` (a peer that left for good): its connection is closed,
   * its queue and counters go, and its pending requests fail. A later send dials afresh.
   */
  forget(addr: string): void {
    const p = this.#peers.get(addr);
    if (!p) return;
    this.#peers.delete(addr);
    this.#dirty.delete(p);
    p.forgotten = true;
    if (p.timer !== undefined) clearTimeout(p.timer);
    p.timer = undefined;
    this.#failRequests(p, `peer ${addr} forgotten`);
    p.queue = [];
    p.queuedBytes = 0;
    p.pendingMessages = [];
    p.pendingFrames = [];
    p.state = "idle";
    const socket = p.socket;
    p.socket = undefined; // its close is no connection loss to react to
    if (socket) void destroyAndWait(socket);
  }

  // -------------------------------------------------------------------------------------------
  // Outbound

  #peer(addr: string): OutboundPeer {
    let p = this.#peers.get(addr);
    if (!p) {
      p = new OutboundPeer(addr);
      this.#peers.set(addr, p);
    }
    return p;
  }

  #schedule(p: OutboundPeer): void {
    this.#dirty.add(p);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => this.#flush());
  }

  /** Encodes each dirty peer's messages of this turn into frames and hands them on at once. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed) return;
    for (const p of this.#dirty) {
      const { bytes, frames } = this.#encodePending(p);
      if (frames > 0) this.#enqueue(p, bytes, frames);
    }
    this.#dirty.clear();
  }

  #encodePending(p: OutboundPeer): Queued {
    const w = this.#writer;
    w.reset();
    let frames = 0;
    const msgs = p.pendingMessages;
    p.pendingMessages = [];
    let i = 0;
    while (i < msgs.length) {
      const at = beginFrame(w, FrameKind.messages);
      w.u8(CODEC_VERSION);
      const countAt = w.length;
      w.u32(0);
      let count = 0;
      while (i < msgs.length && w.length - at < SOFT_FRAME_BYTES) {
        const before = w.length;
        writeMessage(w, msgs[i]);
        const size = w.length - before;
        if (size > MAX_MESSAGE_BYTES) {
          w.truncate(before);
          this.#drop(p, size, 1);
        } else {
          count++;
        }
        i++;
      }
      if (count === 0) {
        w.truncate(at);
        continue;
      }
      w.setU32(countAt, count);
      endFrame(w, at);
      frames++;
    }
    for (const f of p.pendingFrames) w.raw(f);
    frames += p.pendingFrames.length;
    p.pendingFrames = [];
    return { bytes: frames > 0 ? w.finish() : new Uint8Array(), frames };
  }

  /** Writes to the live connection, or queues (bounded, dropping the oldest) and dials. */
  #enqueue(p: OutboundPeer, bytes: Uint8Array, frames: number): void {
    if (p.state === "connected" && p.socket) {
      if (p.socket.writableLength + bytes.length > this.#maxQueueBytes) {
        this.#drop(p, bytes.length, frames);
        return;
      }
      this.#write(p, p.socket, bytes, frames);
      return;
    }
    if (bytes.length > this.#maxQueueBytes) {
      this.#drop(p, bytes.length, frames);
    } else {
      while (p.queuedBytes + bytes.length > this.#maxQueueBytes) {
        const old = p.queue.shift()!;
        p.queuedBytes -= old.bytes.length;
        this.#drop(p, old.bytes.length, old.frames);
      }
      p.queue.push({ bytes, frames });
      p.queuedBytes += bytes.length;
    }
    if (p.state === "idle") this.#connect(p);
  }

  #write(p: OutboundPeer, socket: Duplex, bytes: Uint8Array, frames: number): void {
    socket.write(bytes);
    p.sentFrames += frames;
    p.sentBytes += bytes.length;
  }

  #drop(p: OutboundPeer, bytes: number, frames: number): void {
    p.droppedBytes += bytes;
    p.droppedFrames += frames;
    for (const id of p.ids) this.#unreachable.add(id);
  }

  #connect(p: OutboundPeer): void {
    p.state = "connecting";
    p.dialing = this.#dial(p).finally(() => {
      p.dialing = undefined;
    });
  }

  async #dial(p: OutboundPeer): Promise<void> {
    const timeoutMs = this.#opts.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
    let timer: Timer | undefined;
    let socket: Duplex;
    try {
      const dialing = this.#opts.dial(p.addr);
      socket = await Promise.race([
        dialing,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            reject(new TransportError(`dial ${p.addr} timed out after ${timeoutMs} ms`));
            // A dial that completes late is closed at once.
            dialing.then((s) => s.destroy(), () => {});
          }, timeoutMs);
        }),
      ]);
    } catch {
      clearTimeout(timer);
      this.#onConnectionLost(p);
      return;
    }
    clearTimeout(timer);
    if (this.#closed || p.forgotten) {
      await destroyAndWait(socket);
      return;
    }
    this.#attach(p, socket);
  }

  #attach(p: OutboundPeer, socket: Duplex): void {
    (socket as Duplex & { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    const decoder = new FrameDecoder();
    socket.on("error", () => {});
    socket.on("close", () => {
      if (p.socket === socket) this.#onConnectionLost(p);
    });
    socket.on("data", (chunk: Uint8Array) => {
      try {
        decoder.push(chunk);
        for (let f = decoder.next(); f !== null; f = decoder.next()) this.#onOutboundFrame(p, f);
      } catch {
        p.errors++;
        socket.destroy();
      }
    });
    if (sockClosed(socket) || socket.destroyed) {
      this.#onConnectionLost(p);
      return;
    }
    p.socket = socket;
    p.state = "connected";
    p.failures = 0;
    p.connects++;
    // Hello first, then everything queued while down, in one write.
    const w = new ByteWriter(64 + p.queuedBytes);
    const at = beginFrame(w, FrameKind.hello);
    w.raw(textEncoder.encode(this.#opts.selfId));
    endFrame(w, at);
    let frames = 1;
    for (const q of p.queue) {
      w.raw(q.bytes);
      frames += q.frames;
    }
    p.queue = [];
    p.queuedBytes = 0;
    this.#write(p, socket, w.finish(), frames);
  }

  #onOutboundFrame(p: OutboundPeer, f: Frame): void {
    switch (f.kind) {
      case FrameKind.response:
      case FrameKind.error: {
        const r = new ByteReader(f.payload);
        const id = r.u32();
        const pending = p.requests.get(id);
        if (!pending) return; // timed out already
        p.requests.delete(id);
        clearTimeout(pending.timer);
        const body = r.raw(r.remaining);
        if (f.kind === FrameKind.response) pending.resolve(body);
        else pending.reject(new RemoteError(decodeText(body)));
        return;
      }
      case FrameKind.hello:
      case FrameKind.messages:
      case FrameKind.request:
        throw new CodecError(`unexpected frame kind ${f.kind} on a dialed connection`);
      default: {
        const never: never = f.kind;
        throw new CodecError(`unknown frame kind ${never}`);
      }
    }
  }

  #onConnectionLost(p: OutboundPeer): void {
    p.socket = undefined;
    p.errors++;
    this.#failRequests(p, `connection to ${p.addr} lost`);
    for (const id of p.ids) this.#unreachable.add(id);
    if (this.#closed) {
      p.state = "idle";
      return;
    }
    p.state = "backoff";
    const base = Math.min(this.#backoff.max, this.#backoff.min * 2 ** Math.min(p.failures, 30));
    p.failures++;
    const delayMs = Math.round(base * (0.5 + 0.5 * this.#random()));
    p.timer = setTimeout(() => {
      p.timer = undefined;
      if (this.#closed) return;
      if (p.queue.length > 0 || p.pendingFrames.length > 0) this.#connect(p);
      else p.state = "idle";
    }, delayMs);
  }

  #failRequests(p: OutboundPeer, why: string): void {
    for (const r of p.requests.values()) {
      clearTimeout(r.timer);
      r.reject(new TransportError(why));
    }
    p.requests.clear();
  }

  // -------------------------------------------------------------------------------------------
  // Inbound

  #onInboundData(conn: InboundConn, chunk: Uint8Array): void {
    try {
      conn.decoder.push(chunk);
      for (let f = conn.decoder.next(); f !== null; f = conn.decoder.next()) {
        this.#receivedFrames++;
        this.#onInboundFrame(conn, f);
      }
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      this.#protocolErrors++;
      conn.socket.destroy();
    }
  }

  #onInboundFrame(conn: InboundConn, f: Frame): void {
    switch (f.kind) {
      case FrameKind.hello:
        conn.from = decodeText(f.payload);
        return;
      case FrameKind.messages: {
        const msgs = decodeBatch(f.payload);
        this.#receivedMessages += msgs.length;
        if (msgs.length === 0) return;
        try {
          this.#opts.onMessages(msgs);
        } catch {
          this.#handlerErrors++;
        }
        return;
      }
      case FrameKind.request: {
        const r = new ByteReader(f.payload);
        const id = r.u32();
        const kind = r.varint();
        const payload = r.raw(r.remaining);
        this.#serve(conn, id, kind, payload);
        return;
      }
      case FrameKind.response:
      case FrameKind.error:
        throw new CodecError(`unexpected frame kind ${f.kind} on an accepted connection`);
      default: {
        const never: never = f.kind;
        throw new CodecError(`unknown frame kind ${never}`);
      }
    }
  }

  #serve(conn: InboundConn, id: number, kind: number, payload: Uint8Array): void {
    const max = this.#opts.maxServedRequests ?? DEFAULT_MAX_SERVED_REQUESTS;
    if (conn.served >= max) {
      this.#reply(conn, FrameKind.error, id, textEncoder.encode(`more than ${max} requests`));
      return;
    }
    conn.served++;
    const from = conn.from;
    Promise.resolve()
      .then(() => this.#opts.onRequest(from, kind, payload))
      .then(
        (resp) => this.#reply(conn, FrameKind.response, id, resp),
        (err) => {
          const msg = err instanceof Error ? err.message : String(err);
          this.#reply(conn, FrameKind.error, id, textEncoder.encode(msg));
        },
      )
      .finally(() => conn.served--);
  }

  #reply(conn: InboundConn, kind: FrameKind, id: number, body: Uint8Array): void {
    const s = conn.socket;
    if (s.destroyed || this.#closed) return;
    if (s.writableLength + body.length > this.#maxQueueBytes) {
      // The dialer does not read its responses: give up on it.
      s.destroy();
      return;
    }
    const w = new ByteWriter(body.length + 16);
    const at = beginFrame(w, kind);
    w.u32(id);
    w.raw(body);
    try {
      endFrame(w, at);
    } catch {
      this.#reply(conn, FrameKind.error, id, textEncoder.encode("response too large"));
      return;
    }
    s.write(w.finish());
  }
}

function decodeText(bytes: Uint8Array): string {
  try {
    return textDecoder.decode(bytes);
  } catch {
    throw new CodecError("invalid UTF-8");
  }
}

function decodeBatch(payload: Uint8Array): Message[] {
  const r = new ByteReader(payload);
  const version = r.u8();
  if (version !== CODEC_VERSION) throw new CodecError(`unsupported batch version ${version}`);
  const count = r.u32();
  if (count > r.remaining) throw new CodecError(`batch count ${count} exceeds its bytes`);
  const msgs = new Array<Message>(count);
  for (let i = 0; i < count; i++) msgs[i] = readMessage(r);
  r.end();
  return msgs;
}

function destroyAndWait(s: Duplex): Promise<void> {
  if (sockClosed(s)) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, CLOSE_WAIT_MS);
    s.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
    s.destroy();
  });
}
