import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { KvClient } from "../../src/api/mod.ts";
import {
  createGrpcServer,
  dialRaft,
  type ListeningPort,
  listenPort,
  LocalBackend,
  type RaftPeer,
} from "../../src/server/mod.ts";
import { makeTestCerts, type TestCerts } from "../helpers/certs.ts";
import { call, callError, td, te, waitFor } from "./_helpers.ts";

const read = (path: string) => Deno.readTextFile(path);

interface TlsHarness {
  readonly certs: TestCerts;
  readonly port: ListeningPort;
  readonly address: string;
  readonly raft: { socket: Duplex; peer: RaftPeer }[];
  readonly subjects: string[];
  client(pair: { cert: string; key: string } | undefined, ca?: string): Promise<
    InstanceType<typeof KvClient>
  >;
  close(): Promise<void>;
}

async function startTls(): Promise<TlsHarness> {
  const certs = await makeTestCerts();
  const subjects: string[] = [];
  const server = createGrpcServer({
    backend: new LocalBackend({ nodeId: "n1" }),
    authorize: (subject, _object, action) => {
      subjects.push(subject);
      return subject === "root" || action === "consume";
    },
  });
  const raft: { socket: Duplex; peer: RaftPeer }[] = [];
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    tls: {
      cert: await read(certs.server.cert),
      key: await read(certs.server.key),
      ca: await read(certs.ca),
    },
    onRaftSocket: (socket, peer) => raft.push({ socket, peer }),
    handshakeTimeoutMs: 1000,
  });
  const clients: grpc.Client[] = [];
  return {
    certs,
    port,
    address: `127.0.0.1:${port.port}`,
    raft,
    subjects,
    client: async (pair, ca = certs.ca) => {
      const creds = grpc.credentials.createSsl(
        Buffer.from(await read(ca)),
        pair ? Buffer.from(await read(pair.key)) : null,
        pair ? Buffer.from(await read(pair.cert)) : null,
      );
      // Deno refuses an IP address as TLS server name; the certificate also names localhost.
      const c = new KvClient(`127.0.0.1:${port.port}`, creds, {
        "grpc.ssl_target_name_override": "localhost",
      });
      clients.push(c);
      return c;
    },
    close: async () => {
      for (const c of clients) c.close();
      for (const r of raft) r.socket.destroy();
      server.forceShutdown();
      await port.close();
    },
  };
}

const deadline = () => ({ deadline: Date.now() + 3000 });

Deno.test("TLS port: mutual-TLS gRPC works and the client CN reaches authorize", async () => {
  const h = await startTls();
  try {
    const root = await h.client(h.certs.rootClient);
    await call(root, root.Set, { key: "k", value: te.encode("v") });
    assertEquals(td.decode((await call(root, root.Get, { key: "k" })).value), "v");
    const nobody = await h.client(h.certs.nobodyClient);
    const denied = await callError(nobody, nobody.Set, { key: "k", value: te.encode("x") });
    assertEquals(denied.code, grpc.status.PERMISSION_DENIED);
    assertEquals(denied.details, "nobody may not produce k");
    assertEquals(h.subjects, ["root", "root", "nobody"]);
  } finally {
    await h.close();
  }
});

Deno.test("TLS port: no client certificate or another CA's certificate gets nothing", async () => {
  const h = await startTls();
  try {
    const anonymous = await h.client(undefined);
    const e1 = await new Promise<grpc.ServiceError | null>((resolve) =>
      anonymous.Get({ key: "k" }, new grpc.Metadata(), deadline(), (e) => resolve(e))
    );
    assertEquals(e1?.code, grpc.status.UNAVAILABLE);
    // A client of another CA, which trusts our server's CA but presents its own certificate.
    const foreign = await h.client(h.certs.otherCa.client, h.certs.ca);
    const e2 = await new Promise<grpc.ServiceError | null>((resolve) =>
      foreign.Get({ key: "k" }, new grpc.Metadata(), deadline(), (e) => resolve(e))
    );
    assertEquals(e2?.code, grpc.status.UNAVAILABLE);
    // The node still serves a proper client.
    const root = await h.client(h.certs.rootClient);
    await call(root, root.Set, { key: "ok", value: te.encode("1") });
  } finally {
    await h.close();
  }
});

Deno.test("TLS port: a raft dial with ALPN mokv-raft reaches onRaftSocket with the peer CN", async () => {
  const h = await startTls();
  try {
    const dialed = await dialRaft({
      host: "127.0.0.1",
      port: h.port.port,
      tls: {
        cert: await read(h.certs.server.cert),
        key: await read(h.certs.server.key),
        ca: await read(h.certs.ca),
      },
    });
    await waitFor(() => h.raft.length === 1);
    assertEquals(h.raft[0].peer, { cn: "mokv-server" });
    const got = new Promise<string>((resolve) =>
      h.raft[0].socket.once("data", (d: Uint8Array) => resolve(td.decode(d)))
    );
    dialed.write(te.encode("append"));
    assertEquals(await got, "append");
    dialed.destroy();

    // A peer certificate from another CA is refused.
    let refused = false;
    try {
      const bad = await dialRaft({
        host: "127.0.0.1",
        port: h.port.port,
        timeoutMs: 3000,
        tls: {
          cert: await read(h.certs.otherCa.server.cert),
          key: await read(h.certs.otherCa.server.key),
          ca: await read(h.certs.ca),
        },
      });
      // rustls may finish the client side before the server's alert arrives.
      await new Promise<void>((resolve) => {
        bad.on("close", () => resolve());
        bad.on("error", () => resolve());
        bad.write(te.encode("x"));
      });
      refused = true;
    } catch {
      refused = true;
    }
    assert(refused);
    assertEquals(h.raft.length, 1);
  } finally {
    await h.close();
  }
});

Deno.test("TLS port: plaintext, garbage and silent sockets are dropped; the node keeps serving", async () => {
  const h = await startTls();
  try {
    const rawExchange = (bytes: Uint8Array) =>
      new Promise<void>((resolve) => {
        const socket = net.connect({ host: "127.0.0.1", port: h.port.port }, () => {
          if (bytes.length) socket.write(bytes);
        });
        socket.on("data", () => {});
        socket.on("error", () => resolve());
        socket.on("close", () => resolve());
      });
    await Promise.all([
      rawExchange(te.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), // plaintext HTTP/2 preface
      rawExchange(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])),
      rawExchange(new Uint8Array(0)), // silent: dropped by the handshake timeout
    ]);
    // A TLS client that offers neither h2 nor mokv-raft without a certificate.
    await new Promise<void>((resolve) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: h.port.port,
        ca: Deno.readTextFileSync(h.certs.ca),
        rejectUnauthorized: false,
      });
      socket.on("data", () => {});
      socket.on("error", () => resolve());
      socket.on("close", () => resolve());
    });
    const root = await h.client(h.certs.rootClient);
    await call(root, root.Set, { key: "alive", value: te.encode("yes") });
    assertEquals(td.decode((await call(root, root.Get, { key: "alive" })).value), "yes");
    assertEquals(h.raft.length, 0);
  } finally {
    await h.close();
  }
});
