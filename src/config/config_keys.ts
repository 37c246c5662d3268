/**
 * The table of every configuration key: its kind, its default as shown to operators, and one
 * line of documentation. It is the single list both the parser (unknown keys are errors) and
 * `mokv --help` read, so the two can never disagree.
 */

/** How a key's value is written: decides bare-flag handling and list splitting. */
export type KeyKind = "string" | "path" | "file" | "int" | "bool" | "list" | "enum";

/** One documented configuration key. */
export interface ConfigKeyDoc {
  /** kebab-case name, as used in flags (`--name`) and YAML files. */
  readonly name: string;
  readonly kind: KeyKind;
  /** The default, as text for `--help`. */
  readonly defaultText: string;
  /** One line saying what the key does, with its unit. */
  readonly doc: string;
}

/** Every key `parseConfig` accepts, in the order `--help` shows them. */
export const CONFIG_KEYS: readonly ConfigKeyDoc[] = [
  {
    name: "config-file",
    kind: "file",
    defaultText: "(none)",
    doc: "YAML file with any of these keys; flags override it (flag only)",
  },
  {
    name: "data-dir",
    kind: "path",
    defaultText: "~/.mokv/data/<node-name>",
    doc: "directory of the node's Deno KV file (Raft log and snapshots)",
  },
  { name: "node-name", kind: "string", defaultText: "(host name)", doc: "unique node id" },
  {
    name: "bind-addr",
    kind: "string",
    defaultText: "127.0.0.1:8401",
    doc: "host:port the UDP gossip binds to",
  },
  { name: "rpc-port", kind: "int", defaultText: "8400", doc: "TCP port serving gRPC and Raft" },
  {
    name: "max-connections",
    kind: "int",
    defaultText: "4096",
    doc: "open connections on rpc-port (gRPC and Raft); more are closed on arrival",
  },
  {
    name: "max-pending-handshakes",
    kind: "int",
    defaultText: "256",
    doc: "connections on rpc-port still in their TLS handshake; more are closed on arrival",
  },
  {
    name: "advertise-addr",
    kind: "string",
    defaultText: "(host of bind-addr)",
    doc: "host other nodes use to reach this one",
  },
  {
    name: "start-join-addrs",
    kind: "list",
    defaultText: "(none)",
    doc: "gossip host:port addresses to join, comma-separated or a YAML list",
  },
  {
    name: "bootstrap",
    kind: "bool",
    defaultText: "false",
    doc: "bootstrap a new cluster from this node alone",
  },
  {
    name: "bootstrap-expect",
    kind: "int",
    defaultText: "0",
    doc: "wait for this many members, then bootstrap them together (0 = off)",
  },
  {
    name: "acl-model-file",
    kind: "file",
    defaultText: "(none)",
    doc: "Casbin model; with acl-policy-file turns authorization on",
  },
  { name: "acl-policy-file", kind: "file", defaultText: "(none)", doc: "Casbin policy (CSV)" },
  {
    name: "server-tls-cert-file",
    kind: "file",
    defaultText: "(required)",
    doc: "server certificate (PEM); required unless insecure",
  },
  {
    name: "server-tls-key-file",
    kind: "file",
    defaultText: "(required)",
    doc: "server private key (PEM); required unless insecure",
  },
  {
    name: "server-tls-ca-file",
    kind: "file",
    defaultText: "(required)",
    doc: "CA that client certificates must chain to; required unless insecure",
  },
  {
    name: "peer-tls-cert-file",
    kind: "file",
    defaultText: "(server-tls-cert-file)",
    doc: "certificate this node shows to Raft peers",
  },
  {
    name: "peer-tls-key-file",
    kind: "file",
    defaultText: "(server-tls-key-file)",
    doc: "private key of peer-tls-cert-file",
  },
  {
    name: "peer-tls-ca-file",
    kind: "file",
    defaultText: "(server-tls-ca-file)",
    doc: "CA that peer certificates must chain to",
  },
  {
    name: "peer-allowed-cns",
    kind: "list",
    defaultText: "(CN of peer-tls-cert-file)",
    doc: "certificate Common Names accepted from Raft peers",
  },
  {
    name: "insecure",
    kind: "bool",
    defaultText: "false",
    doc: "plaintext gRPC and Raft for development; no TLS files allowed with it",
  },
  {
    name: "metrics-port",
    kind: "int",
    defaultText: "4000",
    doc: "TCP port of /metrics and /healthz (0 = off)",
  },
  {
    name: "gossip-key",
    kind: "string",
    defaultText: "(none)",
    doc: "base64 of 32 bytes: encrypts and authenticates gossip",
  },
  {
    name: "gossip-keyring",
    kind: "list",
    defaultText: "(none)",
    doc: "base64 keys accepted for gossip; the first encrypts unless gossip-key is set",
  },
  {
    name: "gossip-key-file",
    kind: "file",
    defaultText: "(none)",
    doc: "file holding the base64 gossip key (instead of gossip-key: keeps it out of argv)",
  },
  {
    name: "gossip-insecure",
    kind: "bool",
    defaultText: "false",
    doc: "allow unauthenticated gossip with TLS on (anyone reaching bind-addr can forge members)",
  },
  {
    name: "gossip-max-members",
    kind: "int",
    defaultText: "1024",
    doc: "most gossip members held; new ones beyond are ignored and counted",
  },
  { name: "log-level", kind: "enum", defaultText: "info", doc: "debug, info, warn or error" },
  {
    name: "log-format",
    kind: "enum",
    defaultText: "auto",
    doc: "json, text, or auto (text on a terminal, else json)",
  },
  { name: "max-key-bytes", kind: "int", defaultText: "4096", doc: "largest key, in bytes" },
  {
    name: "max-value-bytes",
    kind: "int",
    defaultText: "1048576",
    doc: "largest value (and Append result), in bytes; at most about 8 MiB (one Raft frame)",
  },
  {
    name: "quota-bytes",
    kind: "int",
    defaultText: "2147483648",
    doc: "data-size quota (keys + values), in bytes: above it writes that grow the data fail",
  },
  {
    name: "snapshot-entries",
    kind: "int",
    defaultText: "100000",
    doc:
      "most applied log entries between snapshots (one comes sooner once the log since the last outgrows the state and 64 MiB)",
  },
  {
    name: "memory-log-entries",
    kind: "int",
    defaultText: "5000",
    doc:
      "applied Raft log entries whose commands stay in memory; older ones are read back from the data file when a follower needs them",
  },
  { name: "raft-tick-ms", kind: "int", defaultText: "50", doc: "Raft tick, in milliseconds" },
  {
    name: "malloc-trim-interval-ms",
    kind: "int",
    defaultText: "10000",
    doc: "how often freed C-allocator memory goes back to the OS (glibc malloc_trim; 0 = never)",
  },
  {
    name: "raft-election-ticks",
    kind: "int",
    defaultText: "6",
    doc: "ticks without a leader before an election (randomized up to 2x)",
  },
  {
    name: "raft-heartbeat-ticks",
    kind: "int",
    defaultText: "1",
    doc: "ticks between leader heartbeats (< raft-election-ticks)",
  },
  {
    name: "gossip-tick-ms",
    kind: "int",
    defaultText: "100",
    doc: "gossip protocol tick, in milliseconds",
  },
  {
    name: "leave-on-terminate",
    kind: "bool",
    defaultText: "false",
    doc: "leave the cluster on SIGTERM instead of restarting as the same member",
  },
  {
    name: "dead-server-cleanup",
    kind: "bool",
    defaultText: "false",
    doc: "let the leader remove failed voters automatically",
  },
  {
    name: "dead-server-min-quorum",
    kind: "int",
    defaultText: "3",
    doc: "dead-server cleanup never leaves fewer voters than this",
  },
];

const BY_NAME = new Map(CONFIG_KEYS.map((k) => [k.name, k]));

/** The documented key named `name`, or undefined for an unknown key. */
export function findKey(name: string): ConfigKeyDoc | undefined {
  return BY_NAME.get(name);
}
