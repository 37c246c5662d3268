/**
 * Seeded generators of random Raft data for the replication tests. A failing seed
 * reproduces exactly.
 */
import type {
  Config,
  ConfigChange,
  Entry,
  HardState,
  Message,
  MessageType,
  SnapshotMeta,
} from "../../src/raft/types.ts";

/** mulberry32: a small, fast, seeded generator of numbers in [0, 1). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random helpers over one seeded source. */
export class Gen {
  readonly random: () => number;
  constructor(seed: number) {
    this.random = seeded(seed);
  }
  int(maxExclusive: number): number {
    return Math.floor(this.random() * maxExclusive);
  }
  /** Mostly small numbers, sometimes huge ones up to 2^53 - 1 (varint edge cases). */
  num(): number {
    switch (this.int(4)) {
      case 0:
        return this.int(128);
      case 1:
        return this.int(0x1_0000);
      case 2:
        return this.int(0x8000_0000) + 0x7fff_0000;
      default:
        return Math.floor(this.random() * Number.MAX_SAFE_INTEGER);
    }
  }
  bool(): boolean {
    return this.random() < 0.5;
  }
  bytes(maxLen: number): Uint8Array {
    const out = new Uint8Array(this.int(maxLen + 1));
    for (let i = 0; i < out.length; i++) out[i] = this.int(256);
    return out;
  }
  /** Strings with ASCII, accented, CJK and astral characters. */
  string(maxLen = 12): string {
    const alphabet = ["a", "z", "0", "-", "é", "ö", "漢", "字", "😀", "🦕"];
    let s = "";
    const n = this.int(maxLen + 1);
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  config(): Config {
    const voters = Array.from({ length: this.int(5) }, () => this.string(6));
    const learners = Array.from({ length: this.int(3) }, () => this.string(6));
    const addresses: Record<string, string> = {};
    for (const id of [...voters, ...learners]) {
      addresses[id] = `${this.string(8)}:${this.int(65536)}`;
    }
    return { voters, learners, addresses };
  }
  change(): ConfigChange {
    switch (this.int(5)) {
      case 0:
        return { type: "bootstrap" };
      case 1:
        return { type: "addVoter", id: this.string(), address: this.string() };
      case 2:
        return { type: "addLearner", id: this.string(), address: this.string() };
      case 3:
        return { type: "promote", id: this.string() };
      default:
        return { type: "remove", id: this.string() };
    }
  }
  entry(index = this.num(), term = this.num(), maxDataBytes = 64): Entry {
    if (this.int(5) === 0) {
      return { type: "config", term, index, change: this.change(), config: this.config() };
    }
    return { type: "normal", term, index, data: this.bytes(maxDataBytes) };
  }
  hardState(): HardState {
    return { term: this.num(), vote: this.string(), commit: this.num() };
  }
  snapshotMeta(): SnapshotMeta {
    return { index: this.num(), term: this.num(), config: this.config() };
  }
  message(type: MessageType): Message {
    const env = { from: this.string(), to: this.string(), term: this.num() };
    switch (type) {
      case "preVote":
        return { type, ...env, lastIndex: this.num(), lastTerm: this.num() };
      case "vote":
        return { type, ...env, lastIndex: this.num(), lastTerm: this.num(), transfer: this.bool() };
      case "preVoteResponse":
      case "voteResponse":
        return { type, ...env, reject: this.bool() };
      case "append":
        return {
          type,
          ...env,
          prevIndex: this.num(),
          prevTerm: this.num(),
          commit: this.num(),
          entries: Array.from({ length: this.int(20) }, () => this.entry()),
        };
      case "appendResponse":
        return {
          type,
          ...env,
          reject: this.bool(),
          index: this.num(),
          hintIndex: this.num(),
          hintTerm: this.num(),
        };
      case "heartbeat":
        return { type, ...env, commit: this.num(), context: this.num() };
      case "heartbeatResponse":
        return { type, ...env, context: this.num() };
      case "readIndex":
        return { type, ...env, context: this.num() };
      case "readIndexResponse":
        return { type, ...env, context: this.num(), index: this.num(), reject: this.bool() };
      case "snapshot":
        return {
          type,
          ...env,
          meta: this.snapshotMeta(),
          offset: this.num(),
          data: this.bytes(300),
          done: this.bool(),
        };
      case "snapshotResponse":
        return {
          type,
          ...env,
          index: this.num(),
          offset: this.num(),
          reject: this.bool(),
          done: this.bool(),
        };
      case "timeoutNow":
        return { type, ...env };
      default: {
        const never: never = type;
        throw new Error(`unknown message type ${never}`);
      }
    }
  }
}

/** Every message type, so tests can cover them all. */
export const MESSAGE_TYPES: readonly MessageType[] = [
  "preVote",
  "vote",
  "preVoteResponse",
  "voteResponse",
  "append",
  "appendResponse",
  "heartbeat",
  "heartbeatResponse",
  "readIndex",
  "readIndexResponse",
  "snapshot",
  "snapshotResponse",
  "timeoutNow",
];

/** A contiguous run of normal entries [from, from + count) with `dataBytes` of payload each. */
export function normalEntries(
  from: number,
  count: number,
  term: number,
  dataBytes: number,
  fill = 0,
): Entry[] {
  const out: Entry[] = [];
  for (let i = 0; i < count; i++) {
    const data = new Uint8Array(dataBytes);
    for (let j = 0; j < dataBytes; j += 97) data[j] = (from + i + j + fill) & 0xff;
    out.push({ type: "normal", term, index: from + i, data });
  }
  return out;
}
