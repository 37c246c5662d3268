/**
 * Log compaction and snapshots (Raft paper §7) by the real host: once `snapshotEntries`
 * entries are applied it snapshots its state machine, hands the snapshot to the core (which
 * keeps a short tail of the log) and stores it with the real storage, which drops the log it
 * covers. A follower behind the leader's log receives the snapshot in chunks, restores it,
 * and continues from there; a restart starts from the stored snapshot.
 */
import { assert, assertEquals, Cluster } from "./sim/mod.ts";

async function settle(c: Cluster, leader: string, rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await c.tick(leader);
    await c.stabilize();
  }
}

Deno.test("§7 compaction drops the log up to the snapshot and keeps what follows", async () => {
  const c = await Cluster.start(["a", "b", "c"], { snapshotEntries: 8 });
  assertEquals(await c.elect("a"), "leader");
  for (let i = 0; i < 12; i++) await c.propose("a", `k${i}`);
  await settle(c, "a");
  const s = c.status("a");
  const stored = c.stored("a");
  assert(stored.snapshotIndex >= 8, `the host snapshotted (at ${stored.snapshotIndex})`);
  assertEquals(stored.firstIndex, stored.snapshotIndex + 1, "the disk dropped the log before it");
  assertEquals(stored.lastIndex, s.lastIndex, "and kept what follows");
  // The core keeps a tail of up to snapshotEntries entries before the snapshot, in memory.
  assertEquals(s.snapshotIndex, Math.max(0, stored.snapshotIndex - 8));
  assertEquals(c.entries("a", 1, s.snapshotIndex + 1).length, 0, "compacted entries are gone");
  assertEquals(
    c.entries("a", s.snapshotIndex + 1, s.lastIndex + 1).length,
    s.lastIndex - s.snapshotIndex,
  );
  const w = await c.propose("a", "after");
  assertEquals(w.index, s.lastIndex + 1);
  await settle(c, "a");
  assertEquals(c.applied("b"), w.index);
  assertEquals(w.state, "done");
});

Deno.test("§7 a follower behind the compacted log receives the snapshot in chunks and continues", async () => {
  const c = await Cluster.start(["a", "b", "c"], { snapshotChunkBytes: 16, snapshotEntries: 5 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("c");
  for (let i = 0; i < 20; i++) await c.propose("a", `k${i % 4}`, `value-${i}`);
  await settle(c, "a");
  assert(c.status("a").firstIndex > c.status("c").lastIndex + 1, "c's next entry is compacted");
  c.heal();
  let chunks = 0;
  for (let r = 0; r < 30 && c.applied("c") < c.applied("a"); r++) {
    await c.tick("a");
    for (let k = 0; k < 200 && c.outbox.length > 0; k++) {
      chunks += c.peek({ type: "snapshot", to: "c" }).length;
      await c.deliver();
    }
  }
  assert(chunks > 3, `the snapshot went in ${chunks} chunks of 16 bytes`);
  assertEquals(c.applied("c"), c.applied("a"));
  assertEquals(c.state("c"), c.state("a"));
  assert(c.stored("c").snapshotIndex > 0, "c stored the snapshot it installed");
  const w = await c.propose("a", "k0", "later");
  await settle(c, "a");
  assertEquals(c.value("c", "k0"), "later", "and it replicates normally afterwards");
  assert(c.applied("c") >= w.index);
  // A restart starts from the stored snapshot.
  const snapshotIndex = c.stored("c").snapshotIndex;
  c.crash("c");
  await c.restart("c");
  assertEquals(c.stored("c").snapshotIndex, snapshotIndex);
  assert(c.applied("c") >= snapshotIndex, "the state machine restored the snapshot");
  await c.tick("c");
  await settle(c, "a");
  assertEquals(c.value("c", "k0"), "later");
});

Deno.test("§7 restarted nodes keep no copy of their loaded snapshot; a follower behind gets a fresh one", async () => {
  const c = await Cluster.start(["a", "b", "c"], { snapshotChunkBytes: 64, snapshotEntries: 5 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("c");
  for (let i = 0; i < 20; i++) await c.propose("a", `k${i % 4}`, `value-${i}`);
  await settle(c, "a");
  const stored = c.stored("a").snapshotIndex;
  assert(stored > 0, "a snapshotted");
  // The restart restores the stored snapshot into the state machine and drops the buffer: a
  // follower that needs a snapshot now makes the host take a fresh one from the state.
  c.crash("a");
  c.crash("b");
  await c.restart("a");
  await c.restart("b");
  assertEquals(await c.elect("a"), "leader");
  await settle(c, "a");
  assert(c.status("a").firstIndex > c.status("c").lastIndex + 1, "c's next entry is compacted");
  c.heal();
  for (let r = 0; r < 40 && c.applied("c") < c.applied("a"); r++) await settle(c, "a", 1);
  assertEquals(c.applied("c"), c.applied("a"));
  assertEquals(c.state("c"), c.state("a"));
  assert(
    c.stored("c").snapshotIndex > stored,
    "c installed a fresh snapshot, taken after the restart",
  );
});
