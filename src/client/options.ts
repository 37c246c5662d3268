/**
 * Settings of {@link MokvClient.connect} with their documented defaults, and loading of the TLS
 * material (PEM text or file paths; by default the root client of `${MOKV_CONFIG_DIR:-~/.mokv}`).
 */
import { InvalidArgumentError } from "../errors.ts";

/** PEM text or a path to a PEM file, for each of the three TLS inputs. */
export interface TlsOptions {
  /** CA certificate that signed the servers' certificates. */
  readonly ca: string;
  /** The client certificate (its CN is the subject the server authorizes). */
  readonly cert: string;
  /** The client certificate's private key. */
  readonly key: string;
  /** Name to verify in the server certificate instead of the dialled host. */
  readonly serverName?: string;
}

/** What {@link MokvClient.connect} accepts. */
export interface ConnectOptions {
  /** Seed addresses ("host:port"); the client learns the rest from GetServers. */
  readonly addrs: readonly string[];
  /** Mutual TLS material; default the root client certificates in the config dir. */
  readonly tls?: Partial<TlsOptions>;
  /** Plaintext (a development-mode cluster); ignores `tls`. */
  readonly insecure?: boolean;
  /** How often GetServers is asked again; default {@link DEFAULT_REFRESH_MS}. */
  readonly refreshMs?: number;
  /** Retries of one call on UNAVAILABLE before the error surfaces; default {@link DEFAULT_MAX_RETRIES}. */
  readonly maxRetries?: number;
  /** First retry delay, doubled per retry up to `maxBackoffMs`; default 20 ms. */
  readonly baseBackoffMs?: number;
  /** Longest retry delay; default 500 ms. */
  readonly maxBackoffMs?: number;
  /** Deadline of one attempt; default {@link DEFAULT_ATTEMPT_TIMEOUT_MS}. */
  readonly attemptTimeoutMs?: number;
  /** Prefix of the session ids of this client; default a random UUID. */
  readonly clientId?: string;
  /**
   * Most session ids used at once, which is the most writes in flight (a session carries one
   * write at a time, so concurrent writes each take their own id from this pool and wait when
   * it is exhausted); default {@link DEFAULT_MAX_SESSIONS}.
   */
  readonly maxSessions?: number;
  /** False disables client sessions (writes are then at-least-once on retry). Default true. */
  readonly exactlyOnce?: boolean;
  /** How long a node that failed with UNAVAILABLE is avoided; default 1000 ms. */
  readonly downMs?: number;
  /**
   * Own TCP connections instead of grpc-js's process-wide shared ones (the benchmark uses it
   * to open several connections per server). Default false.
   */
  readonly privateConnections?: boolean;
}

/** Default {@link ConnectOptions.refreshMs}. */
export const DEFAULT_REFRESH_MS = 5000;
/** Default {@link ConnectOptions.maxRetries}: with the default backoff, about 6 s of retrying. */
export const DEFAULT_MAX_RETRIES = 16;
/** Default {@link ConnectOptions.attemptTimeoutMs}. */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 5000;
/** Default {@link ConnectOptions.maxSessions}. */
export const DEFAULT_MAX_SESSIONS = 64;

/** Every setting resolved to a value. */
export interface ResolvedOptions {
  readonly addrs: readonly string[];
  readonly refreshMs: number;
  readonly maxRetries: number;
  readonly baseBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly attemptTimeoutMs: number;
  readonly clientId: string;
  readonly maxSessions: number;
  readonly exactlyOnce: boolean;
  readonly downMs: number;
  readonly privateConnections: boolean;
}

/** Applies defaults and validates; throws InvalidArgumentError naming the bad setting. */
export function resolveOptions(options: ConnectOptions): ResolvedOptions {
  if (options.addrs.length === 0) throw new InvalidArgumentError("addrs must not be empty");
  for (const addr of options.addrs) checkAddr(addr);
  const resolved: ResolvedOptions = {
    addrs: [...new Set(options.addrs)],
    refreshMs: options.refreshMs ?? DEFAULT_REFRESH_MS,
    maxRetries: options.maxRetries ?? DEFAULT_MAX_RETRIES,
    baseBackoffMs: options.baseBackoffMs ?? 20,
    maxBackoffMs: options.maxBackoffMs ?? 500,
    attemptTimeoutMs: options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS,
    clientId: options.clientId ?? crypto.randomUUID(),
    maxSessions: options.maxSessions ?? DEFAULT_MAX_SESSIONS,
    exactlyOnce: options.exactlyOnce ?? true,
    downMs: options.downMs ?? 1000,
    privateConnections: options.privateConnections ?? false,
  };
  const positive: [string, number][] = [
    ["refreshMs", resolved.refreshMs],
    ["attemptTimeoutMs", resolved.attemptTimeoutMs],
    ["maxSessions", resolved.maxSessions],
    ["baseBackoffMs", resolved.baseBackoffMs],
    ["maxBackoffMs", resolved.maxBackoffMs],
  ];
  for (const [name, value] of positive) {
    if (!(value > 0)) throw new InvalidArgumentError(`${name} must be > 0`);
  }
  if (!Number.isInteger(resolved.maxRetries) || resolved.maxRetries < 0) {
    throw new InvalidArgumentError("maxRetries must be an integer >= 0");
  }
  if (resolved.clientId === "") throw new InvalidArgumentError("clientId must not be empty");
  return resolved;
}

/** Throws InvalidArgumentError unless `addr` looks like "host:port". */
export function checkAddr(addr: string): void {
  const colon = addr.lastIndexOf(":");
  const port = Number(addr.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError(`address ${JSON.stringify(addr)} is not host:port`);
  }
}

/** The directory holding the default certificates: `$MOKV_CONFIG_DIR`, else `$HOME/.mokv`. */
export function configDir(): string {
  const dir = Deno.env.get("MOKV_CONFIG_DIR");
  if (dir) return dir;
  return `${Deno.env.get("HOME") ?? "."}/.mokv`;
}

/** PEM contents of the three TLS inputs. */
export interface TlsMaterialText {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  readonly serverName?: string;
}

/**
 * Reads the TLS material: each field is PEM text when it contains "-----BEGIN", else a path
 * (`~` and `$HOME` expand); a missing field falls back to ca.pem, root-client.pem and
 * root-client-key.pem in {@link configDir}. Throws InvalidArgumentError naming the file that
 * cannot be read.
 */
export async function loadTls(tls: Partial<TlsOptions> = {}): Promise<TlsMaterialText> {
  const dir = configDir();
  const read = async (what: string, value: string | undefined, fallback: string) => {
    const source = value ?? `${dir}/${fallback}`;
    if (source.includes("-----BEGIN")) return source;
    const path = expandHome(source);
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
      throw new InvalidArgumentError(`cannot read TLS ${what} ${path}: ${reason}`);
    }
  };
  return {
    ca: await read("CA", tls.ca, "ca.pem"),
    cert: await read("certificate", tls.cert, "root-client.pem"),
    key: await read("key", tls.key, "root-client-key.pem"),
    ...(tls.serverName ? { serverName: tls.serverName } : {}),
  };
}

function expandHome(path: string): string {
  const home = Deno.env.get("HOME") ?? "";
  if (path === "~" || path.startsWith("~/")) return home + path.slice(1);
  return path.replaceAll("$HOME", home);
}
