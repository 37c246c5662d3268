/**
 * A call's subject comes from the certificate of its own connection, never from a table keyed
 * by `addr:port`, and a server fed by a TLS port refuses (UNAUTHENTICATED) a call on a
 * connection that carries no verified certificate, however it got there.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { KvClient } from "../../src/api/mod.ts";
import { createGrpcServer, listenPort, LocalBackend } from "../../src/server/mod.ts";
import { assertEquals } from "../helpers/assert.ts";
import { makeTestCerts } from "../helpers/certs.ts";
import { call, callError, te } from "./_helpers.ts";

const read = (p: string) => Deno.readTextFileSync(p);

Deno.test("identity: a plaintext connection to a TLS-fed server is UNAUTHENTICATED, even if authorize allows all", async () => {
  const certs = await makeTestCerts();
  const subjects: string[] = [];
  const server = createGrpcServer({
    backend: new LocalBackend({ nodeId: "n1" }),
    authorize: (subject) => (subjects.push(subject), true),
  });
  const tlsPort = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    tls: { cert: read(certs.server.cert), key: read(certs.server.key), ca: read(certs.ca) },
    onRaftSocket: (s) => s.destroy(),
  });
  // The same server also fed without TLS: a misconfiguration, or any route around the TLS port.
  const plainPort = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    onRaftSocket: (s) => s.destroy(),
  });
  const plain = new KvClient(`127.0.0.1:${plainPort.port}`, grpc.credentials.createInsecure());
  const root = new KvClient(
    `127.0.0.1:${tlsPort.port}`,
    grpc.credentials.createSsl(
      Buffer.from(read(certs.ca)),
      Buffer.from(read(certs.rootClient.key)),
      Buffer.from(read(certs.rootClient.cert)),
    ),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  try {
    const e = await callError(plain, plain.Set, { key: "k", value: te.encode("x") });
    assertEquals(e.code, grpc.status.UNAUTHENTICATED);
    await call(root, root.Set, { key: "k", value: te.encode("v") });
    assertEquals(subjects, ["root"]);
  } finally {
    plain.close();
    root.close();
    server.forceShutdown();
    await tlsPort.close();
    await plainPort.close();
  }
});

Deno.test("identity: interleaved connections of different subjects each act as their own certificate", async () => {
  const certs = await makeTestCerts();
  const seen: string[] = [];
  const server = createGrpcServer({
    backend: new LocalBackend({ nodeId: "n1" }),
    authorize: (subject, object) => {
      seen.push(`${subject}:${object}`);
      return subject === "root" || object.startsWith("nobody/");
    },
  });
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    tls: { cert: read(certs.server.cert), key: read(certs.server.key), ca: read(certs.ca) },
    onRaftSocket: (s) => s.destroy(),
  });
  const clientOf = (pair: { cert: string; key: string }) =>
    new KvClient(
      `127.0.0.1:${port.port}`,
      grpc.credentials.createSsl(
        Buffer.from(read(certs.ca)),
        Buffer.from(read(pair.key)),
        Buffer.from(read(pair.cert)),
      ),
      { "grpc.ssl_target_name_override": "localhost" },
    );
  const clients: InstanceType<typeof KvClient>[] = [];
  try {
    // Several connections of each subject opened and closed in turn, so peer names come and go.
    for (let round = 0; round < 4; round++) {
      const root = clientOf(certs.rootClient);
      const nobody = clientOf(certs.nobodyClient);
      clients.push(root, nobody);
      await call(root, root.Set, { key: `root/${round}`, value: te.encode("r") });
      const denied = await callError(nobody, nobody.Set, {
        key: `root/${round}`,
        value: te.encode("n"),
      });
      assertEquals(denied.code, grpc.status.PERMISSION_DENIED);
      await call(nobody, nobody.Set, { key: `nobody/${round}`, value: te.encode("n") });
      if (round % 2 === 0) root.close();
      else nobody.close();
    }
    assertEquals(seen.filter((s) => s.startsWith("root:")).length, 4);
    assertEquals(seen.filter((s) => s.startsWith("nobody:")).length, 8);
  } finally {
    for (const c of clients) c.close();
    server.forceShutdown();
    await port.close();
  }
});
