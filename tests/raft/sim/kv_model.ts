/**
 * The oracle for the real KV state machine: an independent, obviously correct model of
 * Set, Delete, Append and CompareAndSet with client sessions (a retried write with a seen
 * sequence number is not applied again and answers the first result), and of etcd's model
 * on the same keys: transactions (compares on version, create and mod revision, value and
 * lease; success or failure branches of puts, deletes and ranges, all or nothing at the
 * entry's revision), per-key create and mod revision, version and lease, the store revision,
 * and leases (grant, keep-alive, revoke or expiry deleting every attached key at one
 * revision). It runs over the common applied sequence the {@link SafetyChecker} builds, and
 * answers what any replica must hold at any index (etcd metadata, store revision and leases
 * included: see {@link REVISION_KEY} and {@link leaseKey}), what each write must have
 * answered, and which reads and ranges are linearizable.
 */
import {
  type Command,
  type CommandResult,
  type Compare,
  decodeCommand,
  type EtcdKeyValue,
  type RequestOp,
  type ResponseOp,
  type TxnRequest,
  type TxnResponse,
} from "../../../src/kv/mod.ts";
import type { Entry } from "../../../src/raft/types.ts";
import type { EntryModel } from "./checker.ts";
import { InvariantViolation } from "./checker.ts";

const text = new TextDecoder();

/** The pseudo-key whose "value" in a state is the store revision (etcd's header revision). */
export const REVISION_KEY = "\u0000revision";

/** The pseudo-key whose "value" in a state is lease `id`: its TTL and attached keys. */
export function leaseKey(id: number): string {
  return `\u0000lease/${id}`;
}

/** A lease's state as the checker compares it. */
export function leaseText(ttlSeconds: number, keys: Iterable<string>): string {
  return `ttl ${ttlSeconds} keys [${[...keys].sort().join(",")}]`;
}

/** A key's value as the checker compares it: the value's text and its mod revision. */
export function valueText(value: Uint8Array, version: number): string {
  return `${text.decode(value)}@${version}`;
}

/** What a key holds, with etcd's metadata (the state machine's KvEntry). */
export interface KeyState {
  readonly value: Uint8Array;
  /** Mod revision (mökv's version). */
  readonly version: number;
  readonly created: number;
  /** etcd's version: writes since creation. */
  readonly writes: number;
  readonly lease: number;
}

/** A key's whole state as the checker compares it: value, revisions, version and lease. */
export function entryText(e: KeyState): string {
  return `${valueText(e.value, e.version)} c${e.created} v${e.writes} l${e.lease}`;
}

function kvText(kv: EtcdKeyValue): string {
  return `${text.decode(kv.key)}=${
    entryText({
      value: kv.value,
      version: kv.mod_revision,
      created: kv.create_revision,
      writes: kv.version,
      lease: kv.lease,
    })
  }`;
}

/** A transaction's response as the checker compares it (a forwarded one decodes alike). */
export function txnText(r: TxnResponse): string {
  const op = (o: ResponseOp): unknown => {
    if (o.response_range) {
      const g = o.response_range;
      return ["range", g.count, g.more, g.kvs.map(kvText)];
    }
    if (o.response_put) {
      return ["put", o.response_put.prev_kv ? kvText(o.response_put.prev_kv) : null];
    }
    if (o.response_delete_range) {
      const d = o.response_delete_range;
      return ["delete", d.deleted, d.prev_kvs.map(kvText)];
    }
    if (o.response_txn) return ["txn", txnText(o.response_txn)];
    return ["?"];
  };
  return JSON.stringify([r.succeeded, r.responses.map(op)]);
}

/**
 * A result as the checker compares it. The lease TTL is left out: a result forwarded from
 * the leader does not carry it.
 */
export function resultText(r: CommandResult): string {
  return JSON.stringify([
    r.ok,
    r.version,
    r.value === undefined ? null : text.decode(r.value),
    r.existed ?? null,
    r.length ?? null,
    r.revision ?? null,
    r.etcdError ? `${r.etcdError.code}: ${r.etcdError.message}` : null,
    r.txn ? txnText(r.txn) : null,
  ]);
}

/** A lease revoke (a client's or an expiry) the common sequence applied. */
export interface RevokeApplied {
  readonly leaseId: number;
  readonly index: number;
  /** The term of the entry that carried it. */
  readonly term: number;
  readonly expired: boolean;
  /** The keys it deleted, all at `index`. */
  readonly keys: readonly string[];
  /** The entry's payload (to find who proposed it). */
  readonly data: Uint8Array;
}

interface ModelLease {
  readonly ttlSeconds: number;
  /** Index of its grant or last keep-alive. */
  renewedIndex: number;
  readonly keys: Set<string>;
}

/** A transaction refused at apply: nothing it did stays. */
class TxnFailure extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** The KV model over the common sequence (plugged into the SafetyChecker). */
export class KvModel implements EntryModel {
  readonly #state = new Map<string, KeyState>();
  readonly #leases = new Map<number, ModelLease>();
  #revision = 0;
  /** The term of the entry being applied. */
  #term = 0;
  /** key → its changes in index order: (index, text or undefined when absent). */
  readonly #history = new Map<string, { index: number; value: string | undefined }[]>();
  readonly #sessions = new Map<string, { lastSeq: number; result: CommandResult }>();
  /** `${clientId}#${seq}` → the index and result of its first application. */
  readonly #firstApplied = new Map<string, { index: number; result: string }>();
  /** A sessionless command's payload (hex) → every application of it: index and result. */
  readonly #byPayload = new Map<string, { index: number; result: string }[]>();
  /** Frontier of completed operations: acknowledged writes and served reads. */
  #completedIndex = 0;
  #invoked = new Map<number, number>();
  /** Highest index of an acknowledged write. */
  ackedIndex = 0;
  acked = 0;
  duplicates = 0;
  /** etcd commands applied, by kind (transactions by branch). */
  readonly etcdStats = {
    txnSucceeded: 0,
    txnFailed: 0,
    txnRefused: 0,
    leaseGrants: 0,
    leaseKeepAlives: 0,
    leaseRevokes: 0,
    leaseExpiriesVoided: 0,
    leaseExpiries: 0,
    leaseKeysDeleted: 0,
  };
  /** Told of every revoke the common sequence applies. */
  onRevoke: ((r: RevokeApplied) => void) | undefined;

  describe(entry: Entry): string {
    return entry.type === "normal" ? payloadKey(entry.data) : "";
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
    const before = this.#revision;
    this.#term = entry.term;
    const result = this.#execute(entry.index, cmd, entry.data);
    if (this.#revision < before) {
      throw new InvariantViolation(
        "revisions",
        `the model's revision went from ${before} to ${this.#revision}`,
      );
    }
    if (s) {
      this.#sessions.set(s.clientId, { lastSeq: s.seq, result });
      this.#firstApplied.set(`${s.clientId}#${s.seq}`, {
        index: entry.index,
        result: resultText(result),
      });
    } else {
      const key = payloadKey(entry.data);
      let list = this.#byPayload.get(key);
      if (!list) this.#byPayload.set(key, list = []);
      list.push({ index: entry.index, result: resultText(result) });
    }
  }

  /** Runs `cmd` at `index`, then records every key, lease and revision it changed. */
  #execute(index: number, cmd: Command, data: Uint8Array): CommandResult {
    const keysBefore = new Map<string, string | undefined>();
    const touch = (key: string) => {
      if (keysBefore.has(key)) return;
      const e = this.#state.get(key);
      keysBefore.set(key, e ? entryText(e) : undefined);
    };
    const leasesBefore = this.#leaseTexts();
    const result = this.#run(index, cmd, data, touch);
    let changed = false;
    for (const [key, was] of keysBefore) {
      const e = this.#state.get(key);
      const now = e ? entryText(e) : undefined;
      if (now !== was) {
        changed = true;
        this.#change(key, index, now);
      }
    }
    const leasesAfter = this.#leaseTexts();
    for (const id of new Set([...leasesBefore.keys(), ...leasesAfter.keys()])) {
      const now = leasesAfter.get(id);
      if (now !== leasesBefore.get(id)) this.#change(leaseKey(id), index, now);
    }
    if (changed) {
      this.#revision = index;
      this.#change(REVISION_KEY, index, String(index));
    }
    return result;
  }

  #leaseTexts(): Map<number, string> {
    const out = new Map<number, string>();
    for (const [id, l] of this.#leases) out.set(id, leaseText(l.ttlSeconds, l.keys));
    return out;
  }

  /** Writes `key` at `index` (attached to `lease`, 0 for none), as every write does. */
  #put(index: number, key: string, value: Uint8Array, lease: number): void {
    const prev = this.#state.get(key);
    if (prev?.lease) this.#leases.get(prev.lease)?.keys.delete(key);
    this.#state.set(key, {
      value,
      version: index,
      created: prev ? prev.created : index,
      writes: prev ? prev.writes + 1 : 1,
      lease,
    });
    if (lease) this.#leases.get(lease)!.keys.add(key);
  }

  #remove(key: string): void {
    const prev = this.#state.get(key);
    if (!prev) return;
    if (prev.lease) this.#leases.get(prev.lease)?.keys.delete(key);
    this.#state.delete(key);
  }

  #run(
    index: number,
    cmd: Command,
    data: Uint8Array,
    touch: (key: string) => void,
  ): CommandResult {
    const current = this.#state.get(cmd.key);
    const failure = (code: string, message: string): CommandResult => ({
      ok: false,
      version: 0,
      etcdError: { code, message },
      revision: this.#revision,
    });
    switch (cmd.type) {
      case "set":
        touch(cmd.key);
        this.#put(index, cmd.key, cmd.value, 0);
        return { ok: true, version: index, existed: current !== undefined };
      case "delete":
        if (!current) return { ok: true, version: 0, existed: false };
        touch(cmd.key);
        this.#remove(cmd.key);
        return { ok: true, version: index, existed: true };
      case "append": {
        const value = current ? concat(current.value, cmd.value) : cmd.value;
        touch(cmd.key);
        this.#put(index, cmd.key, value, 0);
        return { ok: true, version: index, length: value.length };
      }
      case "cas": {
        const matches = cmd.expectValue !== undefined
          ? current !== undefined && hex(current.value) === hex(cmd.expectValue)
          : cmd.expectVersion === 0
          ? current === undefined
          : current?.version === cmd.expectVersion;
        if (matches) {
          touch(cmd.key);
          this.#put(index, cmd.key, cmd.value, 0);
          return { ok: true, version: index, existed: current !== undefined };
        }
        return current
          ? { ok: false, version: current.version, value: current.value, existed: true }
          : { ok: false, version: 0, existed: false };
      }
      case "txn": {
        // All or nothing: run on copies, keep them only if every op could be made.
        const state = new Map(this.#state);
        const leaseKeys = new Map([...this.#leases].map(([id, l]) => [id, new Set(l.keys)]));
        try {
          const txn = this.#txn(index, cmd.txn, touch);
          if (txn.succeeded) this.etcdStats.txnSucceeded++;
          else this.etcdStats.txnFailed++;
          const changed = [...this.#state].some(([k, e]) => state.get(k) !== e) ||
            state.size !== this.#state.size;
          return { ok: true, version: index, txn, revision: changed ? index : this.#revision };
        } catch (err) {
          if (!(err instanceof TxnFailure)) throw err;
          this.#state.clear();
          for (const [k, e] of state) this.#state.set(k, e);
          for (const [id, keys] of leaseKeys) {
            const l = this.#leases.get(id)!;
            l.keys.clear();
            for (const k of keys) l.keys.add(k);
          }
          this.etcdStats.txnRefused++;
          return failure(err.code, err.message);
        }
      }
      case "leaseGrant": {
        if (this.#leases.has(cmd.leaseId)) {
          return failure("FAILED_PRECONDITION", "etcdserver: lease already exists");
        }
        this.#leases.set(cmd.leaseId, {
          ttlSeconds: cmd.ttlSeconds,
          keys: new Set(),
          renewedIndex: index,
        });
        this.etcdStats.leaseGrants++;
        return { ok: true, version: index, revision: this.#revision };
      }
      case "leaseKeepAlive": {
        const kept = this.#leases.get(cmd.leaseId);
        if (!kept) return failure("NOT_FOUND", "etcdserver: requested lease not found");
        kept.renewedIndex = index;
        this.etcdStats.leaseKeepAlives++;
        return { ok: true, version: index, revision: this.#revision };
      }
      case "leaseRevoke": {
        const l = this.#leases.get(cmd.leaseId);
        if (!l) return failure("NOT_FOUND", "etcdserver: requested lease not found");
        if (cmd.expired && cmd.renewedIndex !== undefined && l.renewedIndex > cmd.renewedIndex) {
          this.etcdStats.leaseExpiriesVoided++;
          return failure(
            "FAILED_PRECONDITION",
            `mokv: lease ${cmd.leaseId} was renewed at ${l.renewedIndex}, after its expiry was decided`,
          );
        }
        const keys = [...l.keys].sort();
        for (const key of keys) {
          touch(key);
          this.#remove(key);
        }
        this.#leases.delete(cmd.leaseId);
        if (cmd.expired) this.etcdStats.leaseExpiries++;
        else this.etcdStats.leaseRevokes++;
        this.etcdStats.leaseKeysDeleted += keys.length;
        this.onRevoke?.({
          leaseId: cmd.leaseId,
          index,
          term: this.#term,
          expired: cmd.expired,
          keys,
          data,
        });
        return { ok: true, version: index, revision: keys.length > 0 ? index : this.#revision };
      }
      default:
        // The workload issues no compaction.
        throw new Error(`the model does not know command ${(cmd as { type: string }).type}`);
    }
  }

  /** etcd's Txn over the model's keys (the workload's subset: single keys and plain ranges). */
  #txn(index: number, txn: TxnRequest, touch: (key: string) => void): TxnResponse {
    const succeeded = txn.compare.every((c) => this.#compare(c));
    const responses: ResponseOp[] = [];
    for (const op of succeeded ? txn.success : txn.failure) {
      responses.push(this.#op(index, op, touch));
    }
    return { succeeded, responses };
  }

  #compare(c: Compare): boolean {
    if (c.range_end.length > 0) throw new Error("the model compares single keys only");
    const e = this.#state.get(text.decode(c.key));
    let r: number;
    switch (c.target) {
      case "VERSION":
        r = (e?.writes ?? 0) - c.version;
        break;
      case "CREATE":
        r = (e?.created ?? 0) - c.create_revision;
        break;
      case "MOD":
        r = (e?.version ?? 0) - c.mod_revision;
        break;
      case "LEASE":
        r = (e?.lease ?? 0) - c.lease;
        break;
      case "VALUE": {
        if (!e) return false;
        const a = text.decode(e.value), b = text.decode(c.value);
        r = a < b ? -1 : a > b ? 1 : 0;
        break;
      }
    }
    return c.result === "EQUAL"
      ? r === 0
      : c.result === "NOT_EQUAL"
      ? r !== 0
      : c.result === "GREATER"
      ? r > 0
      : r < 0;
  }

  /** The model's keys in a request's range ([key, range_end), or the key alone). */
  #keysIn(key: Uint8Array, rangeEnd: Uint8Array): string[] {
    const start = text.decode(key);
    if (rangeEnd.length === 0) return this.#state.has(start) ? [start] : [];
    const end = rangeEnd.length === 1 && rangeEnd[0] === 0 ? undefined : text.decode(rangeEnd);
    const from = key.length === 1 && key[0] === 0 ? "" : start;
    return [...this.#state.keys()].filter((k) => k >= from && (end === undefined || k < end))
      .sort();
  }

  #kv(key: string): EtcdKeyValue {
    const e = this.#state.get(key)!;
    return {
      key: new TextEncoder().encode(key),
      create_revision: e.created,
      mod_revision: e.version,
      version: e.writes,
      value: e.value,
      lease: e.lease,
    };
  }

  #op(index: number, op: RequestOp, touch: (key: string) => void): ResponseOp {
    if (op.request_range) {
      const kvs = this.#keysIn(op.request_range.key, op.request_range.range_end).map((k) =>
        this.#kv(k)
      );
      return { response_range: { kvs, more: false, count: kvs.length } };
    }
    if (op.request_put) {
      const p = op.request_put;
      const key = text.decode(p.key);
      if (p.lease !== 0 && !this.#leases.has(p.lease)) {
        throw new TxnFailure("NOT_FOUND", "etcdserver: requested lease not found");
      }
      const prev = this.#state.has(key) ? this.#kv(key) : undefined;
      touch(key);
      this.#put(index, key, new Uint8Array(p.value), p.lease);
      return { response_put: p.prev_kv && prev ? { prev_kv: prev } : {} };
    }
    if (op.request_delete_range) {
      const d = op.request_delete_range;
      const keys = this.#keysIn(d.key, d.range_end);
      const prev = keys.map((k) => this.#kv(k));
      for (const k of keys) {
        touch(k);
        this.#remove(k);
      }
      return {
        response_delete_range: { deleted: keys.length, prev_kvs: d.prev_kv ? prev : [] },
      };
    }
    throw new Error("the model runs no nested transactions");
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

  /** Leases that exist after the common sequence so far. */
  get leaseCount(): number {
    return this.#leases.size;
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
    this.#completed(first.index);
  }

  #completed(index: number): void {
    this.acked++;
    this.ackedIndex = Math.max(this.ackedIndex, index);
    this.#completedIndex = Math.max(this.#completedIndex, index);
  }

  /**
   * A sessionless command (an etcd transaction or lease command) with payload `data` was
   * answered `result` by `node`: it must be in the common sequence, and that application must
   * have given exactly this result (which branch ran, every range and revision, or the
   * refusal). Returns the index it applied at.
   */
  etcdAcknowledged(node: string, what: string, data: Uint8Array, result: CommandResult): number {
    const applied = this.#byPayload.get(payloadKey(data)) ?? [];
    const have = resultText(result);
    const match = result.version > 0
      ? applied.find((a) => a.index === result.version)
      : applied.find((a) => a.result === have);
    if (!match) {
      throw new InvariantViolation(
        applied.length === 0 ? "durability" : "linearizability",
        `${node} answered ${have} for ${what}, but the common sequence ${
          applied.length === 0
            ? "does not hold it"
            : `applied it as ${applied.map((a) => `${a.result} at ${a.index}`).join(", ")}`
        }`,
      );
    }
    if (match.result !== have) {
      throw new InvariantViolation(
        "linearizability",
        `${node} answered ${have} for ${what}, but it applied at ${match.index} as ${match.result}`,
      );
    }
    this.#completed(match.index);
    return match.index;
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
    this.rangeServed(readId, node, appliedIndex, new Map([[key, value]]));
  }

  /**
   * Read `readId` (a key, or an etcd Range over several, with the store revision under
   * {@link REVISION_KEY}) returned `values` on a replica that had applied `appliedIndex`:
   * each must be the model's there, and none may miss a change completed before the read
   * began.
   */
  rangeServed(
    readId: number,
    node: string,
    appliedIndex: number,
    values: ReadonlyMap<string, string | undefined>,
  ): void {
    const frontier = this.#invoked.get(readId) ?? 0;
    this.#invoked.delete(readId);
    for (const [key, value] of values) {
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
          `stale read ${readId} of ${key} on ${node}: served at ${appliedIndex} (${value}), but the change at ${needed.index} (${needed.value}) completed before the read began`,
        );
      }
    }
    this.#completedIndex = Math.max(this.#completedIndex, appliedIndex);
  }
}

/** A payload as a lossless string (one char per byte: cheap, and it is hashed often). */
export function payloadKey(data: Uint8Array): string {
  let s = "";
  for (let i = 0; i < data.length; i += 4096) {
    s += String.fromCharCode(...data.subarray(i, i + 4096));
  }
  return s;
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
