import { ConfigError } from "../errors.ts";
import type { HostPort } from "./node_config.ts";

/**
 * Converters from a raw value (a flag's text or whatever YAML produced) to a typed value.
 * Each throws `ConfigError` naming the key and quoting the bad value, so start-up fails with
 * one clear line.
 */

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A non-empty string; YAML numbers are accepted as their decimal text. */
export function toText(key: string, value: unknown): string {
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (typeof value !== "string") throw new ConfigError(key, `must be a string, got ${show(value)}`);
  const text = value.trim();
  if (text === "") throw new ConfigError(key, "must not be empty");
  return text;
}

/** An integer in `min..max` (inclusive), from a YAML number or decimal text. */
export function toInt(key: string, value: unknown, min: number, max: number): number {
  let n = Number.NaN;
  if (typeof value === "number") n = value;
  else if (typeof value === "string" && /^\s*[+-]?\d+\s*$/.test(value)) n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in ${min}..${max}`;
    throw new ConfigError(key, `must be an integer ${range}, got ${show(value)}`);
  }
  return n;
}

/** `true` or `false`, from a YAML boolean or the words true/false (any case). */
export function toBool(key: string, value: unknown): boolean {
  if (typeof value === "boolean") return value;
  if (typeof value === "string") {
    const word = value.trim().toLowerCase();
    if (word === "true") return true;
    if (word === "false") return false;
  }
  throw new ConfigError(key, `must be true or false, got ${show(value)}`);
}

/** One of `choices`, case-insensitive, returned in its canonical spelling. */
export function toChoice<T extends string>(key: string, value: unknown, choices: readonly T[]): T {
  if (typeof value === "string") {
    const word = value.trim().toLowerCase();
    const found = choices.find((c) => c === word);
    if (found !== undefined) return found;
  }
  throw new ConfigError(key, `must be one of ${choices.join(", ")}, got ${show(value)}`);
}

/**
 * A list of non-empty strings: a YAML sequence of scalars, or text split on commas (flags may
 * repeat; each occurrence is split). Blank items are dropped.
 */
export function toList(key: string, value: unknown): string[] {
  const items: unknown[] = Array.isArray(value) ? value : [value];
  const out: string[] = [];
  for (const item of items) {
    if (Array.isArray(value) && typeof item === "number") {
      out.push(String(item));
      continue;
    }
    if (typeof item !== "string") {
      throw new ConfigError(key, `must be a list of strings, got ${show(value)}`);
    }
    for (const part of item.split(",")) {
      const trimmed = part.trim();
      if (trimmed !== "") out.push(trimmed);
    }
  }
  return out;
}

const HOST = /^[A-Za-z0-9._%:-]+$/;

/** A host name or IP address; IPv6 may be written in brackets, which are removed. */
export function toHost(key: string, value: unknown): string {
  const text = toText(key, value);
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (!HOST.test(host)) throw new ConfigError(key, `must be a host name or IP, got ${show(value)}`);
  return host;
}

/**
 * `host:port` (IPv6 as `[::1]:port`) with the port in `minPort..65535`. The host must be
 * given; the port is checked like `toInt`.
 */
export function toHostPort(key: string, value: unknown, minPort: number): HostPort {
  const text = toText(key, value);
  const match = /^(\[[^\]]+\]|[^:]+):([^:]*)$/.exec(text);
  if (match === null) throw new ConfigError(key, `must be host:port, got ${show(value)}`);
  const host = toHost(key, match[1]);
  const port = Number(match[2]);
  if (!/^\d+$/.test(match[2]) || port < minPort || port > 65535) {
    throw new ConfigError(key, `port must be an integer in ${minPort}..65535, got ${show(value)}`);
  }
  return { host, port };
}

/** Decodes a base64 key that must be exactly `sizeBytes` long. */
export function toKeyBytes(key: string, value: unknown, sizeBytes: number): Uint8Array {
  const text = toText(key, value);
  let bytes: Uint8Array;
  try {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new Error("not base64");
    bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new ConfigError(key, `must be base64, got ${show(value)}`);
  }
  if (bytes.length !== sizeBytes) {
    throw new ConfigError(key, `must decode to ${sizeBytes} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/**
 * Expands a leading `~` and every `$HOME`/`${HOME}`, then makes the path absolute against
 * `cwd`. Fails when expansion needs HOME and it is unset.
 */
export function expandPath(
  key: string,
  value: unknown,
  home: string | undefined,
  cwd: string,
): string {
  const text = toText(key, value);
  const needsHome = text === "~" || text.startsWith("~/") || /\$(HOME\b|\{HOME\})/.test(text);
  if (needsHome && (home === undefined || home === "")) {
    throw new ConfigError(key, `cannot expand ${show(text)}: HOME is not set`);
  }
  let path = text.replace(/\$\{HOME\}|\$HOME\b/g, home ?? "");
  if (path === "~") path = home ?? "";
  else if (path.startsWith("~/")) path = `${home}${path.slice(1)}`;
  if (!path.startsWith("/")) path = `${cwd.replace(/\/+$/, "")}/${path}`;
  return normalize(path);
}

function normalize(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}
