/**
 * Regression tests for consensus bugs an outside review found (issue 13), on real hosts. Each
 * one fails on the code before its fix: the scenario is the reviewer's, replayed message by
 * message, with saves held in flight where the bug needs a slow disk.
 */
import { UnavailableError } from "../../src/errors.ts";
import { RaftInvariantError, RaftNode } from "../../src/raft/mod.ts";
import type { Heartbeat, Message } from "../../src/raft/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows, Cluster } from "./sim/mod.ts";

Deno.test("bug 1: a new leader makes no membership change before an entry of its term commits", async () => {
  // Ongaro's single-server bug (raft-dev, 2015). C1 = {n1..n4}, n5 a learner.
  const c = await Cluster.start(["n1", "n2", "n3", "n4", "n5"], {
    voters: ["n1", "n2", "n3", "n4"],
    checkQuorum: false,
  });
  assertEquals(await c.elect("n1"), "leader");
  await c.changeConfig("n1", { type: "addLearner", id: "n5", address: "n5:1" });
  for (let i = 0; i < 5; i++) {
    await c.tick("n1");
    await c.stabilize();
  }
  // n1 appends `promote n5` (C2: five voters); only n5 receives it; n1 crashes.
  await c.changeConfig("n1", { type: "promote", id: "n5" });
  await c.deliver({ type: "append", to: "n5" });
  c.crash("n1");
  c.outbox = [];
  // n2 wins a new term under C1 with n3 and n4; n4 is then cut off.
  c.isolate("n5");
  assertEquals(await c.campaign("n2"), "leader");
  c.isolate("n4");
  // Its no-op has not committed: a change now could commit on n2 + n3 alone (C3 = {n2,n3,n4})
  // while n1, back with C2, wins with n1, n4 and n5 and overwrites it.
  await assertRejects(
    () => c.changeConfig("n2", { type: "remove", id: "n1" }),
    UnavailableError,
    "no change before the no-op commits",
  );
  // Once an entry of its term commits, changes are allowed again.
  c.heal();
  c.isolate("n1");
  await c.stabilize();
  await c.tick("n2");
  await c.stabilize();
  assertEquals(c.status("n2").commit, c.status("n2").lastIndex);
  await c.changeConfig("n2", { type: "remove", id: "n1" });
});

Deno.test("bug 1: an idle new leader in a healthy cluster may change membership only after its no-op", async () => {
  const c = await Cluster.start(["a", "b", "c", "d"], { voters: ["a", "b", "c"] });
  await c.core("a", (r) => r.campaign());
  const election = (m: Message) => m.type !== "append" && m.type !== "appendResponse";
  for (let r = 0; r < 6; r++) await c.deliver(election);
  assertEquals(c.status("a").role, "leader");
  await assertRejects(
    () => c.changeConfig("a", { type: "addLearner", id: "d", address: "d:1" }),
    UnavailableError,
  );
  await c.stabilize();
  const add = await c.changeConfig("a", { type: "addLearner", id: "d", address: "d:1" });
  await c.stabilize();
  assertEquals(add.state, "done");
});

Deno.test("bug 2: an answer to an older heartbeat round never confirms a newer read, whatever its context", async () => {
  const c = await Cluster.start(["a", "b", "c", "d", "e"]);
  assertEquals(await c.elect("a"), "leader");
  await c.propose("a", "k", "v1");
  await c.stabilize();
  // b asks for a read with context 1 (every host numbered its reads from 1).
  await c.core("b", (r) => r.readIndex(1));
  await c.deliver({ type: "readIndex", from: "b" });
  const round1 = c.take({ type: "heartbeat", from: "a" }) as Heartbeat[];
  assertEquals(round1.length, 4);
  // b and c answer at once; d's and e's answers are delayed (held by the test).
  for (const hb of round1) await c.deliverOne(hb);
  const delayed = c.take((m) =>
    m.type === "heartbeatResponse" && (m.from === "d" || m.from === "e")
  );
  assertEquals(delayed.length, 2);
  await c.stabilize();
  // A write commits after that round; then c asks for a read, also with context 1.
  const w = await c.propose("a", "k", "v2");
  await c.stabilize();
  assert(c.status("a").commit >= w.index);
  await c.core("c", (r) => r.readIndex(1));
  await c.deliver({ type: "readIndex", from: "c" });
  // The new round's heartbeats are lost (a is about to be deposed).
  c.drop({ type: "heartbeat", from: "a" });
  // The old round's delayed answers arrive: they were sent before c's read was registered.
  for (const m of delayed) await c.deliverOne(m);
  assertEquals(
    c.peek({ type: "readIndexResponse", to: "c" }).length,
    0,
    "c's read is not confirmed by answers to a heartbeat that left before it",
  );
  // Answers to a heartbeat sent after the read do confirm it.
  await c.tick("a");
  await c.stabilize();
  assertEquals(c.status("a").role, "leader");
});

Deno.test("bug 3: a follower never snapshots past its durable log (it would halt for good)", async () => {
  const c = await Cluster.start(["a", "b", "c"], { snapshotEntries: 5 });
  assertEquals(await c.elect("a"), "leader");
  // b's disk is slow: its next batch stays in flight while the leader goes on.
  c.holdSaves("b");
  for (let i = 0; i < 3; i++) await c.propose("a", `k${i}`);
  await c.deliver({ type: "append", to: "b" });
  assert(c.saving("b"), "b is writing its first batch");
  const durable = c.status("b").durableIndex;
  // More entries reach b while that batch is written, and commit on a and c.
  for (let i = 3; i < 12; i++) await c.propose("a", `k${i}`);
  await c.deliver({ type: "append", to: "b" });
  await c.deliver({ type: "append", to: "c" });
  await c.deliver({ type: "appendResponse", from: "c" });
  // The leader's next append tells b how far that is.
  await c.propose("a", "k12");
  await c.deliver({ type: "append", to: "b" });
  const commit = c.status("a").commit;
  assert(
    c.applied("b") >= durable + 5,
    `b applied committed entries it has not written yet (${c.applied("b")}, ${durable})`,
  );
  // Its first batch lands: a snapshot at the applied index would move the stored log's start
  // past entries still to be written, and b's next save would fail with a gap.
  await c.releaseSaves("b");
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  assert(c.host("b").isCaughtUp(), "b's loop is alive and caught up");
  assert(c.status("b").commit >= commit);
  assert(c.stored("b").snapshotIndex > 0, "b snapshotted, within its durable log");
  const w = await c.propose("a", "after", "x");
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  assertEquals(c.value("b", "after"), "x", "and goes on replicating");
  assertEquals(w.state, "done");
});

Deno.test("bug 4: a sole voter sends nothing before its new term is durable", async () => {
  // One voter, one learner: pre-vote, vote and leadership happen in one tick.
  const c = await Cluster.start(["a", "b"], { voters: ["a"] });
  assertEquals(await c.elect("a"), "leader");
  await c.changeConfig("a", { type: "addLearner", id: "b", address: "b:1" });
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  assertEquals(c.status("b").commit, c.status("a").commit);
  c.crash("a");
  await c.restart("a");
  const term = c.status("a").term;
  // a's disk is slow; it times out and elects itself in one tick.
  c.holdSaves("a");
  for (let i = 0; i < 30 && c.status("a").role !== "leader"; i++) await c.tick("a");
  assertEquals(c.status("a").role, "leader");
  assertEquals(c.status("a").term, term + 1);
  assert(c.saving("a"), "its new term is still being written");
  assertEquals(
    c.peek({ from: "a" }).filter((m) => m.term > term).length,
    0,
    "no append of the new term before it is durable",
  );
  // It crashes in the middle of that save and comes back in its old term: since nothing of
  // the lost term went out, winning the same term again is harmless (the checker's durable
  // term and log matching properties hold).
  c.crash("a");
  await c.restart("a");
  assertEquals(c.status("a").term, term);
  for (let i = 0; i < 30 && c.status("a").role !== "leader"; i++) await c.tick("a");
  assertEquals(c.status("a").term, term + 1);
  await c.stabilize();
  const w = await c.propose("a", "k", "v");
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  assertEquals(w.state, "done");
  assertEquals(c.value("b", "k"), "v", "the learner follows the new term");
});

Deno.test("advance() does not mark entries durable that a new leader replaced during the write", () => {
  // A property of the bare core: no host is involved.
  const r = new RaftNode({ id: "x", random: () => 0.5 }, {
    hardState: { term: 2, vote: "", commit: 0 },
    entries: [],
    snapshot: undefined,
  });
  // x (no log) takes entries 1..3 of term 2 into a Ready ...
  r.step({
    type: "append",
    from: "a",
    to: "x",
    term: 2,
    prevIndex: 0,
    prevTerm: 0,
    commit: 0,
    entries: [1, 2, 3].map((index) => ({
      type: "normal",
      term: 2,
      index,
      data: new Uint8Array(0),
    })),
  });
  r.ready();
  // ... and, while it is written, a leader of term 3 replaces 2..3.
  r.step({
    type: "append",
    from: "b",
    to: "x",
    term: 3,
    prevIndex: 1,
    prevTerm: 2,
    commit: 0,
    entries: [2, 3].map((index) => ({ type: "normal", term: 3, index, data: new Uint8Array(0) })),
  });
  r.advance();
  assertEquals(r.status().durableIndex, 1, "only entry 1 on disk is the entry in the log");
  r.ready();
  r.advance();
  assertEquals(r.status().durableIndex, 3);
});

Deno.test("a persisted commit index beyond the log fails loudly instead of being clamped", () => {
  assertThrows(
    () =>
      new RaftNode({ id: "x", random: () => 0.5 }, {
        hardState: { term: 2, vote: "", commit: 9 },
        entries: [{ type: "normal", term: 2, index: 1, data: new Uint8Array(0) }],
        snapshot: undefined,
      }),
    RaftInvariantError,
  );
});

Deno.test("a leader that loses leadership before its own removal commits can still end it (sim seed 771)", async () => {
  const c = await Cluster.start(["n1", "n3"], { checkQuorum: false });
  assertEquals(await c.elect("n1"), "leader");
  await c.stabilize();
  // n1 appends its own removal ({n3}) and loses leadership before n3 receives it.
  await c.changeConfig("n1", { type: "remove", id: "n1" });
  c.drop({ type: "append", to: "n3" });
  await c.core("n3", (r) => r.campaign()); // n3 (config {n1, n3}) needs n1's vote, which n1 refuses
  await c.stabilize();
  assertEquals(c.status("n3").role === "leader", false, "n3 cannot win alone");
  // n1 may campaign again: its removal is not committed, so it is still a voter then.
  for (let i = 0; i < 60 && c.leaders().length === 0; i++) {
    await c.tickAll();
    await c.stabilize();
  }
  for (let i = 0; i < 60 && !(c.leaders().length === 1 && c.leaders()[0] === "n3"); i++) {
    await c.tickAll();
    await c.stabilize();
  }
  assertEquals(c.leaders(), ["n3"], "the removal committed and n3 leads alone");
  assertEquals(c.status("n3").config.voters, ["n3"]);
});
