/**
 * Memory benchmark of a real three-node cluster (mutual TLS, the example configurations on
 * other ports, data in a temporary directory): ingests N keys with the Go load generator of
 * ../shared/anchor-bench (`setup.sh` builds it), then reports per node the RSS, the V8 heap,
 * the memory outside the heap (and of it the Raft log's entries in memory and the snapshot the
 * core holds for followers) and the bytes per key, 3 s and 20 s after the ingest, and the time from a restart of all three
 * nodes to every one answering /healthz and to a leader being reported. Run by hand:
 *
 *   deno run --allow-all bench/memory.ts [--keys 300000] [--value-bytes 256] [--keep]
 *
 * `--loadgen PATH` (default /tmp/anchor-bench/bin/loadgen), `--base-port 9600` (gRPC on
 * base, base+2, base+4; gossip one above each; metrics on base-600+0..2), `--node-flags
 * "..."` (extra flags for every node), `--deno-flags="..."` (extra flags for Deno before
 * main.ts, e.g. `--deno-flags=--v8-flags=--optimize-for-size`), `--inspect-base 9229` (node i gets Deno's `--inspect` on
 * that port + i) with `--hold-seconds N` (wait N s after each report, to take heap snapshots);
 * `--reports 3,20,60` (seconds after the ingest at which to report; default 3,20).
 * Certificates from $HOME/.mokv (`deno task gencert`).
 */
import { parseArgs } from "node:util";

const { values: opt } = parseArgs({
  args: Deno.args,
  options: {
    keys: { type: "string", default: "300000" },
    "value-bytes": { type: "string", default: "256" },
    concurrency: { type: "string", default: "64" },
    loadgen: { type: "string", default: "/tmp/anchor-bench/bin/loadgen" },
    "base-port": { type: "string", default: "9600" },
    "node-flags": { type: "string", default: "" },
    "deno-flags": { type: "string", default: "" },
    keep: { type: "boolean", default: false },
    "inspect-base": { type: "string", default: "" },
    "hold-seconds": { type: "string", default: "0" },
    reports: { type: "string", default: "3,20" },
  },
});
/** Seconds after the ingest at which to report, ascending. */
const reportSeconds = opt.reports.split(",").map(Number).filter((n) => n >= 0)
  .sort((a, b) => a - b);
const keys = Number(opt.keys);
const valueBytes = Number(opt["value-bytes"]);
const base = Number(opt["base-port"]);
const home = Deno.env.get("HOME") ?? "/root";
const certs = `${home}/.mokv`;
const root = new URL("..", import.meta.url).pathname;
const dir = await Deno.makeTempDir({ prefix: "mokv-memory-bench-" });
const nodes = [0, 1, 2].map((i) => ({
  i,
  config: `example/config${i === 0 ? "" : i + 1}.yaml`,
  rpc: base + 2 * i,
  gossip: base + 2 * i + 1,
  metrics: base - 600 + i,
  data: `${dir}/n${i + 1}`,
}));
const endpoints = nodes.map((n) => `localhost:${n.rpc}`).join(",");
const tls = [
  "-cacert",
  `${certs}/ca.pem`,
  "-cert",
  `${certs}/root-client.pem`,
  "-key",
  `${certs}/root-client-key.pem`,
  "-tls-server-name",
  "localhost",
];
let procs: Deno.ChildProcess[] = [];

function spawn(n: (typeof nodes)[number]): Deno.ChildProcess {
  const inspect = opt["inspect-base"] === ""
    ? []
    : [`--inspect=127.0.0.1:${Number(opt["inspect-base"]) + n.i}`];
  const args = [
    "run",
    ...inspect,
    ...opt["deno-flags"].split(" ").filter((s) => s !== ""),
    "--allow-all",
    "--unstable-kv",
    "--unstable-net",
    "main.ts",
    "--config-file",
    n.config,
    "--data-dir",
    n.data,
    "--rpc-port",
    String(n.rpc),
    "--bind-addr",
    `127.0.0.1:${n.gossip}`,
    "--metrics-port",
    String(n.metrics),
    "--start-join-addrs",
    nodes.map((m) => `127.0.0.1:${m.gossip}`).join(","),
    "--log-level",
    "warn",
    ...opt["node-flags"].split(" ").filter((s) => s !== ""),
  ];
  return new Deno.Command(Deno.execPath(), { args, cwd: root, stdout: "null", stderr: "null" })
    .spawn();
}

async function metrics(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m && !out.has(m[1] + (m[2]?.includes('role="leader"') ? ":leader" : ""))) {
      out.set(m[1] + (m[2]?.includes('role="leader"') ? ":leader" : ""), Number(m[3]));
    }
  }
  return out;
}

async function healthy(port: number): Promise<boolean> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/healthz`);
    await r.body?.cancel();
    return r.ok;
  } catch {
    return false;
  }
}

/** Waits until every node answers /healthz; returns the seconds each took from `t0`. */
async function waitHealthy(t0: number, timeoutMs = 120_000): Promise<number[]> {
  const took: (number | undefined)[] = nodes.map(() => undefined);
  while (took.some((t) => t === undefined)) {
    if (performance.now() - t0 > timeoutMs) throw new Error("nodes not healthy in time");
    for (const n of nodes) {
      if (took[n.i] === undefined && await healthy(n.metrics)) {
        took[n.i] = (performance.now() - t0) / 1000;
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return took as number[];
}

async function loadgen(args: string[]): Promise<string> {
  const out = await new Deno.Command(opt.loadgen, { args, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`loadgen: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

async function report(label: string): Promise<void> {
  console.log(label);
  const holdS = Number(opt["hold-seconds"]);
  for (const n of nodes) {
    const m = await metrics(n.metrics);
    const rss = m.get("process_resident_memory_bytes") ?? 0;
    const stored = m.get("mokv_store_bytes") ?? 0;
    const count = m.get("mokv_store_keys") ?? 0;
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    console.log(
      `  node-${n.i + 1}${m.get("mokv_raft_role:leader") === 1 ? " (leader)" : ""}: rss ${
        mib(rss)
      }, heap used ${mib(m.get("nodejs_heap_size_used_bytes") ?? 0)} of ${
        mib(m.get("nodejs_heap_size_total_bytes") ?? 0)
      }, external ${mib(m.get("mokv_process_external_memory_bytes") ?? 0)} (log ${
        mib(m.get("mokv_raft_log_memory_bytes") ?? 0)
      }, snapshot held ${mib(m.get("mokv_raft_snapshot_memory_bytes") ?? 0)}); ${count} keys, ${
        mib(stored)
      } of data, ${count > 0 ? (rss / count).toFixed(0) : "-"} B of RSS per key; ${
        m.get("mokv_snapshots_total") ?? 0
      } snapshots`,
    );
  }
  if (holdS > 0) {
    console.log(`  (holding ${holdS} s, e.g. for heap snapshots over --inspect-base)`);
    await new Promise((r) => setTimeout(r, holdS * 1000));
  }
}

try {
  let t0 = performance.now();
  procs = nodes.map(spawn);
  const first = await waitHealthy(t0);
  console.log(`cluster healthy in ${Math.max(...first).toFixed(1)} s (empty)`);
  await loadgen(["-mode", "leader", "-target", "mokv", "-endpoints", endpoints, ...tls]);
  await new Promise((r) => setTimeout(r, 2000));
  await report("idle:");
  t0 = performance.now();
  await loadgen([
    "-mode",
    "prefill",
    "-target",
    "mokv",
    "-endpoints",
    endpoints,
    ...tls,
    "-keys",
    String(keys),
    "-key-size",
    "16",
    "-value-size",
    String(valueBytes),
    "-concurrency",
    opt.concurrency,
    "-conns",
    "2",
    "-duration",
    "10m",
  ]);
  const ingestS = (performance.now() - t0) / 1000;
  console.log(
    `ingested ${keys} keys of 16 B with ${valueBytes} B values in ${ingestS.toFixed(1)} s (${
      (keys / ingestS).toFixed(0)
    } ops/s)`,
  );
  // The README's etcd figure is 20 s after the same ingest; a snapshot write may still be
  // running at 3 s, and its buffer goes once it is done.
  let waitedS = 0;
  for (const at of reportSeconds) {
    await new Promise((r) => setTimeout(r, (at - waitedS) * 1000));
    waitedS = at;
    await report(`after the ingest (${at} s):`);
  }
  for (const p of procs) p.kill("SIGTERM");
  await Promise.all(procs.map((p) => p.status));
  t0 = performance.now();
  procs = nodes.map(spawn);
  const took = await waitHealthy(t0);
  await loadgen(["-mode", "leader", "-target", "mokv", "-endpoints", endpoints, ...tls]);
  const writable = (performance.now() - t0) / 1000;
  console.log(
    `restart of all three: healthy in ${took.map((t) => t.toFixed(1)).join(", ")} s; a leader ${
      writable.toFixed(1)
    } s after the start`,
  );
  await new Promise((r) => setTimeout(r, 3000));
  await report("after the restart (3 s):");
} finally {
  for (const p of procs) {
    try {
      p.kill("SIGTERM");
    } catch { /* gone */ }
  }
  await Promise.all(procs.map((p) => p.status));
  if (!opt.keep) await Deno.remove(dir, { recursive: true });
}
