/**
 * What an etcd request reads and writes, as Casbin decisions: the certificate CN is the user
 * (etcd's `--client-cert-auth`), the object a key or a key pattern, the action `consume`
 * (reads, compares included) or `produce` (writes). A range is authorized as the prefix
 * pattern that covers it (`p*`), so a subject needs a policy covering the whole range, never
 * only the keys that happen to be in it; a range with no common prefix needs `*`.
 */
import { keyString, type TxnRequest } from "../kv/mod.ts";

/** One decision: may the subject do `action` on `object`? */
export interface EtcdAuthz {
  readonly action: "produce" | "consume" | "admin";
  readonly object: string;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The longest UTF-8 prefix of `bytes`' first `n` bytes that ends on a character boundary. */
function prefixString(bytes: Uint8Array, n: number): string {
  for (let len = n; len >= 0; len--) {
    try {
      return utf8.decode(bytes.subarray(0, len));
    } catch {
      continue;
    }
  }
  return "";
}

/** etcd's prefix end: the first key after every key starting with `key` (clientv3's GetPrefixRangeEnd). */
export function prefixEnd(key: Uint8Array): Uint8Array {
  // A copy: a Buffer's slice() is a view, and the request's key must stay as it is.
  const end = new Uint8Array(key);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return new Uint8Array([0]); // every byte 0xff: no upper bound
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The Casbin object of a key range (key, range_end as etcd gives them). */
export function rangeObject(key: Uint8Array, rangeEnd: Uint8Array): string {
  if (rangeEnd.length === 0) return keyString(key);
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) return "*";
  // A prefix range (how clients ask for --prefix): exactly the keys starting with key.
  if (sameBytes(rangeEnd, prefixEnd(key))) return `${prefixString(key, key.length)}*`;
  // Otherwise every key in [key, end) starts with the common prefix of key and end.
  let n = 0;
  while (n < key.length && n < rangeEnd.length && key[n] === rangeEnd[n]) n++;
  return `${prefixString(key, n)}*`;
}

/** Every decision a transaction needs: compares and ranges read, puts and deletes write. */
export function txnAuthz(txn: TxnRequest): EtcdAuthz[] {
  const out: EtcdAuthz[] = [];
  for (const c of txn.compare) {
    out.push({ action: "consume", object: rangeObject(c.key, c.range_end) });
  }
  // Both branches: which one runs depends on state, and denials must not.
  for (const op of [...txn.success, ...txn.failure]) {
    if (op.request_range) {
      out.push({
        action: "consume",
        object: rangeObject(op.request_range.key, op.request_range.range_end),
      });
    } else if (op.request_put) {
      out.push({ action: "produce", object: keyString(op.request_put.key) });
    } else if (op.request_delete_range) {
      out.push({
        action: "produce",
        object: rangeObject(op.request_delete_range.key, op.request_delete_range.range_end),
      });
    } else if (op.request_txn) {
      out.push(...txnAuthz(op.request_txn));
    }
  }
  return out;
}
