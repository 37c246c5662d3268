/**
 * The one TLS port of a real three-node cluster refuses every connection that does not carry a
 * client certificate from the cluster's CA (no certificate, another CA's certificate,
 * plaintext gRPC), a valid client certificate whose CN is not a peer cannot speak Raft, and
 * garbage bytes, a plaintext HTTP/2 preface, silent sockets and TLS handshakes with wrong
 * certificates leave the node serving.
 */
import * as grpc from "@grpc/grpc-js";
import * as tls from "node:tls";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { startCluster, type TestNode, unary } from "../helpers/cluster.ts";
import type { CertPair } from "../helpers/certs.ts";
import type { GetResponse } from "../../src/api/messages.ts";
import { RAFT_ALPN } from "../../src/server/mod.ts";
import { type ClientIdentity, clientsFor, deadline, isRunning, outcome } from "./_helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** How long the node may take to close a connection it refuses. */
const CLOSE_WITHIN_MS = 5000;

function hostPort(node: TestNode): { hostname: string; port: number } {
  const [hostname, port] = node.rpcAddr.split(":");
  return { hostname, port: Number(port) };
}

/**
 * Writes `payload` on a plain TCP connection and resolves with how the node ended it: "closed"
 * (EOF or reset) and every byte it sent back, or "open" when it kept the socket past the limit.
 */
async function sendRaw(
  node: TestNode,
  payload: Uint8Array,
): Promise<{ end: "closed" | "open"; reply: Uint8Array }> {
  const conn = await Deno.connect(hostPort(node));
  const chunks: Uint8Array[] = [];
  try {
    await conn.write(payload).catch(() => 0);
    const deadlineMs = Date.now() + CLOSE_WITHIN_MS;
    const buf = new Uint8Array(4096);
    while (Date.now() < deadlineMs) {
      const timer = new Promise<"timeout">((r) =>
        setTimeout(() => r("timeout"), deadlineMs - Date.now())
      );
      const n = await Promise.race([conn.read(buf).catch(() => null), timer]);
      if (n === "timeout") return { end: "open", reply: concat(chunks) };
      if (n === null) return { end: "closed", reply: concat(chunks) };
      chunks.push(buf.slice(0, n));
    }
    return { end: "open", reply: concat(chunks) };
  } finally {
    try {
      conn.close();
    } catch {
      // already closed by the node
    }
  }
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Opens a TLS connection offering `alpn` with `client` (or no certificate), writes a few bytes
 * once the handshake is done, and resolves with whether the node ended the connection within
 * the limit and whether any application data came back.
 */
function tlsAttempt(
  node: TestNode,
  ca: string,
  client: CertPair | undefined,
  alpn: string,
): Promise<{ closed: boolean; data: boolean }> {
  return new Promise((resolve) => {
    let data = false;
    const socket = tls.connect({
      ...hostPort(node),
      host: hostPort(node).hostname,
      servername: "localhost",
      ca: Deno.readTextFileSync(ca),
      ...(client
        ? { cert: Deno.readTextFileSync(client.cert), key: Deno.readTextFileSync(client.key) }
        : {}),
      ALPNProtocols: [alpn],
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, data });
    }, CLOSE_WITHIN_MS);
    socket.on("error", () => {});
    socket.on("data", () => {
      data = true;
    });
    socket.once("secureConnect", () => {
      // An HTTP/2 preface for gRPC, or the start of a frame for Raft: the node must not answer.
      socket.write(
        alpn === "h2" ? "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" : new Uint8Array([0, 0, 0, 5, 1]),
      );
    });
    socket.once("close", () => {
      clearTimeout(timer);
      resolve({ closed: true, data });
    });
  });
}

Deno.test({
  name: "transport security: only clients with a certificate from the CA get anything",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const c = await startCluster({ size: 3 });
    const node = c.nodes[0];
    const opened: { close(): void }[] = [];
    const root = c.kv(node);
    const stillServes = async (key: string) => {
      assert_(await isRunning(node), `${node.name} exited: ${node.stderr.slice(-2000)}`);
      await unary((cb) =>
        root.Set({ key, value: enc.encode(key) }, new grpc.Metadata(), deadline(), cb)
      );
      const got = await unary<GetResponse>((cb) =>
        root.Get({ key }, new grpc.Metadata(), deadline(), cb)
      );
      assertEquals(dec.decode(got.value), key);
    };
    try {
      await stillServes("before");

      await t.step("gRPC without a valid client certificate is UNAVAILABLE", async () => {
        const identities: [string, ClientIdentity][] = [
          ["no client certificate", { kind: "tls", ca: c.certs.ca }],
          [
            "a client certificate from another CA",
            { kind: "tls", ca: c.certs.ca, client: c.certs.otherCa.client },
          ],
          [
            "a server that must chain to another CA",
            { kind: "tls", ca: c.certs.otherCa.ca, client: c.certs.otherCa.client },
          ],
          ["plaintext", { kind: "plaintext" }],
        ];
        for (const [what, identity] of identities) {
          const clients = clientsFor(node.rpcAddr, identity);
          opened.push(clients);
          const read = await outcome((cb) =>
            clients.kv.Get({ key: "before" }, new grpc.Metadata(), deadline(), cb)
          );
          assertEquals(read.code, grpc.status.UNAVAILABLE, `${what}: ${JSON.stringify(read)}`);
          const write = await outcome((cb) =>
            clients.kv.Set(
              { key: "x", value: enc.encode("x") },
              new grpc.Metadata(),
              deadline(),
              cb,
            )
          );
          assertEquals(write.code, grpc.status.UNAVAILABLE, `${what}: ${JSON.stringify(write)}`);
          const servers = await outcome((cb) =>
            clients.kv.GetServers({}, new grpc.Metadata(), deadline(), cb)
          );
          assertEquals(
            servers.code,
            grpc.status.UNAVAILABLE,
            `${what}: ${JSON.stringify(servers)}`,
          );
        }
        // None of those writes happened.
        const missing = await outcome((cb) =>
          root.Get({ key: "x" }, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(missing.code, grpc.status.NOT_FOUND);
        await stillServes("after-refused-clients");
      });

      await t.step("TLS handshakes with wrong certificates are cut off", async () => {
        const attempts: [string, string, CertPair | undefined, string][] = [
          ["h2 without a certificate", c.certs.ca, undefined, "h2"],
          ["h2 with another CA's certificate", c.certs.ca, c.certs.otherCa.client, "h2"],
          ["raft without a certificate", c.certs.ca, undefined, RAFT_ALPN],
          ["raft with another CA's certificate", c.certs.ca, c.certs.otherCa.server, RAFT_ALPN],
          // Valid chain, but CN "nobody" is not an allowed Raft peer.
          [
            "raft with a client (not peer) certificate",
            c.certs.ca,
            c.certs.nobodyClient,
            RAFT_ALPN,
          ],
        ];
        const results = await Promise.all(
          attempts.map(([, ca, client, alpn]) => tlsAttempt(node, ca, client, alpn)),
        );
        for (const [i, [what]] of attempts.entries()) {
          assertEquals(results[i], { closed: true, data: false }, what);
        }
        await stillServes("after-bad-handshakes");
      });

      await t.step("garbage, a plaintext HTTP/2 preface and silence disturb nothing", async () => {
        // A silent socket stays open during the rest of the step (until the handshake timeout).
        const silent = await Deno.connect(hostPort(node));
        opened.push(silent);
        const payloads: [string, Uint8Array][] = [
          ["random bytes", crypto.getRandomValues(new Uint8Array(16 * 1024))],
          ["plaintext HTTP/2 preface", enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")],
          [
            "plaintext HTTP/2 preface and SETTINGS",
            concat([
              enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
              new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]),
            ]),
          ],
          ["HTTP/1.1 request", enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
          ["plaintext Raft prefix byte", new Uint8Array([0x01, 0, 0, 0, 5, 1, 0, 0, 0, 0])],
          // A TLS record header announcing a ClientHello, then nonsense.
          ["broken ClientHello", concat([new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])])],
        ];
        const ends = await Promise.all(payloads.map(([, bytes]) => sendRaw(node, bytes)));
        for (const [i, [what]] of payloads.entries()) {
          // Whatever the node answers (a TLS alert at most), it is never data for a client.
          assert_(
            ends[i].reply.length < 64,
            `${what}: ${ends[i].reply.length} bytes came back`,
          );
        }
        // Every connection but the truncated ClientHello (waiting for the rest) is ended at once.
        for (const [i, [what]] of payloads.entries()) {
          if (what === "broken ClientHello") continue;
          assertEquals(ends[i].end, "closed", what);
        }
        // Served while the silent socket is still open, and from every node.
        await stillServes("after-garbage");
        for (const n of c.nodes) {
          const got = await unary<GetResponse>((cb) =>
            c.kv(n).Get({ key: "after-garbage" }, new grpc.Metadata(), deadline(), cb)
          );
          assertEquals(dec.decode(got.value), "after-garbage");
        }
      });

      await t.step("no node crashed or logged an uncaught error", async () => {
        for (const n of c.nodes) {
          assert_(await isRunning(n), `${n.name} exited`);
          assert_(!/uncaught|panicked/i.test(n.stderr), `${n.name}: ${n.stderr.slice(-2000)}`);
        }
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      for (const o of opened) {
        try {
          o.close();
        } catch {
          // already closed
        }
      }
      await c.stop();
    }
  },
});
