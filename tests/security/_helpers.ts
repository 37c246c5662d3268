/**
 * Plumbing for the security tests: gRPC clients with any identity (or none), status codes of
 * failed calls, the JSON log lines of a node, Prometheus counters, and policy files.
 */
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { AdminClient, KvClient } from "../../src/api/mod.ts";
import type {
  AdminClient as AdminClientType,
  GetResponse,
  KvClient as KvClientType,
  ListRequest,
  MessageInput,
} from "../../src/api/messages.ts";
import type { CertPair } from "../helpers/certs.ts";
import type { TestCluster, TestNode } from "../helpers/cluster.ts";

/** How a client authenticates: a CA to check the server plus an optional client certificate. */
export type ClientIdentity =
  | { readonly kind: "tls"; readonly ca: string; readonly client?: CertPair }
  | { readonly kind: "plaintext" };

/** Deadline of every call made by these helpers. */
export const CALL_TIMEOUT_MS = 5000;

/** The outcome of a call: OK, or the status code and details of its error. */
export interface CallOutcome {
  readonly code: grpc.status;
  readonly details: string;
}

/** Channel credentials for `identity` (files are read now). */
export function credentialsFor(identity: ClientIdentity): grpc.ChannelCredentials {
  switch (identity.kind) {
    case "plaintext":
      return grpc.credentials.createInsecure();
    case "tls": {
      const ca = Buffer.from(Deno.readFileSync(identity.ca));
      if (!identity.client) return grpc.credentials.createSsl(ca);
      return grpc.credentials.createSsl(
        ca,
        Buffer.from(Deno.readFileSync(identity.client.key)),
        Buffer.from(Deno.readFileSync(identity.client.cert)),
      );
    }
    default: {
      const never: never = identity;
      throw new Error(`unknown identity ${JSON.stringify(never)}`);
    }
  }
}

const CLIENT_OPTIONS: grpc.ClientOptions = {
  "grpc.ssl_target_name_override": "localhost",
  // A refused handshake must fail the call, not wait for the deadline in reconnect backoff.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 500,
};

/** A KV and an Admin client for one node and one identity; `close()` closes both. */
export interface Clients {
  readonly kv: KvClientType;
  readonly admin: AdminClientType;
  close(): void;
}

/** Opens clients to `addr` ("127.0.0.1:port") authenticating as `identity`. */
export function clientsFor(addr: string, identity: ClientIdentity): Clients {
  const kv = new KvClient(addr, credentialsFor(identity), CLIENT_OPTIONS);
  const admin = new AdminClient(addr, credentialsFor(identity), CLIENT_OPTIONS);
  return {
    kv,
    admin,
    close() {
      kv.close();
      admin.close();
    },
  };
}

/** Call options with the standard deadline. */
export function deadline(): Partial<grpc.CallOptions> {
  return { deadline: Date.now() + CALL_TIMEOUT_MS };
}

/**
 * Runs a unary call in grpc-js callback style and resolves with its outcome (never rejects
 * for a gRPC error).
 */
export function outcome(
  call: (cb: (err: grpc.ServiceError | null) => void) => unknown,
): Promise<CallOutcome> {
  return new Promise((resolve) => {
    call((err) =>
      resolve(
        err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: "" },
      )
    );
  });
}

/** Reads a whole List stream; rejects with the stream's error. */
export function listAll(
  kv: KvClientType,
  request: MessageInput<ListRequest>,
): Promise<GetResponse[]> {
  return new Promise((resolve, reject) => {
    const out: GetResponse[] = [];
    const stream = kv.List(request, new grpc.Metadata(), deadline());
    stream.on("data", (item: GetResponse) => out.push(item));
    stream.on("error", reject);
    stream.on("end", () => resolve(out));
  });
}

/** The outcome of a List call (its items are discarded). */
export function listOutcome(
  kv: KvClientType,
  request: MessageInput<ListRequest>,
): Promise<CallOutcome> {
  return listAll(kv, request).then(
    () => ({ code: grpc.status.OK, details: "" }),
    (err: grpc.ServiceError) => ({ code: err.code, details: err.details }),
  );
}

/** One JSON log line of a node. */
export type LogLine = Readonly<Record<string, unknown>>;

/** Every JSON object line a node has written to stderr so far (other lines are skipped). */
export function logLines(node: TestNode): LogLine[] {
  const out: LogLine[] = [];
  for (const line of node.stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line still being written
    }
  }
  return out;
}

/**
 * The sum of every sample of counter `name` on a node's /metrics whose labels include
 * `labels` (0 when there is none).
 */
export async function metricSum(
  metricsPort: number,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, {
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  const text = await res.text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => have.includes(`${k}="${v}"`))) {
      sum += Number(m[3]);
    }
  }
  return sum;
}

/** Writes a Casbin policy file (one rule per entry) and returns its path. */
export async function writePolicy(dir: string, rules: readonly string[]): Promise<string> {
  const path = `${dir}/policy.csv`;
  // Write beside and rename, so a node reloading concurrently never sees half a file.
  await Deno.writeTextFile(`${path}.tmp`, rules.join("\n") + "\n");
  await Deno.rename(`${path}.tmp`, path);
  return path;
}

/** Sends SIGHUP to every running node of the cluster. */
export function sighupAll(cluster: TestCluster): void {
  for (const n of cluster.nodes) n.process?.kill("SIGHUP");
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** True while the node's process runs (it has not exited, on its own or killed). */
export async function isRunning(node: TestNode): Promise<boolean> {
  if (!node.process) return false;
  const exited = await Promise.race([
    node.process.status.then(() => true),
    sleep(50).then(() => false),
  ]);
  return !exited;
}
