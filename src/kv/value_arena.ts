/**
 * Where the state machine keeps its values: small values are copied into shared slabs and
 * handed out as views, so a 256-byte value costs its bytes and one view object instead of an
 * ArrayBuffer of its own (measured under Deno 2.9: 876 bytes of RSS per 256-byte value kept
 * as its own copy, about 400 in a slab). Every value the arena returns owns its bytes in the
 * sense that matters: it pins only its slab, never a receive buffer, a log entry or a
 * snapshot.
 *
 * A slab is freed by the garbage collector once no value points into it. Overwrites leave dead
 * bytes behind in old slabs; the arena counts the live bytes of every slab so its owner can
 * tell when the slabs pinned by live values exceed what they hold by too much
 * ({@link ValueArena.wasteful}) and re-copy the values of sparse slabs
 * ({@link ValueArena.sparse}).
 */

/** Bytes per slab. Small enough that a few survivors pin little, large enough to amortise. */
export const SLAB_BYTES = 64 * 1024;
/** Values above this many bytes get an exact buffer of their own (the overhead is then small). */
export const MAX_SLAB_VALUE_BYTES = 2048;
/** Below this many pinned bytes the arena never asks for a compaction. */
const COMPACT_FLOOR_BYTES = 8 * 1024 * 1024;

/** Copies values into slabs and keeps count of the live bytes in each slab. */
export class ValueArena {
  #slab = new Uint8Array(SLAB_BYTES);
  #offset = 0;
  /** Live bytes per slab the arena handed values out of (a slab with none is forgotten). */
  #live = new Map<ArrayBufferLike, number>();
  #liveBytes = 0;
  #pinnedBytes = 0;

  /** Bytes of the values counted live. */
  get liveBytes(): number {
    return this.#liveBytes;
  }

  /** Bytes of the slabs and own buffers that live values pin. */
  get pinnedBytes(): number {
    return this.#pinnedBytes;
  }

  /** A copy of `value` that the arena counts as live until {@link release}d. */
  copy(value: Uint8Array): Uint8Array {
    const n = value.length;
    let out: Uint8Array;
    if (n > MAX_SLAB_VALUE_BYTES || n === 0) {
      out = value.slice();
    } else {
      if (this.#offset + n > this.#slab.length) {
        if (this.#live.get(this.#slab.buffer) === 0) {
          this.#live.delete(this.#slab.buffer);
          this.#pinnedBytes -= SLAB_BYTES;
        }
        this.#slab = new Uint8Array(SLAB_BYTES);
        this.#offset = 0;
      }
      out = this.#slab.subarray(this.#offset, this.#offset + n);
      out.set(value);
      this.#offset += n;
    }
    this.#acquire(out);
    return out;
  }

  /** Counts `value` (one the arena returned) live again, as after an undone release. */
  #acquire(value: Uint8Array): void {
    const buf = value.buffer;
    const live = this.#live.get(buf);
    if (live === undefined) this.#pinnedBytes += buf.byteLength;
    this.#live.set(buf, (live ?? 0) + value.length);
    this.#liveBytes += value.length;
  }

  /** Counts `value` back live (a failed transaction put back what it had replaced). */
  reacquire(value: Uint8Array): void {
    this.#acquire(value);
  }

  /** `value` (one the arena returned) is no longer referenced by the state. */
  release(value: Uint8Array): void {
    const buf = value.buffer;
    const live = this.#live.get(buf);
    if (live === undefined) return;
    this.#liveBytes -= value.length;
    const rest = live - value.length;
    if (rest > 0) {
      this.#live.set(buf, rest);
    } else {
      this.#live.delete(buf);
      if (buf !== this.#slab.buffer) this.#pinnedBytes -= buf.byteLength;
      else this.#live.set(buf, 0);
    }
  }

  /**
   * True when live values pin more than 2.5 times their bytes (and more than a floor): time to
   * re-copy the values of sparse slabs, which leaves at most about twice.
   */
  get wasteful(): boolean {
    return this.#pinnedBytes > COMPACT_FLOOR_BYTES && this.#pinnedBytes > 2.5 * this.#liveBytes;
  }

  /** True when `value` sits in a slab less than half full of live bytes (worth re-copying). */
  sparse(value: Uint8Array): boolean {
    const buf = value.buffer;
    if (buf === this.#slab.buffer || buf.byteLength !== SLAB_BYTES) return false;
    return (this.#live.get(buf) ?? 0) * 2 < SLAB_BYTES;
  }

  /** Forgets every count (the state was replaced); slabs go once their values do. */
  reset(): void {
    this.#slab = new Uint8Array(SLAB_BYTES);
    this.#offset = 0;
    this.#live = new Map();
    this.#liveBytes = 0;
    this.#pinnedBytes = 0;
  }
}
