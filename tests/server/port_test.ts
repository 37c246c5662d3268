import { deepStrictEqual as assertEquals } from "node:assert/strict";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { dialRaft, RAFT_PREFIX_BYTE } from "../../src/server/mod.ts";
import { call, startHarness, td, te, waitFor } from "./_helpers.ts";

/** Reads from a socket until `n` bytes arrived. */
function readBytes(socket: Duplex, n: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const parts: Uint8Array[] = [];
    let total = 0;
    const onData = (chunk: Uint8Array) => {
      parts.push(chunk);
      total += chunk.length;
      if (total >= n) {
        socket.off("data", onData);
        const out = new Uint8Array(total);
        let offset = 0;
        for (const p of parts) {
          out.set(p, offset);
          offset += p.length;
        }
        resolve(out);
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
  });
}

/** Opens a raw TCP socket, writes `bytes`, and resolves when the server closes it. */
function rawExchange(port: number, bytes: Uint8Array, halfClose: boolean): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      if (bytes.length) socket.write(bytes);
      if (halfClose) socket.end();
    });
    socket.on("data", () => {});
    socket.on("error", () => resolve());
    socket.on("close", () => resolve());
  });
}

Deno.test("plaintext port: 0x01 sockets reach Raft while gRPC works on the same port", async () => {
  const h = await startHarness();
  try {
    // A raft socket whose first chunk carries more than the prefix byte.
    const raw = net.connect({ host: "127.0.0.1", port: h.port.port });
    raw.on("error", () => {});
    await new Promise((r) => raw.once("connect", r));
    raw.write(new Uint8Array([RAFT_PREFIX_BYTE, 0x68, 0x69]));
    await waitFor(() => h.raftSockets.length === 1);
    assertEquals(td.decode(await readBytes(h.raftSockets[0], 2)), "hi");

    // dialRaft writes the prefix; the server side sees only what follows.
    const dialed = await dialRaft({ host: "127.0.0.1", port: h.port.port });
    await waitFor(() => h.raftSockets.length === 2);
    const serverSide = h.raftSockets[1];
    dialed.write(te.encode("ping"));
    assertEquals(td.decode(await readBytes(serverSide, 4)), "ping");
    serverSide.write(te.encode("pong"));
    assertEquals(td.decode(await readBytes(dialed, 4)), "pong");

    // gRPC on the same port meanwhile.
    await call(h.kv, h.kv.Set, { key: "k", value: te.encode("v") });
    const got = await call(h.kv, h.kv.Get, { key: "k" });
    assertEquals(td.decode(got.value), "v");
    dialed.destroy();
    raw.destroy();
  } finally {
    await h.close();
  }
});

Deno.test("plaintext port: garbage, silence and half-open sockets do not disturb it", async () => {
  const h = await startHarness();
  try {
    const garbage = new Uint8Array(4096);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff;
    garbage[0] = 0x47; // not the raft byte: goes to gRPC, which must reject it
    await Promise.all([
      rawExchange(h.port.port, garbage, false),
      rawExchange(h.port.port, te.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false),
      rawExchange(h.port.port, new Uint8Array(0), true), // half-open: FIN without a byte
      rawExchange(h.port.port, new Uint8Array(0), false), // silent: closed by the timeout
      rawExchange(h.port.port, te.encode("PRI * HTTP/2.0\r\n"), true), // truncated preface
    ]);
    await call(h.kv, h.kv.Set, { key: "still", value: te.encode("here") });
    assertEquals(td.decode((await call(h.kv, h.kv.Get, { key: "still" })).value), "here");
  } finally {
    await h.close();
  }
});

Deno.test("dialRaft fails cleanly when nothing listens", async () => {
  const listener = net.createServer();
  await new Promise<void>((r) => listener.listen(0, "127.0.0.1", r));
  const port = (listener.address() as net.AddressInfo).port;
  await new Promise((r) => listener.close(r));
  let failed = false;
  try {
    await dialRaft({ host: "127.0.0.1", port, timeoutMs: 2000 });
  } catch (error) {
    failed = (error as Error).name === "UnavailableError";
  }
  assertEquals(failed, true);
});
