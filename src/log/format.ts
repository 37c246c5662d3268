/**
 * Turns one log record into one line of text: a JSON object for machines, or a short
 * human-readable line for terminals. Pure functions, so the formats are tested without I/O.
 */
import type { LogRecord } from "@logtape/logtape";

/** The line formats a node can write. */
export type LineFormat = "json" | "text";

/** Fields every JSON line carries; properties with the same names get a `prop_` prefix. */
const RESERVED = new Set(["time", "level", "node_id", "component", "message"]);

/** The level names mokv prints (LogTape's `warning` is printed `warn`). */
export function levelName(level: LogRecord["level"]): string {
  return level === "warning" ? "warn" : level;
}

/** The component of a record: the category below the `mokv` root, joined with dots. */
export function componentOf(record: LogRecord): string {
  const parts = record.category[0] === "mokv" ? record.category.slice(1) : record.category;
  return parts.length === 0 ? "mokv" : parts.join(".");
}

/** The message with its `{placeholders}` replaced by their values. */
export function messageText(record: LogRecord): string {
  let text = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    text += i % 2 === 0 ? String(part) : typeof part === "string" ? part : stringify(part);
  }
  return text;
}

/** JSON.stringify that also handles Error, bigint, typed arrays, Map and Set, and cycles. */
export function stringify(value: unknown): string {
  const seen = new WeakSet<object>();
  return JSON.stringify(value, (_key, v: unknown) => toJsonValue(v, seen)) ?? "null";
}

function toJsonValue(v: unknown, seen: WeakSet<object>): unknown {
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "function" || typeof v === "symbol") return String(v);
  if (v === null || typeof v !== "object") return v;
  if (v instanceof Error) {
    const out: Record<string, unknown> = { name: v.name, message: v.message };
    if (v.stack !== undefined) out.stack = v.stack;
    if (v.cause !== undefined) out.cause = v.cause;
    return out;
  }
  if (ArrayBuffer.isView(v)) return { bytes: v.byteLength };
  if (v instanceof Map) return Object.fromEntries(v);
  if (v instanceof Set) return [...v];
  if (seen.has(v)) return "[circular]";
  seen.add(v);
  return v;
}

/** The record's properties without the node id, which every line carries on its own. */
function ownProperties(record: LogRecord): [string, unknown][] {
  return Object.entries(record.properties).filter(([key]) => key !== "node_id");
}

/**
 * One JSON object (no newline) with `time` (ISO 8601), `level`, `node_id`, `component`,
 * `message`, then every property. A record's `node_id` property (from a per-node logger)
 * wins over `nodeId`.
 */
export function formatJsonLine(record: LogRecord, nodeId: string): string {
  const line: Record<string, unknown> = {
    time: new Date(record.timestamp).toISOString(),
    level: levelName(record.level),
    node_id: nodeIdOf(record, nodeId),
    component: componentOf(record),
    message: messageText(record),
  };
  for (const [key, value] of ownProperties(record)) {
    line[RESERVED.has(key) ? `prop_${key}` : key] = value;
  }
  return stringify(line);
}

/** One human-readable line: `time LEVEL node component: message key=value ...`. */
export function formatTextLine(record: LogRecord, nodeId: string): string {
  const props = ownProperties(record).map(([key, value]) => {
    const text = typeof value === "string" ? value : stringify(value);
    return `${key}=${/^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)}`;
  });
  return [
    new Date(record.timestamp).toISOString(),
    levelName(record.level).toUpperCase().padEnd(5),
    nodeIdOf(record, nodeId),
    `${componentOf(record)}:`,
    messageText(record),
    ...props,
  ].join(" ");
}

function nodeIdOf(record: LogRecord, fallback: string): string {
  const id = record.properties.node_id;
  return typeof id === "string" ? id : fallback;
}
