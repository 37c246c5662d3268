/**
 * etcd's own client against a real three-node mokv cluster (mutual TLS, real processes):
 * etcdctl 3.4 from Debian's etcd-client, unchanged. `.ci/run` installs it.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster } from "../helpers/cluster.ts";
import { etcdctl, etcdctlFlags, hasEtcdctl, ok } from "./_tools.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const td = new TextDecoder();

Deno.test({
  name: "etcdctl 3.4 works unchanged against a three-node mokv cluster",
  ...opts,
  fn: async (t) => {
    assert(await hasEtcdctl(), "etcdctl is installed (.ci/run installs Debian's etcd-client)");
    const c = await startCluster({ size: 3 });
    try {
      const [e1, e2, e3] = c.addrs;
      await t.step("put through one node, get through another, as text and JSON", async () => {
        await eventually(() => ok(c, ["put", "app/a", "1"], { endpoints: [e1] }));
        await ok(c, ["put", "app/b", "2"], { endpoints: [e2] });
        await ok(c, ["put", "app/c", "3"], { endpoints: [e3] });
        await ok(c, ["put", "other", "x"], { endpoints: [e1] });
        assertEquals(await ok(c, ["get", "app/a"], { endpoints: [e3] }), "app/a\n1\n", "get");
        const prefix = await ok(c, ["get", "app/", "--prefix", "--keys-only"], { endpoints: [e2] });
        assertEquals(prefix.split("\n").filter((l) => l), ["app/a", "app/b", "app/c"], "prefix");
        const json = JSON.parse(
          await ok(c, ["get", "app/", "--prefix", "--limit", "2", "-w", "json"]),
        );
        assertEquals([json.kvs.length, json.more, json.count], [2, true, 3], "limit/more/count");
        assert(json.header.revision > 0 && json.header.raft_term > 0, "header");
        const fromKey = await ok(c, ["get", "app/c", "--from-key", "--keys-only"]);
        assertEquals(fromKey.split("\n").filter((l) => l), ["app/c", "other"], "from-key");
        const sorted = await ok(c, [
          "get",
          "app/",
          "--prefix",
          "--sort-by=MODIFY",
          "--order=DESCEND",
          "--keys-only",
        ]);
        assertEquals(sorted.split("\n").filter((l) => l), ["app/c", "app/b", "app/a"], "sorted");
      });

      await t.step(
        "--rev reads an older revision; del --prev-kv returns what it deleted",
        async () => {
          const before = JSON.parse(await ok(c, ["get", "app/a", "-w", "json"]));
          const rev = before.header.revision;
          await ok(c, ["put", "app/a", "1b"]);
          assertEquals(await ok(c, ["get", "app/a", "--rev", String(rev)]), "app/a\n1\n", "at rev");
          assertEquals(await ok(c, ["get", "app/a"]), "app/a\n1b\n", "now");
          const del = await ok(c, ["del", "app/b", "--prev-kv"], { endpoints: [e2] });
          assertEquals(del, "1\napp/b\n2\n", "deleted one, with its previous value");
        },
      );

      await t.step(
        "txn: a compare that holds runs success, one that fails runs failure",
        async () => {
          const pass = await ok(c, ["txn"], {
            stdin: 'value("app/a") = "1b"\n\nput app/t yes\n\nput app/t no\n\n',
          });
          assertEquals(pass.split("\n")[0], "SUCCESS", "success branch");
          const fail = await ok(c, ["txn"], {
            stdin: 'value("app/a") = "zzz"\n\nput app/u yes\n\nput app/u no\n\n',
          });
          assertEquals(fail.split("\n")[0], "FAILURE", "failure branch");
          assertEquals(await ok(c, ["get", "app/t", "--print-value-only"]), "yes\n", "t");
          assertEquals(await ok(c, ["get", "app/u", "--print-value-only"]), "no\n", "u");
        },
      );

      await t.step(
        "watch --prefix --rev --prev-kv sees writes through every node, in order",
        async () => {
          const start = JSON.parse(await ok(c, ["get", "w/", "--prefix", "-w", "json"])).header
            .revision + 1;
          const watch = new Deno.Command("etcdctl", {
            args: [
              ...etcdctlFlags(c, [e3]),
              "watch",
              "w/",
              "--prefix",
              "--rev",
              String(start),
              "--prev-kv",
            ],
            env: { ETCDCTL_API: "3" },
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          let out = "";
          const reading = (async () => {
            for await (const chunk of watch.stdout) out += td.decode(chunk);
          })();
          try {
            await ok(c, ["put", "w/1", "a"], { endpoints: [e1] });
            await ok(c, ["put", "w/2", "b"], { endpoints: [e2] });
            await ok(c, ["put", "w/1", "c"], { endpoints: [e3] });
            await ok(c, ["del", "w/2"], { endpoints: [e1] });
            await eventually(() => {
              const lines = out.split("\n").filter((l) => l);
              if (lines.length < 15) throw new Error(`watch printed ${JSON.stringify(out)}`);
              return Promise.resolve();
            }, 15_000);
            const lines = out.split("\n").filter((l) => l);
            assertEquals(
              lines,
              [
                "PUT",
                "w/1",
                "a",
                "PUT",
                "w/2",
                "b",
                "PUT",
                "w/1",
                "a",
                "w/1",
                "c",
                "DELETE",
                "w/2",
                "b",
                "w/2",
              ].slice(0, lines.length),
              "events in revision order, with previous values",
            );
          } finally {
            watch.kill("SIGKILL");
            await watch.status;
            await reading.catch(() => undefined);
          }
        },
      );

      await t.step("member list, endpoint status --cluster, endpoint health", async () => {
        const members = JSON.parse(await ok(c, ["member", "list", "-w", "json"])).members;
        assertEquals(
          members.map((m: { name: string }) => m.name).sort(),
          ["n1", "n2", "n3"],
          "members",
        );
        const status = JSON.parse(
          await ok(c, ["endpoint", "status", "--cluster", "-w", "json"], { endpoints: [e1] }),
        );
        assertEquals(status.length, 3, "one status per member");
        const leaders = new Set(status.map((s: { Status: { leader: number } }) => s.Status.leader));
        assertEquals(leaders.size, 1, "every member names the same leader");
        const health = await etcdctl(c, ["endpoint", "health", "--cluster"], { endpoints: [e1] });
        assertEquals(health.code, 0, health.err);
        assertEquals((health.err + health.out).match(/is healthy/g)?.length, 3, "three healthy");
      });

      await t.step("snapshot save writes a file etcdctl accepts", async () => {
        const dir = await Deno.makeTempDir({ prefix: "mokv-etcd-snap-" });
        try {
          await ok(c, ["snapshot", "save", `${dir}/snap.db`], { endpoints: [e2] });
          const size = (await Deno.stat(`${dir}/snap.db`)).size;
          assert(size > 32 && size % 512 === 32, `snapshot of ${size} bytes`);
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      });

      await t.step("compaction: older revisions answer etcd's compacted error", async () => {
        const rev = JSON.parse(await ok(c, ["get", "app/a", "-w", "json"])).header.revision;
        await ok(c, ["put", "app/a", "after"]);
        assertEquals(
          (await ok(c, ["compaction", String(rev)])).trim(),
          `compacted revision ${rev}`,
        );
        const old = await etcdctl(c, ["get", "app/a", "--rev", String(rev - 1)]);
        assert(old.code !== 0, "refused");
        assert(
          old.err.includes("etcdserver: mvcc: required revision has been compacted"),
          old.err,
        );
      });
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
