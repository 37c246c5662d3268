/** The gossip host on real UDP sockets on 127.0.0.1, several hosts in one process. */
import {
  formatGossipKey,
  generateGossipKey,
  GossipHost,
  type GossipHostOptions,
  type MemberEvent,
  type MemberState,
  parseGossipKey,
} from "../../src/membership/mod.ts";
import { ConfigError } from "../../src/errors.ts";
import { reservePort } from "../helpers/ports.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Fast timings: 20 ms ticks, 100 ms probe period, 400 ms suspicion at 4 members. */
const FAST: Partial<GossipHostOptions> = {
  tickMs: 20,
  probePeriodTicks: 5,
  probeTimeoutTicks: 2,
  gossipIntervalTicks: 1,
  pushPullIntervalTicks: 50,
  reconnectIntervalTicks: 50,
  joinRetryTicks: 5,
  maxJoinRetryTicks: 25,
};

interface Node {
  host: GossipHost;
  events: MemberEvent[];
}

class Cluster {
  readonly nodes: Node[] = [];

  async add(
    name: string,
    seeds: string[],
    extra: Partial<GossipHostOptions> = {},
  ): Promise<Node> {
    const events: MemberEvent[] = [];
    const host = await GossipHost.start({
      ...FAST,
      name,
      bindAddr: "127.0.0.1:0",
      tags: { id: name, rpc_addr: `127.0.0.1:${9400 + this.nodes.length}` },
      seeds,
      seed: this.nodes.length + 1,
      onEvent: (e) => events.push(e),
      ...extra,
    });
    const node = { host, events };
    this.nodes.push(node);
    return node;
  }

  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.host.close()));
  }
}

function sees(observer: GossipHost, subject: string, state: MemberState): boolean {
  return observer.members().some((m) => m.name === subject && m.state === state);
}

function allSeeAlive(hosts: readonly GossipHost[]): boolean {
  return hosts.every((o) => hosts.every((s) => sees(o, s.name, "alive")));
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("udp: hosts converge whatever the start order; a closed host is detected failed", async () => {
  const c = new Cluster();
  try {
    const seedAddr = `127.0.0.1:${reservePort()}`;
    // Two members start before the seed they join through exists.
    await c.add("b", [seedAddr]);
    await c.add("c", [seedAddr]);
    await new Promise((r) => setTimeout(r, 150));
    const a = await c.add("a", [seedAddr], { bindAddr: seedAddr });
    await c.add("d", [seedAddr]);
    const hosts = () => c.nodes.map((n) => n.host);
    await waitFor("4 hosts converge", () => allSeeAlive(hosts()));
    const info = a.host.members().find((m) => m.name === "d")!;
    assert(info.rpcAddr === "127.0.0.1:9403", `rpcAddr from tags, got ${info.rpcAddr}`);
    assert(info.addr === c.nodes[3].host.addr, "gossip address");

    const victim = c.nodes.find((n) => n.host.name === "c")!;
    await victim.host.close();
    const live = c.nodes.filter((n) => n !== victim);
    await waitFor("c failed everywhere", () => live.every((n) => sees(n.host, "c", "failed")));
    for (const n of live) {
      assert(n.events.some((e) => e.type === "fail" && e.member.name === "c"), "fail event for c");
      assert(
        !n.events.some((e) => e.type === "fail" && e.member.name !== "c"),
        "no other member may fail",
      );
    }
    assert(live.some((n) => n.host.stats().probeFailures > 0), "probe failures are counted");
  } finally {
    await c.close();
  }
});

Deno.test("udp: a leaving host is seen as left, not failed; tag updates spread", async () => {
  const c = new Cluster();
  try {
    const a = await c.add("a", []);
    for (const name of ["b", "c", "d"]) await c.add(name, [a.host.addr]);
    await waitFor("converge", () => allSeeAlive(c.nodes.map((n) => n.host)));

    c.nodes[1].host.setTags({ id: "b", rpc_addr: "127.0.0.1:7777" });
    await waitFor(
      "tags spread",
      () =>
        c.nodes.every((n) =>
          n.host.members().find((m) => m.name === "b")?.rpcAddr === "127.0.0.1:7777"
        ),
    );

    const leaver = c.nodes[3];
    await leaver.host.leave();
    await leaver.host.close();
    const rest = c.nodes.slice(0, 3);
    await waitFor("d left everywhere", () => rest.every((n) => sees(n.host, "d", "left")));
    await new Promise((r) => setTimeout(r, 600)); // Longer than a suspicion timeout.
    for (const n of rest) {
      assert(sees(n.host, "d", "left"), "d stays left");
      assert(n.events.some((e) => e.type === "leave" && e.member.name === "d"), "leave event");
      assert(!n.events.some((e) => e.type === "fail"), "nobody failed");
    }
  } finally {
    await c.close();
  }
});

Deno.test("udp: garbage and wrong-key datagrams are dropped and counted; the node keeps working", async () => {
  const key = generateGossipKey();
  const c = new Cluster();
  const raw = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const plain = await c.add("plain", []);
    const a = await c.add("a", [], { keys: [key] });
    const b = await c.add("b", [a.host.addr], { keys: [key] });
    await waitFor("keyed pair converges", () => allSeeAlive([a.host, b.host]));

    const to = (h: GossipHost) => {
      const [hostname, port] = h.addr.split(":");
      return { transport: "udp" as const, hostname, port: Number(port) };
    };
    for (let i = 0; i < 20; i++) {
      const junk = crypto.getRandomValues(new Uint8Array(1 + i * 7));
      junk[0] = i % 2 === 0 ? 1 : 0xee;
      await raw.send(junk, to(plain.host));
      await raw.send(junk, to(a.host));
    }
    // A member with another key tries to join the keyed pair, and the plaintext one too.
    const intruder = await c.add("intruder", [a.host.addr], { keys: [generateGossipKey()] });
    plain.host.join([b.host.addr]);
    await waitFor("garbage counted", () => plain.host.stats().decodeErrors >= 20);
    await waitFor("auth failures counted", () => a.host.stats().authFailures >= 25);
    assert(b.host.stats().authFailures > 0, "b rejects the plaintext member");

    const c2 = await c.add("c", [b.host.addr], { keys: [key] });
    await waitFor("a keyed newcomer still joins", () => allSeeAlive([a.host, b.host, c2.host]));
    for (const h of [a.host, b.host, c2.host]) {
      const names = h.members().map((m) => m.name);
      assert(!names.includes("intruder") && !names.includes("plain"), `${h.name} let in ${names}`);
    }
    assert(intruder.host.members().length === 1, "the intruder learned nothing");
  } finally {
    raw.close();
    await c.close();
  }
});

Deno.test("udp: key rotation through a two-key keyring keeps the cluster together", async () => {
  const k1 = generateGossipKey();
  const k2 = parseGossipKey(formatGossipKey(generateGossipKey()));
  const c = new Cluster();
  try {
    const a = await c.add("a", [], { keys: [k1] });
    await c.add("b", [a.host.addr], { keys: [k1] });
    await c.add("c", [a.host.addr], { keys: [k2, k1] }); // Already rotated: encrypts with k2.
    const hosts = () => c.nodes.map((n) => n.host);
    await waitFor("a rejects c's k2 datagrams", () => a.host.stats().authFailures > 0);
    assert(!sees(a.host, "c", "alive"), "a cannot know c before it has k2");
    // a and b cannot read c yet: install k2 on them (secondary), then make it primary everywhere.
    for (const h of hosts()) await h.keyring!.install(k2);
    await waitFor("converge with k2 installed", () => allSeeAlive(hosts()));
    for (const h of hosts()) h.keyring!.use(k2);
    for (const h of hosts()) h.keyring!.remove(k1);
    // Datagrams sealed with k1 just before the switch may still be in flight: let them land.
    await new Promise((r) => setTimeout(r, 300));
    const before = hosts().map((h) => h.stats().authFailures);
    await new Promise((r) => setTimeout(r, 500));
    assert(allSeeAlive(hosts()), "still converged on k2 alone");
    assert(
      hosts().every((h, i) => h.stats().authFailures === before[i]),
      "no auth failures after the rotation",
    );
    const d = await c.add("d", [a.host.addr], { keys: [k2] });
    await waitFor("a k2-only newcomer joins", () => allSeeAlive(hosts()));
    assert(d.host.keyring!.keys().length === 1, "one key");
    for (const n of c.nodes) assert(!n.events.some((e) => e.type === "fail"), "nobody failed");
  } finally {
    await c.close();
  }
});

Deno.test("udp: bad options stop start-up with a ConfigError naming the key", async () => {
  for (
    const [opts, key] of [
      [{ bindAddr: "nope" }, "bind-addr"],
      [{ bindAddr: "0.0.0.0:0" }, "advertise-addr"],
      [{ seeds: ["127.0.0.1"] }, "start-join-addrs"],
      [{ probeTimeoutTicks: 10 }, "probeTimeoutTicks"],
    ] as const
  ) {
    let err: unknown;
    try {
      const h = await GossipHost.start({
        ...FAST,
        name: "x",
        bindAddr: "127.0.0.1:0",
        tags: {},
        seeds: [],
        ...opts,
      });
      await h.close();
    } catch (e) {
      err = e;
    }
    assert(
      err instanceof ConfigError && err.key === key,
      `expected ConfigError(${key}), got ${err}`,
    );
  }
  let err: unknown;
  try {
    parseGossipKey("c2hvcnQ=");
  } catch (e) {
    err = e;
  }
  assert(err instanceof ConfigError && err.key === "gossip-key", "short key rejected");
});
