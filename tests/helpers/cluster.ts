/**
 * Real mokv clusters for tests: each node is its own `deno run main.ts` process on 127.0.0.1
 * with its own Deno KV file in a temporary directory, mutual TLS with certificates from
 * cfssl (tests/helpers/certs.ts), gossip on UDP. Every wait is bounded; `stop()` kills every
 * process and removes every directory.
 */
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { AdminClient, KvClient } from "../../src/api/mod.ts";
import type {
  AdminClient as AdminClientType,
  KvClient as KvClientType,
} from "../../src/api/messages.ts";
import { formatGossipKey, generateGossipKey } from "../../src/membership/mod.ts";
import { makeTestCerts, type TestCerts } from "./certs.ts";
import { reservePort } from "./ports.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** One node of a test cluster. */
export interface TestNode {
  readonly name: string;
  /** gRPC and Raft address, "127.0.0.1:port". */
  readonly rpcAddr: string;
  readonly gossipAddr: string;
  readonly metricsPort: number;
  readonly dataDir: string;
  /** The flags the node runs with (restart uses them again). */
  readonly args: string[];
  process?: Deno.ChildProcess;
  /** Everything the node wrote to stderr (JSON log lines). */
  stderr: string;
  /** Set once the current process exited (its status), until the node is started again. */
  exited?: Deno.CommandStatus;
}

/** The last `chars` characters of a node's output, for failure messages. */
export function tail(node: TestNode, chars = 3000): string {
  const out = node.stderr.length > chars ? `…${node.stderr.slice(-chars)}` : node.stderr;
  const status = node.exited ? ` (exited with code ${node.exited.code})` : "";
  return `--- ${node.name}${status}, last output:\n${out || "(nothing)"}\n---`;
}

/** Options of `startCluster`. */
export interface ClusterOptions {
  readonly size?: number;
  /** Mutual TLS (default true); false runs the plaintext development mode. */
  readonly tls?: boolean;
  /** "expect" (default): every node has bootstrap-expect; "one": only the first bootstraps. */
  readonly bootstrap?: "expect" | "one";
  /** Extra flags for every node. */
  readonly extraArgs?: readonly string[];
  /** Start only the first `startNodes` nodes now (the rest with `startNode`). */
  readonly startNodes?: number;
}

/** A running test cluster. */
export interface TestCluster {
  readonly nodes: TestNode[];
  readonly addrs: string[];
  readonly certs: TestCerts;
  readonly tls: boolean;
  /** Waits (bounded) until some node reports a leader; returns that leader's node. */
  leader(timeoutMs?: number): Promise<TestNode>;
  kill(name: string, signal?: Deno.Signal): Promise<void>;
  /** Starts a stopped node again with its own data directory. */
  restart(name: string): Promise<void>;
  startNode(name: string): Promise<void>;
  /** A gRPC KV client to one node (TLS with the root client certificate). */
  kv(node: TestNode | string): KvClientType;
  admin(node: TestNode | string): AdminClientType;
  node(name: string): TestNode;
  /** `err` with every node's name, exit status and last output appended (for failures). */
  explain(err: unknown): Error;
  stop(): Promise<void>;
}

/** Starts a cluster and waits until it has a leader and every node sees every voter. */
export async function startCluster(opts: ClusterOptions = {}): Promise<TestCluster> {
  const size = opts.size ?? 3;
  const tls = opts.tls ?? true;
  const certs = await makeTestCerts();
  const gossipKey = formatGossipKey(generateGossipKey());
  const root = await Deno.makeTempDir({ prefix: "mokv-cluster-" });
  const nodes: TestNode[] = [];
  const ports: { rpc: number; gossip: number; metrics: number }[] = [];
  for (let i = 0; i < size; i++) {
    ports.push({ rpc: reservePort(), gossip: reservePort(), metrics: reservePort() });
  }
  for (let i = 0; i < size; i++) {
    const name = `n${i + 1}`;
    const dataDir = `${root}/${name}`;
    const joins = ports.filter((_, j) => j !== i).map((p) => `127.0.0.1:${p.gossip}`).join(",");
    const args = [
      "--node-name",
      name,
      "--data-dir",
      dataDir,
      "--bind-addr",
      `127.0.0.1:${ports[i].gossip}`,
      "--rpc-port",
      String(ports[i].rpc),
      "--metrics-port",
      String(ports[i].metrics),
      "--start-join-addrs",
      joins,
      "--log-level",
      "info",
      "--log-format",
      "json",
      "--snapshot-entries",
      "500",
    ];
    if ((opts.bootstrap ?? "expect") === "expect") {
      args.push("--bootstrap-expect", String(Math.min(size, 3)));
    } else if (i === 0) args.push("--bootstrap", "true");
    if (tls) {
      args.push(
        "--server-tls-cert-file",
        certs.server.cert,
        "--server-tls-key-file",
        certs.server.key,
        "--server-tls-ca-file",
        certs.ca,
        "--acl-model-file",
        certs.model,
        "--acl-policy-file",
        certs.policy,
      );
      // With TLS a node refuses unauthenticated gossip: one key per cluster, unless the test
      // brings its own gossip flags.
      const gossipFlags = [
        "--gossip-key",
        "--gossip-key-file",
        "--gossip-keyring",
        "--gossip-insecure",
      ];
      if (!(opts.extraArgs ?? []).some((a) => gossipFlags.includes(a))) {
        args.push("--gossip-key", gossipKey);
      }
    } else {
      args.push("--insecure", "true");
    }
    args.push(...(opts.extraArgs ?? []));
    nodes.push({
      name,
      rpcAddr: `127.0.0.1:${ports[i].rpc}`,
      gossipAddr: `127.0.0.1:${ports[i].gossip}`,
      metricsPort: ports[i].metrics,
      dataDir,
      args,
      stderr: "",
    });
  }

  const clients = new Map<string, grpc.Client>();
  const credentials = () =>
    tls
      ? grpc.credentials.createSsl(
        Buffer.from(Deno.readFileSync(certs.ca)),
        Buffer.from(Deno.readFileSync(certs.rootClient.key)),
        Buffer.from(Deno.readFileSync(certs.rootClient.cert)),
      )
      : grpc.credentials.createInsecure();
  const byName = (n: TestNode | string) =>
    typeof n === "string" ? nodes.find((x) => x.name === n)! : n;

  const spawn = (node: TestNode) => {
    const cmd = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--unstable-kv", "--unstable-net", MAIN, ...node.args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    });
    const child = cmd.spawn();
    node.process = child;
    node.stderr = "";
    node.exited = undefined;
    child.status.then((st) => {
      if (node.process === child) node.exited = st;
    });
    (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of child.stderr) node.stderr += decoder.decode(chunk);
      } catch {
        // the process went away
      }
    })();
  };

  const cluster: TestCluster = {
    nodes,
    addrs: nodes.map((n) => n.rpcAddr),
    certs,
    tls,
    async leader(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        for (const n of nodes) {
          if (!n.process) continue;
          try {
            const res = await unary<{ servers: { id: string; is_leader: boolean }[] }>(
              (cb) =>
                cluster.kv(n).GetServers(
                  {},
                  new grpc.Metadata(),
                  { deadline: Date.now() + 1000 },
                  cb,
                ),
            );
            const l = res.servers.find((s) => s.is_leader);
            const ln = l && nodes.find((x) => x.name === l.id && x.process);
            if (ln) return ln;
          } catch {
            // not up yet
          }
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`no leader within ${timeoutMs} ms\n${nodes.map((n) => tail(n)).join("\n")}`);
    },
    async kill(name, signal = "SIGKILL") {
      const n = byName(name);
      if (!n.process) return;
      try {
        n.process.kill(signal);
      } catch {
        // already gone
      }
      const status = await Promise.race([
        n.process.status,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000)),
      ]);
      if (status === undefined) {
        n.process.kill("SIGKILL");
        await n.process.status;
      }
      n.process = undefined;
      for (const [key, c] of clients) {
        if (key.endsWith(`/${n.name}`)) {
          c.close();
          clients.delete(key);
        }
      }
    },
    async restart(name) {
      const n = byName(name);
      if (n.process) await cluster.kill(name);
      spawn(n);
      await waitForNode(n, 20_000);
    },
    async startNode(name) {
      const n = byName(name);
      spawn(n);
      await waitForNode(n, 20_000);
    },
    kv(node) {
      const n = byName(node);
      const key = `kv/${n.name}`;
      let c = clients.get(key);
      if (!c) {
        c = new KvClient(n.rpcAddr, credentials(), {
          "grpc.ssl_target_name_override": "localhost",
        });
        clients.set(key, c);
      }
      return c as KvClientType;
    },
    admin(node) {
      const n = byName(node);
      const key = `admin/${n.name}`;
      let c = clients.get(key);
      if (!c) {
        c = new AdminClient(n.rpcAddr, credentials(), {
          "grpc.ssl_target_name_override": "localhost",
        });
        clients.set(key, c);
      }
      return c as AdminClientType;
    },
    node(name) {
      return byName(name);
    },
    explain(err) {
      const e = err instanceof Error ? err : new Error(String(err));
      e.message = `${e.message}\n${nodes.map((n) => tail(n)).join("\n")}`;
      return e;
    },
    async stop() {
      for (const c of clients.values()) c.close();
      clients.clear();
      await Promise.all(nodes.map((n) => cluster.kill(n.name)));
      await Deno.remove(root, { recursive: true }).catch(() => undefined);
    },
  };

  try {
    const first = opts.startNodes ?? size;
    for (const n of nodes.slice(0, first)) spawn(n);
    for (const n of nodes.slice(0, first)) await waitForNode(n, 30_000);
    await cluster.leader(30_000);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/**
 * Waits until the node accepts TCP connections on its RPC port. Fails at once, with the
 * node's output, if its process exits first; on timeout the error carries its output too.
 */
async function waitForNode(node: TestNode, timeoutMs: number): Promise<void> {
  const [host, port] = node.rpcAddr.split(":");
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (node.exited) throw new Error(`${node.name} exited before it listened\n${tail(node)}`);
    try {
      const c = await Deno.connect({ hostname: host, port: Number(port) });
      c.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(
    `${node.name}: nothing listens on ${node.rpcAddr} after ${timeoutMs} ms\n${tail(node)}`,
  );
}

/** Promisifies a unary grpc-js call. */
export function unary<T>(
  call: (cb: (err: grpc.ServiceError | null, res?: T) => void) => unknown,
): Promise<T> {
  return new Promise((resolve, reject) => {
    call((err, res) => (err ? reject(err) : resolve(res as T)));
  });
}

/** Retries `fn` until it succeeds or `timeoutMs` passes (bounded), returning its value. */
export async function eventually<T>(
  fn: () => Promise<T>,
  timeoutMs = 15_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
  throw last instanceof Error ? last : new Error(String(last));
}
