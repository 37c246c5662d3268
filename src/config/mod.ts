/**
 * Node configuration: `parseConfig` turns flags and an optional YAML file into one validated,
 * readonly `NodeConfig`; `configHelp` documents every key for `mokv --help`.
 */
export { maxValueBytesLimit, parseConfig } from "./parse_config.ts";
export { configHelp } from "./help.ts";
export { CONFIG_KEYS } from "./config_keys.ts";
export type { ConfigKeyDoc, KeyKind } from "./config_keys.ts";
export type {
  AclFiles,
  HostPort,
  LogFormat,
  LogLevel,
  NodeConfig,
  TlsConfig,
  TlsFiles,
} from "./node_config.ts";
