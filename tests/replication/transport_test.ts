import net from "node:net";
import type { Duplex } from "node:stream";
import { assert as assertTrue, assertEquals, assertRejects } from "../helpers/assert.ts";
import { Gen, MESSAGE_TYPES, seeded } from "./_gen.ts";
import {
  PeerTransport,
  RemoteError,
  TransportError,
  type TransportOptions,
} from "../../src/replication/transport.ts";
import type { Message } from "../../src/raft/types.ts";

/** Dials "host:port" over plain TCP (the tests' stand-in for the one-port server's dialRaft). */
function dialTcp(addr: string): Promise<Duplex> {
  const [host, port] = addr.split(":");
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port: Number(port) });
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

/** A node under test: a transport plus a TCP server on 127.0.0.1 that feeds it connections. */
class TestNode {
  readonly received: Message[] = [];
  transport!: PeerTransport;
  server!: net.Server;
  port = 0;
  cn: string;

  constructor(readonly id: string, readonly extra: Partial<TransportOptions> = {}) {
    this.cn = id;
  }

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(port = 0): Promise<this> {
    this.transport = new PeerTransport({
      selfId: this.id,
      dial: dialTcp,
      onMessages: (msgs) => this.received.push(...msgs),
      onRequest: (from, kind, payload) => {
        if (kind === 1) {
          return Promise.resolve(new TextEncoder().encode(`${from}:${payload.length}`));
        }
        return Promise.reject(new Error(`no handler for kind ${kind}`));
      },
      reconnectBackoffMs: { min: 10, max: 100 },
      random: seeded(7),
      ...this.extra,
    });
    this.server = net.createServer((sock) => this.transport.accept(sock, { cn: this.cn }));
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => resolve());
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.transport.close();
    await closed;
  }
}

/** Polls `cond` every 5 ms until it holds, failing after `timeoutMs`. */
async function eventually(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function heartbeat(from: string, to: string, context: number): Message {
  return { type: "heartbeat", from, to, term: 3, commit: context, context };
}

/** A port on 127.0.0.1 that nobody listens on (now). */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

Deno.test("transport: messages of every type arrive in order; a turn's sends coalesce", async () => {
  const a = await new TestNode("A").start();
  const b = await new TestNode("B").start();
  try {
    const g = new Gen(21);
    const sent: Message[] = [];
    for (let i = 0; i < 500; i++) sent.push(g.message(MESSAGE_TYPES[i % MESSAGE_TYPES.length]));
    for (const m of sent) a.transport.send("B", b.addr, [m]);
    await eventually(() => b.received.length === sent.length, "first 500");
    assertEquals(b.received, sent);
    // Hello and one batch frame: 500 sends in one turn were coalesced.
    assertEquals(a.transport.stats().peers[b.addr].sentFrames, 2);
    // Sends over many turns keep their order.
    const more: Message[] = [];
    for (let turn = 0; turn < 50; turn++) {
      const batch = [heartbeat("A", "B", 2 * turn + 1), heartbeat("A", "B", 2 * turn + 2)];
      more.push(...batch);
      a.transport.send("B", b.addr, batch);
      if (turn % 5 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await eventually(() => b.received.length === sent.length + more.length, "100 more");
    assertEquals(b.received.slice(sent.length), more);
    assertEquals(b.transport.stats().inbound.receivedMessages, 600);
    assertTrue(a.transport.stats().peers[b.addr].connected);
    assertEquals(a.transport.takeUnreachable(), []);
  } finally {
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: a 1 MiB append and large snapshot chunks go through", async () => {
  const a = await new TestNode("A").start();
  const b = await new TestNode("B").start();
  try {
    const data = new Uint8Array(1024 * 1024).map((_, i) => i & 0xff);
    const append: Message = {
      type: "append",
      from: "A",
      to: "B",
      term: 2,
      prevIndex: 9,
      prevTerm: 2,
      commit: 9,
      entries: [{ type: "normal", term: 2, index: 10, data }],
    };
    const chunks: Message[] = [];
    for (let i = 0; i < 24; i++) {
      chunks.push({
        type: "snapshot",
        from: "A",
        to: "B",
        term: 2,
        meta: { index: 100, term: 2, config: { voters: ["A", "B"], learners: [], addresses: {} } },
        offset: i * 256 * 1024,
        data: data.subarray(0, 256 * 1024),
        done: i === 23,
      });
    }
    a.transport.send("B", b.addr, [append, ...chunks]);
    await eventually(() => b.received.length === 25, "the append and 24 chunks");
    assertEquals(b.received, [append, ...chunks]);
    // 7 MiB in one turn is cut into frames of about 4 MiB.
    assertEquals(a.transport.stats().peers[b.addr].sentFrames, 1 + 2);
  } finally {
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: request/response, error frames, timeouts and the sender's id", async () => {
  let release = () => {};
  const slow = new Promise<void>((r) => (release = r));
  const a = await new TestNode("A").start();
  const b = await new TestNode("B", {
    onRequest: async (from, kind, payload) => {
      if (kind === 1) return new TextEncoder().encode(`${from}:${payload.length}`);
      if (kind === 3) {
        await slow;
        return new Uint8Array([3]);
      }
      throw new Error(`no handler for kind ${kind}`);
    },
  }).start();
  try {
    const resp = await a.transport.request(b.addr, 1, new Uint8Array(1234), 2000);
    assertEquals(new TextDecoder().decode(resp), "A:1234");
    const err = await assertRejects(
      a.transport.request(b.addr, 2, new Uint8Array(), 2000),
      RemoteError,
    );
    assertEquals(err.message, "no handler for kind 2");
    await assertRejects(a.transport.request(b.addr, 3, new Uint8Array(), 50), TransportError);
    // Many concurrent requests are pipelined on the one connection.
    const replies = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => a.transport.request(b.addr, 1, new Uint8Array(i), 2000),
      ),
    );
    assertEquals(replies.map((r) => new TextDecoder().decode(r)), replies.map((_, i) => `A:${i}`));
    assertEquals(a.transport.stats().peers[b.addr].connects, 1);
    release();
  } finally {
    release();
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: a restarted peer is reconnected and delivery resumes", async () => {
  const a = await new TestNode("A").start();
  const b = await new TestNode("B").start();
  const port = b.port;
  try {
    a.transport.send("B", b.addr, [heartbeat("A", "B", 1)]);
    await eventually(() => b.received.length === 1, "first delivery");
    await b.stop();
    // The connection loss fails pending requests and reports B unreachable.
    await eventually(() => !a.transport.stats().peers[b.addr].connected, "loss noticed");
    await assertRejects(a.transport.request(b.addr, 1, new Uint8Array(), 100), TransportError);
    assertTrue(a.transport.takeUnreachable().includes("B"));
    for (let i = 2; i <= 5; i++) {
      a.transport.send("B", b.addr, [heartbeat("A", "B", i)]);
      await new Promise((r) => setTimeout(r, 20));
    }
    const b2 = await new TestNode("B").start(port);
    try {
      a.transport.send("B", b2.addr, [heartbeat("A", "B", 6)]);
      // Everything queued while B was down arrives, in order, once it is back.
      await eventually(() => b2.received.length === 5, "delivery after restart");
      assertEquals(b2.received.map((m) => (m as { context: number }).context), [2, 3, 4, 5, 6]);
      const st = a.transport.stats().peers[b2.addr];
      assertTrue(st.connects === 2 && st.connected && st.errors >= 1, JSON.stringify(st));
    } finally {
      await b2.stop();
    }
  } finally {
    await a.stop();
  }
});

Deno.test("transport: a dead peer's queue stays bounded, dropping the oldest", async () => {
  const port = await deadPort();
  const addr = `127.0.0.1:${port}`;
  const maxQueueBytes = 32 * 1024;
  const a = await new TestNode("A", { maxQueueBytes }).start();
  try {
    const payload = new Uint8Array(1000);
    let last = 0;
    for (let turn = 1; turn <= 300; turn++) {
      last = turn;
      a.transport.send("C", addr, [{
        type: "append",
        from: "A",
        to: "C",
        term: 1,
        prevIndex: turn,
        prevTerm: 1,
        commit: 0,
        entries: [{ type: "normal", term: 1, index: turn + 1, data: payload }],
      }]);
      await Promise.resolve();
      const st = a.transport.stats().peers[addr];
      assertTrue(st.queuedBytes <= maxQueueBytes, `queue ${st.queuedBytes}`);
      if (turn % 50 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    const st = a.transport.stats().peers[addr];
    assertTrue(st.droppedBytes > 200 * 1000, `dropped ${st.droppedBytes}`);
    assertTrue(st.errors >= 1, "dial failures counted");
    assertTrue(a.transport.takeUnreachable().includes("C"));
    // When the peer appears, it gets the newest messages, in order.
    const c = await new TestNode("C").start(port);
    try {
      await eventually(() => c.received.length > 0, "delivery to C");
      await new Promise((r) => setTimeout(r, 50));
      const got = c.received.map((m) => (m as { prevIndex: number }).prevIndex);
      assertTrue(got.length <= 32, `${got.length} delivered`);
      assertEquals(got, Array.from({ length: got.length }, (_, i) => last - got.length + 1 + i));
    } finally {
      await c.stop();
    }
  } finally {
    await a.stop();
  }
});

Deno.test("transport: garbage on a connection closes only that connection", async () => {
  const a = await new TestNode("A").start();
  const b = await new TestNode("B").start();
  try {
    a.transport.send("B", b.addr, [heartbeat("A", "B", 1)]);
    await eventually(() => b.received.length === 1, "first delivery");
    const garbage = [
      new Uint8Array(64).fill(0xff), // length far beyond the maximum
      new Uint8Array([0, 0, 0, 5, 9, 1, 2, 3, 4]), // unknown frame kind
      new Uint8Array([0, 0, 0, 3, 1, 1, 0]), // a message batch cut short
      new Uint8Array([0, 0, 0, 0]), // an empty frame
    ];
    for (const bytes of garbage) {
      const raw = (await dialTcp(b.addr)) as net.Socket;
      const closed = new Promise<void>((r) => raw.once("close", () => r()));
      raw.on("error", () => {});
      raw.write(bytes);
      await closed;
    }
    assertEquals(b.transport.stats().inbound.protocolErrors, garbage.length);
    a.transport.send("B", b.addr, [heartbeat("A", "B", 2)]);
    await eventually(() => b.received.length === 2, "delivery after garbage");
    assertEquals(a.transport.stats().peers[b.addr].connects, 1);
  } finally {
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: a connection from a CN that is not allowed is dropped", async () => {
  const a = await new TestNode("A").start();
  const b = await new TestNode("B", { allowedPeerCns: ["A"] }).start();
  b.cn = "mallory";
  try {
    a.transport.send("B", b.addr, [heartbeat("A", "B", 1)]);
    await eventually(() => b.transport.stats().inbound.rejected >= 1, "rejection");
    await eventually(() => a.transport.takeUnreachable().includes("B"), "unreachable");
    assertEquals(b.received, []);
    assertEquals(b.transport.stats().inbound.accepted, 0);
    // The allowed CN gets through on a later reconnect.
    b.cn = "A";
    a.transport.send("B", b.addr, [heartbeat("A", "B", 2)]);
    await eventually(() => b.received.length >= 1, "delivery from an allowed CN");
  } finally {
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: close rejects pending requests and ignores later sends", async () => {
  const never = new Promise<Uint8Array>(() => {});
  const a = await new TestNode("A").start();
  const b = await new TestNode("B", { onRequest: () => never }).start();
  try {
    const pending = assertRejects(
      a.transport.request(b.addr, 1, new Uint8Array(), 10_000),
      TransportError,
    );
    await eventually(() => a.transport.stats().peers[b.addr]?.connected === true, "connect");
    await a.transport.close();
    await pending;
    a.transport.send("B", b.addr, [heartbeat("A", "B", 1)]);
    await assertRejects(a.transport.request(b.addr, 1, new Uint8Array(), 100), TransportError);
  } finally {
    await a.stop();
    await b.stop();
  }
});

Deno.test("transport: forget closes a peer's connection and frees its queue and counters", async () => {
  const never = new Promise<Uint8Array>(() => {});
  const a = await new TestNode("A").start();
  const b = await new TestNode("B", { onRequest: () => never }).start();
  const gone = `127.0.0.1:${await deadPort()}`;
  try {
    a.transport.send("B", b.addr, [heartbeat("A", "B", 1)]);
    await eventually(() => b.received.length === 1, "delivery");
    const pending = assertRejects(
      a.transport.request(b.addr, 1, new Uint8Array(), 10_000),
      TransportError,
    );
    // A peer nobody answers: its frames wait in a queue.
    for (let i = 1; i <= 3; i++) a.transport.send("C", gone, [heartbeat("A", "C", i)]);
    await eventually(() => (a.transport.stats().peers[gone]?.errors ?? 0) > 0, "dial failed");
    assertEquals(b.transport.stats().inbound.open, 1);

    a.transport.forget(b.addr);
    a.transport.forget(gone);
    await pending;
    assertEquals(Object.keys(a.transport.stats().peers), []);
    // B sees its inbound connection close.
    await eventually(() => b.transport.stats().inbound.open === 0, "connection closed");
    // Forgetting is not closing: a later send dials afresh, with fresh counters.
    a.transport.send("B", b.addr, [heartbeat("A", "B", 2)]);
    await eventually(() => b.received.length === 2, "delivery after forget");
    assertEquals(a.transport.stats().peers[b.addr].connects, 1);
  } finally {
    await a.stop();
    await b.stop();
  }
});
