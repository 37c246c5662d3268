/**
 * Serves a gRPC server for a test on 127.0.0.1 through mokv's shared port (src/server/port.ts),
 * whose HTTP/2 guard drops the GOAWAY frames closing clients send. A grpc-js server bound with
 * `bindAsync` alone is exposed to Deno 2.9.6's HTTP/2 crash (an nghttp2 assertion in
 * `find_stream_on_goaway_func` aborting the whole process when a client's GOAWAY arrives while
 * other connections are open): in a test that is the test runner, with every file running in it.
 */
import type * as grpc from "@grpc/grpc-js";
import { listenPort, type TlsMaterial } from "../../src/server/mod.ts";

/** A test server on its guarded port. */
export interface GuardedPort {
  readonly port: number;
  /** `127.0.0.1:port`. */
  readonly addr: string;
  /** Shuts the server down at once (calls in flight fail) and closes the port. */
  close(): Promise<void>;
}

/** Listens on a free port of 127.0.0.1 for `server` (mutual TLS when `tls` is given). */
export async function serveGuarded(
  server: grpc.Server,
  tls?: TlsMaterial,
): Promise<GuardedPort> {
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    ...(tls ? { tls } : {}),
    onRaftSocket: (socket) => socket.destroy(),
  });
  return {
    port: port.port,
    addr: `127.0.0.1:${port.port}`,
    close: async () => {
      server.forceShutdown();
      await port.close();
    },
  };
}
