/**
 * Linearizable reads by ReadIndex (Raft dissertation §6.4): the leader confirms its
 * leadership with a heartbeat round before answering, a follower asks the leader and waits
 * until it has applied that far, a new leader waits for its first commit, and a deposed
 * leader never serves.
 */
import { assert, assertEquals, Cluster } from "./sim/mod.ts";
import type { Heartbeat } from "../../src/raft/mod.ts";

Deno.test("§6.4 ReadIndex on the leader: served after a quorum confirms leadership", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  const w = c.propose("a", "k", "hello");
  c.stabilize();
  c.read("a", "k");
  const beats = c.peek({ type: "heartbeat" }) as Heartbeat[];
  assertEquals(beats.length, 2);
  const round = beats[0].context;
  assert(round > 0 && beats.every((m) => m.context === round), "the heartbeats carry one round id");
  assertEquals(c.node("a").takeCompletedReads(), [], "not before a quorum answers");
  c.deliver({ type: "heartbeat", to: "b" });
  c.deliver({ type: "heartbeatResponse", from: "b" });
  const [done] = c.node("a").takeCompletedReads();
  assertEquals(done.value, "hello");
  assert(done.readIndex >= w.index);
});

Deno.test("§6.4 ReadIndex from a follower: asks the leader, serves once applied", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  c.propose("a", "k", "v1");
  c.stabilize();
  // b lags: the newest write reaches only a and c.
  c.cutLink("a", "b");
  const w2 = c.propose("a", "k", "v2");
  c.stabilize();
  c.heal();
  c.read("b", "k");
  assertEquals(c.peek({ type: "readIndex", from: "b", to: "a" }).length, 1);
  c.deliver({ type: "readIndex" });
  c.deliver({ type: "heartbeat", to: "c" });
  c.deliver({ type: "heartbeatResponse", from: "c" });
  c.deliver({ type: "readIndexResponse" });
  assertEquals(c.node("b").takeCompletedReads(), [], "b has not applied the read index yet");
  for (let i = 0; i < 5 && c.node("b").pendingReads > 0; i++) {
    c.tick("a");
    c.stabilize();
  }
  const [done] = c.node("b").takeCompletedReads();
  assertEquals(done.value, "v2");
  assert(done.readIndex >= w2.index && done.appliedIndex >= done.readIndex);
});

Deno.test("§6.4 a new leader answers reads only after committing an entry of its term", () => {
  const c = new Cluster(["a", "b", "c"]);
  c.raft("a").campaign();
  c.process("a");
  for (let r = 0; r < 4; r++) c.deliver((m) => m.type !== "append" && m.type !== "appendResponse");
  assertEquals(c.raft("a").status().role, "leader");
  c.read("a", "k");
  c.stabilize();
  const done = c.node("a").takeCompletedReads();
  assertEquals(done.length, 1, "served after the no-op committed");
  assert(done[0].readIndex >= 2, "at an index covering the leader's no-op");
});

Deno.test("§6.4 a deposed leader does not serve a read; the read fails", () => {
  const c = new Cluster(["a", "b", "c"], { checkQuorum: false });
  assertEquals(c.elect("a"), "leader");
  c.isolate("a");
  assertEquals(c.elect("b"), "leader");
  c.propose("b", "k", "new");
  c.stabilize();
  c.read("a", "k"); // a still believes it leads
  c.stabilize(); // its heartbeats are lost
  assertEquals(c.node("a").takeCompletedReads(), []);
  c.heal();
  c.tick("b");
  c.stabilize();
  assertEquals(c.raft("a").status().role, "follower");
  assertEquals(c.node("a").takeCompletedReads(), [], "never served");
  assertEquals(c.node("a").outcomes.readsFailed, 1, "the context came back in droppedReads");
  assertEquals(c.node("a").pendingReads, 0);
});
