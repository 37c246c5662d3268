/**
 * Leadership transfer (Raft dissertation §3.10) through the host's transferLeadership: the
 * leader brings the target up to date, then sends TimeoutNow; the target campaigns at once,
 * past the other voters' leases. Writes wait while the transfer runs (the core refuses them,
 * the host retries) and go to whoever leads afterwards.
 */
import { UnavailableError } from "../../src/errors.ts";
import { assert, assertEquals, Cluster } from "./sim/mod.ts";

Deno.test("§3.10 transfer to a lagging follower: catch-up, then TimeoutNow, then it leads", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  const oldTerm = c.status("a").term;
  c.cutLink("a", "c");
  for (let i = 0; i < 5; i++) await c.propose("a", "k");
  await c.stabilize();
  c.heal();
  const last = c.status("a").lastIndex;
  assert(c.status("c").lastIndex < last, "c lags");
  const transfer = await c.transfer("a", "c");
  const during = await c.propose("a", "k", "during");
  assertEquals(c.status("a").lastIndex, last, "the core refuses writes during the transfer");
  assertEquals(during.state, "pending", "the host retries the write");
  assertEquals(c.peek({ type: "timeoutNow" }).length, 0, "no TimeoutNow before c caught up");
  // Deliver step by step: TimeoutNow must follow c's acknowledgement of the last entry.
  let caughtUp = false;
  for (let r = 0; r < 20 && c.peek({ type: "timeoutNow" }).length === 0; r++) {
    for (const m of c.take()) {
      await c.deliverOne(m);
      if (m.type === "appendResponse" && m.from === "c" && !m.reject && m.index === last) {
        caughtUp = true;
      }
    }
    if (c.outbox.length === 0) await c.tick("a");
  }
  assert(caughtUp, "c acknowledged the last entry");
  assertEquals(c.peek({ type: "timeoutNow", to: "c" }).length, 1);
  await c.stabilize();
  assertEquals(c.leaders(), ["c"]);
  assert(c.status("c").term > oldTerm);
  assertEquals(c.status("a").role, "follower");
  await c.tick("a");
  assertEquals(transfer.state, "done");
  assertEquals(transfer.value, "c", "the call answers the new leader");
  // The write that waited is forwarded to the new leader.
  for (let i = 0; i < 10 && during.state === "pending"; i++) {
    await c.tick("a");
    await c.tick("c");
    await c.stabilize();
  }
  assertEquals(during.state, "done");
  const w = await c.propose("c", "k");
  await c.stabilize();
  assert(c.status("c").commit >= w.index);
});

Deno.test("§3.10 a transfer to an up-to-date follower sends TimeoutNow at once", async () => {
  const c = await Cluster.start(["a", "b", "c"]);
  assertEquals(await c.elect("a"), "leader");
  await c.tick("a");
  await c.stabilize();
  await c.transfer("a", "b");
  assertEquals(c.peek({ type: "timeoutNow", to: "b" }).length, 1);
  await c.stabilize();
  assertEquals(c.leaders(), ["b"]);
});

Deno.test("§3.10 a transfer that cannot finish times out and writes resume", async () => {
  const c = await Cluster.start(["a", "b", "c"], { electionTicks: 10 });
  assertEquals(await c.elect("a"), "leader");
  c.isolate("c");
  const transfer = await c.transfer("a", "c");
  const last = c.status("a").lastIndex;
  const during = await c.propose("a", "k", "x");
  assertEquals(c.status("a").lastIndex, last, "refused by the core while the transfer runs");
  for (let i = 0; i < 10; i++) {
    await c.tick("a");
    await c.stabilize();
  }
  assertEquals(c.status("a").role, "leader");
  assertEquals(transfer.state, "failed");
  assert(transfer.error instanceof UnavailableError, `${transfer.error}`);
  assertEquals(during.index, 0);
  assert(c.status("a").lastIndex > last, "the waiting write was appended once the transfer ended");
  await c.propose("a", "k"); // accepted again
  c.heal();
});
