/** Transcript tests of the SWIM core: drive one core by hand and read what it hands out. */
import { SeededRng } from "../../src/rng.ts";
import {
  type Member,
  type Message,
  type Outbound,
  Swim,
  type SwimConfig,
} from "../../src/membership/mod.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

const CONFIG: Partial<SwimConfig> = {
  probePeriodTicks: 10,
  probeTimeoutTicks: 5,
  indirectChecks: 2,
  suspicionMult: 2,
  gossipIntervalTicks: 1000,
  pushPullIntervalTicks: 100_000,
  reconnectIntervalTicks: 100_000,
  reapTicks: 500,
};

function core(name: string, seed = 1): Swim {
  return new Swim({
    name,
    addr: `${name}:1`,
    tags: { id: name },
    rng: new SeededRng(seed),
    config: CONFIG,
  });
}

function member(name: string, incarnation = 0, state: Member["state"] = "alive"): Member {
  return { name, addr: `${name}:1`, tags: { id: name }, incarnation, state };
}

/** Teaches `c` about `names` through a push-pull answer, and drops what it says. */
function know(c: Swim, ...members: Member[]): void {
  c.step("seed:1", { type: "push-pull", needReply: false, members });
  c.ready();
}

/**
 * Makes `c` trust `addrs` as join seeds: only seeds and addresses that answered a ping of
 * `c` get piggybacked updates, relayed acks and full state.
 */
function trust(c: Swim, ...addrs: string[]): void {
  c.join(addrs);
  c.ready();
}

/** Ticks until `c` sends a message matching `pred`; returns it. */
function tickUntil(c: Swim, pred: (o: Outbound) => boolean, maxTicks = 100): Outbound {
  for (let i = 0; i < maxTicks; i++) {
    c.tick();
    const hit = c.ready().messages.find(pred);
    if (hit) return hit;
  }
  throw new Error(`nothing matched within ${maxTicks} ticks`);
}

function isType<T extends Message["type"]>(t: T) {
  return (o: Outbound): o is Outbound & { msg: Extract<Message, { type: T }> } => o.msg.type === t;
}

Deno.test("swim: a ping for this node is acked with its seq; one for another name is not", () => {
  const a = core("a");
  a.step("x:1", { type: "ping", seq: 42, target: "a", updates: [] });
  const [ack] = a.ready().messages;
  assert(ack.to === "x:1" && ack.msg.type === "ack" && ack.msg.seq === 42, "ack 42 to x");
  a.step("x:1", { type: "ping", seq: 43, target: "someone-else", updates: [] });
  assert(a.ready().messages.length === 0, "no ack for another name");
});

Deno.test("swim: probe, ping-req on timeout, suspect at period end, failed after suspicion", () => {
  const a = core("a");
  know(a, member("b"), member("c"), member("d"));
  const ping = tickUntil(a, isType("ping"));
  const target = (ping.msg as { target: string }).target;
  const start = a.now;
  // No ack: at the probe timeout, ping-req goes to the two other members.
  const reqs: Outbound[] = [];
  while (a.now < start + 5) {
    a.tick();
    reqs.push(...a.ready().messages.filter(isType("ping-req")));
  }
  assert(reqs.length === 2, `two ping-reqs, got ${reqs.length}`);
  assert(reqs.every((r) => r.msg.type === "ping-req" && r.msg.target === target), "about target");
  assert(
    new Set(reqs.map((r) => r.to)).size === 2 && !reqs.some((r) => r.to === `${target}:1`),
    "helpers",
  );
  // Nothing comes back by the end of the period: suspect.
  let events = [];
  while (a.now < start + 10) {
    a.tick();
    events.push(...a.ready().events);
  }
  assert(events.some((e) => e.type === "suspect" && e.member.name === target), "suspect event");
  assert(a.stats().probeFailures === 1, "one probe failure");
  // Suspicion: 2 * log10(4) < 2 -> 2 periods = 20 ticks.
  events = [];
  for (let i = 0; i < 20; i++) {
    a.tick();
    events.push(...a.ready().events);
  }
  assert(events.some((e) => e.type === "fail" && e.member.name === target), "fail event");
  assert(a.member(target)?.state === "failed", "failed");
});

Deno.test("swim: an indirect ack through a helper saves the probe", () => {
  const a = core("a");
  know(a, member("b"), member("c"));
  const ping = tickUntil(a, isType("ping"));
  const seq = (ping.msg as { seq: number }).seq;
  const req = tickUntil(a, isType("ping-req"));
  // The helper does its part: it gets the ping-req, pings the target, relays the ack.
  const helper = core(req.to.slice(0, -2), 9);
  know(helper, member("a"), member(ping.to.slice(0, -2)));
  trust(helper, "a:1");
  helper.step("a:1", req.msg);
  const fwd = helper.ready().messages.find(isType("ping"))!;
  assert(fwd.to === ping.to, "helper pings the target");
  const target = core(ping.to.slice(0, -2), 8);
  target.step(`${helper.name}:1`, fwd.msg);
  const targetAck = target.ready().messages.find(isType("ack"))!;
  helper.step(`${target.name}:1`, targetAck.msg);
  const relayed = helper.ready().messages.find(isType("ack"))!;
  assert(relayed.to === "a:1" && relayed.msg.type === "ack" && relayed.msg.seq === seq, "relay");
  a.step(relayed.to, relayed.msg);
  for (let i = 0; i < 10; i++) a.tick();
  assert(a.stats().probeFailures === 0, "the probe succeeded");
  assert(!a.ready().events.some((e) => e.type === "suspect"), "nobody suspected");
});

Deno.test("swim: a suspected member refutes with a higher incarnation, which clears the suspicion", () => {
  const a = core("a");
  const b = core("b", 2);
  know(a, member("b"));
  a.step("c:1", {
    type: "gossip",
    updates: [{ kind: "suspect", name: "b", incarnation: 0, from: "c" }],
  });
  assert(a.ready().events.some((e) => e.type === "suspect"), "a suspects b");
  b.step("a:1", {
    type: "gossip",
    updates: [{ kind: "suspect", name: "b", incarnation: 0, from: "c" }],
  });
  assert(b.member("b")!.incarnation === 1 && b.stats().refutes === 1, "b refutes at incarnation 1");
  trust(b, "a:1");
  b.step("a:1", { type: "ping", seq: 5, target: "b", updates: [] });
  const ack = b.ready().messages.find(isType("ack"))!;
  assert(
    ack.msg.type === "ack" &&
      ack.msg.updates.some((u) => u.kind === "alive" && u.name === "b" && u.incarnation === 1),
    "the refutation piggybacks on the ack",
  );
  a.step("b:1", ack.msg);
  const events = a.ready().events;
  assert(events.some((e) => e.type === "alive" && e.member.name === "b"), "alive event");
  assert(a.member("b")!.state === "alive", "b alive again");
});

Deno.test("swim: a left member coming back with a higher incarnation joins again; then it is reaped", () => {
  const a = core("a");
  know(a, member("b", 3));
  a.step("b:1", {
    type: "gossip",
    updates: [{ kind: "dead", name: "b", incarnation: 3, from: "b" }],
  });
  assert(
    a.ready().events.some((e) => e.type === "leave") && a.member("b")!.state === "left",
    "left",
  );
  a.step("b:1", {
    type: "gossip",
    updates: [{ kind: "alive", name: "b", addr: "b:1", incarnation: 3, tags: {} }],
  });
  assert(a.member("b")!.state === "left", "the same incarnation cannot undo a leave");
  a.step("b:1", {
    type: "gossip",
    updates: [{ kind: "alive", name: "b", addr: "b:2", incarnation: 4, tags: {} }],
  });
  assert(a.ready().events.some((e) => e.type === "join" && e.member.addr === "b:2"), "join again");
  a.step("c:1", {
    type: "gossip",
    updates: [{ kind: "dead", name: "b", incarnation: 4, from: "c" }],
  });
  assert(a.member("b")!.state === "failed", "failed");
  a.ready();
  for (let i = 0; i < 500; i++) a.tick();
  assert(a.ready().events.some((e) => e.type === "reap" && e.member.name === "b"), "reaped");
  assert(a.member("b") === undefined, "forgotten");
});

Deno.test("swim: a restarted node learns its old incarnation from the seed and outbids it", () => {
  const seed = core("seed");
  know(seed, member("b", 7));
  seed.step("c:1", {
    type: "gossip",
    updates: [{ kind: "dead", name: "b", incarnation: 7, from: "c" }],
  });
  seed.ready();
  const b = core("b", 3); // Fresh process: incarnation 0.
  b.join(["seed:1"]);
  const [hello] = b.ready().messages;
  seed.step("b:1", hello.msg);
  assert(seed.member("b")!.state === "failed", "incarnation 0 cannot revive b at 7");
  // The seed does not know b's address answers yet: it pings b first (a hello), and sends
  // its state once b acks.
  const [helloPing] = seed.ready().messages;
  assert(helloPing.to === "b:1" && helloPing.msg.type === "ping", "hello ping to b");
  b.step("seed:1", helloPing.msg);
  for (const out of b.ready().messages) if (out.msg.type === "ack") seed.step("b:1", out.msg);
  for (const out of seed.ready().messages) b.step("seed:1", out.msg);
  assert(b.joined && b.member("b")!.incarnation === 8, "b refutes at 8");
  b.step("seed:1", { type: "ping", seq: 1, target: "b", updates: [] });
  for (const out of b.ready().messages) seed.step("b:1", out.msg);
  assert(
    seed.member("b")!.state === "alive" && seed.member("b")!.incarnation === 8,
    "b alive at 8",
  );
});

Deno.test("swim: join retries with doubling backoff until a seed answers", () => {
  const a = core("a");
  a.join(["seed:1", "a:1"]); // Its own address is skipped.
  const sentAt: number[] = [];
  const record = () => {
    if (a.ready().messages.some((o) => o.msg.type === "push-pull" && o.to === "seed:1")) {
      sentAt.push(a.now);
    }
  };
  record();
  for (let i = 0; i < 80; i++) {
    a.tick();
    record();
  }
  assert(JSON.stringify(sentAt) === "[0,10,30,70]", `attempts at ${sentAt}`);
  a.step("seed:1", { type: "push-pull", needReply: false, members: [member("seed")] });
  assert(a.joined, "joined");
  for (let i = 0; i < 300; i++) a.tick();
  assert(!a.ready().messages.some((o) => o.msg.type === "push-pull"), "no more join attempts");
});

Deno.test("swim: an update is transmitted at most retransmitMult * ceil(log2(n + 1)) times", () => {
  const a = core("a");
  know(a, member("b"), member("c"), member("d"));
  trust(a, "b:1");
  a.setTags({ id: "a", rpc_addr: "a:2" });
  let sent = 0;
  for (let seq = 0; seq < 200; seq++) {
    a.step("b:1", { type: "ping", seq, target: "a", updates: [] });
    for (const o of a.ready().messages) {
      if (o.msg.type === "ack") sent += o.msg.updates.filter((u) => u.name === "a").length;
    }
  }
  assert(sent === 4 * Math.ceil(Math.log2(5)), `sent ${sent} times`);
});
