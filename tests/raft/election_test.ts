/**
 * Leader election, Raft paper §5.2, with the extensions of the Raft dissertation: pre-vote
 * (§9.6), check quorum (§6.2), the leader's no-op (§8), and restart from persisted state
 * (§5.1's persistent state), on real hosts. Also: a follower forwards a client's write to the
 * leader, and with no leader the write fails as retryable.
 */
import { UnavailableError } from "../../src/errors.ts";
import { assert, assertEquals, Cluster } from "./sim/mod.ts";

/** Ticks every node once per round, delivering everything, until a leader exists. */
async function runUntilLeader(
  c: Cluster,
  maxRounds = 100,
): Promise<{ leader: string; rounds: number }> {
  for (let round = 1; round <= maxRounds; round++) {
    await c.tickAll();
    await c.stabilize();
    const leaders = c.leaders();
    assert(leaders.length <= 1, `one leader at most, got ${leaders}`);
    if (leaders.length === 1) return { leader: leaders[0], rounds: round };
  }
  throw new Error(`no leader after ${maxRounds} rounds`);
}

Deno.test("§5.2 randomized timeouts elect one leader within [electionTicks, 2*electionTicks)", async () => {
  const winners = new Set<string>();
  for (let seed = 1; seed <= 12; seed++) {
    const c = await Cluster.start(["a", "b", "c"], { seed, electionTicks: 10 });
    const { leader, rounds } = await runUntilLeader(c);
    assert(rounds >= 10 && rounds < 20, `seed ${seed}: elected after ${rounds} ticks`);
    winners.add(leader);
    const term = c.status(leader).term;
    for (const id of c.ids) {
      assertEquals(c.status(id).term, term);
      assertEquals(c.status(id).leader, leader);
    }
  }
  assert(winners.size >= 2, `the seed decides who wins: ${[...winners]}`);
});

Deno.test("§5.2 the same seed elects the same leader (deterministic)", async () => {
  const first = await runUntilLeader(await Cluster.start(["a", "b", "c", "d", "e"], { seed: 42 }));
  const again = await runUntilLeader(await Cluster.start(["a", "b", "c", "d", "e"], { seed: 42 }));
  assertEquals(again, first);
});

Deno.test("§8 a new leader appends an empty entry of its term and commits it", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  const s = c.status("a");
  const [last] = c.entries("a", s.lastIndex, s.lastIndex + 1);
  assertEquals(last.type, "normal");
  assertEquals(last.term, s.term);
  assert(last.type === "normal" && last.data.length === 0, "the no-op carries no data");
  assertEquals(s.commit, s.lastIndex, "committed once the followers acknowledged it");
  assertEquals(c.applied("a"), s.lastIndex, "and applied");
});

Deno.test("§9.6 pre-vote: a partitioned node rejoining does not depose a healthy leader", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  const term = c.status("a").term;
  c.isolate("c");
  for (let i = 0; i < 60; i++) {
    await c.tickAll();
    await c.stabilize();
  }
  // c campaigned (pre-votes of term + 1) over and over, without raising its own term.
  assertEquals(c.status("c").term, term);
  c.heal();
  await c.core("c", (r) => r.campaign());
  const preVotes = c.peek({ type: "preVote", from: "c" });
  assertEquals(preVotes.length, 2);
  assert(preVotes.every((m) => m.term === term + 1), "pre-votes carry term + 1");
  await c.stabilize();
  await c.tickAll(2);
  await c.stabilize();
  assertEquals(c.leaders(), ["a"]);
  assertEquals(c.status("a").term, term, "the leader's term did not move");
});

Deno.test("§9.6 without pre-vote the same rejoin forces a new election (the contrast)", async () => {
  const c = await Cluster.start(["a", "b", "c"], { preVote: false, checkQuorum: false });
  assertEquals(await c.elect("a"), "leader");
  const term = c.status("a").term;
  c.isolate("c");
  await c.tick("c", 30);
  c.drop();
  assert(c.status("c").term > term + 1, "c bumped its term while cut off");
  c.heal();
  await c.tick("a");
  await c.stabilize();
  assert(c.status("a").term > term, "the leader was disrupted");
});

Deno.test("§6.2 check quorum: a leader cut off from its quorum steps down within two election timeouts", async () => {
  const c = await Cluster.start(["a", "b", "c"], { electionTicks: 10 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("a");
  let ticks = 0;
  while (c.status("a").role === "leader" && ticks < 100) {
    await c.tick("a");
    c.drop();
    ticks++;
  }
  assertEquals(c.status("a").role, "follower");
  assert(ticks <= 20, `stepped down after ${ticks} ticks`);
});

Deno.test("§6.2 check quorum: followers in a leader's lease ignore a disruptive vote", async () => {
  const c = await Cluster.start(["a", "b", "c"], { preVote: false });
  assertEquals(await c.elect("a"), "leader");
  const term = c.status("a").term;
  // c times out alone (its heartbeats lost) and asks b for a vote in a higher term.
  c.isolate("c");
  for (let i = 0; i < 25 && c.status("c").role !== "candidate"; i++) await c.tick("c");
  c.drop();
  c.heal();
  await c.tick("a");
  await c.deliver({ type: "heartbeat", to: "b" });
  await c.core("c", (r) => r.campaign());
  await c.deliver({ type: "vote", to: "b" });
  assertEquals(c.peek({ type: "voteResponse", from: "b" }).length, 0, "b ignores it in its lease");
  assertEquals(c.status("b").term, term);
});

Deno.test("a write on a follower is forwarded to the leader; with no leader it fails as retryable", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  const w = await c.propose("b", "k", "via-b");
  assertEquals(w.index, 0, "b appends nothing itself");
  assertEquals(c.status("a").lastIndex, c.status("b").lastIndex + 1, "the leader appended it");
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  assertEquals(w.state, "done", "the leader's answer reached b's client");
  assertEquals(c.value("b", "k"), "via-b");
  // No leader anywhere: the write waits for one, then fails as retryable.
  const fresh = await Cluster.start(["a", "b", "c"]);
  const orphan = await fresh.propose("b", "k");
  const read = await fresh.read("b", "k");
  for (let i = 0; i < 600 && (orphan.state === "pending" || read.state === "pending"); i++) {
    await fresh.tick("b");
    fresh.drop();
  }
  assertEquals(orphan.state, "failed");
  assert(orphan.error instanceof UnavailableError, `retryable: ${orphan.error}`);
  assertEquals(read.state, "failed", "the read timed out too");
  assertEquals(fresh.status("b").lastIndex, 1, "nothing was appended anywhere");
});

Deno.test("§5.1 a node restarts from its persisted state (term, vote, log, commit)", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  for (let i = 0; i < 5; i++) await c.propose("a", `k${i}`);
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  const before = c.status("b");
  const state = c.state("b");
  c.crash("b");
  await c.restart("b");
  const after = c.status("b");
  assertEquals(
    [after.term, after.vote, after.lastIndex],
    [before.term, before.vote, before.lastIndex],
  );
  // A commit-only change rides with the next batch (the leader tells it again), so the
  // commit index on disk may be behind; what it says is replayed into the state machine.
  assert(after.commit <= before.commit && after.commit > 0, `commit ${after.commit}`);
  await c.tick("b"); // the loop's first turn replays them
  assertEquals(c.applied("b"), after.commit, "committed entries replayed");
  await c.tick("a");
  await c.stabilize();
  assertEquals(c.status("b").commit, before.commit, "the leader's heartbeat restores the rest");
  assertEquals(c.state("b"), state);
  const { index } = await c.propose("a", "after");
  await c.stabilize();
  await c.tick("a");
  await c.stabilize();
  assertEquals(c.applied("b"), index, "and it goes on replicating");
});

Deno.test("§5.1 a vote request with a stale term is rejected with the current term", async () => {
  // Without this answer a candidate whose term is behind never learns the newer term. The
  // simulator found a livelock from it (3 nodes, preVote off, after membership changes): the
  // up-to-date candidate's vote requests reached the only other voter, which had a higher
  // term from campaigning towards a removed node, and went unanswered forever.
  const c = await Cluster.start(["a", "b", "c"], { preVote: false, checkQuorum: false });
  c.isolate("b");
  await c.tick("b", 45); // b campaigns alone, several times
  c.drop();
  c.heal();
  const bTerm = c.status("b").term;
  assert(bTerm >= 3);
  await c.core("a", (r) => r.campaign());
  assert(c.status("a").term < bTerm);
  await c.deliver({ type: "vote", to: "b" });
  const [answer] = c.peek({ type: "voteResponse", from: "b" });
  assert(answer !== undefined, "b answers the stale vote request");
  assertEquals([answer.term, answer.type === "voteResponse" && answer.reject], [bTerm, true]);
  await c.deliver({ type: "voteResponse", from: "b" });
  assertEquals(c.status("a").term, bTerm, "the candidate learns the newer term");
});
