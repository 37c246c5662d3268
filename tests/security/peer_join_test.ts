/**
 * Raft membership is guarded by the peer certificates: on a real cluster, a node whose peer
 * certificate comes from another CA, and a node whose peer certificate is valid but carries a
 * Common Name that is not an allowed peer, both gossip their way into the member list but never
 * enter the Raft configuration (not even as learners), while a well-configured node started at
 * the same time joins and the cluster keeps serving writes.
 */
import * as grpc from "@grpc/grpc-js";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster, unary } from "../helpers/cluster.ts";
import type { GetServersResponse, MembersResponse } from "../../src/api/messages.ts";
import { deadline, isRunning, logLines, sleep } from "./_helpers.ts";

const enc = new TextEncoder();

/** How long the bad peers are watched. */
const WATCH_MS = 15_000;

Deno.test({
  name: "peer join: a peer with a bad certificate never enters the Raft configuration",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const c = await startCluster({ size: 6, startNodes: 3 });
    try {
      const [badCa, badCn, good] = [c.node("n4"), c.node("n5"), c.node("n6")];
      // Serving and gossip use the cluster's CA, so both can join gossip and answer clients;
      // only the Raft identity is wrong.
      badCa.args.push(
        "--peer-tls-cert-file",
        c.certs.otherCa.server.cert,
        "--peer-tls-key-file",
        c.certs.otherCa.server.key,
        "--peer-tls-ca-file",
        c.certs.otherCa.ca,
      );
      badCn.args.push(
        "--peer-tls-cert-file",
        c.certs.nobodyClient.cert,
        "--peer-tls-key-file",
        c.certs.nobodyClient.key,
        // It accepts the cluster's peers itself, so only its own CN stands in the way.
        "--peer-allowed-cns",
        "mokv-server,nobody",
      );
      await Promise.all([badCa, badCn, good].map((n) => c.startNode(n.name)));

      await t.step("all three newcomers are alive gossip members", async () => {
        await eventually(async () => {
          const res = await unary<MembersResponse>((cb) =>
            c.admin(c.nodes[0]).Members({}, new grpc.Metadata(), deadline(), cb)
          );
          const alive = res.members.filter((m) => m.state === "alive").map((m) => m.name);
          assertEquals(alive.sort(), ["n1", "n2", "n3", "n4", "n5", "n6"]);
        }, 15_000);
      });

      await t.step(
        `for ${WATCH_MS / 1000} s the bad peers stay out of Raft while the good one joins`,
        async () => {
          const startedMs = Date.now();
          let writes = 0;
          let goodIsVoter = false;
          while (Date.now() - startedMs < WATCH_MS) {
            for (const n of c.nodes.slice(0, 3)) {
              const res = await unary<GetServersResponse>((cb) =>
                c.kv(n).GetServers({}, new grpc.Metadata(), deadline(), cb)
              );
              const ids = res.servers.map((s) => s.id);
              assert_(
                !ids.includes(badCa.name) && !ids.includes(badCn.name),
                `${n.name} lists ${JSON.stringify(res.servers)}`,
              );
              goodIsVoter ||= res.servers.some((s) => s.id === good.name && s.is_voter);
            }
            await unary((cb) =>
              c.kv(c.nodes[writes % 3]).Set(
                { key: `w${writes}`, value: enc.encode("v") },
                new grpc.Metadata(),
                deadline(),
                cb,
              )
            );
            writes++;
            await sleep(250);
          }
          assert_(goodIsVoter, "the well-configured node never became a voter");
          assert_(writes >= 10, `only ${writes} writes in ${WATCH_MS} ms`);
        },
      );

      await t.step("the leader says why, and every node still runs", async () => {
        const leader = await c.leader();
        for (const bad of [badCa, badCn]) {
          const line = logLines(leader).find((l) =>
            l.message === "cannot reach new member over the peer transport" && l.id === bad.name
          );
          assert_(line, `${leader.name} did not log why ${bad.name} was not added`);
          assertEquals(line.level, "warn");
        }
        for (const n of c.nodes) assert_(await isRunning(n), `${n.name} exited`);
        // The bad peers never learned the data: they are not in the configuration at all.
        const res = await unary<GetServersResponse>((cb) =>
          c.kv(leader).GetServers({}, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(res.servers.map((s) => s.id).sort(), ["n1", "n2", "n3", "n6"]);
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
