/**
 * Compact binary encoding of the Raft core's data: log entries, messages, hard state and
 * snapshot metadata. Every top-level encoding starts with a format version byte; integers are
 * LEB128 varints (indexes and terms up to 2^53 - 1), strings are length-prefixed UTF-8, byte
 * payloads are length-prefixed and copied. Encoding a message batch writes into one growable
 * buffer. Decoding checks every bound and tag and throws `CodecError` on garbage, truncation or
 * trailing bytes; it never returns a partially decoded value.
 */
import type {
  Config,
  ConfigChange,
  Entry,
  HardState,
  Message,
  MessageType,
  SnapshotMeta,
} from "../raft/types.ts";
import { EVICTED_DATA } from "../raft/mod.ts";
import { ByteReader, ByteWriter, CodecError } from "./_binary.ts";

export { ByteReader, ByteWriter, CodecError };

/** The format version written first by every top-level encoder in this file. */
export const CODEC_VERSION = 1;

const ENTRY_NORMAL = 0;
const ENTRY_CONFIG = 1;

const CHANGE_TAGS = {
  bootstrap: 0,
  addVoter: 1,
  addLearner: 2,
  promote: 3,
  remove: 4,
} as const satisfies Readonly<Record<ConfigChange["type"], number>>;

const MESSAGE_TAGS: Readonly<Record<MessageType, number>> = {
  preVote: 0,
  vote: 1,
  preVoteResponse: 2,
  voteResponse: 3,
  append: 4,
  appendResponse: 5,
  heartbeat: 6,
  heartbeatResponse: 7,
  readIndex: 8,
  readIndexResponse: 9,
  snapshot: 10,
  snapshotResponse: 11,
  timeoutNow: 12,
};

const MESSAGE_TYPES: readonly MessageType[] = (() => {
  const types: MessageType[] = [];
  for (const [type, tag] of Object.entries(MESSAGE_TAGS)) types[tag] = type as MessageType;
  return types;
})();

function assertNever(x: never, what: string): never {
  throw new CodecError(`unknown ${what}: ${JSON.stringify(x)}`);
}

function checkVersion(r: ByteReader): void {
  const v = r.u8();
  if (v !== CODEC_VERSION) throw new CodecError(`unsupported codec version ${v}`);
}

// ---------------------------------------------------------------------------------------------
// Config and config changes

/** Writes a configuration (voters, learners, addresses) without a version byte. */
export function writeConfig(w: ByteWriter, c: Config): void {
  w.varint(c.voters.length);
  for (const id of c.voters) w.string(id);
  w.varint(c.learners.length);
  for (const id of c.learners) w.string(id);
  const ids = Object.keys(c.addresses);
  w.varint(ids.length);
  for (const id of ids) {
    w.string(id);
    w.string(c.addresses[id]);
  }
}

/** Reads what `writeConfig` wrote. */
export function readConfig(r: ByteReader): Config {
  const voters = readStrings(r);
  const learners = readStrings(r);
  const n = readCount(r);
  const addresses: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const id = r.string();
    addresses[id] = r.string();
  }
  return { voters, learners, addresses };
}

function readCount(r: ByteReader): number {
  const n = r.varint();
  // Every element takes at least one byte, so a larger count is corrupt (and would allocate).
  if (n > r.remaining) throw new CodecError(`count ${n} exceeds the ${r.remaining} bytes left`);
  return n;
}

function readStrings(r: ByteReader): string[] {
  const n = readCount(r);
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) out[i] = r.string();
  return out;
}

function writeChange(w: ByteWriter, c: ConfigChange): void {
  w.u8(CHANGE_TAGS[c.type]);
  switch (c.type) {
    case "bootstrap":
      return;
    case "addVoter":
    case "addLearner":
      w.string(c.id);
      w.string(c.address);
      return;
    case "promote":
    case "remove":
      w.string(c.id);
      return;
    default:
      assertNever(c, "config change");
  }
}

function readChange(r: ByteReader): ConfigChange {
  const tag = r.u8();
  switch (tag) {
    case CHANGE_TAGS.bootstrap:
      return { type: "bootstrap" };
    case CHANGE_TAGS.addVoter:
      return { type: "addVoter", id: r.string(), address: r.string() };
    case CHANGE_TAGS.addLearner:
      return { type: "addLearner", id: r.string(), address: r.string() };
    case CHANGE_TAGS.promote:
      return { type: "promote", id: r.string() };
    case CHANGE_TAGS.remove:
      return { type: "remove", id: r.string() };
    default:
      throw new CodecError(`unknown config change tag ${tag}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Entries

/** Writes one entry without a version byte (used inside messages and batches). */
export function writeEntry(w: ByteWriter, e: Entry): void {
  switch (e.type) {
    case "normal":
      if (e.data === EVICTED_DATA) {
        // The core dropped this command from memory; the host must read it back first.
        throw new CodecError(`entry ${e.index} is evicted: its command was not read back`);
      }
      w.u8(ENTRY_NORMAL);
      w.varint(e.term);
      w.varint(e.index);
      w.bytes(e.data);
      return;
    case "config":
      w.u8(ENTRY_CONFIG);
      w.varint(e.term);
      w.varint(e.index);
      writeChange(w, e.change);
      writeConfig(w, e.config);
      return;
    default:
      assertNever(e, "entry type");
  }
}

/**
 * Reads what `writeEntry` wrote. With `view`, a normal entry's data is a view into the reader's
 * buffer, which the caller must copy before the buffer is reused.
 */
export function readEntry(r: ByteReader, view = false): Entry {
  const tag = r.u8();
  const term = r.varint();
  const index = r.varint();
  switch (tag) {
    case ENTRY_NORMAL:
      return { type: "normal", term, index, data: view ? r.bytesView() : r.bytes() };
    case ENTRY_CONFIG: {
      const change = readChange(r);
      const config = readConfig(r);
      return { type: "config", term, index, change, config };
    }
    default:
      throw new CodecError(`unknown entry tag ${tag}`);
  }
}

/** Upper bound of the bytes `writeEntry` takes for `e` (used to size storage batches). */
export function entrySizeBound(e: Entry): number {
  switch (e.type) {
    case "normal":
      return 1 + 8 + 8 + 8 + e.data.length;
    case "config":
      return 64 + 3 * JSON.stringify(e.change).length + 3 * JSON.stringify(e.config).length;
    default:
      assertNever(e, "entry type");
  }
}

/** One entry, version byte first. */
export function encodeEntry(e: Entry): Uint8Array {
  const w = new ByteWriter(entrySizeBound(e) + 1);
  w.u8(CODEC_VERSION);
  writeEntry(w, e);
  return w.finish();
}

/** Decodes one entry; throws `CodecError` on garbage, truncation or trailing bytes. */
export function decodeEntry(bytes: Uint8Array): Entry {
  const r = new ByteReader(bytes);
  checkVersion(r);
  const e = readEntry(r);
  r.end();
  return e;
}

/** Reads only the term and index at the head of an encoded entry (with version byte). */
export function peekEntryHeader(bytes: Uint8Array): { term: number; index: number } {
  const r = new ByteReader(bytes);
  checkVersion(r);
  const tag = r.u8();
  if (tag !== ENTRY_NORMAL && tag !== ENTRY_CONFIG) {
    throw new CodecError(`unknown entry tag ${tag}`);
  }
  const term = r.varint();
  return { term, index: r.varint() };
}

// ---------------------------------------------------------------------------------------------
// Hard state and snapshot metadata

/** Hard state, version byte first. */
export function encodeHardState(hs: HardState): Uint8Array {
  const w = new ByteWriter(32 + hs.vote.length * 3);
  w.u8(CODEC_VERSION);
  w.varint(hs.term);
  w.string(hs.vote);
  w.varint(hs.commit);
  return w.finish();
}

/** Decodes a hard state; throws `CodecError` on bad input. */
export function decodeHardState(bytes: Uint8Array): HardState {
  const r = new ByteReader(bytes);
  checkVersion(r);
  const hs: HardState = { term: r.varint(), vote: r.string(), commit: r.varint() };
  r.end();
  return hs;
}

/** Writes snapshot metadata without a version byte. */
export function writeSnapshotMeta(w: ByteWriter, m: SnapshotMeta): void {
  w.varint(m.index);
  w.varint(m.term);
  writeConfig(w, m.config);
}

/** Reads what `writeSnapshotMeta` wrote. */
export function readSnapshotMeta(r: ByteReader): SnapshotMeta {
  const index = r.varint();
  const term = r.varint();
  return { index, term, config: readConfig(r) };
}

/** Snapshot metadata, version byte first. */
export function encodeSnapshotMeta(m: SnapshotMeta): Uint8Array {
  const w = new ByteWriter(128);
  w.u8(CODEC_VERSION);
  writeSnapshotMeta(w, m);
  return w.finish();
}

/** Decodes snapshot metadata; throws `CodecError` on bad input. */
export function decodeSnapshotMeta(bytes: Uint8Array): SnapshotMeta {
  const r = new ByteReader(bytes);
  checkVersion(r);
  const m = readSnapshotMeta(r);
  r.end();
  return m;
}

// ---------------------------------------------------------------------------------------------
// Messages

/** Writes one message without a version byte (used by `encodeMessage` and message batches). */
export function writeMessage(w: ByteWriter, m: Message): void {
  w.u8(MESSAGE_TAGS[m.type]);
  w.string(m.from);
  w.string(m.to);
  w.varint(m.term);
  switch (m.type) {
    case "preVote":
      w.varint(m.lastIndex);
      w.varint(m.lastTerm);
      return;
    case "vote":
      w.varint(m.lastIndex);
      w.varint(m.lastTerm);
      w.bool(m.transfer);
      return;
    case "preVoteResponse":
    case "voteResponse":
      w.bool(m.reject);
      return;
    case "append":
      w.varint(m.prevIndex);
      w.varint(m.prevTerm);
      w.varint(m.commit);
      w.varint(m.entries.length);
      for (const e of m.entries) writeEntry(w, e);
      return;
    case "appendResponse":
      w.bool(m.reject);
      w.varint(m.index);
      w.varint(m.hintIndex);
      w.varint(m.hintTerm);
      return;
    case "heartbeat":
      w.varint(m.commit);
      w.varint(m.context);
      return;
    case "heartbeatResponse":
      w.varint(m.context);
      return;
    case "readIndex":
      w.varint(m.context);
      return;
    case "readIndexResponse":
      w.varint(m.context);
      w.varint(m.index);
      w.bool(m.reject);
      return;
    case "snapshot":
      writeSnapshotMeta(w, m.meta);
      w.varint(m.offset);
      w.bool(m.done);
      w.bytes(m.data);
      return;
    case "snapshotResponse":
      w.varint(m.index);
      w.varint(m.offset);
      w.bool(m.reject);
      w.bool(m.done);
      return;
    case "timeoutNow":
      return;
    default:
      assertNever(m, "message type");
  }
}

/** Reads what `writeMessage` wrote. */
export function readMessage(r: ByteReader): Message {
  const tag = r.u8();
  const type = MESSAGE_TYPES[tag];
  if (type === undefined) throw new CodecError(`unknown message tag ${tag}`);
  const from = r.string();
  const to = r.string();
  const term = r.varint();
  switch (type) {
    case "preVote":
      return { type, from, to, term, lastIndex: r.varint(), lastTerm: r.varint() };
    case "vote":
      return {
        type,
        from,
        to,
        term,
        lastIndex: r.varint(),
        lastTerm: r.varint(),
        transfer: r.bool(),
      };
    case "preVoteResponse":
    case "voteResponse":
      return { type, from, to, term, reject: r.bool() };
    case "append": {
      const prevIndex = r.varint();
      const prevTerm = r.varint();
      const commit = r.varint();
      const n = readCount(r);
      const entries = new Array<Entry>(n);
      let dataBytes = 0;
      for (let i = 0; i < n; i++) {
        const e = readEntry(r, true);
        if (e.type === "normal") dataBytes += e.data.length;
        entries[i] = e;
      }
      // The entries' data, copied out of the frame into one buffer for the whole message
      // (they are compacted together): an ArrayBuffer per entry costs more than its bytes.
      const slab = new Uint8Array(dataBytes);
      let offset = 0;
      for (let i = 0; i < n; i++) {
        const e = entries[i];
        if (e.type !== "normal") continue;
        slab.set(e.data, offset);
        const data = slab.subarray(offset, offset + e.data.length);
        offset += e.data.length;
        entries[i] = { type: "normal", term: e.term, index: e.index, data };
      }
      return { type, from, to, term, prevIndex, prevTerm, commit, entries };
    }
    case "appendResponse":
      return {
        type,
        from,
        to,
        term,
        reject: r.bool(),
        index: r.varint(),
        hintIndex: r.varint(),
        hintTerm: r.varint(),
      };
    case "heartbeat":
      return { type, from, to, term, commit: r.varint(), context: r.varint() };
    case "heartbeatResponse":
      return { type, from, to, term, context: r.varint() };
    case "readIndex":
      return { type, from, to, term, context: r.varint() };
    case "readIndexResponse":
      return { type, from, to, term, context: r.varint(), index: r.varint(), reject: r.bool() };
    case "snapshot": {
      const meta = readSnapshotMeta(r);
      const offset = r.varint();
      const done = r.bool();
      return { type, from, to, term, meta, offset, done, data: r.bytes() };
    }
    case "snapshotResponse":
      return {
        type,
        from,
        to,
        term,
        index: r.varint(),
        offset: r.varint(),
        reject: r.bool(),
        done: r.bool(),
      };
    case "timeoutNow":
      return { type, from, to, term };
    default:
      return assertNever(type, "message type");
  }
}

/** One message, version byte first. */
export function encodeMessage(m: Message): Uint8Array {
  const w = new ByteWriter(64);
  w.u8(CODEC_VERSION);
  writeMessage(w, m);
  return w.finish();
}

/** Decodes one message; throws `CodecError` on garbage, truncation or trailing bytes. */
export function decodeMessage(bytes: Uint8Array): Message {
  const r = new ByteReader(bytes);
  checkVersion(r);
  const m = readMessage(r);
  r.end();
  return m;
}

/** Appends a batch of messages (version byte, count, messages) to `w`. */
export function writeMessageBatch(w: ByteWriter, msgs: readonly Message[]): void {
  w.u8(CODEC_VERSION);
  w.varint(msgs.length);
  for (const m of msgs) writeMessage(w, m);
}

/** A batch of messages in one buffer, version byte first. */
export function encodeMessageBatch(msgs: readonly Message[]): Uint8Array {
  const w = new ByteWriter(256);
  writeMessageBatch(w, msgs);
  return w.finish();
}

/** Decodes what `encodeMessageBatch` wrote; throws `CodecError` on bad input. */
export function decodeMessageBatch(bytes: Uint8Array): Message[] {
  const r = new ByteReader(bytes);
  checkVersion(r);
  const n = readCount(r);
  const out = new Array<Message>(n);
  for (let i = 0; i < n; i++) out[i] = readMessage(r);
  r.end();
  return out;
}
