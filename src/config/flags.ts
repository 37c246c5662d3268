import { ConfigError } from "../errors.ts";
import { findKey } from "./config_keys.ts";

/** Flag values by key name, as written; list keys keep every occurrence in order. */
export type FlagValues = ReadonlyMap<string, readonly string[]>;

/**
 * Splits command-line arguments into key values. Accepts `--key value`, `--key=value`, and a
 * bare `--key` for boolean keys (meaning true; a following `true`/`false` is taken as its
 * value). Unknown keys, positional arguments and missing values throw `ConfigError`.
 */
export function parseFlags(args: readonly string[]): FlagValues {
  const out = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith("--") || arg === "--") {
      throw new ConfigError(arg, "unexpected argument; flags are written --key value");
    }
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const doc = findKey(name);
    if (doc === undefined) throw new ConfigError(name, "unknown key (see mokv --help)");
    let value: string;
    if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else if (doc.kind === "bool") {
      const next = args[i + 1]?.toLowerCase();
      if (next === "true" || next === "false") {
        value = args[++i];
      } else {
        value = "true";
      }
    } else {
      const next = args[i + 1];
      if (next === undefined || next.startsWith("--")) {
        throw new ConfigError(name, "missing value");
      }
      value = next;
      i++;
    }
    const list = out.get(name);
    if (list !== undefined && doc.kind === "list") list.push(value);
    else out.set(name, [value]);
  }
  return out;
}
