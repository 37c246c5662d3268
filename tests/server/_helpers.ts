/** Shared test plumbing: a real gRPC server on 127.0.0.1 and promise wrappers for clients. */
import * as grpc from "@grpc/grpc-js";
import { KvClient, type MessageInput, type UnaryMethod } from "../../src/api/mod.ts";
import {
  createGrpcServer,
  type GrpcServerOptions,
  type ListeningPort,
  listenPort,
  LocalBackend,
} from "../../src/server/mod.ts";
import type { Duplex } from "node:stream";

/** A running node edge: server, shared port, backend, and a connected KV client. */
export interface Harness {
  readonly backend: LocalBackend;
  readonly server: grpc.Server;
  readonly port: ListeningPort;
  readonly address: string;
  readonly kv: InstanceType<typeof KvClient>;
  readonly raftSockets: Duplex[];
  close(): Promise<void>;
}

/** Starts a plaintext shared port with every service, backed by a fresh LocalBackend. */
export async function startHarness(
  options: Partial<GrpcServerOptions> & { backend?: LocalBackend } = {},
): Promise<Harness> {
  const backend = options.backend ?? new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:0" });
  const server = createGrpcServer({ ...options, backend });
  const raftSockets: Duplex[] = [];
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    onRaftSocket: (socket) => raftSockets.push(socket),
    handshakeTimeoutMs: 500,
  });
  const address = `127.0.0.1:${port.port}`;
  const kv = new KvClient(address, grpc.credentials.createInsecure());
  return {
    backend,
    server,
    port,
    address,
    kv,
    raftSockets,
    close: async () => {
      kv.close();
      for (const s of raftSockets) s.destroy();
      server.forceShutdown();
      await port.close();
    },
  };
}

/** Calls a unary method of `client` and resolves with its response. */
export function call<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  request: MessageInput<Req>,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, (error, response) => (error ? reject(error) : resolve(response!)));
  });
}

/** Calls a unary method that must fail and resolves with the ServiceError. */
export async function callError<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  request: MessageInput<Req>,
): Promise<grpc.ServiceError> {
  try {
    await call(client, method, request);
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error("expected the call to fail");
}

/** Collects a server stream. */
export function collect<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const items: T[] = [];
    stream.on("data", (item: T) => items.push(item));
    stream.on("error", reject);
    stream.on("end", () => resolve(items));
  });
}

/** Resolves when `predicate` holds, polling every 10 ms for at most `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const te = new TextEncoder();
export const td = new TextDecoder();
