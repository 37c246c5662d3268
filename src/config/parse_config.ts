import { X509Certificate } from "node:crypto";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../errors.ts";
import { DEFAULT_QUOTA_BYTES } from "../kv/mod.ts";
import { MAX_FRAME_BYTES } from "../replication/_frame.ts";
import { findKey } from "./config_keys.ts";
import { parseFlags } from "./flags.ts";
import type {
  AclFiles,
  HostPort,
  LogFormat,
  LogLevel,
  NodeConfig,
  TlsConfig,
} from "./node_config.ts";
import {
  expandPath,
  toBool,
  toChoice,
  toHost,
  toHostPort,
  toInt,
  toKeyBytes,
  toList,
  toText,
} from "./values.ts";

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
const LOG_FORMATS: readonly LogFormat[] = ["json", "text", "auto"];
const MAX_INT = Number.MAX_SAFE_INTEGER;
/** Room in a peer frame for everything of a log entry but its key and values (headers, session). */
const FRAME_SLACK_BYTES = 64 * 1024;

/**
 * The largest `max-value-bytes` the peer transport can replicate with keys of `maxKeyBytes`:
 * a CompareAndSet entry carries two values and the key, and must fit one peer frame
 * (`MAX_FRAME_BYTES`); a larger entry would never reach the followers and stall every later
 * write.
 */
export function maxValueBytesLimit(maxKeyBytes: number): number {
  return Math.floor((MAX_FRAME_BYTES - FRAME_SLACK_BYTES - maxKeyBytes) / 2);
}

/** Size of one gossip key in bytes (AES-256). */
const GOSSIP_KEY_BYTES = 32;

/**
 * Builds the node's configuration from command-line flags and, when `--config-file` names one,
 * a YAML file (flags win over the file; defaults fill the rest). `env` supplies `HOME` for `~`
 * and `$HOME` expansion. Every value is validated; the first wrong, missing or unknown key
 * throws `ConfigError` whose one-line message names it. Files named by `*-file` keys must exist
 * and TLS certificates must parse.
 */
export async function parseConfig(
  args: readonly string[],
  env: Record<string, string | undefined>,
): Promise<NodeConfig> {
  const flags = parseFlags(args);
  const home = env.HOME;
  const cwd = Deno.cwd();
  const file = await readConfigFile(flags.get("config-file")?.at(-1), home, cwd);

  /** The raw value of `key`: the flag if given, else the file's value, else undefined. */
  const raw = (key: string): unknown => {
    const fromFlags = flags.get(key);
    if (fromFlags !== undefined) {
      return findKey(key)?.kind === "list"
        ? fromFlags.flatMap((v) => toList(key, v))
        : fromFlags.at(-1);
    }
    const fromFile = file.get(key);
    return fromFile === null ? undefined : fromFile;
  };
  const opt = <T>(key: string, convert: (key: string, value: unknown) => T): T | undefined => {
    const value = raw(key);
    return value === undefined ? undefined : convert(key, value);
  };
  const int = (key: string, min: number, max: number, fallback: number): number =>
    opt(key, (k, v) => toInt(k, v, min, max)) ?? fallback;
  const bool = (key: string): boolean => opt(key, toBool) ?? false;
  const path = (key: string): string | undefined => opt(key, (k, v) => expandPath(k, v, home, cwd));
  const existingFile = async (key: string): Promise<string | undefined> => {
    const p = path(key);
    if (p !== undefined) await mustBeFile(key, p);
    return p;
  };

  const nodeName = opt("node-name", toNodeName) ?? toNodeName("node-name", defaultHostname(env));
  const dataDir = path("data-dir") ?? defaultDataDir(home, nodeName);
  const bindAddr = opt("bind-addr", (k, v) => toHostPort(k, v, 0)) ??
    { host: "127.0.0.1", port: 8401 };
  const rpcPort = int("rpc-port", 1, 65535, 8400);
  const advertiseAddr = opt("advertise-addr", toHost) ?? defaultAdvertise(bindAddr, env);
  const startJoinAddrs: HostPort[] = (opt("start-join-addrs", toList) ?? []).map((a) =>
    toHostPort("start-join-addrs", a, 1)
  );
  const bootstrap = bool("bootstrap");
  const bootstrapExpect = int("bootstrap-expect", 0, 99, 0);
  if (bootstrap && bootstrapExpect > 0) {
    throw new ConfigError("bootstrap-expect", "cannot be combined with bootstrap: true");
  }

  const acl = aclFiles(
    await existingFile("acl-model-file"),
    await existingFile("acl-policy-file"),
  );
  const tls = await tlsConfig({
    insecure: bool("insecure"),
    serverCert: await existingFile("server-tls-cert-file"),
    serverKey: await existingFile("server-tls-key-file"),
    serverCa: await existingFile("server-tls-ca-file"),
    peerCert: await existingFile("peer-tls-cert-file"),
    peerKey: await existingFile("peer-tls-key-file"),
    peerCa: await existingFile("peer-tls-ca-file"),
    peerAllowedCns: opt("peer-allowed-cns", toList),
  });

  const metricsPort = int("metrics-port", 0, 65535, 4000);
  if (metricsPort !== 0 && metricsPort === rpcPort) {
    throw new ConfigError("metrics-port", `must differ from rpc-port (${rpcPort})`);
  }

  const gossipKeyFile = await existingFile("gossip-key-file");
  let gossipKey = opt("gossip-key", (k, v) => toText(k, v));
  let gossipKeyName = "gossip-key";
  if (gossipKeyFile !== undefined) {
    if (gossipKey !== undefined) {
      throw new ConfigError("gossip-key-file", "cannot be combined with gossip-key");
    }
    gossipKey = (await Deno.readTextFile(gossipKeyFile)).trim();
    gossipKeyName = "gossip-key-file";
  }
  const gossipKeyring = keyring(gossipKey, opt("gossip-keyring", toList) ?? [], gossipKeyName);
  const gossipInsecure = bool("gossip-insecure");
  if (gossipInsecure && gossipKeyring.length > 0) {
    throw new ConfigError("gossip-insecure", "cannot be combined with a gossip key");
  }

  const raftElectionTicks = int("raft-election-ticks", 2, 1000, 6);
  const raftHeartbeatTicks = int("raft-heartbeat-ticks", 1, 1000, 1);
  if (raftHeartbeatTicks >= raftElectionTicks) {
    throw new ConfigError(
      "raft-heartbeat-ticks",
      `must be less than raft-election-ticks (${raftElectionTicks}), got ${raftHeartbeatTicks}`,
    );
  }

  const maxKeyBytes = int("max-key-bytes", 1, 65536, 4096);
  const maxValueBytes = int("max-value-bytes", 1, MAX_INT, 1024 * 1024);
  const valueLimitBytes = maxValueBytesLimit(maxKeyBytes);
  if (maxValueBytes > valueLimitBytes) {
    throw new ConfigError(
      "max-value-bytes",
      `must be at most ${valueLimitBytes} (a CompareAndSet log entry carries two values and a key, and one Raft peer frame holds at most ${MAX_FRAME_BYTES} bytes), got ${maxValueBytes}`,
    );
  }

  return Object.freeze<NodeConfig>({
    dataDir,
    nodeName,
    bindAddr: Object.freeze(bindAddr),
    rpcPort,
    advertiseAddr,
    startJoinAddrs: Object.freeze(startJoinAddrs.map((a) => Object.freeze(a))),
    bootstrap,
    bootstrapExpect,
    acl,
    tls,
    metricsPort,
    gossipKeyring,
    gossipInsecure,
    gossipMaxMembers: int("gossip-max-members", 2, 1_000_000, 1024),
    logLevel: opt("log-level", (k, v) => toChoice(k, v, LOG_LEVELS)) ?? "info",
    logFormat: opt("log-format", (k, v) => toChoice(k, v, LOG_FORMATS)) ?? "auto",
    maxKeyBytes,
    maxValueBytes,
    quotaBytes: int("quota-bytes", 1, MAX_INT, DEFAULT_QUOTA_BYTES),
    maxConnections: int("max-connections", 1, 1_000_000, 4096),
    maxPendingHandshakes: int("max-pending-handshakes", 1, 100_000, 256),
    snapshotEntries: int("snapshot-entries", 1, MAX_INT, 100_000),
    memoryLogEntries: int("memory-log-entries", 0, MAX_INT, 5000),
    raftTickMs: int("raft-tick-ms", 1, 60_000, 50),
    mallocTrimIntervalMs: int("malloc-trim-interval-ms", 0, 3_600_000, 10_000),
    raftElectionTicks,
    raftHeartbeatTicks,
    gossipTickMs: int("gossip-tick-ms", 1, 60_000, 100),
    leaveOnTerminate: bool("leave-on-terminate"),
    deadServerCleanup: bool("dead-server-cleanup"),
    deadServerMinQuorum: int("dead-server-min-quorum", 1, MAX_INT, 3),
  });
}

/** Reads and checks the YAML config file: a mapping of known keys (or an empty document). */
async function readConfigFile(
  name: string | undefined,
  home: string | undefined,
  cwd: string,
): Promise<ReadonlyMap<string, unknown>> {
  if (name === undefined) return new Map();
  const file = expandPath("config-file", name, home, cwd);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    throw new ConfigError("config-file", `cannot read ${file}: ${firstLine(err)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError("config-file", `${file} is not valid YAML: ${firstLine(err)}`);
  }
  if (doc === null || doc === undefined) return new Map();
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError("config-file", `${file} must hold a mapping of key: value`);
  }
  const entries = Object.entries(doc as Record<string, unknown>);
  for (const [key] of entries) {
    if (findKey(key) === undefined) {
      throw new ConfigError(key, `unknown key in ${file} (see mokv --help)`);
    }
    if (key === "config-file") {
      throw new ConfigError(key, `is a flag only; it cannot appear in ${file}`);
    }
  }
  return new Map(entries);
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0].trim();
}

async function mustBeFile(key: string, path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    throw new ConfigError(key, `no such file: ${path}`);
  }
  if (!info.isFile) throw new ConfigError(key, `not a regular file: ${path}`);
}

function toNodeName(key: string, value: unknown): string {
  const name = toText(key, value);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) {
    throw new ConfigError(
      key,
      `must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit, got ${
        JSON.stringify(name)
      }`,
    );
  }
  return name;
}

function defaultHostname(env: Record<string, string | undefined>): string {
  try {
    return Deno.hostname();
  } catch {
    return env.HOSTNAME ?? "mokv";
  }
}

function defaultDataDir(home: string | undefined, nodeName: string): string {
  if (home === undefined || home === "") {
    throw new ConfigError("data-dir", "required when HOME is not set");
  }
  return `${home.replace(/\/+$/, "")}/.mokv/data/${nodeName}`;
}

function defaultAdvertise(bind: HostPort, env: Record<string, string | undefined>): string {
  const unspecified = bind.host === "0.0.0.0" || bind.host === "::";
  return unspecified ? defaultHostname(env) : bind.host;
}

function aclFiles(
  modelFile: string | undefined,
  policyFile: string | undefined,
): AclFiles | undefined {
  if (modelFile === undefined && policyFile === undefined) return undefined;
  if (modelFile === undefined) {
    throw new ConfigError("acl-model-file", "required when acl-policy-file is set");
  }
  if (policyFile === undefined) {
    throw new ConfigError("acl-policy-file", "required when acl-model-file is set");
  }
  return Object.freeze({ modelFile, policyFile });
}

interface TlsInputs {
  readonly insecure: boolean;
  readonly serverCert?: string;
  readonly serverKey?: string;
  readonly serverCa?: string;
  readonly peerCert?: string;
  readonly peerKey?: string;
  readonly peerCa?: string;
  readonly peerAllowedCns?: readonly string[];
}

async function tlsConfig(input: TlsInputs): Promise<TlsConfig> {
  const given: [string, unknown][] = [
    ["server-tls-cert-file", input.serverCert],
    ["server-tls-key-file", input.serverKey],
    ["server-tls-ca-file", input.serverCa],
    ["peer-tls-cert-file", input.peerCert],
    ["peer-tls-key-file", input.peerKey],
    ["peer-tls-ca-file", input.peerCa],
    ["peer-allowed-cns", input.peerAllowedCns],
  ];
  if (input.insecure) {
    const conflict = given.find(([, v]) => v !== undefined);
    if (conflict !== undefined) {
      throw new ConfigError(conflict[0], "cannot be combined with insecure: true");
    }
    return Object.freeze({ mode: "insecure" });
  }
  const required = (key: string, value: string | undefined): string => {
    if (value === undefined) {
      throw new ConfigError(key, "required (or set insecure: true for plaintext development)");
    }
    return value;
  };
  const server = Object.freeze({
    certFile: required("server-tls-cert-file", input.serverCert),
    keyFile: required("server-tls-key-file", input.serverKey),
    caFile: required("server-tls-ca-file", input.serverCa),
  });
  const peer = Object.freeze({
    certFile: input.peerCert ?? server.certFile,
    keyFile: input.peerKey ?? server.keyFile,
    caFile: input.peerCa ?? server.caFile,
  });
  const serverCn = await certificateCn("server-tls-cert-file", server.certFile);
  await certificateCn("server-tls-ca-file", server.caFile);
  const peerKey = input.peerCert === undefined ? "server-tls-cert-file" : "peer-tls-cert-file";
  const peerCn = peer.certFile === server.certFile
    ? serverCn
    : await certificateCn(peerKey, peer.certFile);
  if (peer.caFile !== server.caFile) await certificateCn("peer-tls-ca-file", peer.caFile);
  await mustHoldKey("server-tls-key-file", server.keyFile);
  if (peer.keyFile !== server.keyFile) await mustHoldKey("peer-tls-key-file", peer.keyFile);

  let peerAllowedCns = input.peerAllowedCns;
  if (peerAllowedCns === undefined) {
    if (peerCn === undefined) {
      throw new ConfigError(
        "peer-allowed-cns",
        "required: the peer certificate has no Common Name to default to",
      );
    }
    peerAllowedCns = [peerCn];
  } else if (peerAllowedCns.length === 0) {
    throw new ConfigError("peer-allowed-cns", "must name at least one Common Name");
  }
  return Object.freeze({
    mode: "mutual",
    server,
    peer,
    peerAllowedCns: Object.freeze([...peerAllowedCns]),
  });
}

/** Parses the PEM certificate in `path`; returns its subject Common Name, if it has one. */
async function certificateCn(key: string, path: string): Promise<string | undefined> {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await Deno.readTextFile(path));
  } catch (err) {
    throw new ConfigError(key, `${path} is not a PEM certificate: ${firstLine(err)}`);
  }
  for (const line of cert.subject.split("\n")) {
    if (line.startsWith("CN=")) return line.slice(3);
  }
  return undefined;
}

async function mustHoldKey(key: string, path: string): Promise<void> {
  const text = await Deno.readTextFile(path);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    throw new ConfigError(key, `${path} holds no PEM private key`);
  }
}

function keyring(
  primary: string | undefined,
  rest: readonly string[],
  primaryKey = "gossip-key",
): readonly Uint8Array[] {
  const texts = primary === undefined ? [...rest] : [primary, ...rest.filter((k) => k !== primary)];
  return Object.freeze(
    texts.map((text) =>
      toKeyBytes(text === primary ? primaryKey : "gossip-keyring", text, GOSSIP_KEY_BYTES)
    ),
  );
}
