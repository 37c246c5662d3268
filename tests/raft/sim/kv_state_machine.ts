/**
 * The writes of the safety checker's default entry model: client writes `{opId, key, value}`
 * encoded as JSON, and the fingerprints that identify entries. Values are unique per write
 * (the op id), so a read identifies exactly which write it saw. (The simulator and the
 * scenario cluster run the real `KvStateMachine` and plug in the `KvModel` instead; the
 * checker's own tests write histories in this form.)
 */
import type { Entry } from "../../../src/raft/types.ts";

/** One client write as carried in a normal entry's data. */
export interface KvOp {
  readonly opId: number;
  readonly key: string;
  readonly value: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a write; `decodeOp(encodeOp(op))` deep-equals `op`. */
export function encodeOp(op: KvOp): Uint8Array {
  return encoder.encode(JSON.stringify([op.opId, op.key, op.value]));
}

/** Decodes a normal entry's data; `undefined` for the leader's empty no-op. */
export function decodeOp(data: Uint8Array): KvOp | undefined {
  if (data.length === 0) return undefined;
  const [opId, key, value] = JSON.parse(decoder.decode(data)) as [number, string, string];
  return { opId, key, value };
}

/** The write an entry carries, if any (config entries and no-ops carry none). */
export function opOf(entry: Entry): KvOp | undefined {
  return entry.type === "normal" ? decodeOp(entry.data) : undefined;
}

/**
 * A stable text identity of an entry: two entries are the same entry exactly when their
 * fingerprints are equal (type, term, index and payload).
 */
export function fingerprint(entry: Entry): string {
  switch (entry.type) {
    case "normal":
      return `n|${entry.term}|${entry.index}|${decoder.decode(entry.data)}`;
    case "config":
      return `c|${entry.term}|${entry.index}|${JSON.stringify(entry.change)}|${
        JSON.stringify(entry.config)
      }`;
    default: {
      const never: never = entry;
      throw new Error(`unknown entry ${JSON.stringify(never)}`);
    }
  }
}
