import { CONFIG_KEYS, type KeyKind } from "./config_keys.ts";

const PLACEHOLDER: Record<KeyKind, string> = {
  string: " <text>",
  path: " <dir>",
  file: " <file>",
  int: " <n>",
  bool: "",
  list: " <a,b,...>",
  enum: " <choice>",
};

/**
 * The text `mokv --help` prints for the agent: every configuration key with its default and
 * one line of documentation, generated from the same table the parser uses.
 */
export function configHelp(): string {
  const rows = CONFIG_KEYS.map((k) => ({
    left: `  --${k.name}${PLACEHOLDER[k.kind]}`,
    right: `${k.doc} [default: ${k.defaultText}]`,
  }));
  const width = Math.max(...rows.map((r) => r.left.length)) + 2;
  return [
    "configuration (flags, or the same keys in a YAML --config-file; flags win):",
    ...rows.map((r) => r.left.padEnd(width) + r.right),
    "",
    "Boolean flags take no value or true/false (--bootstrap, --bootstrap=false).",
    "Lists are comma-separated in flags. $HOME and ~ expand in paths.",
  ].join("\n");
}
