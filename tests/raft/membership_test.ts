/**
 * Membership changes, one server at a time (Raft dissertation §4.1 and §4.2.2): a change is
 * in effect as soon as its entry is appended, only one may be pending, learners catch up
 * without voting, a leader that removes itself steps down, and a removed server cannot
 * disrupt the cluster.
 */
import { UnavailableError } from "../../src/errors.ts";
import { assert, assertEquals, assertThrows, Cluster } from "./sim/mod.ts";

function settle(c: Cluster, leader: string, rounds = 5): void {
  for (let i = 0; i < rounds; i++) {
    c.tick(leader);
    c.stabilize();
  }
}

Deno.test("§4.1 add a learner, promote it, one change at a time, in effect when appended", () => {
  const c = new Cluster(["a", "b", "c", "d"], { voters: ["a", "b", "c"] });
  assertEquals(c.elect("a"), "leader");
  c.propose("a", "k", "v");
  c.stabilize();
  const add = c.raft("a").proposeConfigChange({ type: "addLearner", id: "d", address: "d:1" });
  c.process("a");
  // In effect on the leader at once, before it commits.
  assertEquals(c.raft("a").status().config.learners, ["d"]);
  assert(c.raft("a").status().commit < add.index);
  assertThrows(
    () => c.raft("a").proposeConfigChange({ type: "promote", id: "d" }),
    UnavailableError,
    "a second change while one is pending",
  );
  settle(c, "a");
  assert(c.raft("a").status().commit >= add.index);
  assertEquals(c.node("d").sm.get("k"), "v", "the learner received the whole log");
  // A learner never campaigns.
  c.tick("d", 50);
  assertEquals(c.peek({ from: "d", type: "preVote" }).length, 0);
  assertEquals(c.raft("d").status().role, "follower");
  // A learner's acknowledgement does not count: with b and c cut off, nothing commits.
  c.isolate("b");
  c.isolate("c");
  const w = c.propose("a", "k", "w");
  c.stabilize();
  assert(c.raft("a").status().commit < w.index, "a + learner d are not a quorum of {a,b,c}");
  c.heal();
  settle(c, "a");
  c.raft("a").proposeConfigChange({ type: "promote", id: "d" });
  c.process("a");
  assertEquals(c.raft("a").status().config.voters, ["a", "b", "c", "d"]);
  settle(c, "a");
  assertEquals(c.raft("d").status().config.voters, ["a", "b", "c", "d"]);
  // Now d is a voter: a quorum of 4 is 3, so a + d alone cannot commit.
  c.isolate("b");
  c.isolate("c");
  const w2 = c.propose("a", "k", "w2");
  c.stabilize();
  assert(c.raft("a").status().commit < w2.index);
  c.heal();
  settle(c, "a");
  assertEquals(c.node("d").sm.get("k"), "w2");
});

Deno.test("§4.1 remove a voter; the removed server cannot disrupt the cluster", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  c.raft("a").proposeConfigChange({ type: "remove", id: "c" });
  c.process("a");
  assertEquals(c.raft("a").status().config.voters, ["a", "b"]);
  settle(c, "a");
  const term = c.raft("a").status().term;
  // c may or may not learn of its removal; either way its campaigns change nothing.
  c.isolate("c");
  c.tick("c", 60);
  c.drop();
  c.heal();
  for (let i = 0; i < 30; i++) {
    c.tickAll();
    c.stabilize();
  }
  assertEquals(c.leaders(), ["a"]);
  assertEquals(c.raft("a").status().term, term);
  const w = c.propose("a", "k");
  settle(c, "a");
  assertEquals(c.raft("b").status().commit >= w.index, true);
});

Deno.test("§4.2.2 a leader that removes itself steps down once the removal commits", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  const rm = c.raft("a").proposeConfigChange({ type: "remove", id: "a" });
  c.process("a");
  assertEquals(c.raft("a").status().role, "leader", "it still leads while the removal commits");
  c.stabilize();
  assertEquals(c.raft("a").status().role, "follower");
  assert(c.raft("a").status().commit >= rm.index, "after its removal committed");
  let leader: string | undefined;
  for (let i = 0; i < 60 && !leader; i++) {
    c.tickAll();
    c.stabilize();
    leader = c.leaders()[0];
  }
  assert(leader === "b" || leader === "c", `the others elect a leader, got ${leader}`);
  assertEquals(c.raft(leader).status().config.voters.includes("a"), false);
  const w = c.propose(leader, "k");
  settle(c, leader);
  assert(c.raft(leader).status().commit >= w.index, "the remaining two commit");
});

Deno.test("§4.1 a removed voter added back as a voter catches up and votes again", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  c.raft("a").proposeConfigChange({ type: "remove", id: "c" });
  c.process("a");
  settle(c, "a");
  for (let i = 0; i < 5; i++) c.propose("a", "k");
  settle(c, "a");
  c.raft("a").proposeConfigChange({ type: "addVoter", id: "c", address: "c:1" });
  c.process("a");
  settle(c, "a");
  assertEquals(c.raft("c").status().config.voters, ["a", "b", "c"]);
  assertEquals(c.node("c").applied, c.node("a").applied);
});
