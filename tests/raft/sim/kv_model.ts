/**
 * The oracle for the real KV state machine: an independent, obviously correct model of
 * Set, Delete, Append and CompareAndSet with client sessions (a retried write with a seen
 * sequence number is not applied again and answers the first result), run over the common
 * applied sequence the {@link SafetyChecker} builds. It answers what any replica must hold at
 * any index, what each write must have answered, and which reads are linearizable.
 */
import { type Command, type CommandResult, decodeCommand } from "../../../src/kv/mod.ts";
import type { Entry } from "../../../src/raft/types.ts";
import type { EntryModel } from "./checker.ts";
import { InvariantViolation } from "./checker.ts";

const text = new TextDecoder();

/** A key's value as the checker compares it: the value's text and its version. */
export function valueText(value: Uint8Array, version: number): string {
  return `${text.decode(value)}@${version}`;
}

/** A result as the checker compares it. */
export function resultText(r: CommandResult): string {
  return JSON.stringify([
    r.ok,
    r.version,
    r.value === undefined ? null : text.decode(r.value),
    r.existed ?? null,
    r.length ?? null,
  ]);
}

/** The KV model over the common sequence (plugged into the SafetyChecker). */
export class KvModel implements EntryModel {
  readonly #state = new Map<string, { value: Uint8Array; version: number }>();
  /** key → its changes in index order: (index, value text or undefined when deleted). */
  readonly #history = new Map<string, { index: number; value: string | undefined }[]>();
  readonly #sessions = new Map<string, { lastSeq: number; result: CommandResult }>();
  /** `${clientId}#${seq}` → the index and result of its first application. */
  readonly #firstApplied = new Map<string, { index: number; result: string }>();
  /** Frontier of completed operations: acknowledged writes and served reads. */
  #completedIndex = 0;
  #invoked = new Map<number, number>();
  /** Highest index of an acknowledged write. */
  ackedIndex = 0;
  acked = 0;
  duplicates = 0;

  describe(entry: Entry): string {
    return entry.type === "normal" ? hex(entry.data) : "";
  }

  applied(entry: Entry): void {
    if (entry.type !== "normal" || entry.data.length === 0) return;
    let cmd: Command;
    try {
      cmd = decodeCommand(entry.data);
    } catch {
      return;
    }
    const s = cmd.session;
    if (s) {
      const known = this.#sessions.get(s.clientId);
      if (known && s.seq <= known.lastSeq) {
        this.duplicates++;
        return;
      }
    }
    const result = this.#execute(entry.index, cmd);
    if (s) {
      this.#sessions.set(s.clientId, { lastSeq: s.seq, result });
      this.#firstApplied.set(`${s.clientId}#${s.seq}`, {
        index: entry.index,
        result: resultText(result),
      });
    }
  }

  #execute(index: number, cmd: Command): CommandResult {
    const current = this.#state.get(cmd.key);
    const put = (value: Uint8Array) => {
      this.#state.set(cmd.key, { value, version: index });
      this.#change(cmd.key, index, valueText(value, index));
    };
    switch (cmd.type) {
      case "set":
        put(cmd.value);
        return { ok: true, version: index, existed: current !== undefined };
      case "delete":
        if (!current) return { ok: true, version: 0, existed: false };
        this.#state.delete(cmd.key);
        this.#change(cmd.key, index, undefined);
        return { ok: true, version: index, existed: true };
      case "append": {
        const value = current ? concat(current.value, cmd.value) : cmd.value;
        put(value);
        return { ok: true, version: index, length: value.length };
      }
      case "cas": {
        const matches = cmd.expectValue !== undefined
          ? current !== undefined && hex(current.value) === hex(cmd.expectValue)
          : cmd.expectVersion === 0
          ? current === undefined
          : current?.version === cmd.expectVersion;
        if (matches) {
          put(cmd.value);
          return { ok: true, version: index, existed: current !== undefined };
        }
        return current
          ? { ok: false, version: current.version, value: current.value, existed: true }
          : { ok: false, version: 0, existed: false };
      }
      default:
        // The workload issues only the four commands above.
        throw new Error(`the model does not know command ${(cmd as { type: string }).type}`);
    }
  }

  #change(key: string, index: number, value: string | undefined): void {
    let h = this.#history.get(key);
    if (!h) this.#history.set(key, h = []);
    h.push({ index, value });
  }

  keys(): Iterable<string> {
    return this.#history.keys();
  }

  valueAt(key: string, index: number): string | undefined {
    const c = this.#lastChange(key, index);
    return c?.value;
  }

  #lastChange(
    key: string,
    index: number,
  ): { index: number; value: string | undefined } | undefined {
    const h = this.#history.get(key);
    if (!h) return undefined;
    let lo = 0;
    let hi = h.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (h[mid].index <= index) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? undefined : h[lo - 1];
  }

  // ---- client-visible checks -----------------------------------------------------------

  /**
   * A write of session (`clientId`, `seq`) was acknowledged with `result`: it must have been
   * applied exactly once in the common sequence, and answered what that application gave.
   */
  writeAcknowledged(node: string, clientId: string, seq: number, result: CommandResult): void {
    const first = this.#firstApplied.get(`${clientId}#${seq}`);
    if (!first) {
      throw new InvariantViolation(
        "durability",
        `${node} acknowledged write ${clientId}#${seq} (${
          resultText(result)
        }), but it is not in the common sequence`,
      );
    }
    if (first.result !== resultText(result)) {
      throw new InvariantViolation(
        "linearizability",
        `${node} answered ${
          resultText(result)
        } for write ${clientId}#${seq}, but it applied at ${first.index} as ${first.result}`,
      );
    }
    this.acked++;
    this.ackedIndex = Math.max(this.ackedIndex, first.index);
    this.#completedIndex = Math.max(this.#completedIndex, first.index);
  }

  /** A client starts read `readId`: it must see everything completed before now. */
  readInvoked(readId: number): void {
    this.#invoked.set(readId, this.#completedIndex);
  }

  /** The read's barrier failed: it constrains nothing. */
  readAbandoned(readId: number): void {
    this.#invoked.delete(readId);
  }

  /**
   * Read `readId` of `key` returned `value` on a replica that had applied `appliedIndex`: the
   * value must be the model's there, and no write to `key` completed before the read began
   * may be missing from it.
   */
  readServed(
    readId: number,
    node: string,
    key: string,
    appliedIndex: number,
    value: string | undefined,
  ): void {
    const frontier = this.#invoked.get(readId) ?? 0;
    this.#invoked.delete(readId);
    const want = this.valueAt(key, appliedIndex);
    if (want !== value) {
      throw new InvariantViolation(
        "linearizability",
        `read ${readId} of ${key} on ${node} at applied ${appliedIndex} saw ${value}, but the common sequence gives ${want}`,
      );
    }
    const needed = this.#lastChange(key, frontier);
    if (needed && needed.index > appliedIndex) {
      throw new InvariantViolation(
        "linearizability",
        `stale read ${readId} of ${key} on ${node}: served at ${appliedIndex} (${value}), but the write at ${needed.index} (${needed.value}) completed before the read began`,
      );
    }
    this.#completedIndex = Math.max(this.#completedIndex, appliedIndex);
  }
}

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
