/**
 * The simulator's state machine: a tiny KV map whose commands are client writes
 * `{opId, key, value}` encoded as JSON. Values are unique per write (the op id), so a read
 * identifies exactly which write it saw.
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

/** The KV map a node applies committed writes to; `restore` replaces the whole state. */
export class KvStateMachine {
  #map = new Map<string, string>();

  /** Applies a committed entry (no-ops and config entries change nothing). */
  apply(entry: Entry): void {
    const op = opOf(entry);
    if (op) this.#map.set(op.key, op.value);
  }

  /** The value last written to `key`, if any. */
  get(key: string): string | undefined {
    return this.#map.get(key);
  }

  /** A read-only view of the whole state. */
  state(): ReadonlyMap<string, string> {
    return this.#map;
  }

  /** A point-in-time copy of the state, encoded. */
  snapshot(): Uint8Array {
    return encoder.encode(JSON.stringify([...this.#map].sort(([a], [b]) => a < b ? -1 : 1)));
  }

  /** Replaces the whole state with a snapshot's (never merges). */
  restore(data: Uint8Array): void {
    this.#map = new Map(
      data.length === 0 ? [] : JSON.parse(decoder.decode(data)) as [
        string,
        string,
      ][],
    );
  }
}
