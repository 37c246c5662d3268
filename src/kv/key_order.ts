/**
 * The one key order of mokv: Unicode code point order, which equals the byte order of the keys'
 * UTF-8 encodings (what Go clients and etcd compare), not JavaScript's UTF-16 `<`.
 */

/**
 * Compares two keys by code point (= UTF-8 byte order). Returns a negative number, 0 or a
 * positive number. Differs from `a < b` only where a surrogate pair meets U+E000..U+FFFF.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) return rank(x) - rank(y);
      return x - y;
    }
  }
  return a.length - b.length;
}

/** Surrogates (U+D800..U+DFFF) encode code points above U+FFFF, so they sort after U+E000..U+FFFF. */
function rank(unit: number): number {
  return unit >= 0xe000 ? unit - 0x800 : unit + 0x2000;
}
