/**
 * Internal framing of the peer transport: `[u32 length][u8 kind][payload]`, where `length`
 * counts the kind byte and the payload and never exceeds `MAX_FRAME_BYTES`. The decoder
 * reassembles frames from arbitrary stream chunks in one reusable buffer and throws
 * `CodecError` on a frame that is empty, too large or of an unknown kind.
 */
import { type ByteWriter, CodecError } from "./_binary.ts";

/** Frame kinds. */
export const FrameKind = {
  /** Dialer → acceptor, first frame: the dialer's node id (UTF-8). */
  hello: 0,
  /** Dialer → acceptor: `[u8 version][u32 count][message...]`. */
  messages: 1,
  /** Dialer → acceptor: `[u32 id][varint kind][payload]`. */
  request: 2,
  /** Acceptor → dialer: `[u32 id][payload]`. */
  response: 3,
  /** Acceptor → dialer: `[u32 id][UTF-8 error message]`. */
  error: 4,
} as const;

/** One of the `FrameKind` values. */
export type FrameKind = typeof FrameKind[keyof typeof FrameKind];

/** Largest frame accepted or sent: 16 MiB of payload plus slack for headers. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024 + 64 * 1024;

const INITIAL_BUFFER_BYTES = 64 * 1024;

function isFrameKind(k: number): k is FrameKind {
  return k >= FrameKind.hello && k <= FrameKind.error;
}

/** Starts a frame in `w`; returns the offset to pass to `endFrame`. */
export function beginFrame(w: ByteWriter, kind: FrameKind): number {
  const at = w.length;
  w.u32(0);
  w.u8(kind);
  return at;
}

/** Fills in the length of the frame started at `at`; throws `CodecError` if it is too big. */
export function endFrame(w: ByteWriter, at: number): void {
  const length = w.length - at - 4;
  if (length > MAX_FRAME_BYTES) {
    throw new CodecError(`frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  w.setU32(at, length);
}

/** One decoded frame; `payload` is a view valid only until the next `push`. */
export interface Frame {
  readonly kind: FrameKind;
  readonly payload: Uint8Array;
}

/** Reassembles frames from stream chunks. */
export class FrameDecoder {
  #buf = new Uint8Array(INITIAL_BUFFER_BYTES);
  #view = new DataView(this.#buf.buffer);
  #start = 0;
  #end = 0;

  /** Appends a chunk read from the stream. */
  push(chunk: Uint8Array): void {
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      if (this.#buf.length > 4 * INITIAL_BUFFER_BYTES) {
        this.#buf = new Uint8Array(INITIAL_BUFFER_BYTES);
        this.#view = new DataView(this.#buf.buffer);
      }
    }
    if (this.#end + chunk.length > this.#buf.length) {
      const used = this.#end - this.#start;
      if (used + chunk.length <= this.#buf.length) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        let cap = this.#buf.length * 2;
        while (cap < used + chunk.length) cap *= 2;
        const next = new Uint8Array(cap);
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
        this.#view = new DataView(next.buffer);
      }
      this.#start = 0;
      this.#end = used;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The next complete frame, or null if more bytes are needed. Throws on a bad frame. */
  next(): Frame | null {
    const avail = this.#end - this.#start;
    if (avail < 4) return null;
    const length = this.#view.getUint32(this.#start);
    if (length < 1 || length > MAX_FRAME_BYTES) {
      throw new CodecError(`bad frame length ${length}`);
    }
    const kind = this.#buf[this.#start + 4];
    if (avail >= 5 && !isFrameKind(kind)) throw new CodecError(`unknown frame kind ${kind}`);
    if (avail < 4 + length) return null;
    const payload = this.#buf.subarray(this.#start + 5, this.#start + 4 + length);
    this.#start += 4 + length;
    return { kind: kind as FrameKind, payload };
  }
}
