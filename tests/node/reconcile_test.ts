/** The leader's membership decisions and bootstrap-expect, as pure functions. */
import { assertEquals } from "../helpers/assert.ts";
import {
  expectedBootstrapConfig,
  nextReconcileAction,
  type ReconcileInput,
  type ReconcileMember,
  verificationsToStart,
} from "../../src/node/reconcile.ts";

const alive = (name: string, extra: Partial<ReconcileMember> = {}): ReconcileMember => ({
  name,
  rpcAddr: `${name}:8400`,
  state: "alive",
  ...extra,
});

const base: ReconcileInput = {
  selfId: "a",
  config: { voters: ["a", "b", "c"], learners: [], addresses: {} },
  match: { a: 100, b: 100, c: 100 },
  commitIndex: 100,
  members: [alive("a"), alive("b"), alive("c")],
  verified: new Set(),
  deadServerCleanup: false,
  deadServerMinQuorum: 3,
};

Deno.test("reconcile: nothing to do when gossip and Raft agree", () => {
  assertEquals(nextReconcileAction(base), { verify: [] });
});

Deno.test("reconcile: a new alive member is verified first, then added as a learner", () => {
  const members = [...base.members, alive("d")];
  assertEquals(nextReconcileAction({ ...base, members }), { verify: ["d"] });
  assertEquals(nextReconcileAction({ ...base, members, verified: new Set(["d"]) }).action, {
    type: "addLearner",
    id: "d",
    address: "d:8400",
  });
});

Deno.test("reconcile: a caught-up learner is promoted; one far behind is not", () => {
  const config = { voters: ["a", "b", "c"], learners: ["d"], addresses: {} };
  const members = [...base.members, alive("d")];
  assertEquals(
    nextReconcileAction({ ...base, config, members, match: { ...base.match, d: 99 } }).action,
    { type: "promote", id: "d" },
  );
  assertEquals(
    nextReconcileAction({
      ...base,
      config,
      members,
      match: { ...base.match, d: 1 },
      commitIndex: 10_000,
    })
      .action,
    undefined,
  );
});

Deno.test("reconcile: a gossip left or dead removes no voter; cleanup only when enabled", () => {
  // Gossip only informs: a member gossip reports left (a forged `dead name=c from=c` says
  // so) stays a voter until its own RemoveServer request or the operator's.
  const left = [alive("a"), alive("b"), alive("c", { state: "left" })];
  assertEquals(nextReconcileAction({ ...base, members: left }).action, undefined);
  assertEquals(
    nextReconcileAction({ ...base, members: left, deadServerCleanup: true, deadServerMinQuorum: 1 })
      .action,
    undefined,
    "cleanup removes failed voters, never left ones",
  );
  const failed = [alive("a"), alive("b"), alive("c", { state: "failed" })];
  assertEquals(nextReconcileAction({ ...base, members: failed }).action, undefined);
  assertEquals(
    nextReconcileAction({ ...base, members: failed, deadServerMinQuorum: 2 }).action,
    undefined,
    "cleanup is off by default",
  );
  // Cleanup keeps at least dead-server-min-quorum voters.
  assertEquals(
    nextReconcileAction({ ...base, members: failed, deadServerCleanup: true }).action,
    undefined,
  );
  const cleanup = { ...base, members: failed, deadServerCleanup: true, deadServerMinQuorum: 2 };
  assertEquals(nextReconcileAction(cleanup).action, { type: "remove", id: "c", reason: "dead" });
  // A voter the leader still hears from over Raft is not dead, whatever gossip says.
  assertEquals(nextReconcileAction({ ...cleanup, active: new Set(["b", "c"]) }).action, undefined);
});

Deno.test("bootstrap-expect: the same configuration for everyone, in natural name order", () => {
  const members = ["mokv-10", "mokv-2", "mokv-0", "mokv-1"].map((n) => alive(n));
  const config = expectedBootstrapConfig("mokv-1", members, 3);
  assertEquals(config?.voters, ["mokv-0", "mokv-1", "mokv-2"]);
  assertEquals(expectedBootstrapConfig("mokv-10", members, 3), undefined, "not among the first 3");
  assertEquals(expectedBootstrapConfig("mokv-0", members.slice(0, 2), 3), undefined, "too few");
});

Deno.test("bootstrap-expect: never beside a member that holds Raft state (lost volume, late node)", () => {
  const members = [
    alive("mokv-0"),
    alive("mokv-1", { hasState: true }),
    alive("mokv-2", { hasState: true }),
  ];
  assertEquals(expectedBootstrapConfig("mokv-0", members, 3), undefined);
});

Deno.test("reconcile: member checks are bounded in flight and back off after a failure", () => {
  const fakes = Array.from({ length: 1000 }, (_, i) => `fake-${i}`);
  const base = {
    candidates: fakes,
    inFlight: new Set<string>(),
    failedAtMs: new Map<string, number>(),
    nowMs: 100_000,
    maxConcurrent: 4,
    retryMs: 10_000,
  };
  assertEquals(verificationsToStart(base), fakes.slice(0, 4), "a thousand fakes: four dials");
  assertEquals(
    verificationsToStart({ ...base, inFlight: new Set(fakes.slice(0, 3)) }),
    ["fake-3"],
    "three in flight: one more",
  );
  const failed = new Map(fakes.slice(0, 999).map((id) => [id, 95_000]));
  assertEquals(
    verificationsToStart({ ...base, candidates: [...fakes, "real"], failedAtMs: failed }),
    ["fake-999", "real"],
    "failed ones wait; a real member is checked at once",
  );
  assertEquals(
    verificationsToStart({ ...base, failedAtMs: failed, nowMs: 106_000 }).length,
    4,
    "after the backoff they are tried again, still four at a time",
  );
});
