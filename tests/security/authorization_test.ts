/**
 * Authorization on a real three-node cluster with the default policy (certs/policy.csv):
 * the client with CN "root" may do everything; the client with CN "nobody" is refused every
 * read, write and admin call with PERMISSION_DENIED naming subject, action and object, and
 * each refusal is logged at warn in the node's JSON log.
 */
import * as grpc from "@grpc/grpc-js";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster, unary } from "../helpers/cluster.ts";
import type {
  AppendResponse,
  CompareAndSetResponse,
  DeleteResponse,
  GetResponse,
  GetServersResponse,
  MembersResponse,
  TransferLeadershipResponse,
} from "../../src/api/messages.ts";
import {
  type CallOutcome,
  clientsFor,
  deadline,
  listAll,
  listOutcome,
  logLines,
  outcome,
} from "./_helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test({
  name: "authorization: root may do everything, nobody nothing, and denials are logged",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const c = await startCluster({ size: 3 });
    const leader = await c.leader();
    const follower = c.nodes.find((n) => n !== leader)!;
    const root = clientsFor(follower.rpcAddr, {
      kind: "tls",
      ca: c.certs.ca,
      client: c.certs.rootClient,
    });
    const nobody = clientsFor(follower.rpcAddr, {
      kind: "tls",
      ca: c.certs.ca,
      client: c.certs.nobodyClient,
    });
    try {
      await t.step("root: every KV call succeeds", async () => {
        const kv = root.kv;
        const set = await unary<{ ok: boolean }>((cb) =>
          kv.Set({ key: "a", value: enc.encode("1") }, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(set.ok, true);
        const got = await unary<GetResponse>((cb) =>
          kv.Get({ key: "a" }, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(dec.decode(got.value), "1");
        const appended = await unary<AppendResponse>((cb) =>
          kv.Append({ key: "a", value: enc.encode("2") }, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(appended.length, 2);
        const cas = await unary<CompareAndSetResponse>((cb) =>
          kv.CompareAndSet(
            {
              key: "a",
              value: enc.encode("3"),
              expect_value: enc.encode("12"),
              has_expect_value: true,
            },
            new grpc.Metadata(),
            deadline(),
            cb,
          )
        );
        assertEquals(cas.ok, true);
        await unary((cb) =>
          kv.Set({ key: "b", value: enc.encode("x") }, new grpc.Metadata(), deadline(), cb)
        );
        const listed = await listAll(kv, {});
        assertEquals(listed.map((e) => [e.key, dec.decode(e.value)]), [["a", "3"], ["b", "x"]]);
        const deleted = await unary<DeleteResponse>((cb) =>
          kv.Delete({ key: "b" }, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(deleted.existed, true);
        const servers = await unary<GetServersResponse>((cb) =>
          kv.GetServers({}, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(servers.servers.map((s) => s.id).sort(), ["n1", "n2", "n3"]);
      });

      await t.step("root: Admin.Members and Admin.TransferLeadership succeed", async () => {
        const members = await eventually(async () => {
          const res = await unary<MembersResponse>((cb) =>
            root.admin.Members({}, new grpc.Metadata(), deadline(), cb)
          );
          const alive = res.members.filter((m) => m.state === "alive").map((m) => m.name);
          assertEquals(alive.sort(), ["n1", "n2", "n3"]);
          return res;
        });
        assertEquals(members.members.length, 3);
        // Asked on a follower, forwarded to the leader: leadership moves to that follower.
        const res = await unary<TransferLeadershipResponse>((cb) =>
          root.admin.TransferLeadership(
            { id: follower.name },
            new grpc.Metadata(),
            { deadline: Date.now() + 15_000 },
            cb,
          )
        );
        assertEquals(res.leader_id, follower.name);
        assertEquals((await c.leader()).name, follower.name);
      });

      await t.step("nobody: every call is PERMISSION_DENIED naming the request", async () => {
        const { kv, admin } = nobody;
        const md = () => new grpc.Metadata();
        const cases: [string, Promise<CallOutcome>, string][] = [
          [
            "Get",
            outcome((cb) => kv.Get({ key: "a" }, md(), deadline(), cb)),
            "nobody may not consume a",
          ],
          [
            "Set",
            outcome((cb) => kv.Set({ key: "a", value: enc.encode("no") }, md(), deadline(), cb)),
            "nobody may not produce a",
          ],
          [
            "Delete",
            outcome((cb) => kv.Delete({ key: "a" }, md(), deadline(), cb)),
            "nobody may not produce a",
          ],
          [
            "Append",
            outcome((cb) => kv.Append({ key: "a", value: enc.encode("no") }, md(), deadline(), cb)),
            "nobody may not produce a",
          ],
          [
            "CompareAndSet",
            outcome((cb) =>
              kv.CompareAndSet({ key: "a", value: enc.encode("no") }, md(), deadline(), cb)
            ),
            // A compare is a read: CAS needs consume (checked first) and produce.
            "nobody may not consume a",
          ],
          ["List", listOutcome(kv, {}), "nobody may not consume *"],
          ["List prefix", listOutcome(kv, { prefix: "a" }), "nobody may not consume a"],
          [
            "GetServers",
            outcome((cb) => kv.GetServers({}, md(), deadline(), cb)),
            "nobody may not consume *",
          ],
          [
            "Members",
            outcome((cb) => admin.Members({}, md(), deadline(), cb)),
            "nobody may not consume *",
          ],
          [
            "TransferLeadership",
            outcome((cb) => admin.TransferLeadership({ id: leader.name }, md(), deadline(), cb)),
            "nobody may not admin *",
          ],
          [
            "RemoveServer",
            outcome((cb) => admin.RemoveServer({ id: leader.name }, md(), deadline(), cb)),
            "nobody may not admin *",
          ],
          [
            "Leave",
            outcome((cb) => admin.Leave({}, md(), deadline(), cb)),
            "nobody may not admin *",
          ],
        ];
        for (const [name, pending, details] of cases) {
          const got = await pending;
          assertEquals(
            got,
            { code: grpc.status.PERMISSION_DENIED, details },
            `${name}: ${JSON.stringify(got)}`,
          );
        }
        // Nothing changed: the value root wrote is intact and all three servers remain.
        const got = await unary<GetResponse>((cb) =>
          root.kv.Get({ key: "a" }, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(dec.decode(got.value), "3");
        const servers = await unary<GetServersResponse>((cb) =>
          root.kv.GetServers({}, new grpc.Metadata(), deadline(), cb)
        );
        assertEquals(servers.servers.length, 3);
      });

      await t.step("each denial is in the node's JSON log at warn", async () => {
        const expected: [string, string][] = [
          ["/api.KV/Get", "nobody may not consume a"],
          ["/api.KV/Set", "nobody may not produce a"],
          ["/api.KV/Delete", "nobody may not produce a"],
          ["/api.KV/Append", "nobody may not produce a"],
          ["/api.KV/CompareAndSet", "nobody may not consume a"],
          ["/api.KV/List", "nobody may not consume *"],
          ["/api.KV/GetServers", "nobody may not consume *"],
          ["/api.Admin/Members", "nobody may not consume *"],
          ["/api.Admin/TransferLeadership", "nobody may not admin *"],
          ["/api.Admin/RemoveServer", "nobody may not admin *"],
          ["/api.Admin/Leave", "nobody may not admin *"],
        ];
        await eventually(() => {
          const denials = logLines(follower).filter((l) => l.code === "PERMISSION_DENIED");
          for (const [method, error] of expected) {
            const line = denials.find((l) => l.method === method && l.error === error);
            assert_(line, `no log line for ${method} (${error}) in ${JSON.stringify(denials)}`);
            assertEquals(line.level, "warn");
            assertEquals(line.subject, "nobody");
            assertEquals(line.node_id, follower.name);
          }
          // Root's calls were not denied, so none of its lines carries PERMISSION_DENIED.
          assertEquals(denials.filter((l) => l.subject !== "nobody"), []);
          return Promise.resolve();
        }, 5000);
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      root.close();
      nobody.close();
      await c.stop();
    }
  },
});
