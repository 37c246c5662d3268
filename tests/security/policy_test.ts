/**
 * A policy with key patterns (Casbin keyMatch) on a real three-node cluster allows and denies
 * exactly as written, List returns only keys the subject may read, and after the policy file
 * is rewritten and every node gets SIGHUP the new policy is in force; a broken policy is
 * refused on reload and the old one stays.
 */
import * as grpc from "@grpc/grpc-js";
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster, unary } from "../helpers/cluster.ts";
import type { KvClient } from "../../src/api/messages.ts";
import {
  type CallOutcome,
  type Clients,
  clientsFor,
  deadline,
  listAll,
  logLines,
  outcome,
  sighupAll,
  writePolicy,
} from "./_helpers.ts";

const enc = new TextEncoder();

const ROOT_RULES = [
  "p, root, *, produce",
  "p, root, *, consume",
  "p, root, *, admin",
];

const get = (kv: KvClient, key: string): Promise<CallOutcome> =>
  outcome((cb) => kv.Get({ key }, new grpc.Metadata(), deadline(), cb));
const set = (kv: KvClient, key: string): Promise<CallOutcome> =>
  outcome((cb) => kv.Set({ key, value: enc.encode(key) }, new grpc.Metadata(), deadline(), cb));

/** Asserts each `[call, key, expected code]` on `clients` (one node). */
async function expectCodes(
  clients: Clients,
  cases: readonly ["get" | "set", string, grpc.status][],
): Promise<void> {
  for (const [op, key, code] of cases) {
    const got = op === "get" ? await get(clients.kv, key) : await set(clients.kv, key);
    assertEquals(got.code, code, `${op} ${key}: ${JSON.stringify(got)}`);
  }
}

Deno.test({
  name: "policy: key patterns allow and deny as written; SIGHUP reloads the policy",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "mokv-policy-" });
    const policy = await writePolicy(dir, [
      ...ROOT_RULES,
      "p, nobody, public/*, consume",
      "p, nobody, inbox/nobody/*, produce",
      "p, nobody, shared, consume",
    ]);
    const c = await startCluster({ size: 3, extraArgs: ["--acl-policy-file", policy] });
    const nobodies = c.nodes.map((n) =>
      clientsFor(n.rpcAddr, { kind: "tls", ca: c.certs.ca, client: c.certs.nobodyClient })
    );
    const root = c.kv(c.nodes[0]);
    const { OK, NOT_FOUND, PERMISSION_DENIED } = grpc.status;
    try {
      for (const key of ["public/a", "public/b", "publicity", "secret", "shared", "shared-2"]) {
        await unary((cb) =>
          root.Set({ key, value: enc.encode(key) }, new grpc.Metadata(), deadline(), cb)
        );
      }

      await t.step("patterns allow and deny on every node", async () => {
        for (const nobody of nobodies) {
          await expectCodes(nobody, [
            ["get", "public/a", OK],
            ["get", "public/missing", NOT_FOUND],
            ["get", "public/deep/er", NOT_FOUND],
            ["get", "publicity", PERMISSION_DENIED],
            ["get", "public", PERMISSION_DENIED],
            ["get", "secret", PERMISSION_DENIED],
            ["get", "shared", OK],
            ["get", "shared-2", PERMISSION_DENIED],
            ["set", "public/a", PERMISSION_DENIED],
            ["set", "inbox/nobody/m1", OK],
            ["set", "inbox/somebody/m1", PERMISSION_DENIED],
            ["get", "inbox/nobody/m1", PERMISSION_DENIED],
          ]);
        }
        const denied = await get(nobodies[1].kv, "secret");
        assertEquals(denied.details, "nobody may not consume secret");
      });

      await t.step("List answers only what the policy lets the subject read", async () => {
        const kv = nobodies[0].kv;
        const keys = async (prefix: string) => (await listAll(kv, { prefix })).map((e) => e.key);
        assertEquals(await keys("public/"), ["public/a", "public/b"]);
        // "shared" is allowed as an exact key; "shared-2" shares its prefix but is not.
        assertEquals(await keys("shared"), ["shared"]);
        assertEquals(await keys("public/b"), ["public/b"]);
        // Root, allowed everything, still sees every key.
        const all = (await listAll(c.kv(c.nodes[1]), {})).map((e) => e.key);
        assertEquals(all, [
          "inbox/nobody/m1",
          "public/a",
          "public/b",
          "publicity",
          "secret",
          "shared",
          "shared-2",
        ]);
        for (const prefix of ["", "pub", "public", "s"]) {
          const got = await listAll(kv, { prefix }).then(
            (items) => items.map((e) => e.key),
            (err: grpc.ServiceError) => err.code,
          );
          assert_(
            got === PERMISSION_DENIED ||
              (Array.isArray(got) && got.every((k) => k.startsWith("public/") || k === "shared")),
            `List prefix ${JSON.stringify(prefix)}: ${JSON.stringify(got)}`,
          );
        }
      });

      await t.step("a rewritten policy is in force on every node after SIGHUP", async () => {
        await writePolicy(dir, [...ROOT_RULES, "p, nobody, secret, consume"]);
        sighupAll(c);
        await eventually(async () => {
          for (const nobody of nobodies) {
            await expectCodes(nobody, [
              ["get", "secret", OK],
              ["get", "public/a", PERMISSION_DENIED],
              ["get", "shared", PERMISSION_DENIED],
              ["set", "inbox/nobody/m2", PERMISSION_DENIED],
            ]);
          }
        }, 10_000);
        for (const n of c.nodes) {
          assert_(
            logLines(n).some((l) => l.message === "ACL policy reloaded" && l.level === "info"),
            `${n.name} did not log the reload`,
          );
        }
      });

      await t.step("a broken policy is refused on SIGHUP and the old one stays", async () => {
        await writePolicy(dir, [...ROOT_RULES, "q, nobody, public/*, consume"]);
        sighupAll(c);
        await eventually(() => {
          for (const n of c.nodes) {
            const line = logLines(n).find((l) => l.message?.toString().includes("reload failed"));
            assert_(line, `${n.name} did not log the failed reload`);
            assertEquals(line.level, "error");
            assert_(String(line.error).includes("acl-policy-file"), JSON.stringify(line));
          }
          return Promise.resolve();
        }, 10_000);
        for (const nobody of nobodies) {
          await expectCodes(nobody, [
            ["get", "secret", OK],
            ["get", "public/a", PERMISSION_DENIED],
          ]);
        }
        // Root keeps full access throughout.
        const done = await set(c.kv(c.nodes[2]), "after-reloads");
        assertEquals(done.code, OK);
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      for (const nobody of nobodies) nobody.close();
      await c.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => undefined);
    }
  },
});
