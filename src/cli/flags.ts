/**
 * Flags shared by every command (`--addr`, `--addrs`, TLS, `--json`, `--help`), typed readers
 * of parsed flags, duration parsing, and the client a command connects with.
 */
import { parseArgs } from "node:util";
import { checkAddr, type ConnectOptions, MokvClient } from "../client/mod.ts";
import { InvalidArgumentError } from "../errors.ts";
import { UsageError } from "./exit_codes.ts";

/** A flag as `node:util` parseArgs declares it. */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
  /** One line for --help, with the default if any. */
  readonly doc: string;
  /** Placeholder of a string flag's value in --help. */
  readonly arg?: string;
}

/** Flags by name (without the dashes). */
export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

/** Parsed flag values. */
export type FlagValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** The default address when neither --addr nor --addrs nor $MOKV_ADDR is given. */
export const DEFAULT_ADDR = "127.0.0.1:8400";

/** Flags every command accepts. */
export const GLOBAL_FLAGS: FlagSpecs = {
  addr: {
    type: "string",
    multiple: true,
    arg: "HOST:PORT",
    doc: `a server address; repeatable (default $MOKV_ADDR or ${DEFAULT_ADDR})`,
  },
  addrs: { type: "string", arg: "A,B,...", doc: "comma-separated server addresses" },
  ca: { type: "string", arg: "FILE", doc: "CA certificate (default $MOKV_CONFIG_DIR/ca.pem)" },
  cert: {
    type: "string",
    arg: "FILE",
    doc: "client certificate (default $MOKV_CONFIG_DIR/root-client.pem)",
  },
  key: {
    type: "string",
    arg: "FILE",
    doc: "client key (default $MOKV_CONFIG_DIR/root-client-key.pem)",
  },
  "server-name": { type: "string", arg: "NAME", doc: "name to verify in server certificates" },
  insecure: { type: "boolean", doc: "plaintext (a development-mode cluster)" },
  "no-discover": {
    type: "boolean",
    doc: "talk only to --addr (no GetServers discovery; e.g. through a port-forward)",
  },
  "timeout-ms": { type: "string", arg: "MS", doc: "deadline of one attempt (default 5000)" },
  json: { type: "boolean", doc: "print JSON on stdout" },
  help: { type: "boolean", short: "h", doc: "show this help" },
};

/** Parses `args` against the global flags plus `specs`; throws UsageError on unknown flags. */
export function parseFlags(
  args: readonly string[],
  specs: FlagSpecs,
): { values: FlagValues; positionals: string[] } {
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  for (const [name, spec] of Object.entries({ ...GLOBAL_FLAGS, ...specs })) {
    options[name] = {
      type: spec.type,
      ...(spec.short ? { short: spec.short } : {}),
      ...(spec.multiple ? { multiple: true } : {}),
    };
  }
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options,
      allowPositionals: true,
      strict: true,
    });
    return { values: values as FlagValues, positionals };
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** A string flag, or undefined. */
export function stringFlag(values: FlagValues, name: string): string | undefined {
  const v = values[name];
  if (Array.isArray(v)) return v.length > 0 ? String(v[v.length - 1]) : undefined;
  return typeof v === "string" ? v : undefined;
}

/** A boolean flag (false when absent). */
export function boolFlag(values: FlagValues, name: string): boolean {
  return values[name] === true;
}

/** An integer flag within [min, max]; `fallback` when absent. Throws UsageError otherwise. */
export function intFlag(
  values: FlagValues,
  name: string,
  fallback: number,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const text = stringFlag(values, name);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${text}"`);
  }
  return n;
}

/** A number flag within [min, max]; `fallback` when absent. */
export function numberFlag(
  values: FlagValues,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const text = stringFlag(values, name);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max || text.trim() === "") {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, got "${text}"`);
  }
  return n;
}

/** One of `choices`; `fallback` when absent. */
export function choiceFlag<T extends string>(
  values: FlagValues,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const text = stringFlag(values, name);
  if (text === undefined) return fallback;
  if (!(choices as readonly string[]).includes(text)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${text}"`);
  }
  return text as T;
}

const UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses "250ms", "1.5s", "2m", "1h"; a bare number is in `bareUnit`. Throws UsageError naming
 * the flag.
 */
export function parseDurationMs(text: string, flag: string, bareUnit: "ms" | "s"): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new UsageError(`--${flag} must be a duration like 500ms, 10s or 2m, got "${text}"`);
  return Math.round(Number(m[1]) * UNITS_MS[m[2] ?? bareUnit]);
}

/** The server addresses the flags name (--addrs, then --addr, then $MOKV_ADDR, then the default). */
export function addrsOf(values: FlagValues): string[] {
  const list: string[] = [];
  const many = stringFlag(values, "addrs");
  if (many !== undefined) list.push(...many.split(",").map((a) => a.trim()).filter((a) => a));
  const one = values.addr;
  if (Array.isArray(one)) list.push(...one.map(String));
  if (list.length === 0) {
    const env = Deno.env.get("MOKV_ADDR");
    list.push(...(env ? env.split(",").map((a) => a.trim()).filter((a) => a) : [DEFAULT_ADDR]));
  }
  for (const addr of list) {
    try {
      checkAddr(addr);
    } catch (error) {
      throw new UsageError(error instanceof InvalidArgumentError ? error.message : String(error));
    }
  }
  return [...new Set(list)];
}

/** Client settings from the global flags (not yet connected). */
export function connectOptionsOf(values: FlagValues): ConnectOptions & { discover: boolean } {
  const ca = stringFlag(values, "ca");
  const cert = stringFlag(values, "cert");
  const key = stringFlag(values, "key");
  const serverName = stringFlag(values, "server-name");
  return {
    addrs: addrsOf(values),
    insecure: boolFlag(values, "insecure"),
    discover: !boolFlag(values, "no-discover"),
    attemptTimeoutMs: intFlag(values, "timeout-ms", 5000, 1),
    tls: {
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
      ...(serverName ? { serverName } : {}),
    },
  };
}

/** Connects a client as the global flags say. */
export function connectFromFlags(
  values: FlagValues,
  extra: Partial<ConnectOptions> & { discover?: boolean } = {},
): Promise<MokvClient> {
  return MokvClient.connect({ ...connectOptionsOf(values), ...extra });
}
