/**
 * Hand-written protobuf encoding of etcd's WatchResponse (etcdserverpb) and its mvccpb.Event
 * and KeyValue, framed as gRPC messages. The Watch service encodes each event once and copies
 * the same bytes into the response of every watcher that selected it: with a thousand
 * watchers on one prefix, encoding message objects per watcher per event was the node's
 * whole CPU. The bytes are canonical proto3 (default values left out), so any protobuf
 * decoder, etcd's clients included, reads them as it reads protobufjs's output.
 */
import type { HistoryEntry } from "../kv/mod.ts";

const te = new TextEncoder();

/** Bytes the varint of `n` takes (a negative int64 takes ten). */
export function varintSize(n: number): number {
  if (n < 0) return 10;
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes the varint of `n` (an integer; negative as a 64-bit two's complement) at `at`. */
function writeVarint(buf: Uint8Array, at: number, n: number): number {
  if (n < 0) {
    let v = BigInt.asUintN(64, BigInt(n));
    for (let i = 0; i < 9; i++) {
      buf[at++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    buf[at++] = Number(v);
    return at;
  }
  while (n >= 128) {
    buf[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

/** Size of a varint field (tag of one byte) holding `n`, or 0 when `n` is the default. */
function intFieldSize(n: number): number {
  return n === 0 ? 0 : 1 + varintSize(n);
}

function writeIntField(buf: Uint8Array, at: number, tag: number, n: number): number {
  if (n === 0) return at;
  buf[at++] = tag;
  return writeVarint(buf, at, n);
}

/** Size of a length-delimited field (tag of one byte) of `length` bytes. */
function lenFieldSize(length: number): number {
  return 1 + varintSize(length) + length;
}

function writeBytesField(buf: Uint8Array, at: number, tag: number, bytes: Uint8Array): number {
  if (bytes.length === 0) return at;
  buf[at++] = tag;
  at = writeVarint(buf, at, bytes.length);
  buf.set(bytes, at);
  return at + bytes.length;
}

/** mvccpb.KeyValue as the encoder takes it. */
interface KeyValueParts {
  readonly key: Uint8Array;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  readonly value: Uint8Array;
  readonly lease: number;
}

function keyValueParts(key: Uint8Array, e: HistoryEntry): KeyValueParts {
  return {
    key,
    createRevision: e.created,
    modRevision: e.version,
    version: e.writes,
    value: e.value,
    lease: e.lease,
  };
}

function keyValueSize(kv: KeyValueParts): number {
  return (kv.key.length === 0 ? 0 : lenFieldSize(kv.key.length)) +
    intFieldSize(kv.createRevision) + intFieldSize(kv.modRevision) + intFieldSize(kv.version) +
    (kv.value.length === 0 ? 0 : lenFieldSize(kv.value.length)) + intFieldSize(kv.lease);
}

function writeKeyValue(buf: Uint8Array, at: number, kv: KeyValueParts): number {
  at = writeBytesField(buf, at, 0x0a, kv.key);
  at = writeIntField(buf, at, 0x10, kv.createRevision);
  at = writeIntField(buf, at, 0x18, kv.modRevision);
  at = writeIntField(buf, at, 0x20, kv.version);
  at = writeBytesField(buf, at, 0x2a, kv.value);
  return writeIntField(buf, at, 0x30, kv.lease);
}

/** One key's change as the encoder takes it (the history's KvEvent with its key as bytes). */
export interface EventParts {
  readonly type: "put" | "delete";
  readonly key: Uint8Array;
  /** The key after a put; absent after a delete. */
  readonly entry?: HistoryEntry;
  /** The key before the change, sent only when asked for and present. */
  readonly prev?: HistoryEntry;
  /** The event's revision (a delete's kv carries only the key and this). */
  readonly revision: number;
}

/**
 * WatchResponse field 11 (one mvccpb.Event, tag and length included): the bytes a response
 * carries for this event, ready to be copied into any number of responses.
 */
export function encodeEventField(e: EventParts): Uint8Array {
  const kv: KeyValueParts = e.entry ? keyValueParts(e.key, e.entry) : {
    key: e.key,
    createRevision: 0,
    modRevision: e.revision,
    version: 0,
    value: new Uint8Array(0),
    lease: 0,
  };
  const prev = e.prev ? keyValueParts(e.key, e.prev) : undefined;
  const kvSize = keyValueSize(kv);
  const prevSize = prev ? keyValueSize(prev) : 0;
  const eventSize = (e.type === "delete" ? 2 : 0) + lenFieldSize(kvSize) +
    (prev ? lenFieldSize(prevSize) : 0);
  const buf = new Uint8Array(lenFieldSize(eventSize));
  let at = 0;
  buf[at++] = 0x5a;
  at = writeVarint(buf, at, eventSize);
  if (e.type === "delete") {
    buf[at++] = 0x08;
    buf[at++] = 1;
  }
  buf[at++] = 0x12;
  at = writeVarint(buf, at, kvSize);
  at = writeKeyValue(buf, at, kv);
  if (prev) {
    buf[at++] = 0x1a;
    at = writeVarint(buf, at, prevSize);
    at = writeKeyValue(buf, at, prev);
  }
  return buf;
}

/** etcd's ResponseHeader. */
export interface HeaderParts {
  readonly cluster_id: number;
  readonly member_id: number;
  readonly revision: number;
  readonly raft_term: number;
}

/** WatchResponse field 1 (the ResponseHeader, tag and length included). */
export function encodeHeaderField(h: HeaderParts): Uint8Array {
  const size = intFieldSize(h.cluster_id) + intFieldSize(h.member_id) +
    intFieldSize(h.revision) + intFieldSize(h.raft_term);
  const buf = new Uint8Array(lenFieldSize(size));
  let at = 0;
  buf[at++] = 0x0a;
  at = writeVarint(buf, at, size);
  at = writeIntField(buf, at, 0x08, h.cluster_id);
  at = writeIntField(buf, at, 0x10, h.member_id);
  at = writeIntField(buf, at, 0x18, h.revision);
  writeIntField(buf, at, 0x20, h.raft_term);
  return buf;
}

/** One WatchResponse: its header and events already encoded (see the encoders above). */
export interface WatchResponseParts {
  readonly header: Uint8Array;
  readonly watchId: number;
  readonly created?: boolean;
  readonly canceled?: boolean;
  readonly compactRevision?: number;
  readonly cancelReason?: string;
  /** Encoded event fields, in order; concatenated into the response as they are. */
  readonly events?: readonly Uint8Array[];
}

/**
 * Encoded WatchResponses, each framed as a gRPC message (a zero compression byte and a
 * 4-byte big-endian length), appended to one growing buffer: what a stream sends in one
 * write.
 */
export class WatchFrames {
  readonly #initialBytes: number;
  #buf: Uint8Array;
  #at = 0;
  #count = 0;
  /** Bytes the last {@link take} returned: the next buffer starts about that large. */
  #lastBytes = 0;

  constructor(initialBytes = 16 * 1024) {
    this.#initialBytes = initialBytes;
    this.#buf = new Uint8Array(0);
  }

  /** Framed bytes appended so far. */
  get byteLength(): number {
    return this.#at;
  }

  /** Responses appended so far. */
  get count(): number {
    return this.#count;
  }

  /** Appends one response. */
  append(r: WatchResponseParts): void {
    const reason = r.cancelReason ? te.encode(r.cancelReason) : undefined;
    let eventBytes = 0;
    for (const e of r.events ?? []) eventBytes += e.length;
    const size = r.header.length + intFieldSize(r.watchId) + (r.created ? 2 : 0) +
      (r.canceled ? 2 : 0) + intFieldSize(r.compactRevision ?? 0) +
      (reason ? lenFieldSize(reason.length) : 0) + eventBytes;
    this.#ensure(5 + size);
    const buf = this.#buf;
    let at = this.#at;
    buf[at] = 0;
    new DataView(buf.buffer, buf.byteOffset).setUint32(at + 1, size);
    at += 5;
    buf.set(r.header, at);
    at += r.header.length;
    at = writeIntField(buf, at, 0x10, r.watchId);
    if (r.created) {
      buf[at++] = 0x18;
      buf[at++] = 1;
    }
    if (r.canceled) {
      buf[at++] = 0x20;
      buf[at++] = 1;
    }
    at = writeIntField(buf, at, 0x28, r.compactRevision ?? 0);
    if (reason) at = writeBytesField(buf, at, 0x32, reason);
    for (const e of r.events ?? []) {
      buf.set(e, at);
      at += e.length;
    }
    this.#at = at;
    this.#count++;
  }

  /** The framed bytes appended so far; the buffer starts over empty. */
  take(): Uint8Array {
    const out = this.#buf.subarray(0, this.#at);
    // The bytes handed out are never written again; the next append allocates afresh.
    this.#lastBytes = this.#at;
    this.#buf = new Uint8Array(0);
    this.#at = 0;
    this.#count = 0;
    return out;
  }

  #ensure(more: number): void {
    if (this.#at + more <= this.#buf.length) return;
    const first = Math.max(this.#initialBytes, Math.min(this.#lastBytes, 1024 * 1024));
    const next = new Uint8Array(Math.max(first, this.#buf.length * 2, this.#at + more));
    next.set(this.#buf.subarray(0, this.#at));
    this.#buf = next;
  }
}

/** The message bodies of gRPC-framed bytes (what {@link WatchFrames.take} returned). */
export function* frameBodies(framed: Uint8Array): Generator<Uint8Array> {
  const view = new DataView(framed.buffer, framed.byteOffset, framed.byteLength);
  for (let at = 0; at + 5 <= framed.length;) {
    const size = view.getUint32(at + 1);
    yield framed.subarray(at + 5, at + 5 + size);
    at += 5 + size;
  }
}
