/**
 * Linearizable reads by ReadIndex (Raft dissertation §6.4), through the real host's read
 * barrier: the leader confirms its leadership with a heartbeat round before answering, a
 * follower asks the leader and waits until it has applied that far, a new leader waits for
 * its first commit, and a deposed leader never serves.
 */
import { assert, assertEquals, Cluster } from "./sim/mod.ts";
import type { Heartbeat } from "../../src/raft/mod.ts";

Deno.test("§6.4 ReadIndex on the leader: served after a quorum confirms leadership", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  const w = await c.propose("a", "k", "hello");
  await c.stabilize();
  const read = await c.read("a", "k");
  const beats = c.peek({ type: "heartbeat" }) as Heartbeat[];
  assertEquals(beats.length, 2);
  const round = beats[0].context;
  assert(round > 0 && beats.every((m) => m.context === round), "the heartbeats carry one round id");
  assertEquals(read.state, "pending", "not before a quorum answers");
  await c.deliver({ type: "heartbeat", to: "b" });
  await c.deliver({ type: "heartbeatResponse", from: "b" });
  assertEquals(read.state, "done");
  assertEquals(read.value, "hello");
  assert(read.appliedIndex! >= w.index);
});

Deno.test("§6.4 ReadIndex from a follower: asks the leader, serves once applied", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  await c.propose("a", "k", "v1");
  await c.stabilize();
  // b lags: the newest write reaches only a and c.
  c.cutLink("a", "b");
  const w2 = await c.propose("a", "k", "v2");
  await c.stabilize();
  c.heal();
  const read = await c.read("b", "k");
  assertEquals(c.peek({ type: "readIndex", from: "b", to: "a" }).length, 1);
  await c.deliver({ type: "readIndex" });
  await c.deliver({ type: "heartbeat", to: "c" });
  await c.deliver({ type: "heartbeatResponse", from: "c" });
  await c.deliver({ type: "readIndexResponse" });
  assertEquals(read.state, "pending", "b has not applied the read index yet");
  for (let i = 0; i < 5 && read.state === "pending"; i++) {
    await c.tick("a");
    await c.stabilize();
  }
  assertEquals(read.state, "done");
  assertEquals(read.value, "v2");
  assert(read.appliedIndex! >= w2.index);
});

Deno.test("§6.4 a new leader answers reads only after committing an entry of its term", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  await c.core("a", (r) => r.campaign());
  for (let r = 0; r < 4; r++) {
    await c.deliver((m) => m.type !== "append" && m.type !== "appendResponse");
  }
  assertEquals(c.status("a").role, "leader");
  const read = await c.read("a", "k");
  assertEquals(c.peek({ type: "heartbeat" }).length, 0, "no round before the no-op commits");
  assertEquals(read.state, "pending");
  await c.stabilize();
  assertEquals(read.state, "done", "served after the no-op committed");
  assert(read.appliedIndex! >= 2, "at an index covering the leader's no-op");
});

Deno.test("§6.4 a deposed leader does not serve a read; the read is retried, then fails", async () => {
  const c = await Cluster.start(["a", "b", "c"], { checkQuorum: false });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("a");
  assertEquals(await c.elect("b"), "leader");
  await c.propose("b", "k", "new");
  await c.stabilize();
  const read = await c.read("a", "k"); // a still believes it leads
  await c.stabilize(); // its heartbeats are lost
  assertEquals(read.state, "pending");
  c.heal();
  await c.tick("b");
  await c.stabilize();
  assertEquals(c.status("a").role, "follower");
  // The host retries a dropped read with the new leader; cut off again, it times out.
  c.isolate("a");
  for (let i = 0; i < 600 && read.state === "pending"; i++) {
    await c.tick("a");
    c.drop();
  }
  assertEquals(read.state, "failed", "never served by the deposed leader");
});
