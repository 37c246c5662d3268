/**
 * Real node processes (mutual TLS, Deno KV files in temporary directories) with
 * `memory-log-entries: 10`: the leader keeps only the last 10 applied commands in memory, so a
 * follower that was down for 300 writes (less than a compaction) catches up from commands the
 * leader reads back from its Deno KV file, not by a snapshot.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { eventually, startCluster } from "../helpers/cluster.ts";
import { get, set } from "./_kv.ts";

Deno.test({
  name: "a node down for 300 writes catches up from entries the leader reads back from disk",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const c = await startCluster({ size: 3, extraArgs: ["--memory-log-entries", "10"] });
    try {
      const leader = await c.leader();
      const down = c.nodes.find((n) => n.name !== leader.name)!;
      await set(c, leader, "before", "1");
      await c.kill(down.name, "SIGKILL");
      // snapshot-entries is 500 in test clusters: 300 writes stay within one log.
      const writers = c.nodes.filter((n) => n.process);
      for (let batch = 0; batch < 3; batch++) {
        await Promise.all(
          Array.from(
            { length: 100 },
            (_, i) =>
              set(c, writers[i % writers.length], `k${batch * 100 + i}`, `v${batch * 100 + i}`),
          ),
        );
      }
      await c.restart(down.name);
      await eventually(async () => {
        assertEquals(await get(c, down.name, "k299", "STALE"), "v299");
      }, 20_000);
      for (const key of ["before", "k0", "k150"]) {
        assert_((await get(c, down.name, key, "STALE")) !== undefined, `${key} on ${down.name}`);
      }
      assert_(
        !down.stderr.includes("installed a snapshot from the leader"),
        "the lagging node caught up from the log, not by snapshot",
      );
    } catch (err) {
      throw c.explain(err);
    } finally {
      await c.stop();
    }
  },
});
