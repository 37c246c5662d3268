/** The HTTP endpoint Prometheus scrapes and Kubernetes probes: `/metrics` and `/healthz`. */
import type { Registry } from "prom-client";

/** Options of `serveMetrics`. */
export interface ServeMetricsOptions {
  /** TCP port; 0 picks a free one (read it back from the result). */
  readonly port: number;
  /** Address to bind. Default `0.0.0.0` (so Prometheus in another pod can scrape). */
  readonly hostname?: string;
  readonly registry: Registry;
  /** Answers `/healthz`: true gives 200 "ok", false (or a throw) 503. Called per request. */
  readonly healthy: () => boolean;
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** The port actually bound. */
  readonly port: number;
  /** Stops accepting connections and resolves when the server has shut down. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format from `registry`) and `GET /healthz` with
 * `Deno.serve`. Resolves once the port is bound; anything else answers 404.
 */
export function serveMetrics(options: ServeMetricsOptions): Promise<MetricsServer> {
  const { registry, healthy } = options;
  const handler = async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname;
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    switch (path) {
      case "/metrics":
        return new Response(await registry.metrics(), {
          headers: { "content-type": registry.contentType },
        });
      case "/healthz": {
        let ok = false;
        try {
          ok = healthy();
        } catch {
          ok = false;
        }
        return new Response(ok ? "ok\n" : "unhealthy\n", {
          status: ok ? 200 : 503,
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      }
      default:
        return new Response("not found\n", { status: 404 });
    }
  };
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve({
        port: options.port,
        hostname: options.hostname ?? "0.0.0.0",
        onListen: (addr) => {
          resolve({
            port: addr.port,
            close: async () => {
              await server.shutdown();
            },
          });
        },
      }, handler);
    } catch (err) {
      reject(err);
    }
  });
}
