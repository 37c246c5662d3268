/**
 * Properties of the bare Raft core, with no host around it (etcd-io/raft's raft_test.go
 * style): the test steps a `RaftNode` with crafted messages and asserts on what it answers.
 */
import { NotLeaderError } from "../../src/errors.ts";
import { RaftNode } from "../../src/raft/mod.ts";
import { assertEquals, assertThrows } from "./sim/mod.ts";

/** A follower of term 2 with an empty log. */
function follower(): RaftNode {
  return new RaftNode({ id: "b", random: () => 0.5 }, {
    hardState: { term: 2, vote: "", commit: 0 },
    entries: [],
    snapshot: undefined,
  });
}

Deno.test("a follower refuses proposals at once with the leader hint; it forwards reads to a known leader", () => {
  const b = follower();
  const noLeader = assertThrows(() => b.readIndex(1), NotLeaderError);
  assertEquals(noLeader.leaderId, undefined);
  assertThrows(() => b.propose(new Uint8Array([1])), NotLeaderError);
  // A heartbeat of term 2 from "a" makes a the known leader.
  b.step({ type: "heartbeat", from: "a", to: "b", term: 2, commit: 0, context: 0 });
  assertEquals(b.status().leader, "a");
  const err = assertThrows(() => b.propose(new Uint8Array([1])), NotLeaderError);
  assertEquals(err.leaderId, "a");
  assertEquals(b.status().lastIndex, 0, "nothing was appended");
  b.readIndex(2);
  const asks = b.ready().messages.filter((m) => m.type === "readIndex");
  assertEquals(asks.map((m) => [m.to, m.type === "readIndex" && m.context]), [["a", 2]]);
});
