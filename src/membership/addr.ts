/** Parsing and formatting of `"host:port"` gossip addresses. */
import { ConfigError } from "../errors.ts";

/** A host and port split out of a `"host:port"` address. */
export interface HostPort {
  readonly hostname: string;
  readonly port: number;
}

/**
 * Splits `"host:port"` (IPv6 as `"[::1]:port"`); throws {@link ConfigError} naming `configKey`
 * when there is no host or the port is not in [0, 65535].
 */
export function parseHostPort(addr: string, configKey = "bind-addr"): HostPort {
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(addr.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ConfigError(configKey, `${JSON.stringify(addr)} is not host:port`);
  }
  return { hostname: m[1] ?? m[2], port };
}

/** Formats a host and port as a gossip address, bracketing IPv6 hosts. */
export function formatHostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}
