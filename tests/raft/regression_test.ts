/**
 * Regression tests for consensus bugs an outside review found (issue 13). Each one fails on
 * the code before its fix: the scenario is the reviewer's, replayed message by message.
 */
import { UnavailableError } from "../../src/errors.ts";
import { RaftInvariantError, RaftNode } from "../../src/raft/mod.ts";
import type { Heartbeat, Message } from "../../src/raft/mod.ts";
import { assert, assertEquals, assertThrows, Cluster } from "./sim/mod.ts";

Deno.test("bug 1: a new leader makes no membership change before an entry of its term commits", () => {
  // Ongaro's single-server bug (raft-dev, 2015). C1 = {n1..n4}, n5 a learner.
  const c = new Cluster(["n1", "n2", "n3", "n4", "n5"], {
    voters: ["n1", "n2", "n3", "n4"],
    checkQuorum: false,
  });
  assertEquals(c.elect("n1"), "leader");
  c.raft("n1").proposeConfigChange({ type: "addLearner", id: "n5", address: "n5:1" });
  c.process("n1");
  for (let i = 0; i < 5; i++) {
    c.tick("n1");
    c.stabilize();
  }
  // n1 appends `promote n5` (C2: five voters); only n5 receives it; n1 crashes.
  c.raft("n1").proposeConfigChange({ type: "promote", id: "n5" });
  c.process("n1");
  c.deliver({ type: "append", to: "n5" });
  c.crash("n1");
  c.outbox = [];
  // n2 wins a new term under C1 with n3 and n4; n4 is then cut off.
  c.isolate("n5");
  assertEquals(c.campaign("n2"), "leader");
  c.isolate("n4");
  // Its no-op has not committed: a change now could commit on n2 + n3 alone (C3 = {n2,n3,n4})
  // while n1, back with C2, wins with n1, n4 and n5 and overwrites it.
  assertThrows(
    () => c.raft("n2").proposeConfigChange({ type: "remove", id: "n1" }),
    UnavailableError,
    "no change before the no-op commits",
  );
  // Once an entry of its term commits, changes are allowed again.
  c.heal();
  c.isolate("n1");
  c.stabilize();
  c.tick("n2");
  c.stabilize();
  assertEquals(c.raft("n2").status().commit, c.raft("n2").status().lastIndex);
  c.raft("n2").proposeConfigChange({ type: "remove", id: "n1" });
});

Deno.test("bug 1: an idle new leader in a healthy cluster may change membership only after its no-op", () => {
  const c = new Cluster(["a", "b", "c", "d"], { voters: ["a", "b", "c"] });
  c.raft("a").campaign();
  c.process("a");
  const election = (m: Message) => m.type !== "append" && m.type !== "appendResponse";
  for (let r = 0; r < 6; r++) c.deliver(election);
  assertEquals(c.raft("a").status().role, "leader");
  assertThrows(
    () => c.raft("a").proposeConfigChange({ type: "addLearner", id: "d", address: "d:1" }),
    UnavailableError,
  );
  c.stabilize();
  c.raft("a").proposeConfigChange({ type: "addLearner", id: "d", address: "d:1" });
});

Deno.test("bug 2: an answer to an older heartbeat round never confirms a newer read, whatever its context", () => {
  const c = new Cluster(["a", "b", "c", "d", "e"]);
  assertEquals(c.elect("a"), "leader");
  c.propose("a", "k", "v1");
  c.stabilize();
  // b asks for a read with context 1 (every host numbered its reads from 1).
  c.raft("b").readIndex(1);
  c.process("b");
  c.deliver({ type: "readIndex", from: "b" });
  const round1 = c.take({ type: "heartbeat", from: "a" }) as Heartbeat[];
  assertEquals(round1.length, 4);
  // b and c answer at once; d's and e's answers are delayed (held by the test).
  for (const hb of round1) c.deliverOne(hb);
  const delayed = c.take((m) =>
    m.type === "heartbeatResponse" && (m.from === "d" || m.from === "e")
  );
  assertEquals(delayed.length, 2);
  c.stabilize();
  // A write commits after that round; then c asks for a read, also with context 1.
  const w = c.propose("a", "k", "v2");
  c.stabilize();
  assert(c.raft("a").status().commit >= w.index);
  c.raft("c").readIndex(1);
  c.process("c");
  c.deliver({ type: "readIndex", from: "c" });
  // The new round's heartbeats are lost (a is about to be deposed).
  c.drop({ type: "heartbeat", from: "a" });
  // The old round's delayed answers arrive: they were sent before c's read was registered.
  for (const m of delayed) c.deliverOne(m);
  assertEquals(
    c.peek({ type: "readIndexResponse", to: "c" }).length,
    0,
    "c's read is not confirmed by answers to a heartbeat that left before it",
  );
  // Answers to a heartbeat sent after the read do confirm it.
  c.tick("a");
  c.stabilize();
  assertEquals(c.raft("a").status().role, "leader");
});

Deno.test("advance() does not mark entries durable that a new leader replaced during the write", () => {
  const c = new Cluster(["a", "b", "c"], { checkQuorum: false });
  assertEquals(c.elect("a"), "leader");
  c.stabilize();
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

Deno.test("a leader that loses leadership before its own removal commits can still end it (sim seed 771)", () => {
  const c = new Cluster(["n1", "n3"], { checkQuorum: false });
  assertEquals(c.elect("n1"), "leader");
  c.stabilize();
  // n1 appends its own removal ({n3}) and loses leadership before n3 receives it.
  c.raft("n1").proposeConfigChange({ type: "remove", id: "n1" });
  c.process("n1");
  c.drop({ type: "append", to: "n3" });
  c.raft("n3").campaign(); // n3 (config {n1, n3}) needs n1's vote, which n1 refuses
  c.process("n3");
  c.stabilize();
  assertEquals(c.raft("n3").status().role === "leader", false, "n3 cannot win alone");
  // n1 may campaign again: its removal is not committed, so it is still a voter then.
  for (let i = 0; i < 60 && c.leaders().length === 0; i++) {
    c.tickAll();
    c.stabilize();
  }
  for (let i = 0; i < 60 && !(c.leaders().length === 1 && c.leaders()[0] === "n3"); i++) {
    c.tickAll();
    c.stabilize();
  }
  assertEquals(c.leaders(), ["n3"], "the removal committed and n3 leads alone");
  assertEquals(c.raft("n3").status().config.voters, ["n3"]);
});
