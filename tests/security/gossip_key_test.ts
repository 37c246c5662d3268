/**
 * Gossip authentication on a real three-node cluster run with `--gossip-key`: garbage
 * datagrams and well-formed but unencrypted ones are dropped and counted in
 * `mokv_gossip_packet_failures_total{reason="auth"}`, the same message sealed with the key is
 * taken (so the key is what made the difference), the cluster keeps serving, and a node
 * started with a different key never enters anyone's member list.
 */
import * as grpc from "@grpc/grpc-js";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster, type TestCluster, unary } from "../helpers/cluster.ts";
import type { GetServersResponse, MembersResponse } from "../../src/api/messages.ts";
import {
  encodeMessage,
  formatGossipKey,
  generateGossipKey,
  Keyring,
  type Message,
} from "../../src/membership/mod.ts";
import { deadline, isRunning, metricSum, sleep } from "./_helpers.ts";

const enc = new TextEncoder();
const FAILURES = "mokv_gossip_packet_failures_total";
/** How long a node with the wrong key is watched. */
const WATCH_MS = 6_000;

async function memberNames(c: TestCluster, name: string): Promise<string[]> {
  const res = await unary<MembersResponse>((cb) =>
    c.admin(name).Members({}, new grpc.Metadata(), deadline(), cb)
  );
  return res.members.map((m) => m.name).sort();
}

/** A push-pull announcing `name` alive at `addr`, as a member would send it. */
function announce(name: string, addr: string): Message {
  return {
    type: "push-pull",
    needReply: false,
    members: [{
      name,
      addr,
      tags: { id: name, rpc_addr: "127.0.0.1:1" },
      incarnation: 1,
      state: "alive",
    }],
  };
}

Deno.test({
  name: "gossip key: datagrams without the key are ignored; a node with another key never joins",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const key = generateGossipKey();
    const c = await startCluster({
      size: 4,
      startNodes: 3,
      extraArgs: ["--gossip-key", formatGossipKey(key)],
    });
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      const target = c.nodes[0];
      const [host, port] = target.gossipAddr.split(":");
      const to: Deno.NetAddr = { transport: "udp", hostname: host, port: Number(port) };
      const self = `127.0.0.1:${(udp.addr as Deno.NetAddr).port}`;
      await eventually(async () => {
        for (const n of c.nodes.slice(0, 3)) {
          assertEquals(await memberNames(c, n.name), ["n1", "n2", "n3"]);
        }
      });

      await t.step("garbage and unencrypted datagrams are dropped and counted", async () => {
        const before = await metricSum(target.metricsPort, FAILURES, { reason: "auth" });
        const datagrams: Uint8Array[] = [
          crypto.getRandomValues(new Uint8Array(100)),
          crypto.getRandomValues(new Uint8Array(1400)),
          new Uint8Array(0),
          new Uint8Array([1]),
          // A sealed-looking header with a random nonce and ciphertext: fails authentication.
          new Uint8Array([1, ...crypto.getRandomValues(new Uint8Array(60))]),
          encodeMessage(announce("intruder", self)),
          encodeMessage({ type: "ping", seq: 1, target: target.name, updates: [] }),
        ];
        for (const d of datagrams) await udp.send(d, to);
        await eventually(async () => {
          const after = await metricSum(target.metricsPort, FAILURES, { reason: "auth" });
          // The empty datagram may not be delivered as one; every other one must be counted.
          assert_(
            after - before >= datagrams.length - 1,
            `${FAILURES}{reason="auth"} went from ${before} to ${after}`,
          );
        }, 10_000);
        // Nothing the unencrypted announcement said was believed, and the cluster serves.
        await sleep(1000);
        for (const n of c.nodes.slice(0, 3)) {
          assertEquals(await memberNames(c, n.name), ["n1", "n2", "n3"]);
        }
        await unary((cb) =>
          c.kv(target).Set(
            { key: "k", value: enc.encode("v") },
            new grpc.Metadata(),
            deadline(),
            cb,
          )
        );
        assert_(await isRunning(target), `${target.name} exited`);
      });

      await t.step("the same announcement sealed with the key is taken", async () => {
        const keyring = await Keyring.create([key]);
        await udp.send(await keyring.seal(encodeMessage(announce("visitor", self))), to);
        await eventually(async () => {
          assert_((await memberNames(c, target.name)).includes("visitor"));
        }, 5000);
      });

      await t.step("a node with a different gossip key never joins", async () => {
        const stranger = c.nodes[3];
        stranger.args.push("--gossip-key", formatGossipKey(generateGossipKey()));
        const before = await metricSum(target.metricsPort, FAILURES, { reason: "auth" });
        await c.startNode(stranger.name);
        const startedMs = Date.now();
        while (Date.now() - startedMs < WATCH_MS) {
          for (const n of c.nodes.slice(0, 3)) {
            const names = await memberNames(c, n.name);
            assert_(!names.includes(stranger.name), `${n.name} sees ${names}`);
          }
          const own = await memberNames(c, stranger.name);
          assert_(own.every((m) => m === stranger.name), `${stranger.name} sees ${own}`);
          await sleep(500);
        }
        // It did try: its join datagrams were refused by the node it was told to join.
        const after = await metricSum(target.metricsPort, FAILURES, { reason: "auth" });
        assert_(
          after > before,
          `no refused datagrams from ${stranger.name} (${before} → ${after})`,
        );
        const servers = await unary<GetServersResponse>((cb) =>
          c.kv(target).GetServers({}, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(servers.servers.map((s) => s.id).sort(), ["n1", "n2", "n3"]);
        await unary((cb) =>
          c.kv(target).Set(
            { key: "k2", value: enc.encode("v") },
            new grpc.Metadata(),
            deadline(),
            cb,
          )
        );
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      udp.close();
      await c.stop();
    }
  },
});
