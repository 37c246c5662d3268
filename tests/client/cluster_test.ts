/**
 * MokvClient against a real three-node cluster (separate processes, mutual TLS): routing,
 * fail-over across a leader SIGKILL, and exactly-once writes when an answer is lost.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { MokvClient } from "../../src/client/mod.ts";
import { startCluster, type TestCluster } from "../helpers/cluster.ts";
import { startDropProxy } from "./_drop_proxy.ts";

const td = new TextDecoder();

function tlsOf(cluster: TestCluster) {
  const c = cluster.certs;
  return { ca: c.ca, cert: c.rootClient.cert, key: c.rootClient.key };
}

Deno.test({
  name: "cluster: writes land on the leader, reads spread over followers, fail-over, lost answers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const cluster = await startCluster({ size: 3 });
    try {
      const leader = await cluster.leader();
      const client = await MokvClient.connect({ addrs: [cluster.addrs[0]], tls: tlsOf(cluster) });
      try {
        await t.step("writes on the leader, reads round-robin over the followers", async () => {
          assertEquals(client.leaderAddr, leader.rpcAddr);
          for (let i = 0; i < 20; i++) await client.set(`route/${i}`, String(i));
          for (let i = 0; i < 40; i++) {
            assertEquals(td.decode((await client.get(`route/${i % 20}`)).value), String(i % 20));
          }
          const stats = new Map(client.nodeStats().map((s) => [s.addr, s]));
          assertEquals(stats.get(leader.rpcAddr)!.writes, 20);
          assertEquals(stats.get(leader.rpcAddr)!.reads, 0);
          const followers = cluster.addrs.filter((a) => a !== leader.rpcAddr);
          assertEquals(followers.map((a) => stats.get(a)?.reads), [20, 20]);
          assertEquals(followers.map((a) => stats.get(a)?.writes ?? 0), [0, 0]);
        });

        await t.step("a retried write after a dropped answer is applied once", async () => {
          const proxy = startDropProxy(leader.rpcAddr);
          const direct = await MokvClient.connect({
            addrs: [proxy.addr],
            tls: tlsOf(cluster),
            discover: false,
            baseBackoffMs: 5,
          });
          try {
            await direct.set("lost/warm", "up");
            proxy.arm();
            const r = await direct.append("lost/once", "x");
            assertEquals([r.length, proxy.dropped], [1, 1]);
            assertEquals(td.decode((await client.get("lost/once")).value), "x");
          } finally {
            direct.close();
            await proxy.close();
          }
        });

        await t.step("a loop of writes and reads continues across a leader SIGKILL", async () => {
          let killedAt = 0;
          let firstWriteAfterKillMs = -1;
          for (let i = 0; i < 120; i++) {
            if (i === 40) {
              killedAt = performance.now();
              await cluster.kill(leader.name, "SIGKILL");
            }
            await client.set(`loop/${i}`, String(i));
            if (i === 40) firstWriteAfterKillMs = performance.now() - killedAt;
            assertEquals(td.decode((await client.get(`loop/${i}`)).value), String(i));
          }
          // Writes may have reached the new leader through a forwarding follower; asking the
          // servers again shows the client now knows the new leader.
          await client.refresh();
          assert(client.leaderAddr !== undefined && client.leaderAddr !== leader.rpcAddr);
          console.log(
            `first write after the leader's SIGKILL: ${firstWriteAfterKillMs.toFixed(0)} ms`,
          );
          let count = 0;
          for await (const _ of client.list({ prefix: "loop/" })) count++;
          assertEquals(count, 120);
        });
      } finally {
        client.close();
      }
    } catch (err) {
      throw cluster.explain(err);
    } finally {
      await cluster.stop();
    }
  },
});
