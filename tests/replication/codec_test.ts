import { assertEquals, assertThrows } from "../helpers/assert.ts";
import {
  CodecError,
  decodeEntry,
  decodeHardState,
  decodeMessage,
  decodeMessageBatch,
  decodeSnapshotMeta,
  encodeEntry,
  encodeHardState,
  encodeMessage,
  encodeMessageBatch,
  encodeSnapshotMeta,
  peekEntryHeader,
} from "../../src/replication/codec.ts";
import type { Message } from "../../src/raft/types.ts";
import { Gen, MESSAGE_TYPES } from "./_gen.ts";

Deno.test("codec: every message type round-trips with random contents", () => {
  const g = new Gen(1);
  for (const type of MESSAGE_TYPES) {
    for (let i = 0; i < 200; i++) {
      const m = g.message(type);
      assertEquals(decodeMessage(encodeMessage(m)), m, `${type} #${i}`);
    }
  }
});

Deno.test("codec: entries of both types and every config change round-trip", () => {
  const g = new Gen(2);
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const e = g.entry(g.num(), g.num(), 1000);
    seen.add(e.type === "config" ? e.change.type : "normal");
    const bytes = encodeEntry(e);
    assertEquals(decodeEntry(bytes), e);
    assertEquals(peekEntryHeader(bytes), { term: e.term, index: e.index });
  }
  assertEquals(
    [...seen].sort(),
    ["addLearner", "addVoter", "bootstrap", "normal", "promote", "remove"],
  );
});

Deno.test("codec: hard state, snapshot meta and batches round-trip", () => {
  const g = new Gen(3);
  for (let i = 0; i < 500; i++) {
    const hs = g.hardState();
    assertEquals(decodeHardState(encodeHardState(hs)), hs);
    const meta = g.snapshotMeta();
    assertEquals(decodeSnapshotMeta(encodeSnapshotMeta(meta)), meta);
  }
  const batch: Message[] = [];
  for (let i = 0; i < 300; i++) batch.push(g.message(MESSAGE_TYPES[g.int(MESSAGE_TYPES.length)]));
  assertEquals(decodeMessageBatch(encodeMessageBatch(batch)), batch);
  assertEquals(decodeMessageBatch(encodeMessageBatch([])), []);
});

Deno.test("codec: integer edge cases and compactness", () => {
  for (const n of [0, 1, 127, 128, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53 - 1]) {
    const hs = { term: n, vote: "", commit: n };
    assertEquals(decodeHardState(encodeHardState(hs)), hs);
  }
  // An append with 100 entries of 300 bytes costs little more than its payload.
  const entries = Array.from({ length: 100 }, (_, i) => ({
    type: "normal" as const,
    term: 7,
    index: 1_000_000 + i,
    data: new Uint8Array(300),
  }));
  const m: Message = {
    type: "append",
    from: "n1",
    to: "n2",
    term: 7,
    prevIndex: 999_999,
    prevTerm: 7,
    commit: 999_000,
    entries,
  };
  const bytes = encodeMessage(m);
  if (bytes.length > 100 * 300 + 100 * 8 + 32) throw new Error(`append too big: ${bytes.length}`);
  assertThrows(() => encodeHardState({ term: -1, vote: "", commit: 0 }), CodecError);
  assertThrows(() => encodeHardState({ term: 1.5, vote: "", commit: 0 }), CodecError);
  assertThrows(() => encodeHardState({ term: 2 ** 53, vote: "", commit: 0 }), CodecError);
});

Deno.test("codec: every truncation of a valid encoding is rejected", () => {
  const g = new Gen(4);
  for (const type of MESSAGE_TYPES) {
    const bytes = encodeMessage(g.message(type));
    for (let n = 0; n < bytes.length; n++) {
      assertThrows(() => decodeMessage(bytes.subarray(0, n)), CodecError, `${type} cut at ${n}`);
    }
  }
  const e = encodeEntry(g.entry(5, 6, 50));
  for (let n = 0; n < e.length; n++) assertThrows(() => decodeEntry(e.subarray(0, n)), CodecError);
  const hs = encodeHardState(g.hardState());
  for (let n = 0; n < hs.length; n++) {
    assertThrows(() => decodeHardState(hs.subarray(0, n)), CodecError);
  }
  const meta = encodeSnapshotMeta(g.snapshotMeta());
  for (let n = 0; n < meta.length; n++) {
    assertThrows(() => decodeSnapshotMeta(meta.subarray(0, n)), CodecError);
  }
});

Deno.test("codec: trailing bytes, bad versions, tags and garbage are rejected", () => {
  const g = new Gen(5);
  const m = encodeMessage(g.message("heartbeat"));
  const longer = new Uint8Array(m.length + 1);
  longer.set(m);
  assertThrows(() => decodeMessage(longer), CodecError);
  const badVersion = m.slice();
  badVersion[0] = 99;
  assertThrows(() => decodeMessage(badVersion), CodecError);
  const badTag = m.slice();
  badTag[1] = 200;
  assertThrows(() => decodeMessage(badTag), CodecError);
  // A bool byte that is neither 0 nor 1.
  const vr = encodeMessage({ type: "voteResponse", from: "a", to: "b", term: 1, reject: true });
  const badBool = vr.slice();
  badBool[badBool.length - 1] = 2;
  assertThrows(() => decodeMessage(badBool), CodecError);
  // Invalid UTF-8 in a string.
  const badUtf8 = encodeMessage({ type: "timeoutNow", from: "ab", to: "", term: 1 });
  badUtf8[3] = 0xff;
  assertThrows(() => decodeMessage(badUtf8), CodecError);
  // A count that claims more entries than there are bytes.
  const huge = new Uint8Array([1, 10, 0]);
  assertThrows(() => decodeMessageBatch(huge), CodecError);
  // Random garbage never decodes into something with leftovers, and only ever throws CodecError.
  let decoded = 0;
  for (let i = 0; i < 5000; i++) {
    const garbage = g.bytes(64);
    try {
      decodeMessage(garbage);
      decoded++;
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
    }
    try {
      decodeEntry(garbage);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
    }
  }
  if (decoded > 100) throw new Error(`${decoded} of 5000 garbage inputs decoded`);
});
