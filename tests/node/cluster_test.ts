/**
 * A three-node cluster of real processes on 127.0.0.1 with mutual TLS: it forms through
 * gossip with bootstrap-expect, accepts writes on any node and serves them back from every
 * node, answers NOT_FOUND and INVALID_ARGUMENT, and survives garbage on its port.
 */
import { assertEquals } from "../helpers/assert.ts";
import { startCluster, unary } from "../helpers/cluster.ts";
import * as grpc from "@grpc/grpc-js";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test({
  name: "three-node cluster: forms by gossip, writes anywhere, reads everywhere",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const c = await startCluster({ size: 3 });
    try {
      await t.step("GetServers lists three voters and one leader", async () => {
        const leader = await c.leader();
        const res = await unary<
          { servers: { id: string; is_leader: boolean; is_voter: boolean }[] }
        >(
          (cb) => c.kv(c.nodes[0]).GetServers({}, cb),
        );
        assertEquals(res.servers.map((s) => s.id).sort(), ["n1", "n2", "n3"]);
        assertEquals(res.servers.filter((s) => s.is_leader).map((s) => s.id), [leader.name]);
      });

      await t.step("a write through each node reads back from every node", async () => {
        for (const [i, n] of c.nodes.entries()) {
          await unary((cb) => c.kv(n).Set({ key: `k${i}`, value: enc.encode(`v${i}`) }, cb));
        }
        for (const n of c.nodes) {
          for (let i = 0; i < c.nodes.length; i++) {
            const res = await unary<{ value: Uint8Array; version: number }>((cb) =>
              c.kv(n).Get({ key: `k${i}` }, cb)
            );
            assertEquals(dec.decode(res.value), `v${i}`);
          }
        }
      });

      await t.step(
        "a missing key is NOT_FOUND; bad keys and values are INVALID_ARGUMENT",
        async () => {
          const codeOf = async (p: Promise<unknown>) => {
            try {
              await p;
              return grpc.status.OK;
            } catch (err) {
              return (err as grpc.ServiceError).code;
            }
          };
          const kv = c.kv(c.nodes[1]);
          assertEquals(
            await codeOf(unary((cb) => kv.Get({ key: "missing" }, cb))),
            grpc.status.NOT_FOUND,
          );
          assertEquals(
            await codeOf(unary((cb) => kv.Set({ key: "", value: enc.encode("x") }, cb))),
            grpc.status.INVALID_ARGUMENT,
          );
          assertEquals(
            await codeOf(
              unary((cb) => kv.Set({ key: "x".repeat(5000), value: enc.encode("x") }, cb)),
            ),
            grpc.status.INVALID_ARGUMENT,
          );
          assertEquals(
            await codeOf(
              unary((cb) => kv.Set({ key: "big", value: new Uint8Array(1024 * 1024 + 1) }, cb)),
            ),
            grpc.status.INVALID_ARGUMENT,
          );
          // The cluster keeps serving.
          await unary((cb) => kv.Set({ key: "after", value: enc.encode("ok") }, cb));
        },
      );

      await t.step(
        "garbage bytes and a plaintext HTTP/2 preface on the TLS port change nothing",
        async () => {
          for (
            const payload of [
              crypto.getRandomValues(new Uint8Array(4096)),
              enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            ]
          ) {
            const [host, port] = c.nodes[0].rpcAddr.split(":");
            const conn = await Deno.connect({ hostname: host, port: Number(port) });
            await conn.write(payload).catch(() => 0);
            conn.close();
          }
          const res = await unary<{ value: Uint8Array }>((cb) =>
            c.kv(c.nodes[0]).Get({ key: "after" }, cb)
          );
          assertEquals(dec.decode(res.value), "ok");
        },
      );
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
