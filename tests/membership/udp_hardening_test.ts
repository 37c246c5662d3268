/**
 * Hostile datagrams against the UDP host on 127.0.0.1: oversized ones, replayed sealed ones,
 * forged sources asking for state or indirect probes, and a spoofed leave at 2^32-1.
 */
import {
  encodeMessage,
  generateGossipKey,
  GossipHost,
  type GossipHostOptions,
  Keyring,
  MAX_DATAGRAM_BYTES,
  type Member,
  type Message,
  REPLAY_WINDOW_MS,
} from "../../src/membership/mod.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

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

async function start(name: string, seeds: string[], extra: Partial<GossipHostOptions> = {}) {
  return await GossipHost.start({
    ...FAST,
    name,
    bindAddr: "127.0.0.1:0",
    tags: { id: name },
    seeds,
    seed: name.charCodeAt(0),
    ...extra,
  });
}

function udpAddr(addr: string): Deno.NetAddr {
  const [hostname, port] = addr.split(":");
  return { transport: "udp", hostname, port: Number(port) };
}

function rawSocket(): Deno.DatagramConn {
  return Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
}

function addrOf(conn: Deno.DatagramConn): string {
  const a = conn.addr as Deno.NetAddr;
  return `${a.hostname}:${a.port}`;
}

/** Counts what `conn` receives until it is closed. */
function countReceived(conn: Deno.DatagramConn): { count: number; done: Promise<void> } {
  const box = { count: 0, done: Promise.resolve() };
  box.done = (async () => {
    try {
      for (;;) {
        await conn.receive();
        box.count++;
      }
    } catch {
      // closed
    }
  })();
  return box;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fake(i: number, addr = `127.0.0.1:${20_000 + i}`): Member {
  return { name: `fake-${i}`, addr, incarnation: 0, state: "alive", tags: { id: `fake-${i}` } };
}

Deno.test("udp hardening: a datagram over the maximum size is dropped before decoding", async () => {
  const key = generateGossipKey();
  const plain = await start("a", []);
  const keyed = await start("k", [], { keys: [key] });
  const raw = rawSocket();
  try {
    // A well-formed push-pull that is simply too big (the decoder alone would accept it).
    const members = Array.from({ length: 60 }, (_, i) => fake(i));
    const big = encodeMessage({ type: "push-pull", needReply: false, members });
    assert(big.length > MAX_DATAGRAM_BYTES, `${big.length} bytes`);
    await raw.send(big, udpAddr(plain.addr));
    const sealed = await (await Keyring.create([key])).seal(big);
    await raw.send(sealed, udpAddr(keyed.addr));
    await waitFor("oversized counted", () => plain.stats().oversized === 1);
    await waitFor("oversized counted (keyed)", () => keyed.stats().oversized === 1);
    assert(plain.members().length === 1 && keyed.members().length === 1, "nothing learned");
    assert(plain.stats().decodeErrors === 0, "dropped before the decoder");
    assert(keyed.stats().authFailures === 0, "dropped before decryption");
  } finally {
    raw.close();
    await plain.close();
    await keyed.close();
  }
});

Deno.test("udp hardening: a replayed sealed datagram is dropped, inside and outside the window", async () => {
  const key = generateGossipKey();
  const a = await start("a", [], { keys: [key] });
  const ring = await Keyring.create([key]);
  const raw = rawSocket();
  const announce = (name: string): Message => ({
    type: "gossip",
    updates: [{ kind: "alive", name, addr: "127.0.0.1:9", incarnation: 0, tags: {} }],
  });
  try {
    // Recorded long ago: refused by the sealed send time.
    const old = await ring.seal(
      encodeMessage(announce("ghost-old")),
      Date.now() - 2 * REPLAY_WINDOW_MS,
    );
    await raw.send(old, udpAddr(a.addr));
    await waitFor("old datagram counted", () => a.stats().replays === 1);
    assert(!a.members().some((m) => m.name === "ghost-old"), "not applied");
    // Fresh: accepted once; the same bytes again are a replay.
    const fresh = await ring.seal(encodeMessage(announce("ghost")));
    await raw.send(fresh, udpAddr(a.addr));
    await waitFor("fresh datagram applied", () => a.members().some((m) => m.name === "ghost"));
    for (let i = 0; i < 5; i++) await raw.send(fresh, udpAddr(a.addr));
    await waitFor("replays counted", () => a.stats().replays === 6);
    assert(a.stats().authFailures === 0, "replays are not auth failures");
  } finally {
    raw.close();
    await a.close();
  }
});

Deno.test("udp hardening: push-pull and ping-req from a forged source send nothing to forged addresses", async () => {
  const a = await start("a", []);
  const b = await start("b", [a.addr]);
  const victim = rawSocket();
  const other = rawSocket();
  const victimRx = countReceived(victim);
  const otherRx = countReceived(other);
  try {
    await waitFor(
      "a and b converge",
      () =>
        a.members().length === 2 && b.members().every((m) => m.state === "alive") &&
        b.members().length === 2,
    );
    // The victim's own socket plays the spoofed source: every reply would land on it.
    for (let i = 0; i < 50; i++) {
      await victim.send(
        encodeMessage({ type: "push-pull", needReply: true, members: [fake(i, "127.0.0.1:9")] }),
        udpAddr(a.addr),
      );
      await victim.send(
        encodeMessage({
          type: "ping-req",
          seq: i,
          target: i % 2 === 0 ? "b" : "nobody",
          targetAddr: addrOf(other),
          updates: [],
        }),
        udpAddr(a.addr),
      );
    }
    await waitFor("requests counted", () => a.stats().unprovenRequests >= 100);
    await sleep(300);
    assert(victimRx.count === 0, `the forged source received ${victimRx.count} datagrams`);
    assert(otherRx.count === 0, `the forged ping-req target received ${otherRx.count}`);
    const state = (h: GossipHost, name: string) => h.members().find((m) => m.name === name)?.state;
    assert(
      state(a, "b") === "alive" && state(b, "a") === "alive",
      "the real members are untouched",
    );
  } finally {
    victim.close();
    other.close();
    await victimRx.done;
    await otherRx.done;
    await a.close();
    await b.close();
  }
});

Deno.test("udp hardening: a spoofed leave of b at 2^32-1 without a key leaves b alive", async () => {
  const a = await start("a", []);
  const b = await start("b", [a.addr]);
  const raw = rawSocket();
  try {
    await waitFor("converge", () => a.members().filter((m) => m.state === "alive").length === 2);
    for (const kind of ["dead", "suspect"] as const) {
      await raw.send(
        encodeMessage({
          type: "gossip",
          updates: [{ kind, name: "b", incarnation: 0xffff_ffff, from: "b" }],
        }),
        udpAddr(a.addr),
      );
    }
    await sleep(300);
    const seen = a.members().find((m) => m.name === "b")!;
    assert(seen.state === "alive" && seen.incarnation < 1000, JSON.stringify(seen));
  } finally {
    raw.close();
    await a.close();
    await b.close();
  }
});
