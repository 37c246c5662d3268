/**
 * etcd's KV semantics over mokv's ordered map: Range (limits, sorting, filters, counts, a
 * revision in the history), and Txn (compares, then the success or failure ops, applied in
 * order in one entry, so every key it writes gets that entry's revision). Put and
 * DeleteRange arrive as one-op transactions. Deterministic: the same store and request give
 * the same result on every replica.
 *
 * Keys are bytes in etcd's API and UTF-8 strings in mokv's map; a key that is not valid
 * UTF-8 is refused (`EtcdError` "etcdserver: key is not valid UTF-8"), so both APIs always
 * see the same keys. Ranges compare as bytes, as etcd does.
 */
import type {
  Compare,
  DeleteRangeRequest,
  DeleteRangeResponse,
  EtcdKeyValue,
  PutRequest,
  PutResponse,
  RangeRequest,
  RangeResponse,
  ResponseOp,
  TxnRequest,
  TxnResponse,
} from "./etcd_wire.ts";
import type { EventHistory, HistoryEntry } from "./history.ts";

/** A request etcd itself would refuse; the message is etcd's, which clients match on. */
export class EtcdError extends Error {
  constructor(
    /** The gRPC code etcd answers with, by name. */
    readonly code:
      | "INVALID_ARGUMENT"
      | "OUT_OF_RANGE"
      | "NOT_FOUND"
      | "FAILED_PRECONDITION"
      | "RESOURCE_EXHAUSTED"
      | "UNAVAILABLE",
    message: string,
  ) {
    super(message);
    this.name = "EtcdError";
  }
}

/** etcd's messages for the errors the state machine can answer. */
export const ETCD_ERRORS = {
  compacted: () =>
    new EtcdError("OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"),
  futureRevision: () =>
    new EtcdError("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"),
  keyNotFound: () => new EtcdError("INVALID_ARGUMENT", "etcdserver: key not found"),
  leaseNotFound: () => new EtcdError("NOT_FOUND", "etcdserver: requested lease not found"),
  emptyKey: () => new EtcdError("INVALID_ARGUMENT", "etcdserver: key is not provided"),
  notUtf8: () => new EtcdError("INVALID_ARGUMENT", "etcdserver: key is not valid UTF-8"),
  tooManyOps: () =>
    new EtcdError("INVALID_ARGUMENT", "etcdserver: too many operations in txn request"),
  duplicateKey: () =>
    new EtcdError("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"),
  noSpace: () => new EtcdError("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded"),
  valueTooLarge: () => new EtcdError("INVALID_ARGUMENT", "etcdserver: request is too large"),
} as const;

/** The most operations one transaction may hold, counting nested ones (etcd's default 128). */
export const MAX_TXN_OPS = 128;

/** What a transaction sees of the store and may change (the state machine provides it). */
export interface TxnStore {
  revision(): number;
  compactedRevision(): number;
  get(key: string): HistoryEntry | undefined;
  entries(from: string): IterableIterator<[string, HistoryEntry]>;
  readonly history: EventHistory;
  byteCount(): number;
  put(key: string, value: Uint8Array, lease: number, previous: HistoryEntry | undefined): void;
  remove(key: string, current: HistoryEntry): void;
  compact(revision: number): void;
  noteQuotaAlarm(): void;
  /** May `key` be attached to lease `id`? "missing": no such lease; "full": at its key limit. */
  leaseRoom(id: number, key: string): "ok" | "missing" | "full";
}

/** Limits a write carries (from the proposing node's configuration). */
export interface TxnLimits {
  readonly maxValueBytes?: number;
  readonly quotaBytes?: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const enc = new TextEncoder();

/** A key's bytes as mokv's string key; throws the etcd error for an empty or non-UTF-8 key. */
export function keyString(bytes: Uint8Array): string {
  if (bytes.length === 0) throw ETCD_ERRORS.emptyKey();
  try {
    return utf8.decode(bytes);
  } catch {
    throw ETCD_ERRORS.notUtf8();
  }
}

/** The string key as etcd's bytes. */
export function keyBytes(key: string): Uint8Array {
  return enc.encode(key);
}

/** Compares two byte strings (etcd's key order). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * A key range as etcd defines it by `key` and `range_end`: empty end = the key alone;
 * end "\0" = every key >= key; otherwise [key, end).
 */
export interface KeyRange {
  readonly start: string;
  readonly startBytes: Uint8Array;
  /** undefined: the start key alone; null: no upper bound. */
  readonly end: Uint8Array | null | undefined;
}

/** Builds the range of a request; throws for a bad start key. */
export function keyRange(key: Uint8Array, rangeEnd: Uint8Array): KeyRange {
  const allFromZero = key.length === 1 && key[0] === 0 && rangeEnd.length > 0;
  const start = allFromZero ? "" : keyString(key);
  // Copies: request bytes may be views into a buffer that is reused (watchers keep ranges).
  const startBytes = new Uint8Array(key);
  if (rangeEnd.length === 0) return { start, startBytes, end: undefined };
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return { start, startBytes, end: null };
  return { start, startBytes, end: new Uint8Array(rangeEnd) };
}

/** Is `key` inside `range`? */
export function inRange(range: KeyRange, key: string): boolean {
  if (range.end === undefined) return key === range.start;
  const b = keyBytes(key);
  if (compareBytes(b, range.startBytes) < 0 && range.start !== "") return false;
  return range.end === null || compareBytes(b, range.end) < 0;
}

/** Every key of `range` in the store, in key order, with its entry. */
export function* scan(
  store: TxnStore,
  range: KeyRange,
): Generator<[string, HistoryEntry]> {
  if (range.end === undefined) {
    const e = store.get(range.start);
    if (e) yield [range.start, e];
    return;
  }
  for (const [key, entry] of store.entries(range.start)) {
    if (range.end !== null && compareBytes(keyBytes(key), range.end) >= 0) return;
    yield [key, entry];
  }
}

/** A key's etcd view. */
export function toKeyValue(key: string, e: HistoryEntry, keysOnly = false): EtcdKeyValue {
  return {
    key: keyBytes(key),
    create_revision: e.created,
    mod_revision: e.version,
    version: e.writes,
    value: keysOnly ? new Uint8Array(0) : e.value,
    lease: e.lease,
  };
}

/**
 * The keys of `range` as they were at `revision` (older than the store's): the current state
 * with every later change undone from the history. Throws compacted if the history does not
 * reach back that far.
 */
function scanAt(store: TxnStore, range: KeyRange, revision: number): [string, HistoryEntry][] {
  if (revision <= store.compactedRevision()) throw ETCD_ERRORS.compacted();
  // For every key changed after `revision`, its state just before the first such change.
  const before = new Map<string, HistoryEntry | undefined>();
  for (const rev of store.history.since(revision + 1)) {
    for (const e of rev.events) {
      if (!before.has(e.key) && inRange(range, e.key)) before.set(e.key, e.prev);
    }
  }
  const out = new Map<string, HistoryEntry>();
  for (const [key, entry] of scan(store, range)) if (!before.has(key)) out.set(key, entry);
  for (const [key, entry] of before) if (entry) out.set(key, entry);
  return [...out.entries()].sort((a, b) => compareBytes(keyBytes(a[0]), keyBytes(b[0])));
}

/** etcd's Range over `store`. See the module comment. */
export function evaluateRange(store: TxnStore, req: RangeRequest): RangeResponse {
  const range = keyRange(req.key, req.range_end);
  const current = store.revision();
  if (req.revision > current) throw ETCD_ERRORS.futureRevision();
  const rows: Iterable<[string, HistoryEntry]> = req.revision > 0 && req.revision < current
    ? scanAt(store, range, req.revision)
    : scan(store, range);
  const filtered = req.min_mod_revision > 0 || req.max_mod_revision > 0 ||
    req.min_create_revision > 0 || req.max_create_revision > 0;
  let order = req.sort_order;
  if (order === "NONE" && req.sort_target !== "KEY") order = "ASCEND";
  const sorted = order !== "NONE" && !(order === "ASCEND" && req.sort_target === "KEY");
  // Without sorting or filters, stop reading at limit + 1 (enough to know `more`), but
  // count every key of the range, as etcd does.
  const keep = !sorted && !filtered && req.limit > 0 ? req.limit + 1 : Infinity;
  let count = 0;
  let kvs: [string, HistoryEntry][] = [];
  for (const row of rows) {
    count++;
    if (req.count_only || kvs.length >= keep) continue;
    const e = row[1];
    if (req.min_mod_revision > 0 && e.version < req.min_mod_revision) continue;
    if (req.max_mod_revision > 0 && e.version > req.max_mod_revision) continue;
    if (req.min_create_revision > 0 && e.created < req.min_create_revision) continue;
    if (req.max_create_revision > 0 && e.created > req.max_create_revision) continue;
    kvs.push(row);
  }
  if (sorted) {
    const by = (a: [string, HistoryEntry], b: [string, HistoryEntry]): number => {
      switch (req.sort_target) {
        case "KEY":
          return compareBytes(keyBytes(a[0]), keyBytes(b[0]));
        case "VERSION":
          return a[1].writes - b[1].writes;
        case "CREATE":
          return a[1].created - b[1].created;
        case "MOD":
          return a[1].version - b[1].version;
        case "VALUE":
          return compareBytes(a[1].value, b[1].value);
      }
    };
    kvs.sort(order === "DESCEND" ? (a, b) => by(b, a) : by);
  }
  let more = false;
  if (req.limit > 0 && kvs.length > req.limit) {
    kvs = kvs.slice(0, req.limit);
    more = true;
  }
  return {
    kvs: req.count_only ? [] : kvs.map(([k, e]) => toKeyValue(k, e, req.keys_only)),
    more,
    count,
  };
}

function compareOne(c: Compare, e: HistoryEntry | undefined): boolean {
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
    case "VALUE":
      // etcd: a value compare on a missing key is false, whatever the operator.
      if (!e) return false;
      r = compareBytes(e.value, c.value);
      break;
  }
  switch (c.result) {
    case "EQUAL":
      return r === 0;
    case "NOT_EQUAL":
      return r !== 0;
    case "GREATER":
      return r > 0;
    case "LESS":
      return r < 0;
  }
}

/** Does compare `c` hold? Over a range, it must hold for every key of it (etcd 3.4). */
function evaluateCompare(store: TxnStore, c: Compare): boolean {
  const range = keyRange(c.key, c.range_end);
  if (range.end === undefined) return compareOne(c, store.get(range.start));
  for (const [, e] of scan(store, range)) if (!compareOne(c, e)) return false;
  return true;
}

/** Counts the operations of a transaction, nested ones included. */
export function countOps(txn: TxnRequest): number {
  let n = 0;
  for (const op of [...txn.success, ...txn.failure]) {
    n++;
    if (op.request_txn) n += countOps(op.request_txn);
  }
  return n;
}

/**
 * Checks what etcd checks before a transaction is proposed: keys, the number of operations,
 * and that no branch writes one key twice. Throws the etcd error.
 */
export function checkTxn(txn: TxnRequest): void {
  if (countOps(txn) > MAX_TXN_OPS) throw ETCD_ERRORS.tooManyOps();
  for (const c of txn.compare) keyRange(c.key, c.range_end);
  for (const branch of [txn.success, txn.failure]) {
    const puts = new Set<string>();
    for (const op of branch) {
      if (op.request_put) {
        const k = keyString(op.request_put.key);
        if (puts.has(k)) throw ETCD_ERRORS.duplicateKey();
        puts.add(k);
      } else if (op.request_range) {
        keyRange(op.request_range.key, op.request_range.range_end);
      } else if (op.request_delete_range) {
        keyRange(op.request_delete_range.key, op.request_delete_range.range_end);
      } else if (op.request_txn) {
        checkTxn(op.request_txn);
      }
    }
    for (const op of branch) {
      const d = op.request_delete_range;
      if (!d) continue;
      const range = keyRange(d.key, d.range_end);
      for (const k of puts) if (inRange(range, k)) throw ETCD_ERRORS.duplicateKey();
    }
  }
}

function applyPut(store: TxnStore, p: PutRequest, limits: TxnLimits): PutResponse {
  const key = keyString(p.key);
  const current = store.get(key);
  if ((p.ignore_value || p.ignore_lease) && !current) throw ETCD_ERRORS.keyNotFound();
  if (!p.ignore_lease && p.lease !== 0) {
    const room = store.leaseRoom(p.lease, key);
    if (room === "missing") throw ETCD_ERRORS.leaseNotFound();
    if (room === "full") {
      throw new EtcdError("RESOURCE_EXHAUSTED", "mokv: the lease holds as many keys as it may");
    }
  }
  // A copy that owns exactly its bytes: a decoded value is a view into the whole log entry.
  const value = p.ignore_value ? current!.value : new Uint8Array(p.value);
  if (limits.maxValueBytes !== undefined && value.length > limits.maxValueBytes) {
    throw ETCD_ERRORS.valueTooLarge();
  }
  const lease = p.ignore_lease ? current!.lease : p.lease;
  store.put(key, value, lease, current);
  return p.prev_kv && current ? { prev_kv: toKeyValue(key, current) } : {};
}

function applyDelete(store: TxnStore, d: DeleteRangeRequest): DeleteRangeResponse {
  const range = keyRange(d.key, d.range_end);
  const doomed = [...scan(store, range)];
  for (const [key, entry] of doomed) store.remove(key, entry);
  return {
    deleted: doomed.length,
    prev_kvs: d.prev_kv ? doomed.map(([k, e]) => toKeyValue(k, e)) : [],
  };
}

function run(store: TxnStore, txn: TxnRequest, limits: TxnLimits): TxnResponse {
  const succeeded = txn.compare.every((c) => evaluateCompare(store, c));
  const responses: ResponseOp[] = [];
  for (const op of succeeded ? txn.success : txn.failure) {
    if (op.request_range) {
      responses.push({ response_range: evaluateRange(store, op.request_range) });
    } else if (op.request_put) {
      responses.push({ response_put: applyPut(store, op.request_put, limits) });
    } else if (op.request_delete_range) {
      responses.push({ response_delete_range: applyDelete(store, op.request_delete_range) });
    } else if (op.request_txn) {
      responses.push({ response_txn: run(store, op.request_txn, limits) });
    }
  }
  return { succeeded, responses };
}

/**
 * Applies `txn` to `store`, the ops of the chosen branch in order; ranges see the writes
 * before them. Throws an EtcdError when a write may not be made (ignore_value on a missing
 * key, a lease, a value over the limit, the data over the quota); the caller then undoes
 * what the transaction already changed, so it applies all or nothing.
 */
export function executeTxn(store: TxnStore, txn: TxnRequest, limits: TxnLimits): TxnResponse {
  checkTxn(txn);
  const before = store.byteCount();
  const response = run(store, txn, limits);
  const after = store.byteCount();
  if (limits.quotaBytes !== undefined && after > before && after > limits.quotaBytes) {
    store.noteQuotaAlarm();
    throw ETCD_ERRORS.noSpace();
  }
  return response;
}

/** Is this transaction read-only (no put or delete in any branch)? Then it needs no log entry. */
export function isReadOnlyTxn(txn: TxnRequest): boolean {
  for (const op of [...txn.success, ...txn.failure]) {
    if (op.request_put || op.request_delete_range) return false;
    if (op.request_txn && !isReadOnlyTxn(op.request_txn)) return false;
  }
  return true;
}

/** Runs a read-only transaction against the local state (after the caller's read barrier). */
export function evaluateReadOnlyTxn(store: TxnStore, txn: TxnRequest): TxnResponse {
  checkTxn(txn);
  return run(store, txn, {});
}
