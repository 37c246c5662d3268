/**
 * Internal binary writer and reader shared by the command codec and the snapshot format.
 * Integers are unsigned and at most 2^53 - 1 (Raft indexes, sequence numbers, milliseconds),
 * stored as 8 bytes big-endian; lengths are 4 bytes big-endian.
 */
import { InvalidArgumentError } from "../errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Number of bytes `s` takes in UTF-8, without allocating (lone surrogates count as U+FFFD). */
export function utf8Length(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * Strings up to this many bytes (keys, client ids) are copied byte by byte when they are ASCII:
 * cheaper than a call into the encoder, which costs a view and an op per string.
 */
const SHORT_STRING_BYTES = 64;

/** Writes `s` at `at` if every character is ASCII; false (nothing meaningful written) if not. */
function writeAscii(s: string, out: Uint8Array, at: number): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return false;
    out[at + i] = c;
  }
  return true;
}

/** The `n` bytes at `at` as a string if they are all ASCII, else undefined. */
function readAscii(bytes: Uint8Array, at: number, n: number): string | undefined {
  let s = "";
  for (let i = at; i < at + n; i++) {
    const c = bytes[i];
    if (c >= 0x80) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}

/** Appends fields to a buffer allocated once with the exact final size. */
export class BinaryWriter {
  readonly bytes: Uint8Array;
  #view: DataView;
  #offset = 0;

  constructor(sizeBytes: number) {
    this.bytes = new Uint8Array(sizeBytes);
    this.#view = new DataView(this.bytes.buffer);
  }

  get offset(): number {
    return this.#offset;
  }

  u8(v: number): void {
    this.#view.setUint8(this.#offset, v);
    this.#offset += 1;
  }

  u32(v: number): void {
    this.#view.setUint32(this.#offset, v);
    this.#offset += 4;
  }

  u53(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new InvalidArgumentError(`not an unsigned safe integer: ${v}`);
    }
    this.#view.setUint32(this.#offset, Math.floor(v / 0x1_0000_0000));
    this.#view.setUint32(this.#offset + 4, v >>> 0);
    this.#offset += 8;
  }

  /** Writes a length-prefixed byte string. */
  blob(b: Uint8Array): void {
    this.u32(b.length);
    this.bytes.set(b, this.#offset);
    this.#offset += b.length;
  }

  /** Writes a length-prefixed UTF-8 string whose byte length the caller computed. */
  str(s: string, lengthBytes: number): void {
    this.u32(lengthBytes);
    if (
      lengthBytes === s.length && lengthBytes <= SHORT_STRING_BYTES &&
      writeAscii(s, this.bytes, this.#offset)
    ) {
      this.#offset += lengthBytes;
      return;
    }
    const { written } = encoder.encodeInto(s, this.bytes.subarray(this.#offset));
    if (written !== lengthBytes) throw new InvalidArgumentError("string length changed");
    this.#offset += lengthBytes;
  }
}

/** Reads fields written by {@link BinaryWriter}; any overrun or bad value throws InvalidArgumentError. */
export class BinaryReader {
  #bytes: Uint8Array;
  #view: DataView;
  #offset = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset;
  }

  #need(n: number): void {
    if (this.#offset + n > this.#bytes.length) {
      throw new InvalidArgumentError(
        `truncated data: need ${n} bytes at offset ${this.#offset} of ${this.#bytes.length}`,
      );
    }
  }

  u8(): number {
    this.#need(1);
    return this.#view.getUint8(this.#offset++);
  }

  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#offset);
    this.#offset += 4;
    return v;
  }

  u53(): number {
    this.#need(8);
    const hi = this.#view.getUint32(this.#offset);
    const lo = this.#view.getUint32(this.#offset + 4);
    this.#offset += 8;
    if (hi > 0x1f_ffff) throw new InvalidArgumentError("integer exceeds 2^53 - 1");
    // `lo` alone stays a small integer; `0 * 2^32 + lo` is a double, which a restored key's
    // four counters would each keep as a 16-byte heap number (18 MiB at 300,000 keys).
    return hi === 0 ? lo : hi * 0x1_0000_0000 + lo;
  }

  /** Reads a length-prefixed byte string as a copy (never a view into the input). */
  blob(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const out = this.#bytes.slice(this.#offset, this.#offset + n);
    this.#offset += n;
    return out;
  }

  /**
   * Like `blob()`, but a view into the input instead of a copy: no allocation per value.
   * The input buffer stays alive as long as any view does.
   */
  blobView(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const out = this.#bytes.subarray(this.#offset, this.#offset + n);
    this.#offset += n;
    return out;
  }

  str(): string {
    const n = this.u32();
    this.#need(n);
    let s: string | undefined = n <= SHORT_STRING_BYTES
      ? readAscii(this.#bytes, this.#offset, n)
      : undefined;
    try {
      s ??= decoder.decode(this.#bytes.subarray(this.#offset, this.#offset + n));
    } catch {
      throw new InvalidArgumentError("string is not valid UTF-8");
    }
    this.#offset += n;
    return s;
  }

  /** Throws unless every byte was consumed. */
  end(): void {
    if (this.remaining !== 0) {
      throw new InvalidArgumentError(`${this.remaining} trailing bytes`);
    }
  }
}
