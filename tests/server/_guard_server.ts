/**
 * A one-port server in its own process, for http2_guard_test.ts: a crash of the HTTP/2 layer
 * must not take the test runner with it. Prints the port, serves until killed.
 */
import { createGrpcServer, listenPort, LocalBackend } from "../../src/server/mod.ts";

const server = createGrpcServer({ backend: new LocalBackend({ nodeId: "guarded" }) });
const port = await listenPort({
  host: "127.0.0.1",
  port: 0,
  grpcServer: server,
  onRaftSocket: (s) => s.resume(),
});
console.log(port.port);
await new Promise(() => {});
