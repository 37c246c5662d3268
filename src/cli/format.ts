/** Output helpers: values as text or JSON-safe fields, and aligned tables. */

const strict = new TextDecoder("utf-8", { fatal: true });

/** A value for JSON: `{value}` when it is UTF-8 text, else `{value_base64}`. */
export function jsonValue(bytes: Uint8Array): { value: string } | { value_base64: string } {
  try {
    return { value: strict.decode(bytes) };
  } catch {
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return { value_base64: btoa(binary) };
  }
}

/** Rows aligned in columns under a header, one line each. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** Writes one JSON document and a newline. */
export function json(value: unknown): string {
  return JSON.stringify(value) + "\n";
}
