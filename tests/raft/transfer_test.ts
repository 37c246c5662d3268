/**
 * Leadership transfer (Raft dissertation §3.10): the leader brings the target up to date,
 * then sends TimeoutNow; the target campaigns at once, past the other voters' leases.
 * Proposals are refused while the transfer runs.
 */
import { UnavailableError } from "../../src/errors.ts";
import { assert, assertEquals, assertThrows, Cluster } from "./sim/mod.ts";

Deno.test("§3.10 transfer to a lagging follower: catch-up, then TimeoutNow, then it leads", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  const oldTerm = c.raft("a").status().term;
  c.cutLink("a", "c");
  for (let i = 0; i < 5; i++) c.propose("a", "k");
  c.stabilize();
  c.heal();
  const last = c.raft("a").status().lastIndex;
  assert(c.raft("c").status().lastIndex < last, "c lags");
  c.raft("a").transferLeadership("c");
  c.process("a");
  assertThrows(() => c.node("a").propose({ opId: 99, key: "k", value: "x" }), UnavailableError);
  assertEquals(c.peek({ type: "timeoutNow" }).length, 0, "no TimeoutNow before c caught up");
  // Deliver step by step: TimeoutNow must follow c's acknowledgement of the last entry.
  let caughtUp = false;
  for (let r = 0; r < 20 && c.peek({ type: "timeoutNow" }).length === 0; r++) {
    for (const m of c.take()) {
      c.deliverOne(m);
      if (m.type === "appendResponse" && m.from === "c" && !m.reject && m.index === last) {
        caughtUp = true;
      }
    }
    if (c.outbox.length === 0) c.tick("a");
  }
  assert(caughtUp, "c acknowledged the last entry");
  assertEquals(c.peek({ type: "timeoutNow", to: "c" }).length, 1);
  c.stabilize();
  assertEquals(c.leaders(), ["c"]);
  assert(c.raft("c").status().term > oldTerm);
  assertEquals(c.raft("a").status().role, "follower");
  const w = c.propose("c", "k");
  c.stabilize();
  assert(c.raft("c").status().commit >= w.index);
});

Deno.test("§3.10 a transfer to an up-to-date follower sends TimeoutNow at once", () => {
  const c = new Cluster(["a", "b", "c"]);
  assertEquals(c.elect("a"), "leader");
  c.tick("a");
  c.stabilize();
  c.raft("a").transferLeadership("b");
  c.process("a");
  assertEquals(c.peek({ type: "timeoutNow", to: "b" }).length, 1);
  c.stabilize();
  assertEquals(c.leaders(), ["b"]);
});

Deno.test("§3.10 a transfer that cannot finish times out and proposals resume", () => {
  const c = new Cluster(["a", "b", "c"], { electionTicks: 10 });
  assertEquals(c.elect("a"), "leader");
  c.isolate("c");
  c.raft("a").transferLeadership("c");
  c.process("a");
  assertThrows(() => c.node("a").propose({ opId: 99, key: "k", value: "x" }), UnavailableError);
  for (let i = 0; i < 10; i++) {
    c.tick("a");
    c.stabilize();
  }
  assertEquals(c.raft("a").status().role, "leader");
  c.propose("a", "k"); // accepted again
  c.heal();
});
