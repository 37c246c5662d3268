/**
 * `mokv [flags]`: runs a node until a signal. SIGINT/SIGTERM stop it as a restart (it stays
 * a member; with `leave-on-terminate` it leaves for good), SIGHUP reloads the ACL policy.
 * Logs go to stderr as JSON lines; metrics and /healthz to `metrics-port`.
 */
import * as grpc from "@grpc/grpc-js";
import { parseConfig } from "../config/mod.ts";
import type { NodeConfig } from "../config/mod.ts";
import { ConfigError } from "../errors.ts";
import { configureLogging, getLogger } from "../log/mod.ts";
import {
  createNodeMetrics,
  type EventLoopLagProbe,
  type NodeMetrics,
  serveMetrics,
  startEventLoopLagProbe,
} from "../metrics/mod.ts";
import { type MallocTrimmer, startMallocTrim } from "./malloc_trim.ts";
import { MokvNode, type NodeHooks } from "./node.ts";

/** Builds the hooks that feed metrics and logs from every layer of one node. */
export function instrument(metrics: NodeMetrics, nodeId: string): NodeHooks {
  const raftLog = getLogger("raft", nodeId);
  const grpcLog = getLogger("grpc", nodeId);
  const gossipLog = getLogger("gossip", nodeId);
  let leader = "";
  return {
    onSoftState(s) {
      metrics.raftTerm.set(s.term);
      metrics.setRole(s.role === "preCandidate" ? "candidate" : s.role);
      if (s.leader !== leader) {
        leader = s.leader;
        metrics.raftLeaderChangesTotal.inc();
        raftLog.info("leader changed", {
          leader: s.leader || "(none)",
          term: s.term,
          role: s.role,
        });
      }
    },
    onCommitted(commit, applied) {
      metrics.raftCommitIndex.set(commit);
      metrics.raftAppliedIndex.set(applied);
    },
    onProposalCommitted(seconds) {
      metrics.raftProposalsTotal.inc();
      metrics.raftProposalCommitSeconds.observe(seconds);
    },
    onAppendBatch(entries) {
      metrics.raftAppendBatchEntries.observe(entries);
    },
    onStorageCommit(seconds) {
      metrics.denoKvCommitSeconds.observe(seconds);
    },
    onSnapshot(info) {
      metrics.snapshotsTotal.inc();
      metrics.snapshotDurationSeconds.observe(info.seconds);
      metrics.snapshotSizeBytes.set(info.bytes);
      raftLog.info("snapshot taken", info);
    },
    onConfig(config) {
      raftLog.info("configuration", { voters: config.voters, learners: config.learners });
    },
    onRequest(info) {
      const code = grpcStatusName(info.code);
      metrics.grpcRequestsTotal.inc({ method: info.method, code });
      metrics.grpcRequestDurationSeconds.observe({ method: info.method }, info.durationMs / 1000);
      if (info.code === grpc.status.PERMISSION_DENIED) {
        metrics.deniedRequestsTotal.inc({ action: info.method });
      }
      const failed = info.error !== undefined && info.code !== grpc.status.NOT_FOUND;
      if (!failed && !grpcLog.isEnabled("debug")) return; // the hot path: nothing to build
      const props = {
        method: info.method,
        code,
        duration_ms: Math.round(info.durationMs * 1000) / 1000,
        subject: info.subject,
      };
      if (failed) grpcLog.warn("request failed", { ...props, error: info.error!.message });
      else grpcLog.debug("request", props);
    },
    onGossipEvent(e) {
      gossipLog.info(`member ${e.type}`, { member: e.member.name, addr: e.member.addr });
    },
    log(level, message, props) {
      raftLog[level](message, props);
    },
  };
}

/** The canonical name of a gRPC status code ("OK", "NOT_FOUND"), as Prometheus labels use. */
function grpcStatusName(code: number): string {
  return grpc.status[code] ?? String(code);
}

/**
 * Returns a function that refreshes the metrics read rather than pushed: gauges, and counters
 * whose totals live in the gossip host and the transport (each call adds what grew since).
 */
function sampler(
  node: MokvNode,
  metrics: NodeMetrics,
  lag: EventLoopLagProbe,
  trimmer: MallocTrimmer,
): () => void {
  const lastTotals = new Map<string, number>();
  /** Passes `inc` what `total` grew by since the last sample under `key`. */
  const addGrowth = (
    key: string,
    total: number,
    inc: (delta: number) => void,
  ) => {
    const delta = total - (lastTotals.get(key) ?? 0);
    lastTotals.set(key, total);
    if (delta > 0) inc(delta);
  };
  return () => {
    metrics.eventLoopLagSeconds.set(lag.takeMaxSeconds());
    metrics.processExternalMemoryBytes.set(Deno.memoryUsage().external);
    metrics.storeKeys.set(node.storeKeys());
    metrics.storeBytes.set(node.storeBytes());
    metrics.quotaBytes.set(node.config.quotaBytes);
    metrics.quotaAlarm.set(node.quotaAlarm() ? 1 : 0);
    const counts = { alive: 0, suspect: 0, failed: 0, left: 0 };
    for (const m of node.members()) counts[m.state]++;
    for (const [state, n] of Object.entries(counts)) metrics.gossipMembers.set({ state }, n);
    const st = node.host.status();
    metrics.raftLogMemoryBytes.set(st.logDataBytes);
    metrics.raftSnapshotMemoryBytes.set(st.snapshotDataBytes);
    metrics.replicationLagEntries.reset();
    for (const [peer, p] of Object.entries(st.progress)) {
      if (peer !== node.nodeId) metrics.replicationLagEntries.set({ peer }, st.lastIndex - p.match);
    }
    const g = node.gossip.stats();
    addGrowth("trim", trimmer.stats().seconds, (d) => metrics.processMallocTrimSecondsTotal.inc(d));
    addGrowth("probe", g.probeFailures, (d) => metrics.gossipProbeFailuresTotal.inc(d));
    addGrowth("decode", g.decodeErrors, (d) => {
      metrics.gossipPacketFailuresTotal.inc({ reason: "decode" }, d);
    });
    addGrowth("auth", g.authFailures, (d) => {
      metrics.gossipPacketFailuresTotal.inc({ reason: "auth" }, d);
    });
    // Hostile or broken input the gossip host refused, one reason each.
    const refused: [string, number][] = [
      ["replay", g.replays],
      ["oversized", g.oversized],
      ["member_limit", g.membersRejected],
      ["incarnation", g.staleOrForgedUpdates],
      ["unproven_source", g.unprovenRequests],
    ];
    for (const [reason, total] of refused) {
      addGrowth(reason, total, (d) => metrics.gossipPacketFailuresTotal.inc({ reason }, d));
    }
    const peers = node.host.transport.stats().peers;
    for (const [peer, p] of Object.entries(peers)) {
      addGrowth(`peer:${peer}`, p.errors, (d) => metrics.transportErrorsTotal.inc({ peer }, d));
    }
    // A peer the transport forgot (a member gone for good) takes its label with it.
    for (const key of lastTotals.keys()) {
      const peer = key.startsWith("peer:") ? key.slice(5) : undefined;
      if (peer === undefined || Object.hasOwn(peers, peer)) continue;
      lastTotals.delete(key);
      metrics.transportErrorsTotal.remove({ peer });
    }
  };
}

/** Runs a node from command-line arguments; resolves with the exit code when it stops. */
export async function runAgent(args: readonly string[]): Promise<number> {
  let config: NodeConfig;
  try {
    config = await parseConfig(args, Deno.env.toObject());
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`mokv: ${err.message}`);
      return 2;
    }
    throw err;
  }
  configureLogging({ level: config.logLevel, format: config.logFormat, nodeId: config.nodeName });
  const log = getLogger("node", config.nodeName);
  const metrics = createNodeMetrics({ defaultLabels: { node_id: config.nodeName } });
  let node: MokvNode;
  try {
    node = await MokvNode.start(config, instrument(metrics, config.nodeName));
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`mokv: ${err.message}`);
      return 2;
    }
    log.error("start-up failed", { error: err instanceof Error ? err.message : String(err) });
    console.error(`mokv: cannot start: ${err instanceof Error ? err.message : err}`);
    return 1;
  }
  const metricsServer = config.metricsPort > 0
    ? await serveMetrics({
      port: config.metricsPort,
      hostname: config.bindAddr.host,
      registry: metrics.registry,
      healthy: () => node.isHealthy(),
    })
    : undefined;
  const lagProbe = startEventLoopLagProbe((s) => metrics.eventLoopDelaySeconds.observe(s));
  const trimmer = startMallocTrim(config.mallocTrimIntervalMs);
  const sampleTimer = setInterval(sampler(node, metrics, lagProbe, trimmer), 1000);
  log.info("node started", {
    rpc_addr: `${config.advertiseAddr}:${node.rpcPort}`,
    gossip_addr: `${config.bindAddr.host}:${config.bindAddr.port}`,
    tls: config.tls.mode,
    metrics_port: config.metricsPort,
  });

  const stopped = Promise.withResolvers<number>();
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal, leave: config.leaveOnTerminate });
    const timer = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      Deno.exit(1);
    }, 15_000);
    try {
      if (config.leaveOnTerminate) await node.leave();
      else await node.shutdown();
    } catch (err) {
      log.warn("clean stop failed", { error: String(err) });
      await node.shutdown({ transfer: false }).catch(() => undefined);
    }
    clearInterval(sampleTimer);
    lagProbe.stop();
    trimmer.stop();
    await metricsServer?.close();
    clearTimeout(timer);
    log.info("stopped");
    stopped.resolve(0);
  };
  node.host.onFatal((err) => {
    // Nothing can be served any more: exit non-zero so that a supervisor restarts the node,
    // which then recovers from its disk.
    log.error("replication failed; exiting", { error: err.message });
    clearInterval(sampleTimer);
    lagProbe.stop();
    trimmer.stop();
    void metricsServer?.close();
    stopped.resolve(1);
  });
  node.onLeft(() => {
    // `mokv leave` (Admin.Leave) finished: the process has nothing left to do.
    clearInterval(sampleTimer);
    lagProbe.stop();
    trimmer.stop();
    void metricsServer?.close();
    stopped.resolve(0);
  });
  Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));
  Deno.addSignalListener("SIGHUP", () => {
    if (!node.authorizer) return;
    node.authorizer.reload().then(
      () => log.info("ACL policy reloaded"),
      (err) => log.error("ACL policy reload failed; keeping the old one", { error: String(err) }),
    );
  });
  return await stopped.promise;
}
