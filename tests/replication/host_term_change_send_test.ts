/**
 * A Ready that changes term or vote waits for its fsync before any of its messages go (a
 * crash before it would let a node win the same term again); none of them may be dropped.
 * A sole voter with a learner elects itself and appends in one tick, so that one Ready holds
 * the new term and the new leader's first appends to the learner.
 */
import { assert, assertEquals, Cluster } from "../raft/sim/mod.ts";

Deno.test("a sole voter that elects itself in one Ready sends its first appends to a learner", async () => {
  const c = await Cluster.start(["a", "b"], { voters: ["a"], electionTicks: 5 });
  for (let i = 0; i < 20 && c.status("a").role !== "leader"; i++) await c.tick("a");
  assertEquals(c.status("a").role, "leader", "a leads alone");
  const change = await c.changeConfig("a", { type: "addLearner", id: "b", address: "b:1" });
  for (let i = 0; i < 10 && change.state === "pending"; i++) {
    await c.stabilize();
    await c.tick("a");
  }
  assertEquals(change.state, "done", "b added as a learner");
  await c.propose("a", "k", "v1");
  await c.stabilize();
  assertEquals(c.value("b", "k"), "v1", "the learner follows");

  c.crash("a");
  c.outbox = [];
  await c.restart("a");
  const term = c.status("a").term;
  // Tick by tick until a elects itself: the tick that does it must leave its appends queued.
  let ticks = 0;
  for (; ticks < 40 && c.status("a").role !== "leader"; ticks++) await c.tick("a");
  assertEquals(c.status("a").role, "leader", "a leads again");
  assert(c.status("a").term > term, "in a new term");
  const toLearner = c.peek({ from: "a", to: "b" });
  assert(
    toLearner.some((m) => m.type === "append"),
    `the new leader's append to the learner was sent with its Ready (queued: ${
      JSON.stringify(toLearner.map((m) => m.type))
    })`,
  );
  await c.stabilize();
  await c.propose("a", "k", "v2");
  await c.stabilize();
  assertEquals(c.value("b", "k"), "v2", "the learner follows the new term");
});
