import {
  createNodeMetrics,
  type NodeMetrics,
  serveMetrics,
  startEventLoopLagProbe,
} from "../../src/metrics/mod.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

/** One parsed sample line of the Prometheus text format. */
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Parses Prometheus text exposition; throws on any line that is not a comment or a sample. */
function parseExposition(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/
      .exec(line);
    if (type !== null) {
      types.set(type[1], type[2]);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( \d+)?$/.exec(line);
    assert(sample !== null, `not a Prometheus line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const m of (sample[3] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1]] = m[2];
    }
    // Prometheus parses values with Go's ParseFloat: NaN and Inf in any case.
    const raw = sample[4].toLowerCase();
    const value = raw === "nan" ? Number.NaN : Number(raw.replace(/^([+-]?)inf$/, "$1Infinity"));
    assert(raw === "nan" || !Number.isNaN(value), `bad value in ${line}`);
    samples.push({ name: sample[1], labels, value });
  }
  return { types, samples };
}

const FAMILIES: [string, string][] = [
  ["mokv_raft_term", "gauge"],
  ["mokv_raft_role", "gauge"],
  ["mokv_raft_commit_index", "gauge"],
  ["mokv_raft_applied_index", "gauge"],
  ["mokv_raft_leader_changes_total", "counter"],
  ["mokv_raft_proposals_total", "counter"],
  ["mokv_raft_proposal_commit_seconds", "histogram"],
  ["mokv_raft_append_batch_entries", "histogram"],
  ["mokv_deno_kv_commit_seconds", "histogram"],
  ["mokv_snapshots_total", "counter"],
  ["mokv_snapshot_duration_seconds", "histogram"],
  ["mokv_snapshot_size_bytes", "gauge"],
  ["mokv_replication_lag_entries", "gauge"],
  ["mokv_transport_errors_total", "counter"],
  ["mokv_gossip_members", "gauge"],
  ["mokv_gossip_probe_failures_total", "counter"],
  ["mokv_gossip_packet_failures_total", "counter"],
  ["mokv_grpc_requests_total", "counter"],
  ["mokv_grpc_request_duration_seconds", "histogram"],
  ["mokv_denied_requests_total", "counter"],
  ["mokv_store_keys", "gauge"],
  ["mokv_store_bytes", "gauge"],
];

function find(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const hit = samples.find((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  assert(hit !== undefined, `no sample ${name} ${JSON.stringify(labels)}`);
  return hit.value;
}

function exercise(m: NodeMetrics): void {
  m.raftTerm.set(5);
  m.setRole("leader");
  m.raftCommitIndex.set(100);
  m.raftAppliedIndex.set(99);
  m.raftLeaderChangesTotal.inc();
  m.raftProposalsTotal.inc(3);
  m.raftProposalCommitSeconds.observe(0.002);
  m.raftAppendBatchEntries.observe(17);
  m.denoKvCommitSeconds.observe(0.0004);
  m.snapshotsTotal.inc();
  m.snapshotDurationSeconds.observe(0.3);
  m.snapshotSizeBytes.set(4096);
  m.replicationLagEntries.set({ peer: "n2" }, 7);
  m.transportErrorsTotal.inc({ peer: "n3" });
  m.gossipMembers.set({ state: "alive" }, 3);
  m.gossipProbeFailuresTotal.inc();
  m.gossipPacketFailuresTotal.inc({ reason: "auth" });
  m.grpcRequestsTotal.inc({ method: "Get", code: "OK" });
  m.grpcRequestDurationSeconds.observe({ method: "Get" }, 0.001);
  m.deniedRequestsTotal.inc({ action: "produce" });
  m.storeKeys.set(10);
  m.storeBytes.set(2560);
}

Deno.test("/metrics serves parseable text with every family; /healthz follows the callback", async () => {
  const metrics = createNodeMetrics({ defaultLabels: { node: "n1" } });
  exercise(metrics);
  let healthy = true;
  const server = await serveMetrics({
    port: 0,
    hostname: "127.0.0.1",
    registry: metrics.registry,
    healthy: () => healthy,
  });
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const res = await fetch(`${base}/metrics`);
    assert(res.status === 200, `status ${res.status}`);
    assert(res.headers.get("content-type")?.startsWith("text/plain") ?? false, "content type");
    const { types, samples } = parseExposition(await res.text());
    for (const [name, type] of FAMILIES) {
      assert(types.get(name) === type, `${name} must be a ${type}, got ${types.get(name)}`);
    }
    assert(types.has("process_cpu_seconds_total"), "default process metrics are collected");
    assert(find(samples, "mokv_raft_term") === 5, "term");
    assert(find(samples, "mokv_raft_role", { role: "leader" }) === 1, "leader role is 1");
    assert(find(samples, "mokv_raft_role", { role: "follower" }) === 0, "follower role is 0");
    assert(find(samples, "mokv_raft_proposals_total") === 3, "proposals");
    assert(find(samples, "mokv_replication_lag_entries", { peer: "n2" }) === 7, "lag");
    assert(find(samples, "mokv_grpc_requests_total", { method: "Get", code: "OK" }) === 1, "grpc");
    assert(find(samples, "mokv_raft_append_batch_entries_count") === 1, "histogram count");
    assert(find(samples, "mokv_raft_append_batch_entries_sum") === 17, "histogram sum");
    assert(
      find(samples, "mokv_raft_append_batch_entries_bucket", { le: "16" }) === 0 &&
        find(samples, "mokv_raft_append_batch_entries_bucket", { le: "32" }) === 1,
      "histogram buckets",
    );
    assert(samples.every((s) => s.labels.node === "n1"), "default labels on every series");

    const ok = await fetch(`${base}/healthz`);
    assert(ok.status === 200 && (await ok.text()).trim() === "ok", "healthy answers 200 ok");
    healthy = false;
    const bad = await fetch(`${base}/healthz`);
    assert(bad.status === 503, `unhealthy answers 503, got ${bad.status}`);
    await bad.body?.cancel();
    const missing = await fetch(`${base}/nope`);
    assert(missing.status === 404, "unknown paths answer 404");
    await missing.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("a throwing health callback answers 503", async () => {
  const metrics = createNodeMetrics({ processMetrics: false });
  const server = await serveMetrics({
    port: 0,
    hostname: "127.0.0.1",
    registry: metrics.registry,
    healthy: () => {
      throw new Error("boom");
    },
  });
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    assert(res.status === 503, `status ${res.status}`);
    await res.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("two nodes in one process keep separate registries", async () => {
  const a = createNodeMetrics();
  const b = createNodeMetrics();
  a.raftTerm.set(3);
  b.raftTerm.set(9);
  a.storeKeys.set(1);
  const termA = find(parseExposition(await a.registry.metrics()).samples, "mokv_raft_term");
  const termB = find(parseExposition(await b.registry.metrics()).samples, "mokv_raft_term");
  assert(termA === 3 && termB === 9, `terms ${termA} and ${termB}`);
  const keysB = find(parseExposition(await b.registry.metrics()).samples, "mokv_store_keys");
  assert(keysB === 0, "b's store keys are untouched by a");
});

Deno.test("serveMetrics rejects a port already in use", async () => {
  const metrics = createNodeMetrics({ processMetrics: false });
  const first = await serveMetrics({
    port: 0,
    hostname: "127.0.0.1",
    registry: metrics.registry,
    healthy: () => true,
  });
  try {
    let failed = false;
    try {
      const second = await serveMetrics({
        port: first.port,
        hostname: "127.0.0.1",
        registry: metrics.registry,
        healthy: () => true,
      });
      await second.close();
    } catch (err) {
      failed = err instanceof Deno.errors.AddrInUse;
    }
    assert(failed, "binding a used port must reject with AddrInUse");
  } finally {
    await first.close();
  }
});

Deno.test("the event-loop lag probe sees a blocked loop", async () => {
  const seen: number[] = [];
  const probe = startEventLoopLagProbe((s) => seen.push(s), 10);
  await new Promise((r) => setTimeout(r, 30));
  const until = performance.now() + 120;
  while (performance.now() < until) { /* hold the loop */ }
  await new Promise((r) => setTimeout(r, 30));
  probe.stop();
  const max = probe.takeMaxSeconds();
  if (!(max >= 0.09)) throw new Error(`max lag ${max}`);
  if (!seen.some((s) => s >= 0.09)) throw new Error(`observed ${seen}`);
  if (probe.takeMaxSeconds() !== 0) throw new Error("takeMaxSeconds must start over");
});

Deno.test("the node families include event-loop lag, external memory and the Raft log's memory", async () => {
  const m = createNodeMetrics({ processMetrics: false });
  m.eventLoopLagSeconds.set(0.25);
  m.eventLoopDelaySeconds.observe(0.002);
  m.processExternalMemoryBytes.set(1234);
  m.raftLogMemoryBytes.set(4096);
  m.raftSnapshotMemoryBytes.set(0);
  const text = await m.registry.metrics();
  for (
    const line of [
      "mokv_event_loop_lag_seconds 0.25",
      'mokv_event_loop_delay_seconds_bucket{le="0.005"} 1',
      "mokv_process_external_memory_bytes 1234",
      "mokv_raft_log_memory_bytes 4096",
      "mokv_raft_snapshot_memory_bytes 0",
    ]
  ) {
    if (!text.includes(line)) throw new Error(`missing ${line}`);
  }
});
