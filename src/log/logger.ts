/** Small typed loggers, one per component, on top of LogTape's category loggers. */
import { getLogger as getLogTapeLogger, type Logger } from "@logtape/logtape";

/** Structured fields attached to one record. */
export type LogProperties = Readonly<Record<string, unknown>>;

/**
 * A component's logger. Messages are plain text (a `{name}` in the message is replaced by
 * the property `name`); properties become fields of the line. Records below the configured
 * level cost one check and nothing else.
 */
export interface ComponentLogger {
  debug(message: string, properties?: LogProperties): void;
  info(message: string, properties?: LogProperties): void;
  warn(message: string, properties?: LogProperties): void;
  error(message: string, properties?: LogProperties): void;
  /** A logger that adds `properties` to every record it writes. */
  with(properties: LogProperties): ComponentLogger;
  /** True when a record at `level` would be written; guard expensive properties with it. */
  isEnabled(level: "debug" | "info" | "warn" | "error"): boolean;
}

/** Shared empty properties, so a call without properties allocates nothing. */
const NONE: LogProperties = Object.freeze({});

class TapeLogger implements ComponentLogger {
  constructor(private readonly logger: Logger) {}

  debug(message: string, properties: LogProperties = NONE): void {
    this.logger.debug(message, properties as Record<string, unknown>);
  }
  info(message: string, properties: LogProperties = NONE): void {
    this.logger.info(message, properties as Record<string, unknown>);
  }
  warn(message: string, properties: LogProperties = NONE): void {
    this.logger.warn(message, properties as Record<string, unknown>);
  }
  error(message: string, properties: LogProperties = NONE): void {
    this.logger.error(message, properties as Record<string, unknown>);
  }
  with(properties: LogProperties): ComponentLogger {
    return new TapeLogger(this.logger.with({ ...properties }));
  }
  isEnabled(level: "debug" | "info" | "warn" | "error"): boolean {
    return this.logger.isEnabledFor(level === "warn" ? "warning" : level);
  }
}

/**
 * The logger of `component` (e.g. "raft", "gossip", "server"). Pass `nodeId` when several
 * nodes share one process (tests), so each line names its own node.
 */
export function getLogger(component: string, nodeId?: string): ComponentLogger {
  const logger = getLogTapeLogger(["mokv", ...component.split(".")]);
  return new TapeLogger(nodeId === undefined ? logger : logger.with({ node_id: nodeId }));
}
