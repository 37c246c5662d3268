/**
 * Shared-key encryption of gossip datagrams (as Serf's keyring): AES-256-GCM through
 * WebCrypto with a fresh random 12-byte nonce per datagram. The primary key encrypts; every
 * installed key is tried to decrypt, so keys can be rotated without a flag day (install the new
 * key everywhere, make it primary everywhere, then remove the old one).
 *
 * Sealed datagram: `[ENCRYPTION_VERSION][nonce: 12][ciphertext + 16-byte tag]`, the version
 * byte authenticated as additional data. The plaintext starts with the send time (8 bytes,
 * big-endian milliseconds since the epoch): a datagram sent more than
 * {@link REPLAY_WINDOW_MS} from the receiver's clock is refused, and a nonce already seen
 * within the window is refused, so a recorded datagram cannot be replayed (for example an
 * old `alive` to bring back a member that left, or a `dead` to repeat an accusation). Node
 * clocks must agree within the window (NTP does far better).
 */
import { ConfigError } from "../errors.ts";
import { ENCRYPTION_OVERHEAD_BYTES } from "./codec.ts";
import { GossipAuthError, GossipReplayError } from "./errors.ts";

/** First byte of an encrypted datagram (2: with the sealed send time). */
export const ENCRYPTION_VERSION = 2;

/** A sealed datagram is accepted only within this many ms of its send time, either way. */
export const REPLAY_WINDOW_MS = 30_000;

/** Nonces remembered to refuse replays inside the window; beyond it the oldest are dropped. */
export const MAX_REPLAY_CACHE_ENTRIES = 32_768;

const TIME_BYTES = 8;

/** Length of a gossip key in bytes (AES-256). */
export const KEY_BYTES = 32;

const NONCE_BYTES = 12;
const AAD = new Uint8Array([ENCRYPTION_VERSION]);

/**
 * Decodes a base64 gossip key (config key `gossip-key`); throws {@link ConfigError} unless it
 * is exactly {@link KEY_BYTES} bytes.
 */
export function parseGossipKey(base64: string, configKey = "gossip-key"): Uint8Array {
  let raw: string;
  try {
    raw = atob(base64.trim());
  } catch {
    throw new ConfigError(configKey, "is not valid base64");
  }
  if (raw.length !== KEY_BYTES) {
    throw new ConfigError(configKey, `must be ${KEY_BYTES} bytes of base64, got ${raw.length}`);
  }
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/** Base64 of `key`, the form `gossip-key` takes. */
export function formatGossipKey(key: Uint8Array): string {
  return btoa(String.fromCharCode(...key));
}

/** Draws a fresh random gossip key from the platform's CSPRNG. */
export function generateGossipKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(KEY_BYTES));
}

interface Entry {
  readonly raw: Uint8Array;
  readonly key: CryptoKey;
}

/** An ordered set of AES-256-GCM keys; the first is the primary that encrypts. */
export class Keyring {
  #entries: Entry[];
  /** Nonces (hex) of datagrams opened within the window, with their send time; insertion order. */
  readonly #seen = new Map<string, number>();

  private constructor(entries: Entry[]) {
    this.#entries = entries;
  }

  /** Builds a keyring from raw 32-byte keys, primary first; throws `RangeError` on a bad key. */
  static async create(keys: readonly Uint8Array[]): Promise<Keyring> {
    if (keys.length === 0) throw new RangeError("a keyring needs at least one key");
    const entries: Entry[] = [];
    for (const raw of keys) entries.push(await importKey(raw));
    return new Keyring(entries);
  }

  /** The installed keys, primary first (copies). */
  keys(): Uint8Array[] {
    return this.#entries.map((e) => e.raw.slice());
  }

  /** Adds `key` as a secondary key (decrypt only) if not installed yet. */
  async install(key: Uint8Array): Promise<void> {
    if (this.#indexOf(key) >= 0) return;
    this.#entries.push(await importKey(key));
  }

  /** Makes the installed `key` the primary; throws `RangeError` if it is not installed. */
  use(key: Uint8Array): void {
    const i = this.#indexOf(key);
    if (i < 0) throw new RangeError("key is not installed");
    const [e] = this.#entries.splice(i, 1);
    this.#entries.unshift(e);
  }

  /** Removes a secondary `key`; the primary cannot be removed (`RangeError`). */
  remove(key: Uint8Array): void {
    const i = this.#indexOf(key);
    if (i === 0) throw new RangeError("cannot remove the primary key");
    if (i > 0) this.#entries.splice(i, 1);
  }

  /** Encrypts `plaintext`, stamped with `nowMs`, under the primary key with a fresh nonce. */
  async seal(plaintext: Uint8Array, nowMs: number = Date.now()): Promise<Uint8Array> {
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const stamped = new Uint8Array(TIME_BYTES + plaintext.length);
    new DataView(stamped.buffer).setBigUint64(0, BigInt(Math.max(0, Math.floor(nowMs))));
    stamped.set(plaintext, TIME_BYTES);
    const ct = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce, additionalData: AAD, tagLength: 128 },
        this.#entries[0].key,
        stamped,
      ),
    );
    const out = new Uint8Array(1 + NONCE_BYTES + ct.length);
    out[0] = ENCRYPTION_VERSION;
    out.set(nonce, 1);
    out.set(ct, 1 + NONCE_BYTES);
    return out;
  }

  /**
   * Decrypts a sealed datagram with each key in turn; throws {@link GossipAuthError} when no key
   * authenticates it (or it is not a sealed datagram at all), and {@link GossipReplayError}
   * when it was sent more than {@link REPLAY_WINDOW_MS} from `nowMs` or was opened before.
   */
  async open(sealed: Uint8Array, nowMs: number = Date.now()): Promise<Uint8Array> {
    const stamped = await this.#decrypt(sealed);
    if (stamped.length < TIME_BYTES) throw new GossipAuthError("no send time");
    const sentMs = Number(new DataView(stamped.buffer, stamped.byteOffset).getBigUint64(0));
    if (Math.abs(nowMs - sentMs) > REPLAY_WINDOW_MS) {
      throw new GossipReplayError(`sent ${nowMs - sentMs} ms ago, outside the replay window`);
    }
    const nonce = hex(sealed.subarray(1, 1 + NONCE_BYTES));
    this.#forgetBefore(nowMs - REPLAY_WINDOW_MS);
    if (this.#seen.has(nonce)) throw new GossipReplayError("replayed (nonce seen before)");
    this.#seen.set(nonce, sentMs);
    if (this.#seen.size > MAX_REPLAY_CACHE_ENTRIES) {
      const oldest = this.#seen.keys().next().value;
      if (oldest !== undefined) this.#seen.delete(oldest);
    }
    return stamped.subarray(TIME_BYTES);
  }

  /** Drops remembered nonces whose send time is before `ms` (the window refuses them anyway). */
  #forgetBefore(ms: number): void {
    for (const [nonce, sentMs] of this.#seen) {
      if (sentMs >= ms) break;
      this.#seen.delete(nonce);
    }
  }

  async #decrypt(sealed: Uint8Array): Promise<Uint8Array> {
    if (sealed.length < ENCRYPTION_OVERHEAD_BYTES) throw new GossipAuthError("too short");
    if (sealed[0] !== ENCRYPTION_VERSION) {
      throw new GossipAuthError(`unknown encryption version ${sealed[0]}`);
    }
    const nonce = sealed.slice(1, 1 + NONCE_BYTES);
    const ct = sealed.slice(1 + NONCE_BYTES);
    for (const e of this.#entries) {
      try {
        return new Uint8Array(
          await crypto.subtle.decrypt(
            { name: "AES-GCM", iv: nonce, additionalData: AAD, tagLength: 128 },
            e.key,
            ct,
          ),
        );
      } catch {
        // Not this key; try the next one.
      }
    }
    throw new GossipAuthError("no key authenticates it");
  }

  #indexOf(key: Uint8Array): number {
    return this.#entries.findIndex((e) =>
      e.raw.length === key.length && e.raw.every((b, i) => b === key[i])
    );
  }
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

async function importKey(raw: Uint8Array): Promise<Entry> {
  if (raw.length !== KEY_BYTES) {
    throw new RangeError(`a gossip key is ${KEY_BYTES} bytes, got ${raw.length}`);
  }
  const copy = raw.slice();
  const key = await crypto.subtle.importKey("raw", copy, "AES-GCM", false, [
    "encrypt",
    "decrypt",
  ]);
  return { raw: copy, key };
}
