/**
 * Metrics: `createNodeMetrics()` makes one registry per node holding every `mokv_` family,
 * and `serveMetrics` exposes it on `/metrics` next to a `/healthz` probe.
 */
export {
  createNodeMetrics,
  type NodeMetrics,
  type NodeMetricsOptions,
  type RaftRole,
} from "./node_metrics.ts";
export { type EventLoopLagProbe, startEventLoopLagProbe } from "./event_loop_lag.ts";
export { type MetricsServer, serveMetrics, type ServeMetricsOptions } from "./serve_metrics.ts";
