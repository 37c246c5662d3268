/**
 * Log compaction and snapshots (Raft paper §7): the application snapshots its state and
 * the log before it is dropped; a follower behind the leader's log receives the snapshot in
 * chunks, restores it, and continues from there; a restart starts from the snapshot.
 */
import { assert, assertEquals, Cluster } from "./sim/mod.ts";

function settle(c: Cluster, leader: string, rounds = 5): void {
  for (let i = 0; i < rounds; i++) {
    c.tick(leader);
    c.stabilize();
  }
}

Deno.test("§7 compaction drops the log up to the snapshot and keeps what follows", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  for (let i = 0; i < 12; i++) c.propose("a", `k${i}`);
  settle(c, "a");
  const last = c.raft("a").status().lastIndex;
  const at = last - 2;
  c.raft("a").compact(at, c.node("a").sm.snapshot());
  const s = c.raft("a").status();
  assertEquals([s.snapshotIndex, s.firstIndex, s.lastIndex], [at, at + 1, last]);
  assertEquals(c.raft("a").entries(1, at + 1).length, 0, "compacted entries are gone");
  assertEquals(c.raft("a").entries(at + 1, last + 1).length, 2, "the tail stays");
  const w = c.propose("a", "after");
  assertEquals(w.index, last + 1);
  settle(c, "a");
  assertEquals(c.node("b").applied, w.index);
});

Deno.test("§7 a follower behind the compacted log receives the snapshot in chunks and continues", () => {
  const c = new Cluster(["a", "b", "c"], { snapshotChunkBytes: 16 });
  assertEquals(c.elect("a"), "leader");
  c.isolate("c");
  for (let i = 0; i < 20; i++) c.propose("a", `k${i % 4}`, `value-${i}`);
  settle(c, "a");
  assert(c.node("a").compact(1), "the leader compacts everything applied");
  assert(c.node("b").compact(1));
  c.heal();
  let chunks = 0;
  for (let r = 0; r < 30 && c.node("c").applied < c.node("a").applied; r++) {
    c.tick("a");
    for (let k = 0; k < 200 && c.outbox.length > 0; k++) {
      chunks += c.peek({ type: "snapshot", to: "c" }).length;
      c.deliver();
    }
  }
  assert(chunks > 3, `the snapshot went in ${chunks} chunks of 16 bytes`);
  assertEquals(c.node("c").applied, c.node("a").applied);
  assertEquals(new Map(c.node("c").sm.state()), new Map(c.node("a").sm.state()));
  assertEquals(c.node("c").disk.snapshotIndex, c.node("a").disk.snapshotIndex);
  const w = c.propose("a", "k0", "later");
  settle(c, "a");
  assertEquals(c.node("c").sm.get("k0"), "later", "and it replicates normally afterwards");
  assert(c.node("c").applied >= w.index);
  // A restart starts from the installed snapshot.
  c.crash("c");
  c.restart("c");
  assertEquals(c.raft("c").status().snapshotIndex, c.node("c").disk.snapshotIndex);
  assertEquals(c.node("c").sm.get("k0"), "later");
});
