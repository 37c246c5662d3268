/**
 * Membership changes, one server at a time (Raft dissertation §4.1 and §4.2.2): a change is
 * in effect as soon as its entry is appended, only one may be pending, learners catch up
 * without voting, a leader that removes itself steps down, and a removed server cannot
 * disrupt the cluster.
 */
import { UnavailableError } from "../../src/errors.ts";
import { assert, assertEquals, assertRejects, Cluster } from "./sim/mod.ts";

async function settle(c: Cluster, leader: string, rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await c.tick(leader);
    await c.stabilize();
  }
}

Deno.test("§4.1 add a learner, promote it, one change at a time, in effect when appended", async () => {
  const c = await Cluster.start(["a", "b", "c", "d"], { voters: ["a", "b", "c"] });
  assertEquals(await c.elect("a"), "leader");
  await c.propose("a", "k", "v");
  await c.stabilize();
  const add = await c.changeConfig("a", { type: "addLearner", id: "d", address: "d:1" });
  // In effect on the leader at once, before it commits.
  assertEquals(c.status("a").config.learners, ["d"]);
  assert(c.status("a").commit < add.index);
  await assertRejects(
    () => c.changeConfig("a", { type: "promote", id: "d" }),
    UnavailableError,
    "a second change while one is pending",
  );
  await settle(c, "a");
  assert(c.status("a").commit >= add.index);
  assertEquals(add.state, "done", "the host's changeConfig resolved once applied");
  assertEquals(c.value("d", "k"), "v", "the learner received the whole log");
  // A learner never campaigns.
  await c.tick("d", 50);
  assertEquals(c.peek({ from: "d", type: "preVote" }).length, 0);
  assertEquals(c.status("d").role, "follower");
  // A learner's acknowledgement does not count: with b and c cut off, nothing commits.
  c.isolate("b");
  c.isolate("c");
  const w = await c.propose("a", "k", "w");
  await c.stabilize();
  assert(c.status("a").commit < w.index, "a + learner d are not a quorum of {a,b,c}");
  c.heal();
  await settle(c, "a");
  await c.changeConfig("a", { type: "promote", id: "d" });
  assertEquals(c.status("a").config.voters, ["a", "b", "c", "d"]);
  await settle(c, "a");
  assertEquals(c.status("d").config.voters, ["a", "b", "c", "d"]);
  // Now d is a voter: a quorum of 4 is 3, so a + d alone cannot commit.
  c.isolate("b");
  c.isolate("c");
  const w2 = await c.propose("a", "k", "w2");
  await c.stabilize();
  assert(c.status("a").commit < w2.index);
  c.heal();
  await settle(c, "a");
  assertEquals(c.value("d", "k"), "w2");
});

Deno.test("§4.1 remove a voter; the removed server cannot disrupt the cluster", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  await c.changeConfig("a", { type: "remove", id: "c" });
  assertEquals(c.status("a").config.voters, ["a", "b"]);
  await settle(c, "a");
  const term = c.status("a").term;
  // c may or may not learn of its removal; either way its campaigns change nothing.
  c.isolate("c");
  await c.tick("c", 60);
  c.drop();
  c.heal();
  for (let i = 0; i < 30; i++) {
    await c.tickAll();
    await c.stabilize();
  }
  assertEquals(c.leaders(), ["a"]);
  assertEquals(c.status("a").term, term);
  const w = await c.propose("a", "k");
  await settle(c, "a");
  assertEquals(c.status("b").commit >= w.index, true);
});

Deno.test("§4.2.2 a leader that removes itself steps down once the removal commits", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  const rm = await c.changeConfig("a", { type: "remove", id: "a" });
  assertEquals(c.status("a").role, "leader", "it still leads while the removal commits");
  await c.stabilize();
  assertEquals(c.status("a").role, "follower");
  assert(c.status("a").commit >= rm.index, "after its removal committed");
  let leader: string | undefined;
  for (let i = 0; i < 60 && !leader; i++) {
    await c.tickAll();
    await c.stabilize();
    leader = c.leaders()[0];
  }
  assert(leader === "b" || leader === "c", `the others elect a leader, got ${leader}`);
  assertEquals(c.status(leader).config.voters.includes("a"), false);
  const w = await c.propose(leader, "k");
  await settle(c, leader);
  assert(c.status(leader).commit >= w.index, "the remaining two commit");
});

Deno.test("§4.1 a removed voter added back as a voter catches up and votes again", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  await c.changeConfig("a", { type: "remove", id: "c" });
  await settle(c, "a");
  for (let i = 0; i < 5; i++) await c.propose("a", "k");
  await settle(c, "a");
  await c.changeConfig("a", { type: "addVoter", id: "c", address: "c:1" });
  await settle(c, "a");
  assertEquals(c.status("c").config.voters, ["a", "b", "c"]);
  assertEquals(c.applied("c"), c.applied("a"));
});
