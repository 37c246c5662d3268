/**
 * etcd's numeric member and cluster ids for mokv's named nodes. A member's id is a hash of
 * its node name, the same on every node and across restarts, kept below 2^53 so it survives
 * JavaScript numbers and int64/uint64 fields alike.
 */

/** FNV-1a, 64-bit, folded to 52 bits (never 0). */
function hash52(text: string): number {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(text)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  const folded = Number((h ^ (h >> 52n)) & 0xfffffffffffffn);
  return folded === 0 ? 1 : folded;
}

/** The member id etcd clients see for node `name`. */
export function memberId(name: string): number {
  return hash52(`member:${name}`);
}

/**
 * The cluster id in every header. mokv has no cluster token: every mokv cluster reports the
 * same id (clients only display it).
 */
export const CLUSTER_ID = hash52("mokv");

/** The node name whose member id is `id`, among `names`; undefined when none. */
export function nameOfMember(id: number, names: readonly string[]): string | undefined {
  return names.find((n) => memberId(n) === id);
}
