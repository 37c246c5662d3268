import { SeededRng } from "../../src/rng.ts";
import {
  decodeMessage,
  encodedSizeBytes,
  encodeMessage,
  ENCRYPTION_OVERHEAD_BYTES,
  GossipDecodeError,
  MAX_DATAGRAM_BYTES,
  type Member,
  MemberTooLargeError,
  type Message,
  Swim,
  WIRE_VERSION,
} from "../../src/membership/mod.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

/** JSON with object keys sorted, so equal values compare equal whatever their key order. */
function canonical(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) =>
      x && typeof x === "object" && !Array.isArray(x)
        ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a < b ? -1 : 1))
        : x,
  );
}

function rejects(bytes: Uint8Array, what: string): void {
  try {
    decodeMessage(bytes);
  } catch (e) {
    assert(e instanceof GossipDecodeError, `${what}: threw ${e} instead of GossipDecodeError`);
    return;
  }
  throw new Error(`${what}: decoded ${Array.from(bytes).join(",")}`);
}

const SAMPLES: Message[] = [
  {
    type: "ping",
    seq: 0xffff_ffff,
    target: "nöde-1",
    updates: [
      {
        kind: "alive",
        name: "a",
        addr: "10.0.0.1:8401",
        incarnation: 7,
        tags: { id: "a", rpc_addr: "10.0.0.1:8400" },
      },
      { kind: "suspect", name: "b", incarnation: 128, from: "a" },
      { kind: "dead", name: "c", incarnation: 0, from: "c" },
    ],
  },
  { type: "ping-req", seq: 300, target: "b", targetAddr: "[::1]:8401", updates: [] },
  { type: "ack", seq: 1, updates: [{ kind: "dead", name: "d", incarnation: 16384, from: "e" }] },
  {
    type: "gossip",
    updates: [{ kind: "alive", name: "😀", addr: "h:1", incarnation: 0, tags: {} }],
  },
  {
    type: "push-pull",
    needReply: true,
    members: (["alive", "suspect", "failed", "left"] as const).map((state, i) => ({
      name: `m${i}`,
      addr: `127.0.0.1:${8000 + i}`,
      tags: { id: `m${i}`, rpc_addr: `127.0.0.1:${9000 + i}`, zone: "eu-west" },
      incarnation: i * 1000,
      state,
    })),
  },
  { type: "push-pull", needReply: false, members: [] },
];

Deno.test("codec: every message type round-trips, with the exact computed size", () => {
  for (const msg of SAMPLES) {
    const bytes = encodeMessage(msg);
    assert(bytes[0] === WIRE_VERSION, "version byte first");
    assert(bytes.length === encodedSizeBytes(msg), `size of ${msg.type}`);
    const back = decodeMessage(bytes);
    assert(canonical(back) === canonical(msg), `round trip of ${msg.type}`);
  }
});

Deno.test("codec: every truncation, a trailing byte and a wrong version are rejected", () => {
  for (const msg of SAMPLES) {
    const bytes = encodeMessage(msg);
    for (let n = 0; n < bytes.length; n++) rejects(bytes.subarray(0, n), `${msg.type} cut at ${n}`);
    rejects(Uint8Array.of(...bytes, 0), `${msg.type} with a trailing byte`);
    rejects(Uint8Array.of(WIRE_VERSION + 1, ...bytes.subarray(1)), `${msg.type} version 2`);
  }
  rejects(Uint8Array.of(WIRE_VERSION, 3, 0x80, 0x00, 0), "overlong varint");
  rejects(Uint8Array.of(WIRE_VERSION, 3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0), "varint over 32 bits");
  rejects(Uint8Array.of(WIRE_VERSION, 4, 1, 1, 1, 0xff, 0, 1, 0), "invalid UTF-8");
  rejects(Uint8Array.of(WIRE_VERSION, 9), "unknown type");
  rejects(Uint8Array.of(WIRE_VERSION, 5, 2, 0), "unknown push-pull flag");
  rejects(Uint8Array.of(WIRE_VERSION, 4, 1, 9, 1, 0x61, 0, 1, 0x61), "unknown update kind");
  const dup = Uint8Array.of(WIRE_VERSION, 4, 1, 1, 1, 0x61, 0, 1, 0x61, 2, 1, 0x6b, 0, 1, 0x6b, 0);
  rejects(dup, "duplicate tag key");
});

Deno.test("codec: random garbage and mutated datagrams are rejected or decode canonically", () => {
  const rng = new SeededRng(7);
  let accepted = 0;
  const check = (bytes: Uint8Array, what: string) => {
    let msg: Message;
    try {
      msg = decodeMessage(bytes);
    } catch (e) {
      assert(e instanceof GossipDecodeError, `${what}: threw ${e}`);
      return;
    }
    accepted++;
    const again = encodeMessage(msg);
    assert(
      again.length === bytes.length && again.every((b, i) => b === bytes[i]),
      `${what}: accepted a non-canonical encoding`,
    );
  };
  for (let i = 0; i < 20_000; i++) {
    const bytes = Uint8Array.from({ length: rng.int(64) }, () => rng.int(256));
    if (bytes.length > 0 && bytes[0] !== WIRE_VERSION) rejects(bytes, `garbage #${i}`);
    else check(bytes, `garbage #${i}`);
    const valid = encodeMessage(SAMPLES[rng.int(SAMPLES.length)]);
    const mutated = valid.slice();
    for (let k = 1 + rng.int(3); k > 0; k--) mutated[rng.int(mutated.length)] = rng.int(256);
    check(mutated, `mutation #${i}`);
  }
  console.log(`  ${accepted} of 40000 random inputs happened to be valid and canonical`);
});

function bigMember(i: number): Member {
  const tags: Record<string, string> = {
    id: `node-${i}`,
    rpc_addr: `10.1.${i >> 8}.${i & 255}:8400`,
  };
  for (let t = 0; t < 8; t++) tags[`tag-${t}-${"k".repeat(20)}`] = "v".repeat(80);
  return {
    name: `node-${i}-${"n".repeat(40)}`,
    addr: `10.1.${i >> 8}.${i & 255}:8401`,
    tags,
    incarnation: 0xffff_fff0 + (i % 10),
    state: "alive",
  };
}

Deno.test("codec: datagrams stay under 1400 bytes with many members and long tags", () => {
  const core = new Swim({
    name: "self",
    addr: "10.0.0.1:8401",
    tags: bigMember(0).tags,
    rng: new SeededRng(1),
  });
  const members = Array.from({ length: 300 }, (_, i) => bigMember(i + 1));
  for (let i = 0; i < members.length; i += 1) {
    core.step("10.9.9.9:1", { type: "push-pull", needReply: false, members: [members[i]] });
  }
  core.ready();
  // A newcomer asks for the full state; it gets a hello ping, and once it acks, the state
  // comes back split, every member exactly once.
  const newcomer: Member = { ...bigMember(301), addr: "10.0.0.2:8401", incarnation: 0 };
  core.step("10.0.0.2:8401", { type: "push-pull", needReply: true, members: [newcomer] });
  const hello = core.ready().messages.find((o) => o.msg.type === "ping" && o.to === newcomer.addr);
  assert(hello?.msg.type === "ping", "hello ping to the newcomer");
  core.step(newcomer.addr, { type: "ack", seq: hello.msg.seq, updates: [] });
  const seen = new Set<string>();
  let datagrams = 0;
  const bound = MAX_DATAGRAM_BYTES - ENCRYPTION_OVERHEAD_BYTES;
  for (const out of core.ready().messages) {
    const bytes = encodeMessage(out.msg);
    assert(
      bytes.length <= core.config.maxPayloadBytes && bytes.length < bound,
      `${bytes.length} bytes`,
    );
    if (out.msg.type === "push-pull") {
      datagrams++;
      for (const m of out.msg.members) seen.add(m.name);
    }
  }
  assert(seen.size === 302, `push-pull carried ${seen.size} of 302 members`);
  assert(datagrams > 100, `expected the state split over many datagrams, got ${datagrams}`);
  // With 300 fresh updates queued, every probe, ack and gossip still fits.
  for (let t = 0; t < 400; t++) {
    core.tick();
    core.step("10.0.0.3:8401", { type: "ping", seq: t, target: "self", updates: [] });
    for (const out of core.ready().messages) {
      const size = encodeMessage(out.msg).length;
      assert(size <= core.config.maxPayloadBytes, `${out.msg.type} of ${size} bytes`);
    }
  }
});

Deno.test("codec: a member too large for one datagram is refused up front", () => {
  const tags = { id: "x", blob: "b".repeat(1100) };
  let threw = false;
  try {
    new Swim({ name: "x", addr: "h:1", tags, rng: new SeededRng(1) });
  } catch (e) {
    threw = e instanceof MemberTooLargeError;
  }
  assert(threw, "constructor must throw MemberTooLargeError");
  const core = new Swim({ name: "x", addr: "h:1", tags: { id: "x" }, rng: new SeededRng(1) });
  threw = false;
  try {
    core.setTags(tags);
  } catch (e) {
    threw = e instanceof MemberTooLargeError;
  }
  assert(threw, "setTags must throw MemberTooLargeError");
  assert(core.member("x")!.tags["blob"] === undefined, "refused tags must not be applied");
});
