/**
 * Bad input on the one TLS port, each case followed by proof that the node still serves and
 * lost nothing: malformed protobuf inside valid gRPC DATA frames, invalid UTF-8 in a key,
 * garbage after the TLS handshake with ALPN h2 and with mokv-raft (into the real peer
 * transport), an expired client certificate, and a client certificate without a Common Name.
 *
 * Decisions this file pins down (README "Security"):
 * - Malformed protobuf gets INTERNAL ("Error deserializing request"), as grpc-go answers.
 * - Invalid UTF-8 in a string field is decoded the WHATWG way: each bad sequence becomes
 *   U+FFFD before validation, authorization and storage, so the key the policy decides on is
 *   the key stored and read back; the client gets a key it may not have meant, never another's.
 * - A certificate without a CN is refused at the port (connection closed, nothing served, no
 *   Raft): the CN is the subject, and an empty one would read as plaintext mode's "".
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";
import { KvClient } from "../../src/api/mod.ts";
import { PeerTransport } from "../../src/replication/transport.ts";
import {
  createGrpcServer,
  type ListeningPort,
  listenPort,
  LocalBackend,
  RAFT_ALPN,
} from "../../src/server/mod.ts";
import { assert_, assertEquals } from "../helpers/assert.ts";
import type { CertPair } from "../helpers/certs.ts";
import { connectRaw, PREFACE } from "../server/_h2_raw.ts";
import { type BadCerts, makeBadCerts } from "./_bad_certs.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const read = (p: string) => Deno.readTextFileSync(p);
const CALL_TIMEOUT_MS = 3000;

interface Node {
  readonly certs: BadCerts;
  readonly port: ListeningPort;
  readonly backend: LocalBackend;
  readonly transport: PeerTransport;
  readonly raftPeers: string[];
  readonly subjects: string[];
  client(pair: CertPair): grpc.Client;
  close(): Promise<void>;
}

async function startNode(): Promise<Node> {
  const certs = await makeBadCerts();
  const backend = new LocalBackend({ nodeId: "n1" });
  const subjects: string[] = [];
  const server = createGrpcServer({
    backend,
    authorize: (subject) => (subjects.push(subject), subject === "root"),
  });
  const transport = new PeerTransport({
    selfId: "n1",
    dial: () => Promise.reject(new Error("no dialing in this test")),
    onMessages: () => {},
    onRequest: () => Promise.resolve(new Uint8Array(0)),
    allowedPeerCns: ["mokv-server"],
  });
  const raftPeers: string[] = [];
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    tls: { cert: read(certs.server.cert), key: read(certs.server.key), ca: read(certs.ca) },
    onRaftSocket: (socket: Duplex, peer) => {
      raftPeers.push(peer.cn);
      transport.accept(socket, peer);
    },
    handshakeTimeoutMs: 1000,
  });
  const clients: grpc.Client[] = [];
  return {
    certs,
    port,
    backend,
    transport,
    raftPeers,
    subjects,
    client: (pair) => {
      const c = new grpc.Client(
        `127.0.0.1:${port.port}`,
        grpc.credentials.createSsl(
          Buffer.from(read(certs.ca)),
          Buffer.from(read(pair.key)),
          Buffer.from(read(pair.cert)),
        ),
        {
          "grpc.ssl_target_name_override": "localhost",
          "grpc.initial_reconnect_backoff_ms": 100,
          "grpc.max_reconnect_backoff_ms": 300,
        },
      );
      clients.push(c);
      return c;
    },
    close: async () => {
      for (const c of clients) c.close();
      server.forceShutdown();
      await transport.close();
      await port.close();
    },
  };
}

/** Sends `body` as the raw request message of `method` and resolves with the status code. */
function rawCall(client: grpc.Client, method: string, body: Uint8Array): Promise<grpc.status> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      `/api.KV/${method}`,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => new Uint8Array(b),
      body,
      new grpc.Metadata(),
      { deadline: Date.now() + CALL_TIMEOUT_MS },
      (err) => resolve(err ? err.code : grpc.status.OK),
    );
  });
}

/** A proper Set then Get of a fresh key through a typed client: the node still serves. */
async function assertServes(node: Node, key: string): Promise<void> {
  const kv = new KvClient(
    `127.0.0.1:${node.port.port}`,
    grpc.credentials.createSsl(
      Buffer.from(read(node.certs.ca)),
      Buffer.from(read(node.certs.root.key)),
      Buffer.from(read(node.certs.root.cert)),
    ),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  try {
    const opts = () => ({ deadline: Date.now() + CALL_TIMEOUT_MS });
    await new Promise<void>((resolve, reject) =>
      kv.Set(
        { key, value: te.encode("ok") },
        new grpc.Metadata(),
        opts(),
        (e) => e ? reject(e) : resolve(),
      )
    );
    const got = await new Promise<string>((resolve, reject) =>
      kv.Get(
        { key },
        new grpc.Metadata(),
        opts(),
        (e, r) => e ? reject(e) : resolve(td.decode(r!.value)),
      )
    );
    assertEquals(got, "ok");
  } finally {
    kv.close();
  }
}

Deno.test("bad input: malformed protobuf in valid DATA frames gets INTERNAL, the node serves on", async () => {
  const node = await startNode();
  try {
    const c = node.client(node.certs.root);
    const malformed: [string, number[]][] = [
      ["length past the end", [0x0a, 0x05, 0x61]],
      ["varint longer than 10 bytes", [0x08, ...new Array(11).fill(0xff), 0x01]],
      ["wire type 7", [0x0f, 0x00]],
      ["length-delimited length of 2^32", [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]],
      ["end-group without start", [0x0c]],
    ];
    for (const [what, bytes] of malformed) {
      for (const method of ["Get", "Set", "Delete"]) {
        const code = await rawCall(c, method, new Uint8Array(bytes));
        assert_(
          code === grpc.status.INTERNAL || code === grpc.status.INVALID_ARGUMENT,
          `${what} to ${method}: ${grpc.status[code]}`,
        );
      }
    }
    // Random bytes: whatever they decode to, the node answers and lives.
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff;
    for (let i = 0; i < 30; i++) {
      const body = new Uint8Array(1 + (rand() % 64)).map(rand);
      await rawCall(c, "Get", body);
    }
    await assertServes(node, "after-malformed");
  } finally {
    await node.close();
  }
});

Deno.test("bad input: invalid UTF-8 in a key is read as U+FFFD everywhere (policy, store, reads)", async () => {
  const node = await startNode();
  try {
    const c = node.client(node.certs.root);
    // SetRequest{key = bytes ff fe 'k', value = "v"}
    const set = [0x0a, 0x03, 0xff, 0xfe, 0x6b, 0x12, 0x01, 0x76];
    assertEquals(await rawCall(c, "Set", new Uint8Array(set)), grpc.status.OK);
    const stored = "\uFFFD\uFFFDk";
    assertEquals(node.backend.reader.get(stored) !== undefined, true);
    assertEquals(td.decode(node.backend.reader.get(stored)!.value), "v");
    // The same bytes read it back; the U+FFFD spelling does too: it is one key.
    assertEquals(await rawCall(c, "Get", new Uint8Array([0x0a, 0x03, 0xff, 0xfe, 0x6b])), 0);
    await assertServes(node, "after-utf8");
  } finally {
    await node.close();
  }
});

Deno.test("bad input: garbage after the TLS handshake (ALPN h2 and mokv-raft) is dropped, the node serves on", async () => {
  const node = await startNode();
  try {
    const garbage = new Uint8Array(4096).map((_, i) => (i * 131 + 17) & 0xff);
    for (const alpn of ["h2", RAFT_ALPN]) {
      const pair = alpn === RAFT_ALPN ? node.certs.server : node.certs.root;
      for (const payload of [garbage, te.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), PREFACE]) {
        const conn = await connectRaw(node.port.port, {
          ca: read(node.certs.ca),
          cert: read(pair.cert),
          key: read(pair.key),
          alpn,
        });
        try {
          const bytes = payload === PREFACE
            ? Buffer.concat([PREFACE, garbage]) // a valid preface, then no valid frame
            : payload;
          await conn.write(bytes);
          assert_(await conn.closedWithin(3000), `${alpn}: garbage kept the connection open`);
        } finally {
          conn.destroy();
        }
      }
    }
    assertEquals(node.raftPeers, ["mokv-server", "mokv-server", "mokv-server"]);
    assert_(
      node.transport.stats().inbound.protocolErrors >= 1,
      "the Raft transport saw no bad frame",
    );
    await assertServes(node, "after-garbage");
  } finally {
    await node.close();
  }
});

Deno.test("bad input: an expired client certificate is refused, the node serves on", async () => {
  const node = await startNode();
  try {
    const c = node.client(node.certs.expired);
    const code = await rawCall(c, "Get", new Uint8Array([0x0a, 0x01, 0x6b]));
    assertEquals(code, grpc.status.UNAVAILABLE);
    assertEquals(node.subjects, []);
    await assertServes(node, "after-expired");
  } finally {
    await node.close();
  }
});

Deno.test("bad input: a client certificate without a CN is refused for gRPC and Raft, the node serves on", async () => {
  const node = await startNode();
  try {
    const c = node.client(node.certs.noCn);
    const code = await rawCall(c, "Get", new Uint8Array([0x0a, 0x01, 0x6b]));
    assertEquals(code, grpc.status.UNAVAILABLE);
    const raft = await connectRaw(node.port.port, {
      ca: read(node.certs.ca),
      cert: read(node.certs.noCn.cert),
      key: read(node.certs.noCn.key),
      alpn: RAFT_ALPN,
    }).catch(() => undefined);
    assert_(raft === undefined || await raft.closedWithin(3000), "a no-CN Raft socket stays open");
    raft?.destroy();
    assertEquals(node.raftPeers, []);
    assertEquals(node.subjects, []);
    await assertServes(node, "after-no-cn");
  } finally {
    await node.close();
  }
});
