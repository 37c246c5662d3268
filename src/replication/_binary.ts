/**
 * Internal byte writer and reader for the replication codecs (Raft messages, log records,
 * transport frames). Unsigned integers up to 2^53 - 1 are LEB128 varints; fixed-width fields
 * are big-endian. The writer grows one buffer geometrically, so encoding a batch allocates
 * O(log n) times, never per byte or per field. The reader throws `CodecError` on any
 * truncated or malformed field instead of returning garbage.
 */
import { MokvError } from "../errors.ts";

/** Bytes that cannot be decoded: truncated, corrupt, an unknown version or tag. */
export class CodecError extends MokvError {}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A growable byte buffer with typed appenders. */
export class ByteWriter {
  #buf: Uint8Array;
  #view: DataView;
  #len = 0;

  constructor(initialBytes = 256) {
    this.#buf = new Uint8Array(Math.max(16, initialBytes));
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#len;
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    const need = this.#len + n;
    if (need <= this.#buf.length) return;
    let cap = this.#buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.#buf[this.#len++] = v;
  }

  bool(v: boolean): void {
    this.u8(v ? 1 : 0);
  }

  u32(v: number): void {
    this.ensure(4);
    this.#view.setUint32(this.#len, v);
    this.#len += 4;
  }

  /** Overwrites a u32 written earlier at `offset` (length prefixes filled in afterwards). */
  setU32(offset: number, v: number): void {
    this.#view.setUint32(offset, v);
  }

  /** An unsigned safe integer as a LEB128 varint (1 byte below 128, at most 8 bytes). */
  varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new CodecError(`cannot encode ${v}: not an unsigned safe integer`);
    }
    this.ensure(8);
    const buf = this.#buf;
    let o = this.#len;
    if (v < 0x8000_0000) {
      while (v >= 0x80) {
        buf[o++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
    } else {
      while (v >= 0x80) {
        buf[o++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
    }
    buf[o++] = v;
    this.#len = o;
  }

  /** Length-prefixed bytes, copied. */
  bytes(v: Uint8Array): void {
    this.varint(v.length);
    this.raw(v);
  }

  /** Bytes without a length prefix, copied. */
  raw(v: Uint8Array): void {
    this.ensure(v.length);
    this.#buf.set(v, this.#len);
    this.#len += v.length;
  }

  /** A length-prefixed UTF-8 string, encoded in place. */
  string(s: string): void {
    if (s.length === 0) {
      this.u8(0);
      return;
    }
    // Reserve the worst case (3 bytes per UTF-16 unit) plus the varint, then fix the prefix.
    const max = s.length * 3;
    const prefixBytes = varintSize(max);
    this.ensure(8 + max);
    const start = this.#len + prefixBytes;
    const { written } = encoder.encodeInto(s, this.#buf.subarray(start, start + max));
    const actualPrefix = varintSize(written);
    if (actualPrefix !== prefixBytes) {
      this.#buf.copyWithin(this.#len + actualPrefix, start, start + written);
    }
    this.varint(written);
    this.#len += written;
  }

  /** A view of the bytes written so far (valid until the next write). */
  view(): Uint8Array {
    return this.#buf.subarray(0, this.#len);
  }

  /** A copy of the bytes written so far. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }

  /** Drops everything written after the first `length` bytes. */
  truncate(length: number): void {
    if (length < this.#len) this.#len = Math.max(0, length);
  }

  /** Forgets the content but keeps the buffer for reuse. */
  reset(): void {
    this.#len = 0;
  }
}

/** Bytes a varint of `v` takes. */
export function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Reads fields from a byte array, checking every bound. */
export class ByteReader {
  readonly #buf: Uint8Array;
  readonly #view: DataView;
  #pos = 0;

  constructor(buf: Uint8Array) {
    this.#buf = buf;
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get position(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.#buf.length - this.#pos;
  }

  #need(n: number): void {
    if (this.#pos + n > this.#buf.length) {
      throw new CodecError(
        `truncated input: need ${n} bytes at offset ${this.#pos} of ${this.#buf.length}`,
      );
    }
  }

  u8(): number {
    this.#need(1);
    return this.#buf[this.#pos++];
  }

  bool(): boolean {
    const b = this.u8();
    if (b > 1) throw new CodecError(`invalid boolean byte ${b} at offset ${this.#pos - 1}`);
    return b === 1;
  }

  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#pos);
    this.#pos += 4;
    return v;
  }

  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (!Number.isSafeInteger(result)) {
          throw new CodecError(`varint out of range at offset ${this.#pos}`);
        }
        return result;
      }
      scale *= 128;
    }
    throw new CodecError(`varint too long at offset ${this.#pos}`);
  }

  /** Length-prefixed bytes, copied out so the source buffer can be released. */
  bytes(): Uint8Array {
    const n = this.varint();
    return this.raw(n);
  }

  /** Length-prefixed bytes as a view into the source: the caller copies what it keeps. */
  bytesView(): Uint8Array {
    const n = this.varint();
    this.#need(n);
    const out = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  /** `n` bytes without a prefix, copied. */
  raw(n: number): Uint8Array {
    this.#need(n);
    const out = this.#buf.slice(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  string(): string {
    const n = this.varint();
    if (n === 0) return "";
    this.#need(n);
    let s: string;
    try {
      s = decoder.decode(this.#buf.subarray(this.#pos, this.#pos + n));
    } catch {
      throw new CodecError(`invalid UTF-8 string at offset ${this.#pos}`);
    }
    this.#pos += n;
    return s;
  }

  /** Throws unless every byte was consumed (trailing garbage is corruption). */
  end(): void {
    if (this.#pos !== this.#buf.length) {
      throw new CodecError(`${this.#buf.length - this.#pos} trailing bytes`);
    }
  }
}
