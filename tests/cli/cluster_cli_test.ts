/** Every `mokv` client command against a real three-node cluster with mutual TLS. */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { captureIo, ExitCode, runCli } from "../../src/cli/mod.ts";
import { eventually, startCluster } from "../helpers/cluster.ts";

async function mokv(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = captureIo();
  const code = await runCli(args, io);
  return { code, out: io.stdout(), err: io.stderr() };
}

Deno.test({
  name: "cluster: every CLI command round-trips",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cluster = await startCluster({ size: 3 });
    const dir = await Deno.makeTempDir({ prefix: "mokv-cli-cluster-" });
    try {
      const leader = await cluster.leader();
      const c = cluster.certs;
      const tls = ["--ca", c.ca, "--cert", c.rootClient.cert, "--key", c.rootClient.key];
      const g = ["--addrs", cluster.addrs.join(","), ...tls];

      assertEquals((await mokv(["kv", "set", "a", "1", ...g])).code, 0);
      assertEquals((await mokv(["kv", "append", "a", "2", ...g])).code, 0);
      assertEquals((await mokv(["kv", "get", "a", ...g])).out, "12\n");
      assertEquals((await mokv(["kv", "get", "a", "--stale", "--json", ...g])).code, 0);
      assertEquals((await mokv(["kv", "cas", "a", "3", "--expect-value", "12", ...g])).code, 0);
      assertEquals(
        (await mokv(["kv", "cas", "a", "4", "--expect-value", "12", ...g])).code,
        ExitCode.COMPARE_FAILED,
      );
      assertEquals((await mokv(["kv", "list", ...g])).out, "a\t3\n");
      assertEquals((await mokv(["kv", "delete", "a", ...g])).out, "1\n");
      assertEquals((await mokv(["kv", "get", "a", ...g])).code, ExitCode.NOT_FOUND);
      const nobody = [
        "--addrs",
        cluster.addrs.join(","),
        "--ca",
        c.ca,
        "--cert",
        c.nobodyClient.cert,
        "--key",
        c.nobodyClient.key,
      ];
      assertEquals((await mokv(["kv", "get", "a", ...nobody])).code, ExitCode.PERMISSION_DENIED);

      const servers = JSON.parse((await mokv(["servers", "--json", ...g])).out).servers;
      assertEquals(servers.length, 3);
      assertEquals(
        servers.find((s: { is_leader: boolean }) => s.is_leader).rpc_addr,
        leader.rpcAddr,
      );
      const members = JSON.parse((await mokv(["members", "--json", ...g])).out).members;
      assertEquals(members.length, 3);

      const health = await mokv([
        "health",
        "--continuous",
        "--requests",
        "2",
        "--delay",
        "50ms",
        "--json",
        ...g,
      ]);
      assertEquals(health.code, 0, health.out + health.err);
      assertEquals(JSON.parse(health.out).nodes.length, 3);

      const target = cluster.nodes.find((n) => n.name !== leader.name)!;
      const moved = await mokv(["leader", "transfer", target.name, "--json", ...g]);
      assertEquals(moved.code, 0, moved.err);
      assertEquals(JSON.parse(moved.out).leader_id, target.name);

      await mokv(["kv", "set", "backup/key", "kept", ...g]);
      const file = `${dir}/backup.snap`;
      assertEquals((await mokv(["snapshot", "save", file, ...g])).code, 0);
      const seeded = await mokv([
        "snapshot",
        "restore",
        file,
        "--data-dir",
        `${dir}/seed`,
        "--node-name",
        "s1",
        "--rpc-addr",
        "127.0.0.1:18499",
      ]);
      assertEquals(seeded.code, 0, seeded.err);

      const bench = await mokv([
        "bench",
        "--requests",
        "200",
        "--concurrency",
        "8",
        "--json",
        ...g,
      ]);
      assertEquals(bench.code, 0, bench.err);
      const report = JSON.parse(bench.out);
      assertEquals([report.succeeded, report.failed], [200, 0]);
      assert(report.throughput_ops_s > 0);

      // The last follower leaves; the leader then drops it from the configuration.
      const leaving = cluster.nodes.find((n) => n.name !== target.name)!;
      const left = await mokv(["leave", "--addr", leaving.rpcAddr, ...tls]);
      assertEquals(left.code, 0, left.err);
      const remaining = ["--addr", target.rpcAddr, ...tls];
      await eventually(async () => {
        const s = JSON.parse((await mokv(["servers", "--json", ...remaining])).out).servers;
        if (s.some((x: { id: string }) => x.id === leaving.name)) throw new Error("still a server");
      }, 20_000);
      const removed = await mokv(["member", "remove", leaving.name, ...remaining]);
      assert(
        removed.code === 0 || removed.code === ExitCode.USAGE ||
          removed.code === ExitCode.NOT_FOUND,
        removed.err,
      );
    } catch (err) {
      throw cluster.explain(err);
    } finally {
      await cluster.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
