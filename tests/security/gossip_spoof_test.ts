/**
 * A real three-node cluster run with `--gossip-insecure` (TLS on, no gossip key): the issue's
 * spoofed datagrams — `dead name=X incarnation=2^32-1 from=X` (a forged leave), a forged
 * failure and a forged alive at 2^32-1, for every follower and to every node — remove no
 * voter, mark no member left for good, and the cluster keeps serving.
 */
import * as grpc from "@grpc/grpc-js";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster, unary } from "../helpers/cluster.ts";
import type { GetServersResponse, MembersResponse } from "../../src/api/messages.ts";
import { encodeMessage, type Message } from "../../src/membership/mod.ts";
import { deadline, sleep } from "./_helpers.ts";

const enc = new TextEncoder();
const MAX_INCARNATION = 0xffff_ffff;

Deno.test({
  name: "gossip spoof: forged left/dead/alive at 2^32-1 without a key removes no voter",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const c = await startCluster({ size: 3, extraArgs: ["--gossip-insecure", "true"] });
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      const leader = await c.leader();
      const followers = c.nodes.filter((n) => n !== leader);
      const forged = (name: string): Message[] => [
        {
          type: "gossip",
          updates: [{ kind: "dead", name, incarnation: MAX_INCARNATION, from: name }],
        },
        {
          type: "gossip",
          updates: [{ kind: "dead", name, incarnation: MAX_INCARNATION, from: "nobody" }],
        },
        {
          type: "gossip",
          updates: [{
            kind: "alive",
            name,
            addr: "127.0.0.1:9",
            incarnation: MAX_INCARNATION,
            tags: { id: name, rpc_addr: "127.0.0.1:9" },
          }],
        },
        {
          type: "push-pull",
          needReply: false,
          members: [{
            name,
            addr: "127.0.0.1:9",
            tags: {},
            incarnation: MAX_INCARNATION,
            state: "left",
          }],
        },
      ];
      for (let round = 0; round < 3; round++) {
        for (const victim of followers) {
          for (const target of c.nodes) {
            const [hostname, port] = target.gossipAddr.split(":");
            for (const msg of forged(victim.name)) {
              await udp.send(encodeMessage(msg), {
                transport: "udp",
                hostname,
                port: Number(port),
              });
            }
          }
        }
        await sleep(500);
      }
      // Longer than a reconcile round and a suspicion timeout.
      await sleep(3000);
      const servers = await unary<GetServersResponse>((cb) =>
        c.kv(leader).GetServers({}, new grpc.Metadata(), deadline(), cb)
      );
      assertEquals(
        servers.servers.map((s) => s.id).sort(),
        ["n1", "n2", "n3"],
        "every voter stays",
      );
      for (const n of c.nodes) {
        const res = await unary<MembersResponse>((cb) =>
          c.admin(n).Members({}, new grpc.Metadata(), deadline(), cb)
        );
        for (const f of followers) {
          const m = res.members.find((x) => x.name === f.name);
          assert_(m?.state === "alive", `${n.name} sees ${f.name} as ${m?.state}`);
        }
      }
      await eventually(async () => {
        await unary((cb) =>
          c.kv(leader).Set(
            { key: "k", value: enc.encode("v") },
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
