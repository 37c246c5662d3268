/**
 * grpc.health.v1.Health (what Kubernetes gRPC probes and load balancers ask): SERVING exactly
 * when the backend says it is healthy (it knows a leader and has caught up), for the whole
 * server ("") and for "api.KV".
 */
import * as grpc from "@grpc/grpc-js";
import type { HealthCheckRequest, HealthCheckResponse, ServingStatus } from "../api/mod.ts";
import type { KvBackend } from "./backend.ts";

/** The service names Check and Watch know. */
export const HEALTH_SERVICES: readonly string[] = ["", "api.KV"];

/** Settings of the health service. */
export interface HealthServiceOptions {
  /** How often a Watch re-reads `isHealthy()`; default 1000 ms. */
  readonly watchIntervalMs?: number;
}

/**
 * Builds the Health handlers. Check answers NOT_FOUND for an unknown service (as the protocol
 * says); Watch sends the status at once and again on every change, SERVICE_UNKNOWN for an unknown
 * service, until the client cancels.
 */
export function createHealthHandlers(
  backend: Pick<KvBackend, "isHealthy">,
  options: HealthServiceOptions = {},
): grpc.UntypedServiceImplementation {
  const watchIntervalMs = options.watchIntervalMs ?? 1000;
  const statusOf = (service: string): ServingStatus => {
    if (!HEALTH_SERVICES.includes(service)) return "SERVICE_UNKNOWN";
    return backend.isHealthy() ? "SERVING" : "NOT_SERVING";
  };

  const Check: grpc.handleUnaryCall<HealthCheckRequest, HealthCheckResponse> = (
    call,
    callback,
  ) => {
    const status = statusOf(call.request.service);
    if (status === "SERVICE_UNKNOWN") {
      callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
      return;
    }
    callback(null, { status });
  };

  const Watch: grpc.handleServerStreamingCall<HealthCheckRequest, HealthCheckResponse> = (
    call,
  ) => {
    let last = statusOf(call.request.service);
    call.write({ status: last });
    const timer = setInterval(() => {
      const now = statusOf(call.request.service);
      if (now !== last) {
        last = now;
        call.write({ status: now });
      }
    }, watchIntervalMs);
    const stop = () => clearInterval(timer);
    call.once("cancelled", stop);
    call.once("close", stop);
    call.once("error", stop);
    call.once("finish", stop);
  };

  return { Check, Watch };
}
