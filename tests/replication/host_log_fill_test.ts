/**
 * The replication host keeps only the last `memoryLogEntries` applied commands in the core's
 * log and reads older ones back from its store to send them (hashicorp/raft reads its
 * LogStore the same way). Scenarios on the hand-driven cluster of real hosts, real storage
 * over a simulated Deno KV file and the real codec (which refuses an evicted entry): a
 * follower far behind catches up from entries read back; a read that loses the race with a
 * snapshot drops its append and the follower catches up by snapshot; messages to one peer
 * keep their order behind a read, and other peers do not wait for it.
 */
import type { Message } from "../../src/raft/mod.ts";
import { assert, assertEquals, Cluster } from "../raft/sim/mod.ts";

/** Entries carried by appends to `to` among `msgs`. */
function entriesTo(msgs: readonly Message[], to: string): number {
  let n = 0;
  for (const m of msgs) if (m.type === "append" && m.to === to) n += m.entries.length;
  return n;
}

/** Ticks `leader` and delivers until quiet, `rounds` times; returns what arrived. */
async function run(c: Cluster, leader: string, rounds: number): Promise<Message[]> {
  const arrived: Message[] = [];
  for (let i = 0; i < rounds; i++) {
    await c.tick(leader);
    for (let r = 0; r < 200 && c.outbox.length > 0; r++) arrived.push(...await c.deliver());
  }
  return arrived;
}

/**
 * Heals and lets `follower` answer heartbeats without progress until `leader` probes it from
 * its match with an append whose entries are evicted (reads must be held): that append and
 * every message after it to `follower` then wait for the read.
 */
async function probeFromStore(c: Cluster, leader: string, follower: string): Promise<void> {
  c.heal();
  for (let i = 0; i < 6 && c.status(leader).progress[follower].state !== "probe"; i++) {
    await c.tick(leader);
    await c.deliver();
    await c.deliver();
  }
  assertEquals(c.status(leader).progress[follower].state, "probe");
  assertEquals(c.peek({ to: follower }).length, 0, "the probe waits for its read");
}

/** Proposes `n` writes through `leader`, letting each commit among the connected nodes. */
async function write(c: Cluster, leader: string, n: number, prefix: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const w = await c.propose(leader, `${prefix}${i}`);
    await c.stabilize();
    assertEquals(w.state, "done", `write ${prefix}${i}`);
  }
}

Deno.test("a follower far behind catches up from entries read back from the leader's store", async () => {
  const c = await Cluster.start(["a", "b", "c"], { memoryLogEntries: 2 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("c");
  await write(c, "a", 40, "k");
  await run(c, "a", 2);
  const st = c.status("a");
  assert(st.evictedIndex >= st.commit - 4, `a evicted up to ${st.evictedIndex} of ${st.commit}`);
  assert(st.logDataBytes < 400, `a holds ${st.logDataBytes} bytes of commands`);
  assert(c.status("b").evictedIndex >= st.commit - 4, "the follower evicts too");
  c.heal();
  const arrived = await run(c, "a", 6);
  assertEquals(c.applied("c"), c.applied("a"));
  assertEquals(c.state("c"), c.state("a"));
  assert(entriesTo(arrived, "c") >= 40, "c received the entries it missed, with their commands");
  assertEquals(c.stored("a").snapshotIndex, 0, "without any snapshot");
  assertEquals(c.stored("c").snapshotIndex, 0);
});

Deno.test("a restarted node evicts the log tail it loaded once it is applied", async () => {
  const c = await Cluster.start(["a", "b", "c"], { memoryLogEntries: 3 });
  assertEquals(await c.elect("a"), "leader");
  await write(c, "a", 20, "k");
  await run(c, "a", 2);
  c.crash("b");
  await c.restart("b");
  await run(c, "a", 3);
  const st = c.status("b");
  assertEquals(c.applied("b"), c.applied("a"));
  assert(st.evictedIndex >= st.commit - 6, `b evicted up to ${st.evictedIndex} of ${st.commit}`);
  assert(st.logDataBytes < 600, `b holds ${st.logDataBytes} bytes of commands`);
});

Deno.test("messages to a peer wait in order behind a read of its entries; others do not", async () => {
  const c = await Cluster.start(["a", "b", "c"], { memoryLogEntries: 0 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("c");
  await write(c, "a", 10, "k");
  await run(c, "a", 2);
  c.heal();
  c.holdReads("a");
  await probeFromStore(c, "a", "c");
  await c.tick("a");
  await c.tick("a");
  assertEquals(c.peek({ to: "c" }).length, 0, "and so do the heartbeats after it");
  assert(c.peek({ type: "heartbeat", to: "b" }).length >= 2, "b's are not held");
  await c.releaseReads("a");
  const toC = c.peek({ to: "c" });
  assert(toC.length >= 3, `${toC.length} messages to c`);
  assertEquals(toC[0].type, "append", "the append comes first, as sent");
  assert(toC.slice(1).some((m) => m.type === "heartbeat"), "then the heartbeats");
  await run(c, "a", 4);
  assertEquals(c.state("c"), c.state("a"));
});

Deno.test("a read that loses the race with a snapshot drops its append; the follower catches up by snapshot", async () => {
  const c = await Cluster.start(["a", "b", "c"], { memoryLogEntries: 0, snapshotEntries: 20 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("c");
  await write(c, "a", 10, "k");
  await run(c, "a", 2);
  assertEquals(c.stored("a").snapshotIndex, 0, "no snapshot yet");
  c.holdReads("a");
  await probeFromStore(c, "a", "c");
  c.isolate("c"); // c is held up again; the read is in flight
  // Meanwhile a and b go on: a snapshots and its store drops the log c needs.
  await write(c, "a", 15, "m");
  await run(c, "a", 2);
  const snap = c.stored("a").snapshotIndex;
  assert(snap > 10, `a snapshotted (at ${snap})`);
  assertEquals(c.stored("a").firstIndex, snap + 1);
  c.heal();
  assertEquals(c.peek({ to: "c" }).length, 0, "a's messages to c wait behind the read");
  await c.releaseReads("a");
  assert(c.peek({ to: "c" }).length > 0, "and go once it is done");
  const appends = c.peek({ type: "append", to: "c" });
  assert(
    appends.every((m) => m.type === "append" && m.entries.every((e) => e.index > snap)),
    "the append whose entries the snapshot compacted was dropped",
  );
  const arrived = await run(c, "a", 30);
  assert(arrived.some((m) => m.type === "snapshot" && m.to === "c"), "c got a snapshot");
  assertEquals(c.applied("c"), c.applied("a"));
  assertEquals(c.state("c"), c.state("a"));
});
