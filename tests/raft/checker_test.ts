/**
 * The simulator's safety checkers on hand-made histories: each property accepts a correct
 * history and rejects a violating one, with the property named in the error.
 */
import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { Disk } from "./sim/disk.ts";
import { InvariantViolation, SafetyChecker } from "./sim/checker.ts";
import { encodeOp } from "./sim/kv_state_machine.ts";
import type { Config, Entry } from "../../src/raft/types.ts";

const CONFIG: Config = { voters: ["a", "b", "c"], learners: [], addresses: {} };

function put(index: number, term: number, opId: number, key = "k"): Entry {
  return { type: "normal", index, term, data: encodeOp({ opId, key, value: `v${opId}` }) };
}

function noop(index: number, term: number): Entry {
  return { type: "normal", index, term, data: new Uint8Array() };
}

function cfg(index: number, term: number): Entry {
  return { type: "config", index, term, change: { type: "promote", id: "a" }, config: CONFIG };
}

function diskWith(entries: Entry[]): Disk {
  const disk = new Disk();
  if (entries.length > 0) disk.append(entries);
  return disk;
}

function violates(property: string, fn: () => void): void {
  const err = assertThrows(fn, InvariantViolation);
  assertEquals(err.property, property);
}

Deno.test("election safety (§5.2): one leader per term, a second one is rejected", () => {
  const c = new SafetyChecker();
  const log = diskWith([]);
  c.roleObserved("a", 2, true, log);
  c.roleObserved("a", 2, true, log);
  c.roleObserved("b", 3, true, log);
  violates("election safety", () => c.roleObserved("c", 2, true, log));
});

Deno.test("log matching (§5.3): same index and term with different data is rejected", () => {
  const c = new SafetyChecker();
  c.entriesStored("a", 0, [cfg(1, 1), noop(2, 2), put(3, 2, 1)]);
  c.entriesStored("b", 0, [cfg(1, 1), noop(2, 2), put(3, 2, 1)]);
  c.entriesStored("c", 2, [put(3, 2, 1), put(4, 2, 2)]);
  violates("log matching", () => c.entriesStored("c", 2, [put(4, 2, 99)]));
});

Deno.test("log matching (§5.3): same entry over different prefixes is rejected", () => {
  const c = new SafetyChecker();
  c.entriesStored("a", 0, [cfg(1, 1), noop(2, 2), noop(3, 3)]);
  violates("log matching", () => c.entriesStored("b", 1, [noop(3, 3)]));
});

Deno.test("log matching: terms never decrease along a log", () => {
  const c = new SafetyChecker();
  violates("log matching", () => c.entriesStored("a", 0, [noop(1, 3), noop(2, 2)]));
});

Deno.test("leader completeness (§5.4): a later leader missing a committed entry is rejected", () => {
  const c = new SafetyChecker();
  const a = diskWith([cfg(1, 1), noop(2, 2), put(3, 2, 1)]);
  const b = diskWith([cfg(1, 1), noop(2, 2)]);
  c.roleObserved("a", 2, true, a);
  c.committedObserved("a", 2, [cfg(1, 1), noop(2, 2), put(3, 2, 1)]);
  c.roleObserved("a", 2, false, a);
  violates("leader completeness", () => c.roleObserved("b", 3, true, b));
  b.append([put(3, 2, 1)]);
  c.roleObserved("b", 4, true, b);
});

Deno.test("leader completeness: an entry committed in an older term must be in the current leader", () => {
  const c = new SafetyChecker();
  const b = diskWith([cfg(1, 1)]);
  c.roleObserved("b", 5, true, b);
  // "a" still at term 3 learns that index 2 (term 3) is committed: b (term 5) lacks it.
  violates("leader completeness", () => c.committedObserved("a", 3, [noop(2, 3)]));
});

Deno.test("state machine safety (§5.4.3): applied sequences must be prefixes of one sequence", () => {
  const c = new SafetyChecker();
  c.stateRestored("a", 0, new Map());
  c.stateRestored("b", 0, new Map());
  for (const e of [cfg(1, 1), noop(2, 2), put(3, 2, 1)]) c.entryApplied("a", e);
  c.entryApplied("b", cfg(1, 1));
  c.entryApplied("b", noop(2, 2));
  violates("state machine safety", () => c.entryApplied("b", put(3, 2, 2)));
  assertEquals(c.commonLength, 3);
});

Deno.test("state machine safety: skipping an index or committing two entries at one index is rejected", () => {
  const c = new SafetyChecker();
  c.entryApplied("a", cfg(1, 1));
  violates("state machine safety", () => c.entryApplied("a", noop(3, 2)));
  const d = new SafetyChecker();
  d.committedObserved("a", 2, [noop(2, 2)]);
  violates("state machine safety", () => d.committedObserved("b", 3, [noop(2, 3)]));
});

Deno.test("state machine safety: a restored snapshot must equal the common prefix's state", () => {
  const c = new SafetyChecker();
  for (const e of [cfg(1, 1), put(2, 1, 1, "x"), put(3, 1, 2, "y"), put(4, 1, 3, "x")]) {
    c.entryApplied("a", e);
  }
  c.stateRestored("b", 3, new Map([["x", "v1"], ["y", "v2"]]));
  c.entryApplied("b", put(4, 1, 3, "x"));
  violates("state machine safety", () => c.stateRestored("c", 4, new Map([["x", "v1"]])));
  violates("state machine safety", () => c.stateRestored("c", 5, new Map()));
});

Deno.test("durability: an acknowledged write must be the entry at its index and term", () => {
  const c = new SafetyChecker();
  c.entryApplied("a", cfg(1, 1));
  c.entryApplied("a", put(2, 1, 7));
  c.writeAcknowledged(7, 2, 1);
  violates("durability", () => c.writeAcknowledged(8, 2, 1));
  violates("durability", () => c.writeAcknowledged(7, 2, 2));
  c.finalMember("a", 2, new Map([["k", "v7"]]));
  c.entryApplied("b", cfg(1, 1));
  violates("durability", () => c.finalMember("b", 1, new Map()));
});

Deno.test("linearizability: a read sees exactly the prefix at its applied index", () => {
  const c = new SafetyChecker();
  c.entryApplied("a", cfg(1, 1));
  c.entryApplied("a", put(2, 1, 1));
  c.entryApplied("a", put(3, 1, 2));
  c.readInvoked(1);
  c.readServed({ readId: 1, node: "b", readIndex: 2, appliedIndex: 2, key: "k", value: "v1" });
  c.readInvoked(2);
  violates(
    "linearizability",
    () =>
      c.readServed({ readId: 2, node: "b", readIndex: 3, appliedIndex: 3, key: "k", value: "v1" }),
  );
});

Deno.test("linearizability: a read must not miss an acknowledged write or an earlier read", () => {
  const c = new SafetyChecker();
  c.entryApplied("a", cfg(1, 1));
  c.entryApplied("a", put(2, 1, 1));
  c.entryApplied("a", put(3, 1, 2));
  c.writeAcknowledged(2, 3, 1);
  c.readInvoked(1);
  violates(
    "linearizability",
    () =>
      c.readServed({ readId: 1, node: "b", readIndex: 2, appliedIndex: 2, key: "k", value: "v1" }),
  );
  // A read invoked before the acknowledgement may return the older value...
  const d = new SafetyChecker();
  d.entryApplied("a", cfg(1, 1));
  d.entryApplied("a", put(2, 1, 1));
  d.readInvoked(1);
  d.entryApplied("a", put(3, 1, 2));
  d.writeAcknowledged(2, 3, 1);
  d.readServed({ readId: 1, node: "b", readIndex: 2, appliedIndex: 2, key: "k", value: "v1" });
  // ...but one completed read at 3 forbids a later read at 2 (no going back in time).
  d.readInvoked(2);
  d.readServed({ readId: 2, node: "a", readIndex: 3, appliedIndex: 3, key: "k", value: "v2" });
  d.readInvoked(3);
  violates(
    "linearizability",
    () =>
      d.readServed({ readId: 3, node: "b", readIndex: 2, appliedIndex: 2, key: "k", value: "v1" }),
  );
});

Deno.test("linearizability: a read served below its read index is rejected", () => {
  const c = new SafetyChecker();
  c.entryApplied("a", cfg(1, 1));
  c.readInvoked(1);
  violates(
    "linearizability",
    () =>
      c.readServed({
        readId: 1,
        node: "a",
        readIndex: 2,
        appliedIndex: 1,
        key: "k",
        value: undefined,
      }),
  );
});
