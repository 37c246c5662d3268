/**
 * Log replication, Raft paper §5.3 and §5.4: batching and the inflight window, fast
 * backtracking of conflicting tails, recovery from lost appends, and the commitment rules
 * (a stale leader cannot commit; only current-term entries are counted, Figure 8).
 */
import { assert, assertEquals, Cluster } from "./sim/mod.ts";
import type { Append } from "../../src/raft/mod.ts";

const appends = (c: Cluster, to?: string) => c.peek({ type: "append", to }) as Append[];

Deno.test("§5.3 many proposals go out in one append message (batching)", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  for (let i = 0; i < 20; i++) c.submit("a", "k", `x${i}`);
  await c.settle();
  const toB = appends(c, "b");
  assertEquals(toB.length, 1, "one append for 20 proposals made in one batch");
  assertEquals(toB[0].entries.length, 20);
  await c.stabilize();
  assertEquals(c.applied("c"), c.applied("a"));
});

Deno.test("§5.3 the inflight window bounds unacknowledged appends per follower", async () => {
  const c = await Cluster.start(["a", "b", "c"], { maxInflight: 2, maxBatchBytes: 1 });
  assertEquals(await c.elect("a"), "leader");
  for (let i = 0; i < 10; i++) await c.propose("a", "k");
  const toB = appends(c, "b");
  assertEquals(toB.length, 2, "maxInflight appends, then the follower's progress pauses");
  assert(toB.every((m) => m.entries.length === 1), "maxBatchBytes 1 still sends one entry");
  await c.stabilize();
  assertEquals(c.applied("b"), c.applied("a"));
});

Deno.test("§5.3 a lost append is resent although nothing new is proposed", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  await c.propose("a", "k");
  await c.stabilize();
  const { index } = await c.propose("a", "k");
  c.drop({ type: "append" });
  for (let i = 0; i < 30; i++) {
    await c.tick("a");
    await c.stabilize();
  }
  assertEquals(c.status("b").lastIndex, index, "b got the lost entry again");
  assertEquals(c.applied("a"), index, "and the leader committed it");
});

Deno.test("§5.3 a follower's conflicting uncommitted tail is truncated in few round trips", async () => {
  const c = await Cluster.start(["a", "b", "c"], { checkQuorum: false });
  assertEquals(await c.elect("a"), "leader");
  await c.propose("a", "k");
  await c.stabilize();
  // c is cut off; a (term 2) appends 30 entries that only a has, then loses leadership.
  c.isolate("a");
  for (let i = 0; i < 30; i++) await c.propose("a", "lost");
  c.drop();
  assertEquals(await c.elect("b"), "leader");
  for (let i = 0; i < 5; i++) await c.propose("b", "kept");
  await c.stabilize();
  c.heal();
  const committed = c.status("b").commit;
  // b's heartbeat makes a step down; its appends probe a's log. Count rejections.
  let rejects = 0;
  for (let round = 0; round < 20 && c.status("a").commit < committed; round++) {
    await c.tick("b");
    for (let r = 0; r < 50 && c.outbox.length > 0; r++) {
      rejects += c.peek((m) => m.type === "appendResponse" && m.reject && m.from === "a").length;
      await c.deliver();
    }
  }
  assertEquals(c.status("a").commit, committed);
  assertEquals(c.status("a").lastIndex, c.status("b").lastIndex);
  assert(rejects <= 3, `the hint skips the whole conflicting term (${rejects} rejections)`);
});

Deno.test("§5.4.1 a stale leader cannot commit", async () => {
  const c = await Cluster.start(["a", "b", "c"], { checkQuorum: false });
  assertEquals(await c.elect("a"), "leader");
  await c.stabilize();
  c.isolate("a");
  assertEquals(await c.elect("b"), "leader");
  const stale = await c.propose("a", "k");
  await c.tickAll(3);
  await c.stabilize();
  assert(c.status("a").commit < stale.index, "the old leader cannot commit alone");
  c.heal();
  await c.tick("b");
  await c.stabilize();
  assertEquals(c.status("a").role, "follower");
  const entry = c.entries("a", stale.index, stale.index + 1)[0];
  assert(entry === undefined || entry.term !== stale.term, "the stale entry was replaced");
});

Deno.test("§5.4.2 Figure 8: entries of an older term are not committed by counting replicas", async () => {
  const c = await Cluster.start(["a", "b", "c", "d", "e"], {
    checkQuorum: false,
    preVote: false,
    maxBatchBytes: 1, // one entry per append, so X can be on a majority before the no-op
  });
  assertEquals(await c.elect("a"), "leader");
  // (a) a, leader of term 2, replicates X to b only, then crashes.
  const x = await c.propose("a", "x");
  await c.deliver({ type: "append", to: "b" });
  c.drop();
  c.crash("a");
  // (b) e wins term 3 with c and d, appends its no-op locally only, and crashes.
  c.isolate("b");
  assertEquals(await c.campaign("e"), "leader");
  c.drop();
  c.crash("e");
  c.heal();
  // (c) a restarts and wins a later term with b, c, d.
  await c.restart("a");
  // Term 3 fails (c and d voted for e in it); term 4 succeeds.
  for (let i = 0; i < 3 && c.status("a").role !== "leader"; i++) await c.campaign("a");
  const { term, role } = c.status("a");
  assertEquals(role, "leader");
  assert(term >= 4);
  c.isolate("d");
  // a replicates X (term 2) to c: X is on a, b, c, a majority, but is not of a's term.
  let sawMajorityWithoutCommit = false;
  for (let r = 0; r < 50 && c.outbox.length > 0; r++) {
    for (const m of c.take()) {
      await c.deliverOne(m);
      const st = c.status("a");
      if (st.commit > 2) {
        const entry = c.entries("a", st.commit, st.commit + 1)[0];
        assertEquals(entry.term, term, `commit ${st.commit} must land on a term-${term} entry`);
      }
      const pr = st.progress;
      if (pr["b"]?.match >= x.index && pr["c"]?.match >= x.index && st.commit < x.index) {
        sawMajorityWithoutCommit = true;
      }
    }
  }
  assert(sawMajorityWithoutCommit, "X was on a majority while uncommitted");
  assert(c.status("a").commit > x.index, "committed through the term's own entry");
});
