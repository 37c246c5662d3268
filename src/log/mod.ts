/**
 * Logging: `configureLogging` once at start-up, `getLogger(component)` everywhere. Lines are
 * JSON objects on stderr (text on a terminal with format `auto`), each with `time`, `level`,
 * `node_id`, `component`, `message` and the record's properties.
 */
export {
  configureLogging,
  type LogFormat,
  type LoggingOptions,
  type LogLevel,
  resetLogging,
} from "./configure.ts";
export { type ComponentLogger, getLogger, type LogProperties } from "./logger.ts";
export { formatJsonLine, formatTextLine, type LineFormat } from "./format.ts";
