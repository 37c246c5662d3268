/**
 * Process-wide logging set-up on LogTape: every logger under the `mokv` category writes one
 * line per record to stderr (or to a sink a test provides), filtered by level.
 */
import { configureSync, type LogRecord, resetSync } from "@logtape/logtape";
import { formatJsonLine, formatTextLine, type LineFormat } from "./format.ts";

/** Minimum level written. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** `auto` writes text when stderr is a terminal, JSON otherwise. */
export type LogFormat = LineFormat | "auto";

/** Options of `configureLogging`. */
export interface LoggingOptions {
  /** Records below this level are dropped before they are formatted. */
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Written as `node_id` on every line (a per-node logger's own id wins). */
  readonly nodeId: string;
  /** Receives each formatted line (without newline) instead of stderr; for tests. */
  readonly sink?: (line: string) => void;
}

const encoder = new TextEncoder();

/** Writes the whole line to stderr synchronously, so nothing is lost on exit or crash. */
function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

/** Resolves `auto` to the format actually written. */
export function resolveFormat(format: LogFormat, isTerminal: boolean): LineFormat {
  switch (format) {
    case "json":
    case "text":
      return format;
    case "auto":
      return isTerminal ? "text" : "json";
    default: {
      const never: never = format;
      throw new Error(`unknown log format ${never}`);
    }
  }
}

/**
 * (Re)configures logging for the whole process, replacing any earlier configuration. After
 * it returns, loggers from `getLogger` write records at or above `level` as one line each.
 */
export function configureLogging(options: LoggingOptions): void {
  const isTerminal = options.sink === undefined && Deno.stderr.isTerminal();
  const format = resolveFormat(options.format, isTerminal);
  const write = options.sink ?? writeStderr;
  const nodeId = options.nodeId;
  const sink = format === "json"
    ? (record: LogRecord) => write(formatJsonLine(record, nodeId))
    : (record: LogRecord) => write(formatTextLine(record, nodeId));
  configureSync({
    reset: true,
    sinks: { out: sink },
    loggers: [
      { category: "mokv", sinks: ["out"], lowestLevel: toLogTapeLevel(options.level) },
      { category: ["logtape", "meta"], sinks: ["out"], lowestLevel: "warning" },
    ],
  });
}

/** Removes the logging configuration; loggers write nothing until configured again. */
export function resetLogging(): void {
  resetSync();
}

function toLogTapeLevel(level: LogLevel): "debug" | "info" | "warning" | "error" {
  return level === "warn" ? "warning" : level;
}
