/**
 * Membership through gossip and the leader's reconciler, on real node processes: a late
 * node joins as a learner and is promoted once caught up; a node that leaves disappears
 * from GetServers while a node restarted by SIGTERM keeps its place; five nodes survive
 * losing two.
 */
import type * as grpc from "@grpc/grpc-js";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster, unary } from "../helpers/cluster.ts";
import { get, servers, set } from "./_kv.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "a new node joins as a learner and becomes a voter once caught up",
  ...opts,
  fn: async () => {
    const c = await startCluster({ size: 4, startNodes: 3 });
    try {
      for (let i = 0; i < 50; i++) await set(c, c.nodes[i % 3], `pre${i}`, `${i}`);
      await c.startNode("n4");
      await eventually(async () => {
        const s = (await servers(c, c.nodes[0])).find((x) => x.id === "n4");
        assert_(s?.is_voter, "n4 is a voter");
      }, 20_000);
      const leader = await c.leader();
      const log = c.nodes.map((n) => n.stderr).join("\n");
      assert_(/"type":"addLearner","id":"n4"/.test(log), "n4 was added as a learner first");
      assert_(/"type":"promote","id":"n4"/.test(log), "then promoted");
      assertEquals(await get(c, "n4", "pre49", "STALE"), "49");
      assert_(leader.name !== undefined);
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});

Deno.test({
  name: "mokv leave removes a node from GetServers; a SIGTERM restart keeps its place",
  ...opts,
  fn: async () => {
    const c = await startCluster({ size: 3 });
    try {
      await set(c, c.nodes[0], "k", "v");
      // n3 leaves for good (Admin.Leave is what `mokv leave` calls).
      await unary((cb) => c.admin("n3").Leave({}, cb));
      const exited = await Promise.race([
        c.nodes[2].process!.status,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000)),
      ]);
      assertEquals(exited?.code, 0, "the leaving node exits 0");
      c.nodes[2].process = undefined;
      await eventually(async () => {
        const ids = (await servers(c, "n1")).map((s) => s.id).sort();
        assertEquals(ids, ["n1", "n2"]);
      });

      // n2 restarts (SIGTERM, as in a rolling update) and stays a member.
      await c.kill("n2", "SIGTERM");
      const during = (await servers(c, "n1")).map((s) => s.id).sort();
      assertEquals(during, ["n1", "n2"], "a stopped member keeps its place");
      await c.restart("n2");
      await eventually(async () => {
        assertEquals(await get(c, "n2", "k"), "v");
      }, 20_000);
      const ids = (await servers(c, "n2")).map((s) => s.id).sort();
      assertEquals(ids, ["n1", "n2"]);
    } catch (err) {
      // MOKV_DEBUG_LEAVE=1 prints every node's whole log when this test fails.
      if (Deno.env.get("MOKV_DEBUG_LEAVE")) {
        for (const n of c.nodes) {
          console.log(`--- ${n.name}
${n.stderr}`);
        }
      }
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});

Deno.test({
  name: "a five-node cluster keeps serving after losing two nodes, the leader among them",
  ...opts,
  fn: async () => {
    const c = await startCluster({ size: 5 });
    try {
      await eventually(async () => {
        const voters = (await servers(c, "n1")).filter((s) => s.is_voter).map((s) => s.id);
        assertEquals(voters.sort(), ["n1", "n2", "n3", "n4", "n5"]);
      }, 30_000);
      for (let i = 0; i < 20; i++) await set(c, c.nodes[i % 5], `k${i}`, `v${i}`);
      const leader = await c.leader();
      const other = c.nodes.find((n) => n.name !== leader.name)!;
      await c.kill(leader.name, "SIGKILL");
      await c.kill(other.name, "SIGKILL");
      const live = c.nodes.filter((n) => n.process);
      assertEquals(live.length, 3);
      await eventually(async () => {
        await set(c, live[0], "after", "ok");
      }, 15_000);
      for (const n of live) {
        assertEquals(await get(c, n, "after"), "ok");
        assertEquals(await get(c, n, "k19"), "v19");
      }
    } catch (err) {
      if (err instanceof Error && "code" in err) {
        throw c.explain(new Error(`${(err as grpc.ServiceError).code}: ${err.message}`));
      }
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});

Deno.test({
  name: "dead-server cleanup removes a failed voter, but never below the minimum quorum",
  ...opts,
  fn: async () => {
    const c = await startCluster({
      size: 4,
      extraArgs: ["--dead-server-cleanup", "true", "--dead-server-min-quorum", "3"],
    });
    try {
      await eventually(async () => {
        const voters = (await servers(c, "n1")).filter((s) => s.is_voter).map((s) => s.id);
        assertEquals(voters.sort(), ["n1", "n2", "n3", "n4"]);
      }, 30_000);
      const leader = await c.leader();
      const victim = c.nodes.find((n) => n.name !== leader.name)!;
      await c.kill(victim.name, "SIGKILL");
      const live = c.nodes.find((n) => n.process)!;
      // Gossip declares it failed (suspicion timeout), then the leader removes it: 3 remain.
      await eventually(
        async () => {
          const ids = (await servers(c, live)).map((s) => s.id);
          assert_(!ids.includes(victim.name), `${victim.name} still in ${ids}`);
          assertEquals(ids.length, 3);
        },
        40_000,
        500,
      );
      // A second failure would leave fewer than 3 voters: that one stays a voter.
      const leader2 = await c.leader();
      const victim2 = c.nodes.find((n) => n.process && n.name !== leader2.name)!;
      await c.kill(victim2.name, "SIGKILL");
      await new Promise((r) => setTimeout(r, 12_000));
      const ids = (await servers(c, leader2)).map((s) => s.id);
      assert_(ids.includes(victim2.name), "the minimum quorum keeps the second failed voter");
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
