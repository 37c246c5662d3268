/**
 * The simulator's lease checker on hand-made histories: each bound it enforces, measured on
 * the proposer's clock, fails exactly when it is broken.
 */
import { assert, assertEquals, assertThrows } from "../../helpers/assert.ts";
import { InvariantViolation } from "./checker.ts";
import { type ExpiryProposal, LeaseTimingChecker } from "./lease_checker.ts";

function proposal(atMs: number, fields: Partial<ExpiryProposal> = {}): ExpiryProposal {
  return { leaseId: 1, node: "n1#1", term: 3, atMs, rate: 1, ...fields };
}

Deno.test("lease checker: an expiry a full TTL after the election and the last renewal passes", () => {
  const c = new LeaseTimingChecker(true);
  c.granted(1, 1);
  c.leading("n1#1", 3, 100);
  c.renewed(1, 5, 200, 210, "grant");
  c.renewed(1, 9, 600, 650, "keep-alive");
  c.proposed("p", proposal(1600));
  c.expiryApplied(1, 12, 3, "p");
  assertEquals(c.races + c.forwarded, 0);
});

Deno.test("lease checker: a deposed leader's early expiry that never applies is no failure", () => {
  const c = new LeaseTimingChecker(true);
  c.granted(1, 1);
  c.leading("n1#1", 3, 1000);
  c.proposed("p", proposal(1200));
  assertEquals(c.proposals, 1);
});

Deno.test("lease checker: an applied expiry less than a TTL after the proposer's election fails", () => {
  const c = new LeaseTimingChecker(false);
  c.granted(1, 1);
  c.leading("n1#1", 3, 1000);
  c.proposed("p", proposal(1900));
  const err = assertThrows(() => c.expiryApplied(1, 9, 3, "p"), InvariantViolation);
  assert(err.message.includes("became leader of term 3"), err.message);
});

Deno.test("lease checker: TTLs are measured on the proposer's clock", () => {
  const c = new LeaseTimingChecker(false);
  c.granted(1, 1);
  c.leading("n1#1", 3, 0);
  c.renewed(1, 5, 100, 120, "keep-alive");
  // 1000 virtual ms on a clock running 20% slow are 800 ms on it: too early.
  c.proposed("p", proposal(1100, { rate: 0.8 }));
  assertThrows(() => c.expiryApplied(1, 9, 3, "p"), InvariantViolation);
  c.proposed("q", proposal(1100, { rate: 1.2 }));
  c.expiryApplied(1, 9, 3, "q");
});

Deno.test("lease checker: a keep-alive acknowledged before the proposal binds it", () => {
  const c = new LeaseTimingChecker(false);
  c.granted(1, 1);
  c.leading("n1#1", 3, 0);
  c.renewed(1, 7, 900, 950, "keep-alive");
  c.proposed("p", proposal(1500));
  const err = assertThrows(() => c.expiryApplied(1, 9, 3, "p"), InvariantViolation);
  assert(err.message.includes("keep-alive acknowledged at 950.0"), err.message);
});

Deno.test("lease checker: a keep-alive answered after the proposal but applied first is a race", () => {
  for (const strict of [false, true]) {
    const c = new LeaseTimingChecker(strict);
    c.granted(1, 1);
    c.leading("n1#1", 3, 0);
    c.proposed("p", proposal(1500));
    c.expiryApplied(1, 12, 3, "p");
    const late = () => c.renewed(1, 11, 1400, 1520, "keep-alive");
    if (strict) assertThrows(late, InvariantViolation);
    else {
      late();
      assertEquals(c.races, 1);
    }
  }
});

Deno.test("lease checker: an expiry appended in another term than decided is counted", () => {
  const c = new LeaseTimingChecker(false);
  c.granted(1, 1);
  c.leading("n1#1", 3, 0);
  c.proposed("p", proposal(1500));
  c.expiryApplied(1, 12, 4, "p");
  assertEquals(c.forwarded, 1);
  const strict = new LeaseTimingChecker(true);
  strict.granted(1, 1);
  strict.leading("n1#1", 3, 0);
  strict.proposed("p", proposal(1500));
  assertThrows(() => strict.expiryApplied(1, 12, 4, "p"), InvariantViolation);
  assertThrows(() => strict.expiryApplied(1, 12, 3, "unknown"), InvariantViolation);
});
