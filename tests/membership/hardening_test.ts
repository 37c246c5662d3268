/**
 * What a forged, unauthenticated datagram can no longer do to the SWIM core: pin a member at
 * incarnation 2^32-1, mark it left for good, grow the member table without bound, or turn
 * this node into an amplifier toward an address of its choosing.
 */
import { SeededRng } from "../../src/rng.ts";
import {
  INCARNATION_WINDOW,
  isNewerIncarnation,
  type Member,
  type Outbound,
  Swim,
  type SwimConfig,
} from "../../src/membership/mod.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

const MAX = 0xffff_ffff;
const CONFIG: Partial<SwimConfig> = {
  probePeriodTicks: 10,
  probeTimeoutTicks: 5,
  gossipIntervalTicks: 1000,
  pushPullIntervalTicks: 100_000,
  reconnectIntervalTicks: 100_000,
};

function core(name: string, seed = 1, config: Partial<SwimConfig> = {}): Swim {
  return new Swim({
    name,
    addr: `${name}:1`,
    tags: { id: name },
    rng: new SeededRng(seed),
    config: { ...CONFIG, ...config },
  });
}

function member(name: string, incarnation = 0, addr = `${name}:1`): Member {
  return { name, addr, tags: { id: name }, incarnation, state: "alive" };
}

function know(c: Swim, ...members: Member[]): void {
  c.step("seed:1", { type: "push-pull", needReply: false, members });
  c.ready();
}

/** Everything `c` sends within `ticks` ticks (and what it has pending now). */
function sentWithin(c: Swim, ticks: number): Outbound[] {
  const out = [...c.ready().messages];
  for (let i = 0; i < ticks; i++) {
    c.tick();
    out.push(...c.ready().messages);
  }
  return out;
}

Deno.test("hardening: incarnations compare as serial numbers within a window", () => {
  assert(isNewerIncarnation(1, 0) && isNewerIncarnation(INCARNATION_WINDOW, 0), "ahead");
  assert(!isNewerIncarnation(INCARNATION_WINDOW + 1, 0), "too far ahead");
  assert(!isNewerIncarnation(MAX, 3), "2^32-1 is not newer than 3");
  assert(isNewerIncarnation(0, MAX) && isNewerIncarnation(5, MAX - 5), "wraps past 2^32-1");
  assert(!isNewerIncarnation(3, 3) && !isNewerIncarnation(2, 3), "equal and older");
});

Deno.test("hardening: a spoofed dead/left/suspect/alive at 2^32-1 changes nothing", () => {
  const a = core("a");
  know(a, member("b", 3));
  // The datagram: `dead name=b incarnation=2^32-1 from=b`, and friends.
  a.step("x:1", {
    type: "gossip",
    updates: [
      { kind: "dead", name: "b", incarnation: MAX, from: "b" },
      { kind: "dead", name: "b", incarnation: MAX, from: "x" },
      { kind: "suspect", name: "b", incarnation: MAX, from: "x" },
      { kind: "alive", name: "b", addr: "evil:1", incarnation: MAX, tags: { id: "evil" } },
    ],
  });
  a.step("x:1", {
    type: "push-pull",
    needReply: false,
    members: [{ ...member("b", MAX, "evil:1"), state: "left" }],
  });
  const b = a.member("b")!;
  assert(b.state === "alive" && b.incarnation === 3 && b.addr === "b:1", JSON.stringify(b));
  assert(!a.ready().events.some((e) => e.member.name === "b"), "no event about b");
  // 2^32-1 is "just behind" 3 modulo 2^32 (stale); a claim far ahead is counted as forged.
  a.step("x:1", {
    type: "gossip",
    updates: [{ kind: "dead", name: "b", incarnation: 3 + 2 ** 24, from: "b" }],
  });
  assert(a.member("b")!.state === "alive", "far ahead: dropped");
  assert(a.stats().staleOrForgedUpdates === 1, `counted ${a.stats().staleOrForgedUpdates}`);
  // Aimed at b itself: b does not jump to the maximum either.
  const bCore = core("b", 2);
  bCore.step("x:1", {
    type: "gossip",
    updates: [{ kind: "dead", name: "b", incarnation: MAX, from: "b" }],
  });
  assert(bCore.member("b")!.incarnation === 0 && bCore.stats().refutes === 0, "b ignores it");
});

Deno.test("hardening: a forged leave inside the window is refuted; the member is not left for good", () => {
  const a = core("a");
  const b = core("b", 2);
  know(a, member("b", 0));
  const forged = { kind: "dead", name: "b", incarnation: 0, from: "b" } as const;
  a.step("x:1", { type: "gossip", updates: [forged] });
  assert(a.member("b")!.state === "left", "a believes the forgery for now");
  b.step("x:1", { type: "gossip", updates: [forged] });
  assert(b.member("b")!.incarnation === 1 && b.stats().refutes === 1, "b refutes at 1");
  b.join(["a:1"]); // a is b's seed: updates piggyback on b's messages to it.
  const toA = b.ready().messages.filter((o) => o.to === "a:1");
  for (const o of toA) a.step("b:1", o.msg);
  assert(a.member("b")!.state === "alive" && a.member("b")!.incarnation === 1, "b is back");
  assert(a.ready().events.some((e) => e.type === "join" && e.member.name === "b"), "join event");
});

Deno.test("hardening: a refutation near 2^32-1 wraps and still wins", () => {
  const b = new Swim({
    name: "b",
    addr: "b:1",
    rng: new SeededRng(3),
    config: CONFIG,
    incarnation: MAX - 1,
  });
  const a = core("a");
  know(a, member("b", MAX - 1));
  const accusation = { kind: "suspect", name: "b", incarnation: MAX, from: "c" } as const;
  a.step("c:1", { type: "gossip", updates: [accusation] });
  assert(a.member("b")!.state === "suspect" && a.member("b")!.incarnation === MAX, "suspected");
  b.step("c:1", { type: "gossip", updates: [accusation] });
  assert(b.member("b")!.incarnation === 0, `b refutes at 0, got ${b.member("b")!.incarnation}`);
  a.step("b:1", {
    type: "gossip",
    updates: [{ kind: "alive", name: "b", addr: "b:1", incarnation: 0, tags: {} }],
  });
  assert(a.member("b")!.state === "alive" && a.member("b")!.incarnation === 0, "refutation won");
});

Deno.test("hardening: a flood of thousands of fake members is bounded by maxMembers", () => {
  const a = core("a", 1, { maxMembers: 64 });
  for (let i = 0; i < 5000; i += 10) {
    const members = Array.from({ length: 10 }, (_, j) => member(`fake-${i + j}`, 0));
    a.step(`127.0.0.1:${10_000 + (i % 1000)}`, { type: "push-pull", needReply: false, members });
  }
  a.ready();
  assert(a.members().length === 64, `table holds ${a.members().length}`);
  assert(a.stats().membersRejected === 5000 - 63, `rejected ${a.stats().membersRejected}`);
  // Failed members make room for new ones; live ones are never evicted.
  a.step("x:1", {
    type: "gossip",
    updates: [{ kind: "dead", name: "fake-0", incarnation: 0, from: "x" }],
  });
  know(a, member("real", 0));
  assert(
    a.member("real") !== undefined && a.member("fake-0") === undefined,
    "replaced a failed one",
  );
  assert(a.members().length === 64, "still bounded");
});

Deno.test("hardening: a push-pull from a forged source gets no traffic sent to that source", () => {
  const a = core("a");
  know(a, member("b"), member("c"));
  // 100 forged full-state requests "from" a victim, naming made-up members elsewhere.
  for (let i = 0; i < 100; i++) {
    a.step("victim:1", {
      type: "push-pull",
      needReply: true,
      members: [member(`fake-${i}`, 0, "elsewhere:1")],
    });
  }
  const out = sentWithin(a, 3);
  assert(!out.some((o) => o.to === "victim:1"), "nothing to the victim");
  assert(!out.some((o) => o.msg.type === "push-pull"), "no state sent to anyone");
  assert(a.stats().unprovenRequests === 100, "counted");
  // A forged request naming a member AT the victim's address: one small ping, never state.
  for (let i = 0; i < 100; i++) {
    a.step("victim:1", {
      type: "push-pull",
      needReply: true,
      members: [member("fake-v", 0, "victim:1")],
    });
  }
  const toVictim = sentWithin(a, 5).filter((o) => o.to === "victim:1");
  assert(toVictim.length <= 1 && toVictim.every((o) => o.msg.type === "ping"), "one hello ping");
  // A real joiner answers the hello and gets the state at the address it answered from.
  a.step("d:1", { type: "push-pull", needReply: true, members: [member("d")] });
  const hello = a.ready().messages.find((o) => o.to === "d:1" && o.msg.type === "ping")!;
  assert(hello?.msg.type === "ping" && hello.msg.updates.length === 0, "hello ping to d");
  a.step("d:1", { type: "ack", seq: hello.msg.seq, updates: [] });
  const state = a.ready().messages.filter((o) => o.msg.type === "push-pull");
  assert(state.length > 0 && state.every((o) => o.to === "d:1"), "state to d after its ack");
});

Deno.test("hardening: ping-req is served only from a proven address, for a known member, at its known address", () => {
  const a = core("a");
  know(a, member("b"));
  const req = (target: string, targetAddr: string) => ({
    type: "ping-req" as const,
    seq: 7,
    target,
    targetAddr,
    updates: [],
  });
  a.step("victim:1", req("b", "other:1"));
  a.step("victim:1", req("nobody", "other:1"));
  assert(a.ready().messages.length === 0, "an unproven requester gets nothing done");
  a.join(["helper:1"]); // a trusted address (a join seed)
  a.ready();
  a.step("helper:1", req("nobody", "other:1"));
  assert(a.ready().messages.length === 0, "an unknown target is not pinged");
  a.step("helper:1", req("b", "other:1"));
  const out = a.ready().messages;
  assert(out.length === 1 && out[0].to === "b:1", `pings b at b:1: ${JSON.stringify(out)}`);
});

Deno.test("hardening: an ack to an unproven address carries no piggybacked updates", () => {
  const a = core("a");
  know(a, member("b"), member("c"));
  a.setTags({ id: "a", extra: "x".repeat(200) }); // something pending to piggyback
  a.step("victim:1", { type: "ping", seq: 1, target: "a", updates: [] });
  const [ack] = a.ready().messages;
  assert(ack.to === "victim:1" && ack.msg.type === "ack" && ack.msg.updates.length === 0, "bare");
  a.join(["b:1"]);
  a.ready();
  a.step("b:1", { type: "ping", seq: 2, target: "a", updates: [] });
  const [ack2] = a.ready().messages.filter((o) => o.msg.type === "ack");
  assert(ack2.msg.type === "ack" && ack2.msg.updates.length > 0, "a seed gets the updates");
});
