/**
 * Hand-written protobuf codec for the messages a read-back moves in bulk: api.GetResponse
 * (`string key = 1; bytes value = 2; uint64 version = 3`), gRPC's length-prefixed framing of a
 * run of them (the List stream), and api.RangeResponse (`repeated GetResponse kvs = 1; bool
 * more = 2; string next_key = 3`). Byte-identical to what protobufjs writes for the same
 * message (proto3: zero values omitted, fields in number order), and decodes anything a
 * conforming encoder writes (unknown fields skipped), at a fraction of protobufjs's cost
 * per entry.
 */

/** One key-value as api.GetResponse carries it. */
export interface KvWireEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly version: number;
}

/** A decoded api.RangeResponse. */
export interface RangePage {
  readonly kvs: KvWireEntry[];
  readonly more: boolean;
  readonly next_key: string;
}

/** Bytes of gRPC's message prefix: a compressed flag and a 4-byte big-endian length. */
export const GRPC_FRAME_HEADER_BYTES = 5;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** UTF-8 length of `s` (lone surrogates count as U+FFFD, as TextEncoder writes them). */
export function utf8Bytes(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 2; // 4 bytes for 2 code units
        i++;
      } else n += 2;
    } else n += 2;
  }
  return n;
}

/** Bytes of `n` as a protobuf varint (n an integer in 0..2^53-1). */
export function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    bytes++;
  }
  return bytes;
}

function writeVarint(buf: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

function writeUtf8(buf: Uint8Array, at: number, s: string, bytes: number): number {
  if (bytes === s.length) {
    for (let i = 0; i < s.length; i++) buf[at + i] = s.charCodeAt(i);
    return at + bytes;
  }
  textEncoder.encodeInto(s, buf.subarray(at, at + bytes));
  return at + bytes;
}

/** Sizes of one GetResponse, computed once and reused by the writer. */
export interface GetResponseSize {
  /** UTF-8 bytes of the key. */
  keyBytes: number;
  /** Bytes of the encoded message body. */
  bodyBytes: number;
}

/** Fills `out` with the sizes of `e` encoded as api.GetResponse; returns the body bytes. */
export function sizeGetResponse(e: KvWireEntry, out: GetResponseSize): number {
  const keyBytes = utf8Bytes(e.key);
  let body = 0;
  if (keyBytes > 0) body += 1 + varintBytes(keyBytes) + keyBytes;
  if (e.value.length > 0) body += 1 + varintBytes(e.value.length) + e.value.length;
  if (e.version > 0) body += 1 + varintBytes(e.version);
  out.keyBytes = keyBytes;
  out.bodyBytes = body;
  return body;
}

/** Writes the GetResponse body of `e` (sized by {@link sizeGetResponse}) at `at`; returns the end. */
export function writeGetResponse(
  buf: Uint8Array,
  at: number,
  e: KvWireEntry,
  size: GetResponseSize,
): number {
  if (size.keyBytes > 0) {
    buf[at++] = 0x0a;
    at = writeVarint(buf, at, size.keyBytes);
    at = writeUtf8(buf, at, e.key, size.keyBytes);
  }
  if (e.value.length > 0) {
    buf[at++] = 0x12;
    at = writeVarint(buf, at, e.value.length);
    buf.set(e.value, at);
    at += e.value.length;
  }
  if (e.version > 0) {
    buf[at++] = 0x18;
    at = writeVarint(buf, at, e.version);
  }
  return at;
}

/** Writes gRPC's 5-byte prefix of an uncompressed message of `bodyBytes` at `at`. */
export function writeFrameHeader(buf: Uint8Array, at: number, bodyBytes: number): number {
  buf[at] = 0;
  buf[at + 1] = bodyBytes >>> 24;
  buf[at + 2] = (bodyBytes >>> 16) & 0xff;
  buf[at + 3] = (bodyBytes >>> 8) & 0xff;
  buf[at + 4] = bodyBytes & 0xff;
  return at + GRPC_FRAME_HEADER_BYTES;
}

/** `e` as one api.GetResponse message (no gRPC prefix). */
export function encodeGetResponse(e: KvWireEntry): Uint8Array {
  const size: GetResponseSize = { keyBytes: 0, bodyBytes: 0 };
  const buf = new Uint8Array(sizeGetResponse(e, size));
  writeGetResponse(buf, 0, e, size);
  return buf;
}

/**
 * Builds one api.RangeResponse into a buffer that grows by doubling: `add` each entry, then
 * `finish(more, nextKey)`. Entries are copied in as they come, so the source may change after.
 */
export class RangeResponseWriter {
  #buf: Uint8Array;
  #at = 0;
  #count = 0;
  readonly #size: GetResponseSize = { keyBytes: 0, bodyBytes: 0 };

  constructor(initialBytes = 64 * 1024) {
    this.#buf = new Uint8Array(initialBytes);
  }

  /** Bytes written so far. */
  get sizeBytes(): number {
    return this.#at;
  }

  /** Entries added so far. */
  get count(): number {
    return this.#count;
  }

  /** Bytes `e` would add to the response. */
  bytesFor(e: KvWireEntry): number {
    const body = sizeGetResponse(e, this.#size);
    return 1 + varintBytes(body) + body;
  }

  /** Appends `e` as one element of `kvs`. */
  add(e: KvWireEntry): void {
    const body = sizeGetResponse(e, this.#size);
    this.#reserve(1 + varintBytes(body) + body);
    const buf = this.#buf;
    buf[this.#at++] = 0x0a;
    this.#at = writeVarint(buf, this.#at, body);
    this.#at = writeGetResponse(buf, this.#at, e, this.#size);
    this.#count++;
  }

  /** The finished message; the writer must not be used afterwards. */
  finish(more: boolean, nextKey: string): Uint8Array {
    const keyBytes = utf8Bytes(nextKey);
    this.#reserve(2 + 1 + varintBytes(keyBytes) + keyBytes);
    const buf = this.#buf;
    if (more) {
      buf[this.#at++] = 0x10;
      buf[this.#at++] = 1;
    }
    if (keyBytes > 0) {
      buf[this.#at++] = 0x1a;
      this.#at = writeVarint(buf, this.#at, keyBytes);
      this.#at = writeUtf8(buf, this.#at, nextKey, keyBytes);
    }
    return buf.subarray(0, this.#at);
  }

  #reserve(bytes: number): void {
    if (this.#at + bytes <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#at + bytes) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.#buf.subarray(0, this.#at));
    this.#buf = grown;
  }
}

/** The protobuf input was cut short or malformed. */
export class WireFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireFormatError";
  }
}

/** A cursor over protobuf bytes. */
class Reader {
  at: number;
  constructor(readonly buf: Uint8Array, start: number, readonly end: number) {
    this.at = start;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.end) throw new WireFormatError("truncated varint");
      const b = this.buf[this.at++];
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw new WireFormatError("varint too long");
  }

  /** [start, end) of a length-delimited field's payload. */
  lengthDelimited(): number {
    const n = this.varint();
    if (n > this.end - this.at) throw new WireFormatError("truncated field");
    const start = this.at;
    this.at += n;
    return start;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.at += 8;
        break;
      case 2:
        this.lengthDelimited();
        return;
      case 5:
        this.at += 4;
        break;
      default:
        throw new WireFormatError(`unsupported wire type ${wireType}`);
    }
    if (this.at > this.end) throw new WireFormatError("truncated field");
  }
}

function utf8(buf: Uint8Array, start: number, end: number): string {
  // Short ASCII keys (the common case) without a call into the decoder.
  if (end - start <= 64) {
    let s = "";
    for (let i = start; i < end; i++) {
      const c = buf[i];
      if (c >= 0x80) return textDecoder.decode(buf.subarray(start, end));
      s += String.fromCharCode(c);
    }
    return s;
  }
  return textDecoder.decode(buf.subarray(start, end));
}

function readGetResponse(buf: Uint8Array, start: number, end: number): KvWireEntry {
  const r = new Reader(buf, start, end);
  let key = "";
  let value: Uint8Array = EMPTY;
  let version = 0;
  while (r.at < end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1 && wireType === 2) {
      const s = r.lengthDelimited();
      key = utf8(buf, s, r.at);
    } else if (field === 2 && wireType === 2) {
      const s = r.lengthDelimited();
      value = buf.subarray(s, r.at);
    } else if (field === 3 && wireType === 0) {
      version = r.varint();
    } else r.skip(wireType);
  }
  return { key, value, version };
}

const EMPTY = new Uint8Array(0);

/** Decodes one api.GetResponse. Values are views into `bytes`. */
export function decodeGetResponse(bytes: Uint8Array): KvWireEntry {
  return readGetResponse(bytes, 0, bytes.length);
}

/** Decodes one api.RangeResponse. Values are views into `bytes`. */
export function decodeRangeResponse(bytes: Uint8Array): RangePage {
  const r = new Reader(bytes, 0, bytes.length);
  const kvs: KvWireEntry[] = [];
  let more = false;
  let nextKey = "";
  while (r.at < bytes.length) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1 && wireType === 2) {
      const s = r.lengthDelimited();
      kvs.push(readGetResponse(bytes, s, r.at));
    } else if (field === 2 && wireType === 0) {
      more = r.varint() !== 0;
    } else if (field === 3 && wireType === 2) {
      const s = r.lengthDelimited();
      nextKey = utf8(bytes, s, r.at);
    } else r.skip(wireType);
  }
  return { kvs, more, next_key: nextKey };
}
