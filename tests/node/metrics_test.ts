/**
 * Observability of real nodes: every node's /metrics parses as Prometheus text and holds
 * mokv's families with sane values; /healthz answers; every log line is a JSON object with
 * node id and component.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster } from "../helpers/cluster.ts";
import { set } from "./_kv.ts";

const FAMILIES = [
  "mokv_raft_role",
  "mokv_raft_term",
  "mokv_raft_commit_index",
  "mokv_raft_applied_index",
  "mokv_raft_leader_changes_total",
  "mokv_raft_proposals_total",
  "mokv_raft_proposal_commit_seconds",
  "mokv_raft_append_batch_entries",
  "mokv_deno_kv_commit_seconds",
  "mokv_snapshots_total",
  "mokv_snapshot_duration_seconds",
  "mokv_snapshot_size_bytes",
  "mokv_replication_lag_entries",
  "mokv_transport_errors_total",
  "mokv_gossip_members",
  "mokv_gossip_probe_failures_total",
  "mokv_gossip_packet_failures_total",
  "mokv_grpc_requests_total",
  "mokv_grpc_request_duration_seconds",
  "mokv_denied_requests_total",
  "mokv_store_keys",
  "mokv_store_bytes",
];

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Parses Prometheus text exposition; throws on a line that is not a comment or a sample. */
function parseProm(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      types.set(type[1], type[2]);
      continue;
    }
    if (line.startsWith("# HELP ")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2];
    }
    const value = m[4] === "Nan" || m[4] === "NaN" ? NaN : Number(m[4]);
    if (Number.isNaN(value) && !/^nan$/i.test(m[4])) throw new Error(`bad value: ${line}`);
    samples.push({ name: m[1], labels, value });
  }
  return { types, samples };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const s = samples.find((x) =>
    x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)
  );
  if (!s) throw new Error(`no sample ${name} ${JSON.stringify(labels)}`);
  return s.value;
}

async function scrape(port: number) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assertEquals(res.status, 200);
  return parseProm(await res.text());
}

Deno.test({
  name: "every node serves Prometheus metrics with sane values, /healthz, and JSON logs",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const c = await startCluster({ size: 3 });
    try {
      const leader = await c.leader();
      const before = value((await scrape(leader.metricsPort)).samples, "mokv_raft_commit_index");
      for (let i = 0; i < 30; i++) await set(c, c.nodes[i % 3], `m${i}`, "x".repeat(100));
      await eventually(async () => {
        for (const n of c.nodes) {
          const { types, samples } = await scrape(n.metricsPort);
          for (const f of FAMILIES) assert_(types.has(f), `${n.name} exports ${f}`);
          assertEquals(value(samples, "mokv_gossip_members", { state: "alive" }), 3);
          assertEquals(value(samples, "mokv_store_keys"), 30);
          assert_(value(samples, "mokv_store_bytes") > 3000);
          assert_(value(samples, "mokv_raft_term") >= 1);
          const isLeader = value(samples, "mokv_raft_role", { role: "leader" });
          assertEquals(isLeader, n.name === leader.name ? 1 : 0);
          assert_(value(samples, "process_resident_memory_bytes") > 0, "process metrics");
        }
      });
      const { samples } = await scrape(leader.metricsPort);
      assert_(value(samples, "mokv_raft_commit_index") >= before + 30, "leader commit grows");
      assert_(value(samples, "mokv_raft_proposals_total") >= 30);
      assert_(value(samples, "mokv_raft_proposal_commit_seconds_count") >= 30);
      assert_(value(samples, "mokv_deno_kv_commit_seconds_count") > 0);
      const setCount = samples
        .filter((s) => s.name === "mokv_grpc_requests_total" && s.labels.method === "/api.KV/Set")
        .reduce((a, s) => a + s.value, 0);
      assert_(setCount >= 10, "gRPC requests are counted by method");
      const health = await fetch(`http://127.0.0.1:${leader.metricsPort}/healthz`);
      assertEquals(health.status, 200);
      await health.body?.cancel();

      for (const n of c.nodes) {
        const lines = n.stderr.split("\n").filter((l) => l.trim() !== "");
        assert_(lines.length > 3, `${n.name} logged`);
        for (const line of lines) {
          const rec = JSON.parse(line);
          assertEquals(rec.node_id, n.name);
          assert_(typeof rec.component === "string" && rec.component !== "", line);
          assert_(typeof rec.level === "string" && typeof rec.message === "string", line);
        }
      }
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
