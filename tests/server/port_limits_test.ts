/**
 * What one connection may cost the node before any request is authorized: HTTP/2 frames longer
 * than the protocol allows close the connection at their header (the guard never collects a
 * frame), a maximum-size frame trickled byte by byte still works, and open connections, TLS
 * handshakes in progress, silent and idle connections are all bounded, while the node keeps
 * serving Gets on other connections.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { KvClient } from "../../src/api/mod.ts";
import {
  createGrpcServer,
  DEFAULT_MAX_CONCURRENT_STREAMS,
  type GrpcServerOptions,
  type ListeningPort,
  listenPort,
  type ListenPortOptions,
  LocalBackend,
  MAX_FRAME_PAYLOAD_BYTES,
} from "../../src/server/mod.ts";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { makeTestCerts } from "../helpers/certs.ts";
import {
  connectRaw,
  DATA,
  END_STREAM,
  frame,
  frameHeader,
  grpcHeaders,
  grpcMessage,
  parseFrames,
  PREFACE,
  type RawConnection,
  type RawTls,
  SETTINGS,
} from "./_h2_raw.ts";
import { call, td, te, waitFor } from "./_helpers.ts";

/** A generous bound for one Get on a loaded 2-core machine. */
const GET_WITHIN_MS = 2000;

interface Node {
  readonly port: ListeningPort;
  readonly server: grpc.Server;
  readonly backend: LocalBackend;
  /** A fresh KV client (its own connection). */
  client(): InstanceType<typeof KvClient>;
  /** TLS settings for a raw client with the root certificate, when the node runs TLS. */
  readonly rawTls?: RawTls;
  close(): Promise<void>;
}

async function startNode(
  options: {
    tls?: boolean;
    server?: Partial<GrpcServerOptions>;
    port?: Partial<ListenPortOptions>;
  } = {},
): Promise<Node> {
  const backend = new LocalBackend({ nodeId: "n1" });
  const server = createGrpcServer({ backend, ...options.server });
  const certs = options.tls ? await makeTestCerts() : undefined;
  const read = (p: string) => Deno.readTextFileSync(p);
  const port = await listenPort({
    host: "127.0.0.1",
    port: 0,
    grpcServer: server,
    onRaftSocket: (s) => s.destroy(),
    ...(certs
      ? { tls: { cert: read(certs.server.cert), key: read(certs.server.key), ca: read(certs.ca) } }
      : {}),
    ...options.port,
  });
  const clients: grpc.Client[] = [];
  return {
    port,
    server,
    backend,
    rawTls: certs
      ? {
        ca: read(certs.ca),
        cert: read(certs.rootClient.cert),
        key: read(certs.rootClient.key),
        alpn: "h2",
      }
      : undefined,
    client: () => {
      const creds = certs
        ? grpc.credentials.createSsl(
          Buffer.from(read(certs.ca)),
          Buffer.from(read(certs.rootClient.key)),
          Buffer.from(read(certs.rootClient.cert)),
        )
        : grpc.credentials.createInsecure();
      const c = new KvClient(`127.0.0.1:${port.port}`, creds, {
        "grpc.ssl_target_name_override": "localhost",
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 300,
      });
      clients.push(c);
      return c;
    },
    close: async () => {
      for (const c of clients) c.close();
      server.forceShutdown();
      await port.close();
    },
  };
}

/** A Get on `client` that must answer within {@link GET_WITHIN_MS}; returns the value. */
function timedGet(client: InstanceType<typeof KvClient>, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    client.Get(
      { key },
      new grpc.Metadata(),
      { deadline: Date.now() + GET_WITHIN_MS },
      (err, res) => (err ? reject(err) : resolve(td.decode(res!.value))),
    );
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A client's opening: preface and an empty SETTINGS frame. */
const OPENING = Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, new Uint8Array(0))]);

Deno.test("port limits: the server's SETTINGS allow no frame above 16 KiB and bound concurrent streams", async () => {
  const node = await startNode();
  let conn: RawConnection | undefined;
  try {
    conn = await connectRaw(node.port.port);
    await conn.write(OPENING);
    let settings: Map<number, number> | undefined;
    await waitFor(() => {
      const f = parseFrames(conn!.received()).find((f) => f.type === SETTINGS && f.flags === 0);
      if (!f) return false;
      settings = new Map();
      const view = new DataView(f.payload.buffer, f.payload.byteOffset);
      for (let at = 0; at + 6 <= f.payload.length; at += 6) {
        settings.set(view.getUint16(at), view.getUint32(at + 2));
      }
      return true;
    }, 3000);
    // SETTINGS_MAX_FRAME_SIZE (0x5): absent means 16,384, what the guard enforces.
    assert_((settings!.get(0x5) ?? 16_384) <= MAX_FRAME_PAYLOAD_BYTES, "max frame size");
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
    assertEquals(settings!.get(0x3), DEFAULT_MAX_CONCURRENT_STREAMS);
  } finally {
    conn?.destroy();
    await node.close();
  }
});

Deno.test("port limits: a trickled 16 MiB frame is refused at its header while Gets go on", async () => {
  const node = await startNode();
  const attacker = await connectRaw(node.port.port);
  try {
    const c = node.client();
    await call(c, c.Set, { key: "k", value: te.encode("v") });
    await attacker.write(OPENING);
    await attacker.write(frameHeader(DATA, 0, 1, 16 * 1024 * 1024 - 1));
    // Trickle the body; the connection must close long before 16 MiB arrive.
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    const deadline = Date.now() + 5000;
    const trickle = (async () => {
      while (!attacker.isClosed() && sent < 4 * 1024 * 1024 && Date.now() < deadline) {
        if (!(await attacker.write(chunk))) break;
        sent += chunk.length;
        await sleep(5);
      }
    })();
    for (let i = 0; i < 5; i++) assertEquals(await timedGet(c, "k"), "v");
    assert_(await attacker.closedWithin(2000), "the oversized frame's connection stays open");
    await trickle;
    assert_(sent < 4 * 1024 * 1024, `the server read ${sent} bytes of an oversized frame`);
    assertEquals(await timedGet(node.client(), "k"), "v");
  } finally {
    attacker.destroy();
    await node.close();
  }
});

Deno.test("port limits: a maximum-size frame trickled in small pieces still works, Gets go on", async () => {
  const node = await startNode();
  const slow = await connectRaw(node.port.port);
  try {
    const c = node.client();
    await call(c, c.Set, { key: "k", value: te.encode("v") });
    // SetRequest{key="big" (field 1), value=bytes (field 2)} filling one 16,384-byte DATA frame.
    const valueBytes = MAX_FRAME_PAYLOAD_BYTES - 5 - 5 - 3;
    const body = new Uint8Array(5 + 3 + valueBytes);
    body.set([0x0a, 0x03, ...te.encode("big"), 0x12, 0x80 | (valueBytes & 0x7f), valueBytes >> 7]);
    body.fill(0x61, 8);
    const data = frame(DATA, END_STREAM, 1, grpcMessage(body));
    assertEquals(data.length, 9 + MAX_FRAME_PAYLOAD_BYTES);
    const bytes = Buffer.concat([OPENING, grpcHeaders(1, "/api.KV/Set"), data]);
    // 7-byte pieces: frame headers are split across pieces too.
    const trickle = (async () => {
      for (let at = 0; at < bytes.length; at += 7 * 64) {
        for (let i = 0; i < 64 && at + i * 7 < bytes.length; i++) {
          await slow.write(bytes.subarray(at + i * 7, Math.min(at + (i + 1) * 7, bytes.length)));
        }
        await sleep(1);
      }
    })();
    for (let i = 0; i < 5; i++) assertEquals(await timedGet(c, "k"), "v");
    await trickle;
    await waitFor(() => node.backend.reader.get("big") !== undefined, 5000);
    assertEquals(node.backend.reader.get("big")?.value.length, valueBytes);
    assert_(!slow.isClosed(), "a legitimate connection was closed");
  } finally {
    slow.destroy();
    await node.close();
  }
});

Deno.test("port limits: many silent connections do not stop the node serving", async () => {
  const node = await startNode({ tls: true, port: { handshakeTimeoutMs: 1000 } });
  const silent: RawConnection[] = [];
  try {
    for (let i = 0; i < 100; i++) silent.push(await connectRaw(node.port.port));
    assertEquals(
      await timedGet(node.client(), "absent").catch((e) => e.code),
      grpc.status.NOT_FOUND,
    );
    // Each is closed once its handshake timeout passes.
    await waitFor(() => silent.every((s) => s.isClosed()), 5000);
    await waitFor(() => node.port.stats().pendingHandshakes === 0, 2000);
  } finally {
    for (const s of silent) s.destroy();
    await node.close();
  }
});

Deno.test("port limits: beyond max-pending-handshakes new sockets are closed at once; the node still serves", async () => {
  const node = await startNode({
    tls: true,
    port: { handshakeTimeoutMs: 1500, maxPendingHandshakes: 5 },
  });
  const silent: RawConnection[] = [];
  try {
    for (let i = 0; i < 12; i++) silent.push(await connectRaw(node.port.port));
    // The five admitted ones wait for their timeout; the other seven are closed well before it.
    await waitFor(() => silent.filter((s) => s.isClosed()).length >= 7, 1000);
    assert_(node.port.stats().pendingHandshakes <= 5, "pending handshakes exceed the limit");
    await waitFor(() => silent.every((s) => s.isClosed()), 5000);
    assertEquals(
      await timedGet(node.client(), "absent").catch((e) => e.code),
      grpc.status.NOT_FOUND,
    );
  } finally {
    for (const s of silent) s.destroy();
    await node.close();
  }
});

Deno.test("port limits: beyond max-connections new connections are closed; the node serves again once some close", async () => {
  const node = await startNode({ tls: true, port: { maxConnections: 6 } });
  const held: RawConnection[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const c = await connectRaw(node.port.port, node.rawTls);
      await c.write(OPENING);
      held.push(c);
    }
    await waitFor(() => node.port.stats().openConnections === 6, 2000);
    const extra = await connectRaw(node.port.port).catch(() => undefined);
    assert_(extra === undefined || await extra.closedWithin(1000), "a 7th connection was kept");
    extra?.destroy();
    assertEquals(node.port.stats().openConnections, 6);
    for (const c of held.splice(0, 3)) c.destroy();
    await waitFor(() => node.port.stats().openConnections === 3, 2000);
    assertEquals(
      await timedGet(node.client(), "absent").catch((e) => e.code),
      grpc.status.NOT_FOUND,
    );
    assert_(held.every((c) => !c.isClosed()), "admitted connections were closed");
  } finally {
    for (const c of held) c.destroy();
    await node.close();
  }
});

Deno.test("port limits: a TLS connection that never sends the HTTP/2 preface is closed", async () => {
  const node = await startNode({ tls: true, port: { handshakeTimeoutMs: 500 } });
  const mute = await connectRaw(node.port.port, node.rawTls);
  try {
    assert_(await mute.closedWithin(3000), "a connection without a preface stays open");
    assertEquals(
      await timedGet(node.client(), "absent").catch((e) => e.code),
      grpc.status.NOT_FOUND,
    );
  } finally {
    mute.destroy();
    await node.close();
  }
});

Deno.test("port limits: an HTTP/2 connection with no call open is closed after the idle timeout", async () => {
  const node = await startNode({ tls: true, server: { http2IdleTimeoutMs: 300 } });
  const idle = await connectRaw(node.port.port, node.rawTls);
  try {
    await idle.write(OPENING);
    assert_(await idle.closedWithin(4000), "an idle HTTP/2 connection stays open");
    // GOAWAY (0x7) came before the close.
    assert_(parseFrames(idle.received()).some((f) => f.type === 0x7), "no GOAWAY");
    assertEquals(
      await timedGet(node.client(), "absent").catch((e) => e.code),
      grpc.status.NOT_FOUND,
    );
  } finally {
    idle.destroy();
    await node.close();
  }
});
