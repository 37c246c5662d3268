/**
 * The binary wire format of gossip datagrams. Byte 0 is {@link WIRE_VERSION}, byte 1 the
 * message type, then the fields: unsigned LEB128 varints (at most 32 bits, minimal length),
 * strings as a varint byte length and UTF-8, tags as a count and key/value pairs. Decoding is
 * strict and canonical: anything truncated, overlong, unknown or followed by trailing bytes
 * throws {@link GossipDecodeError}, and a datagram that decodes re-encodes to the same bytes.
 */
import { GossipDecodeError } from "./errors.ts";
import type { Addr, Member, MemberState, Message, PushPull, Tags, Update } from "./types.ts";

/** The first byte of every encoded datagram; others are rejected. */
export const WIRE_VERSION = 1;

/** Hard bound on a datagram on the wire, encryption included. */
export const MAX_DATAGRAM_BYTES = 1400;

/**
 * Bytes the keyring adds to a datagram: version byte, 12-byte nonce, the sealed 8-byte send
 * time (the replay window) and the 16-byte GCM tag.
 */
export const ENCRYPTION_OVERHEAD_BYTES = 1 + 12 + 8 + 16;

/** Longest string (name, address, tag key or value) the decoder accepts. */
export const MAX_STRING_BYTES = 1024;

/** Largest encoded member record (name, address, tags): one always fits a datagram. */
export const MAX_MEMBER_BYTES = 1024;

const TYPE_CODES = { "ping": 1, "ping-req": 2, "ack": 3, "gossip": 4, "push-pull": 5 } as const;
const UPDATE_CODES = { "alive": 1, "suspect": 2, "dead": 3 } as const;
const STATE_CODES: Readonly<Record<MemberState, number>> = {
  alive: 0,
  suspect: 1,
  failed: 2,
  left: 3,
};
const STATES: readonly MemberState[] = ["alive", "suspect", "failed", "left"];

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** Bytes of `value` as an unsigned LEB128 varint (value in [0, 2^32)). */
export function varintSizeBytes(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x20_0000) return 3;
  if (value < 0x1000_0000) return 4;
  return 5;
}

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function stringSizeBytes(s: string): number {
  const n = utf8Length(s);
  return varintSizeBytes(n) + n;
}

function tagsSizeBytes(tags: Tags): number {
  const keys = Object.keys(tags);
  let n = varintSizeBytes(keys.length);
  for (const k of keys) n += stringSizeBytes(k) + stringSizeBytes(tags[k]);
  return n;
}

/** Encoded bytes of one update inside an update list. */
export function updateSizeBytes(u: Update): number {
  const head = 1 + stringSizeBytes(u.name) + varintSizeBytes(u.incarnation);
  switch (u.kind) {
    case "alive":
      return head + stringSizeBytes(u.addr) + tagsSizeBytes(u.tags);
    case "suspect":
    case "dead":
      return head + stringSizeBytes(u.from);
    default:
      return unreachable(u);
  }
}

/** Encoded bytes of one member record inside a push-pull datagram. */
export function memberSizeBytes(m: Member): number {
  return stringSizeBytes(m.name) + stringSizeBytes(m.addr) + varintSizeBytes(m.incarnation) + 1 +
    tagsSizeBytes(m.tags);
}

/** Exact encoded size of `msg` in bytes. */
export function encodedSizeBytes(msg: Message): number {
  let n = 2;
  switch (msg.type) {
    case "ping":
      n += varintSizeBytes(msg.seq) + stringSizeBytes(msg.target);
      break;
    case "ping-req":
      n += varintSizeBytes(msg.seq) + stringSizeBytes(msg.target) + stringSizeBytes(msg.targetAddr);
      break;
    case "ack":
      n += varintSizeBytes(msg.seq);
      break;
    case "gossip":
      break;
    case "push-pull": {
      n += 1 + varintSizeBytes(msg.members.length);
      for (const m of msg.members) n += memberSizeBytes(m);
      return n;
    }
    default:
      return unreachable(msg);
  }
  n += varintSizeBytes(msg.updates.length);
  for (const u of msg.updates) n += updateSizeBytes(u);
  return n;
}

class Writer {
  #buf: Uint8Array;
  #pos = 0;
  constructor(sizeBytes: number) {
    this.#buf = new Uint8Array(sizeBytes);
  }
  byte(b: number): void {
    this.#buf[this.#pos++] = b;
  }
  varint(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
      throw new RangeError(`varint out of range: ${v}`);
    }
    while (v >= 0x80) {
      this.byte((v & 0x7f) | 0x80);
      v = Math.floor(v / 128);
    }
    this.byte(v);
  }
  string(s: string): void {
    const r = utf8Encoder.encodeInto(
      s,
      this.#buf.subarray(this.#pos + varintSizeBytes(utf8Length(s))),
    );
    this.varint(r.written);
    this.#pos += r.written;
  }
  tags(tags: Tags): void {
    const keys = Object.keys(tags);
    this.varint(keys.length);
    for (const k of keys) {
      this.string(k);
      this.string(tags[k]);
    }
  }
  done(): Uint8Array {
    if (this.#pos !== this.#buf.length) {
      throw new Error(`codec size mismatch: wrote ${this.#pos}, computed ${this.#buf.length}`);
    }
    return this.#buf;
  }
}

function writeUpdates(w: Writer, updates: readonly Update[]): void {
  w.varint(updates.length);
  for (const u of updates) {
    w.byte(UPDATE_CODES[u.kind]);
    w.string(u.name);
    w.varint(u.incarnation);
    switch (u.kind) {
      case "alive":
        w.string(u.addr);
        w.tags(u.tags);
        break;
      case "suspect":
      case "dead":
        w.string(u.from);
        break;
      default:
        unreachable(u);
    }
  }
}

/** Encodes `msg`; the result has exactly {@link encodedSizeBytes} bytes. */
export function encodeMessage(msg: Message): Uint8Array {
  const w = new Writer(encodedSizeBytes(msg));
  w.byte(WIRE_VERSION);
  w.byte(TYPE_CODES[msg.type]);
  switch (msg.type) {
    case "ping":
      w.varint(msg.seq);
      w.string(msg.target);
      writeUpdates(w, msg.updates);
      break;
    case "ping-req":
      w.varint(msg.seq);
      w.string(msg.target);
      w.string(msg.targetAddr);
      writeUpdates(w, msg.updates);
      break;
    case "ack":
      w.varint(msg.seq);
      writeUpdates(w, msg.updates);
      break;
    case "gossip":
      writeUpdates(w, msg.updates);
      break;
    case "push-pull":
      w.byte(msg.needReply ? 1 : 0);
      w.varint(msg.members.length);
      for (const m of msg.members) {
        w.string(m.name);
        w.string(m.addr);
        w.varint(m.incarnation);
        w.byte(STATE_CODES[m.state]);
        w.tags(m.tags);
      }
      break;
    default:
      unreachable(msg);
  }
  return w.done();
}

class Reader {
  #pos = 0;
  constructor(readonly buf: Uint8Array) {}
  fail(reason: string): never {
    throw new GossipDecodeError(reason, this.#pos);
  }
  byte(): number {
    if (this.#pos >= this.buf.length) this.fail("truncated");
    return this.buf[this.#pos++];
  }
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 5; i++) {
      const b = this.byte();
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (i > 0 && b === 0) this.fail("overlong varint");
        if (value > 0xffff_ffff) this.fail("varint exceeds 32 bits");
        return value;
      }
      scale *= 128;
    }
    return this.fail("varint longer than 5 bytes");
  }
  string(): string {
    const n = this.varint();
    if (n > MAX_STRING_BYTES) this.fail(`string of ${n} bytes exceeds ${MAX_STRING_BYTES}`);
    if (this.#pos + n > this.buf.length) this.fail("truncated string");
    const bytes = this.buf.subarray(this.#pos, this.#pos + n);
    let s: string;
    try {
      s = utf8Decoder.decode(bytes);
    } catch {
      return this.fail("invalid UTF-8");
    }
    this.#pos += n;
    return s;
  }
  tags(): Tags {
    const count = this.varint();
    const tags: Record<string, string> = {};
    for (let i = 0; i < count; i++) {
      const k = this.string();
      if (Object.hasOwn(tags, k)) this.fail(`duplicate tag ${JSON.stringify(k)}`);
      tags[k] = this.string();
    }
    return tags;
  }
  end(): void {
    if (this.#pos !== this.buf.length) this.fail("trailing bytes");
  }
}

function readUpdates(r: Reader): Update[] {
  const count = r.varint();
  const updates: Update[] = [];
  for (let i = 0; i < count; i++) {
    const code = r.byte();
    const name = r.string();
    const incarnation = r.varint();
    switch (code) {
      case UPDATE_CODES.alive: {
        const addr: Addr = r.string();
        updates.push({ kind: "alive", name, incarnation, addr, tags: r.tags() });
        break;
      }
      case UPDATE_CODES.suspect:
        updates.push({ kind: "suspect", name, incarnation, from: r.string() });
        break;
      case UPDATE_CODES.dead:
        updates.push({ kind: "dead", name, incarnation, from: r.string() });
        break;
      default:
        r.fail(`unknown update kind ${code}`);
    }
  }
  return updates;
}

function readPushPull(r: Reader): PushPull {
  const flags = r.byte();
  if (flags > 1) r.fail(`unknown push-pull flags ${flags}`);
  const count = r.varint();
  const members: Member[] = [];
  for (let i = 0; i < count; i++) {
    const name = r.string();
    const addr = r.string();
    const incarnation = r.varint();
    const code = r.byte();
    const state = STATES[code];
    if (state === undefined) r.fail(`unknown member state ${code}`);
    members.push({ name, addr, incarnation, state, tags: r.tags() });
  }
  return { type: "push-pull", needReply: flags === 1, members };
}

/**
 * Decodes one datagram; throws {@link GossipDecodeError} on anything malformed, and on any
 * input longer than {@link MAX_DATAGRAM_BYTES} before reading it.
 */
export function decodeMessage(bytes: Uint8Array): Message {
  if (bytes.length > MAX_DATAGRAM_BYTES) {
    throw new GossipDecodeError(`${bytes.length} bytes exceed ${MAX_DATAGRAM_BYTES}`, 0);
  }
  const r = new Reader(bytes);
  const version = r.byte();
  if (version !== WIRE_VERSION) r.fail(`unknown wire version ${version}`);
  const code = r.byte();
  let msg: Message;
  switch (code) {
    case TYPE_CODES.ping: {
      const seq = r.varint();
      const target = r.string();
      msg = { type: "ping", seq, target, updates: readUpdates(r) };
      break;
    }
    case TYPE_CODES["ping-req"]: {
      const seq = r.varint();
      const target = r.string();
      const targetAddr = r.string();
      msg = { type: "ping-req", seq, target, targetAddr, updates: readUpdates(r) };
      break;
    }
    case TYPE_CODES.ack: {
      const seq = r.varint();
      msg = { type: "ack", seq, updates: readUpdates(r) };
      break;
    }
    case TYPE_CODES.gossip:
      msg = { type: "gossip", updates: readUpdates(r) };
      break;
    case TYPE_CODES["push-pull"]:
      msg = readPushPull(r);
      break;
    default:
      return r.fail(`unknown message type ${code}`);
  }
  r.end();
  return msg;
}

function unreachable(x: never): never {
  throw new Error(`unreachable: ${JSON.stringify(x)}`);
}
