/**
 * Coordination benchmark of a real three-node cluster (mutual TLS, test certificates, Deno KV
 * files in a temporary directory, ports from tests/helpers/ports.ts), started by the script:
 *
 * 1. Lock acquire/release cycles per second under contention: N contenders (separate
 *    MokvClients) on one lock name, each looping `lock()` → `release()` (MokvClient.lock:
 *    lease grant, create-if-absent Txn, watch of the previous holder, range; release: delete,
 *    revoke), bounded by `--cycles` per contender and `--seconds` per N. Reports cycles/s in
 *    total and the p50/p99 wait of one acquire (from the call to holding the lock).
 * 2. Lease keep-alives per second per node: M leases renewed over S LeaseKeepAlive streams to
 *    one node, each stream keeping a request of each of its leases in flight (the next sent
 *    as soon as the last is answered), against the leader and against a follower (which
 *    forwards to the leader). Every renewal is a Raft entry.
 *
 * 3. With `--clientv3`: the same lock contention through etcd's Go client (clientv3 3.4's
 *    concurrency.Mutex, one session per contender kept for all its cycles: a cycle is the
 *    Lock Txn, the wait, and the Unlock delete), tests/etcd/clientv3/main.go's lock-bench mode
 *    built in GOPATH mode as bench/etcd_watch.sh does; with `--etcd` also against etcd 3.4
 *    (../shared/anchor-bench/etcd_cluster.sh, mutual TLS), after mokv's cluster is stopped.
 *
 *   deno run --allow-all --unstable-kv --unstable-net bench/coordination.ts \
 *     [--contenders 1,5,20] [--cycles 500] [--seconds 10] [--leases 100] [--streams 1,4]
 *     [--keepalive-seconds 10] [--clientv3] [--etcd] [--skip-native]
 */
import { Buffer } from "node:buffer";
import { checkServerIdentity } from "node:tls";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import type { EtcdLeaseKeepAliveResponse } from "../src/api/mod.ts";
import { MokvClient } from "../src/client/mod.ts";
import { NodeConnection } from "../src/client/node_connection.ts";
import { startCluster, type TestCluster } from "../tests/helpers/cluster.ts";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    contenders: { type: "string", default: "1,5,20" },
    cycles: { type: "string", default: "500" },
    seconds: { type: "string", default: "10" },
    leases: { type: "string", default: "100" },
    streams: { type: "string", default: "1,4" },
    "keepalive-seconds": { type: "string", default: "10" },
    clientv3: { type: "boolean", default: false },
    etcd: { type: "boolean", default: false },
    "skip-native": { type: "boolean", default: false },
  },
});
const list = (s: string) => s.split(",").map(Number).filter((n) => n > 0);

/** The `p`-th percentile (0..100) of `sorted` (ascending), nearest rank. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** N contenders loop lock → release on one name; cycles/s and acquire waits. */
async function lockRound(cluster: TestCluster, tls: TlsFiles, n: number): Promise<string> {
  const clients = await Promise.all(
    Array.from({ length: n }, () => MokvClient.connect({ addrs: cluster.addrs, tls })),
  );
  const maxCycles = Number(opt.cycles);
  const name = `bench-lock-${n}`;
  const waits: number[] = [];
  const t0 = performance.now();
  const endMs = t0 + Number(opt.seconds) * 1000;
  try {
    await Promise.all(clients.map(async (c) => {
      for (let i = 0; i < maxCycles && performance.now() < endMs; i++) {
        const asked = performance.now();
        const held = await c.lock(name, { ttlSeconds: 10 });
        waits.push(performance.now() - asked);
        await held.release();
      }
    }));
  } finally {
    for (const c of clients) c.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  waits.sort((a, b) => a - b);
  return `lock, ${String(n).padStart(2)} contender(s): ${waits.length} cycles in ${
    seconds.toFixed(1)
  } s = ${(waits.length / seconds).toFixed(1)} cycles/s; acquire wait p50 ${
    percentile(waits, 50).toFixed(1)
  } ms, p99 ${percentile(waits, 99).toFixed(1)} ms`;
}

interface TlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/** A connection to `addr` ("127.0.0.1:port") checked against the certificate's IP SAN. */
async function connectionTo(addr: string, tls: TlsFiles): Promise<NodeConnection> {
  const [ca, key, cert] = await Promise.all(
    [tls.ca, tls.key, tls.cert].map((p) => Deno.readFile(p)),
  );
  const host = addr.slice(0, addr.lastIndexOf(":"));
  const credentials = grpc.credentials.createSsl(
    Buffer.from(ca),
    Buffer.from(key),
    Buffer.from(cert),
    { checkServerIdentity: (_name, c) => checkServerIdentity(host, c) },
  );
  return new NodeConnection(addr, credentials, {
    "grpc.ssl_target_name_override": "localhost",
    "grpc.use_local_subchannel_pool": 1,
  });
}

/**
 * `leases` renewed over `streams` streams to `addr` for `seconds`: each stream has one request
 * of each of its leases in flight at a time. Resolves with the renewals answered per second.
 */
async function keepAliveRound(
  addr: string,
  tls: TlsFiles,
  leases: readonly number[],
  streams: number,
  seconds: number,
): Promise<{ perSecond: number; zero: number }> {
  const conns = await Promise.all(
    Array.from({ length: streams }, () => connectionTo(addr, tls)),
  );
  let answered = 0;
  let zero = 0;
  let counting = false;
  let stopped = false;
  const calls = conns.map((conn, s) => {
    const mine = leases.filter((_, i) => i % streams === s);
    const call = conn.etcdLease.LeaseKeepAlive(new grpc.Metadata());
    const ended = new Promise<void>((resolve) => {
      call.on("error", () => resolve());
      call.on("end", () => resolve());
    });
    call.on("data", (r: EtcdLeaseKeepAliveResponse) => {
      if (counting) answered++;
      if (r.TTL <= 0) zero++;
      if (!stopped) call.write({ ID: r.ID });
    });
    for (const id of mine) call.write({ ID: id });
    return { call, ended };
  });
  await new Promise((r) => setTimeout(r, 1000)); // warm-up
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  counting = false;
  const elapsed = (performance.now() - t0) / 1000;
  stopped = true;
  for (const { call } of calls) call.end();
  await Promise.race([
    Promise.all(calls.map((c) => c.ended)),
    new Promise((r) => setTimeout(r, 5000)),
  ]);
  for (const { call } of calls) call.cancel();
  for (const conn of conns) conn.close();
  return { perSecond: answered / elapsed, zero };
}

const GO_ROOT = "/tmp/mokv-coord-clientv3";
const REPO = new URL("..", import.meta.url).pathname;

/** Builds tests/etcd/clientv3/main.go (GOPATH mode, Debian's clientv3); returns the binary. */
async function buildClientv3(): Promise<string> {
  await Deno.mkdir(`${GO_ROOT}/src/clientv3check`, { recursive: true });
  await Deno.copyFile(`${REPO}tests/etcd/clientv3/main.go`, `${GO_ROOT}/src/clientv3check/main.go`);
  const out = await new Deno.Command("go", {
    args: ["build", "-o", `${GO_ROOT}/clientv3check`, "clientv3check"],
    env: {
      GO111MODULE: "off",
      GOPATH: `${GO_ROOT}:/usr/share/gocode`,
      GOCACHE: `${GO_ROOT}/cache`,
      GOFLAGS: "",
      GOPROXY: "off",
      CGO_ENABLED: "0",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`go build: ${new TextDecoder().decode(out.stderr)}`);
  return `${GO_ROOT}/clientv3check`;
}

/** One clientv3 lock-bench run of `n` contenders; its figures as one line. */
async function goLockRound(
  bin: string,
  system: string,
  endpoints: readonly string[],
  tls: TlsFiles,
  n: number,
): Promise<string> {
  const out = await new Deno.Command(bin, {
    args: [
      "-mode=lock-bench",
      `-endpoints=${endpoints.join(",")}`,
      `-cacert=${tls.ca}`,
      `-cert=${tls.cert}`,
      `-key=${tls.key}`,
      `-workers=${n}`,
      `-rounds=${opt.cycles}`,
      `-duration=${opt.seconds}s`,
      "-ttl=10",
      "-name=bench-lock",
      `-timeout=${Number(opt.seconds) + 60}s`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`lock-bench on ${system}: ${new TextDecoder().decode(out.stderr)}`);
  }
  const r = JSON.parse(text.split("\n").pop()!);
  return `clientv3 Mutex on ${system}, ${
    String(n).padStart(2)
  } contender(s): ${r.cycles} cycles in ${r.seconds.toFixed(1)} s = ${
    r.cycles_per_s.toFixed(1)
  } cycles/s; Lock wait p50 ${r.wait_p50_ms.toFixed(1)} ms, p99 ${r.wait_p99_ms.toFixed(1)} ms`;
}

/** Runs ../shared/anchor-bench/etcd_cluster.sh with `args`; its stdout. */
async function etcdCluster(...args: string[]): Promise<string> {
  const script = `${REPO}../shared/anchor-bench/etcd_cluster.sh`;
  const out = await new Deno.Command("bash", { args: [script, ...args], stdout: "piped" })
    .output();
  if (!out.success) throw new Error(`etcd_cluster.sh ${args.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout);
}

const goBin = opt.clientv3 || opt.etcd ? await buildClientv3() : undefined;
// Logging at error only: the test helper's info logs (and the Lease service's slow keep-alive
// warnings, which a deep queue of pipelined keep-alives triggers) would be measured too.
const cluster = await startCluster({
  size: 3,
  extraArgs: ["--snapshot-entries", "100000", "--log-level", "error"],
});
const tls = {
  ca: cluster.certs.ca,
  cert: cluster.certs.rootClient.cert,
  key: cluster.certs.rootClient.key,
};
const admin = await MokvClient.connect({ addrs: cluster.addrs, tls });
try {
  console.log(`mokv coordination benchmark, 3 nodes, mutual TLS, ${new Date().toISOString()}`);
  if (!opt["skip-native"]) {
    for (const n of list(opt.contenders)) console.log(await lockRound(cluster, tls, n));
  }
  if (goBin && opt.clientv3) {
    for (const n of list(opt.contenders)) {
      console.log(await goLockRound(goBin, "mokv", cluster.addrs, tls, n));
    }
  }

  const servers = await admin.servers();
  const leader = servers.find((s) => s.isLeader)!;
  const follower = servers.find((s) => !s.isLeader && s.isVoter)!;
  const m = opt["skip-native"] ? 0 : Number(opt.leases);
  const leases: number[] = [];
  for (let i = 0; i < m; i++) leases.push((await admin.leaseGrant(600)).id);
  const seconds = Number(opt["keepalive-seconds"]);
  for (const streams of m > 0 ? list(opt.streams) : []) {
    for (const [role, server] of [["leader", leader], ["follower", follower]] as const) {
      const r = await keepAliveRound(server.rpcAddr, tls, leases, streams, seconds);
      console.log(
        `keep-alive, ${m} leases over ${streams} stream(s) to the ${role} (${server.id}): ` +
          `${r.perSecond.toFixed(0)} renewals/s` +
          (r.zero > 0 ? ` (${r.zero} answered TTL 0!)` : ""),
      );
    }
  }
  for (const id of leases) await admin.leaseRevoke(id).catch(() => {});
} catch (err) {
  throw cluster.explain(err);
} finally {
  admin.close();
  await cluster.stop();
}

if (goBin && opt.etcd) {
  await etcdCluster("start", "--tls");
  try {
    const endpoints = /ENDPOINTS=(\S+)/.exec(await etcdCluster("env"))![1].split(",");
    const certs = "/tmp/anchor-bench/certs";
    const etcdTls = {
      ca: `${certs}/ca.pem`,
      cert: `${certs}/client.pem`,
      key: `${certs}/client-key.pem`,
    };
    for (const n of list(opt.contenders)) {
      console.log(await goLockRound(goBin, "etcd 3.4", endpoints, etcdTls, n));
    }
  } finally {
    await etcdCluster("stop");
  }
}
