/**
 * The etcd part of the host simulator's workload: random transactions over the simulator's
 * few keys (compares on version, create and mod revision, value and lease; success and
 * failure branches of puts, some attached to leases, deletes and ranges), as etcd's KV
 * service receives them (defaults filled, as proto-loader decodes them), and what a client
 * remembers of the keys to aim its next compares.
 */
import {
  type Compare,
  type EtcdKeyValue,
  normalizeTxn,
  type OpInput,
  type TxnRequest,
  type TxnResponse,
} from "../../../src/kv/mod.ts";
import type { SeededRng } from "../../../src/rng.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a client last saw of each key (it aims its compares at it). */
export interface KeyMemory {
  readonly mods: Map<string, number>;
  readonly versions: Map<string, number>;
  readonly creates: Map<string, number>;
  readonly values: Map<string, string>;
}

/** An empty {@link KeyMemory}. */
export function keyMemory(): KeyMemory {
  return { mods: new Map(), versions: new Map(), creates: new Map(), values: new Map() };
}

/** Remembers what a range (or a transaction's ranges) showed of `keys`. */
export function remember(memory: KeyMemory, keys: readonly string[], kvs: EtcdKeyValue[]): void {
  const seen = new Set<string>();
  for (const kv of kvs) {
    const key = dec.decode(kv.key);
    seen.add(key);
    memory.mods.set(key, kv.mod_revision);
    memory.versions.set(key, kv.version);
    memory.creates.set(key, kv.create_revision);
    memory.values.set(key, dec.decode(kv.value));
  }
  for (const key of keys) {
    if (seen.has(key)) continue;
    memory.mods.set(key, 0);
    memory.versions.set(key, 0);
    memory.creates.set(key, 0);
    memory.values.delete(key);
  }
}

/** Remembers the rows of every range in a transaction's response. */
export function rememberTxn(memory: KeyMemory, r: TxnResponse): void {
  for (const op of r.responses) {
    if (op.response_range) {
      for (const kv of op.response_range.kvs) remember(memory, [], [kv]);
    }
  }
}

/** What one random transaction may use. */
export interface TxnChoice {
  readonly keys: readonly string[];
  /** Unique to this transaction: its puts' values carry it. */
  readonly tag: string;
  /** The client's own live lease (0: none). */
  readonly lease: number;
  /** Any lease ever granted, perhaps ended (0: none). */
  readonly anyLease: number;
  readonly memory: KeyMemory;
}

function pick<T>(rng: SeededRng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

function compare(rng: SeededRng, c: TxnChoice): Partial<Compare> {
  const key = pick(rng, c.keys);
  const r = rng.float();
  const result = r < 0.55 ? "EQUAL" : r < 0.7 ? "NOT_EQUAL" : r < 0.85 ? "GREATER" : "LESS";
  const t = rng.float();
  const m = c.memory;
  const base = { key: enc.encode(key), result } as const;
  if (t < 0.3) return { ...base, target: "VERSION", version: m.versions.get(key) ?? rng.int(3) };
  if (t < 0.65) return { ...base, target: "MOD", mod_revision: m.mods.get(key) ?? 0 };
  if (t < 0.85) {
    return { ...base, target: "VALUE", value: enc.encode(m.values.get(key) ?? "none") };
  }
  if (t < 0.95) return { ...base, target: "CREATE", create_revision: m.creates.get(key) ?? 0 };
  return { ...base, target: "LEASE", lease: c.lease };
}

/**
 * A branch of up to `maxOps` operations: puts of distinct keys, deletes of keys it does not
 * put (one key, or every key when it puts none), ranges of one key or of all; in random order.
 */
function branch(rng: SeededRng, c: TxnChoice, maxOps: number, side: string): OpInput[] {
  const ops: OpInput[] = [];
  const keys = [...c.keys];
  for (let i = keys.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [keys[i], keys[j]] = [keys[j], keys[i]];
  }
  const count = rng.int(maxOps + 1);
  const puts = Math.min(keys.length, rng.int(3));
  let put = 0;
  let deleted = false;
  const first = c.keys[0];
  const end = String.fromCharCode(c.keys[c.keys.length - 1].charCodeAt(0) + 1);
  for (let i = 0; i < count; i++) {
    const r = rng.float();
    if (r < 0.5 && put < puts) {
      const l = rng.float();
      const lease = l < 0.45 ? c.lease : l < 0.55 ? c.anyLease : 0;
      ops.push({
        request_put: {
          key: enc.encode(keys[put]),
          value: enc.encode(`${c.tag}${side}${put};`),
          lease,
          prev_kv: rng.float() < 0.3,
        },
      });
      put++;
    } else if (r < 0.75 && !deleted) {
      deleted = true;
      // Deletes come after the puts were chosen: a key it puts is never deleted too.
      const spare = keys.slice(puts);
      if (puts === 0 && rng.float() < 0.3) {
        ops.push({
          request_delete_range: {
            key: enc.encode(first),
            range_end: enc.encode(end),
            prev_kv: rng.float() < 0.5,
          },
        });
      } else if (spare.length > 0) {
        ops.push({
          request_delete_range: { key: enc.encode(pick(rng, spare)), prev_kv: rng.float() < 0.5 },
        });
      }
    } else if (rng.float() < 0.5) {
      ops.push({ request_range: { key: enc.encode(first), range_end: enc.encode(end) } });
    } else {
      ops.push({ request_range: { key: enc.encode(pick(rng, c.keys)) } });
    }
  }
  return ops;
}

/** A random transaction, defaults filled as etcd's KV service receives it. */
export function randomTxn(rng: SeededRng, c: TxnChoice): TxnRequest {
  const compares = Array.from({ length: rng.int(3) }, () => compare(rng, c));
  return normalizeTxn({
    compare: compares,
    success: branch(rng, c, 3, "s"),
    failure: branch(rng, c, 2, "f"),
  });
}

/** etcd's Put of `key` attached to `lease`, as the KV service makes it: a one-op transaction. */
export function putTxn(key: string, value: string, lease: number): TxnRequest {
  return normalizeTxn({
    success: [{ request_put: { key: enc.encode(key), value: enc.encode(value), lease } }],
  });
}
