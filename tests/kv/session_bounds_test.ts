/**
 * Client sessions are bounded by bytes and scoped to the certificate subject, and their expiry
 * does not follow the fastest clock (issues 13 and 14). Each scenario is the attack or the
 * accident as a client would see it, then the state machine rules behind it.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import {
  type Command,
  decodeCommand,
  encodeCommand,
  KvStateMachine,
  MAX_CLIENT_ID_BYTES,
  MAX_CLOCK_STEP_MS,
  SESSION_OVERHEAD_BYTES,
} from "../../src/kv/mod.ts";
import { createKvServiceHandlers, LocalBackend } from "../../src/server/mod.ts";
import { call, callError, startHarness } from "../server/_helpers.ts";
import { unaryAs } from "../security/_handler_calls.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const HOUR_MS = 3_600_000;

/** Applies commands at consecutive indexes, like the replication host does. */
class Driver {
  index = 0;
  constructor(readonly sm = new KvStateMachine()) {}
  run(cmd: Command) {
    return this.sm.apply(++this.index, encodeCommand(cmd));
  }
}

Deno.test("a 2 MiB client_id gets INVALID_ARGUMENT and the node keeps serving", async () => {
  const h = await startHarness();
  try {
    const huge = "x".repeat(2 * 1024 * 1024);
    for (const method of [h.kv.Set, h.kv.Append] as const) {
      const err = await callError(h.kv, method, {
        key: "k",
        value: te.encode("v"),
        client_id: huge,
        seq: 1,
      });
      assertEquals(err.code, grpc.status.INVALID_ARGUMENT);
      assertEquals(err.details, `client_id is ${huge.length} bytes; the limit is 128`);
    }
    const del = await callError(h.kv, h.kv.Delete, { key: "k", client_id: huge, seq: 1 });
    assertEquals(del.code, grpc.status.INVALID_ARGUMENT);
    assertEquals(h.backend.stateMachine.sessionCount, 0);
    assertEquals(h.backend.stateMachine.get("k"), undefined);
    // exactly the limit is fine, one byte more is not (UTF-8 bytes, not characters)
    const max = "é".repeat(MAX_CLIENT_ID_BYTES / 2);
    await call(h.kv, h.kv.Set, { key: "k", value: te.encode("v"), client_id: max, seq: 1 });
    const over = await callError(h.kv, h.kv.Set, {
      key: "k",
      value: te.encode("v"),
      client_id: `${max}x`,
      seq: 1,
    });
    assertEquals(over.code, grpc.status.INVALID_ARGUMENT);
    const got = await call(h.kv, h.kv.Get, { key: "k" });
    assertEquals(td.decode(got.value), "v");
  } finally {
    await h.close();
  }
});

Deno.test("100,001 fresh sessions of one subject do not evict another subject's session", async () => {
  const backend = new LocalBackend();
  const kv = createKvServiceHandlers({ backend, authorize: () => true });
  const mine = { key: "log", value: te.encode("x"), client_id: "real", seq: 1 };
  const first = await unaryAs(kv, "Append", "bob", mine);
  assertEquals(first.code, grpc.status.OK);
  for (let i = 0; i < 100_001; i++) {
    const out = await unaryAs(kv, "Set", "mallory", {
      key: "junk",
      value: te.encode("j"),
      client_id: `fresh-${i}`,
      seq: 1,
    });
    if (out.code !== grpc.status.OK) throw new Error(`set ${i}: ${out.details}`);
  }
  const retry = await unaryAs(kv, "Append", "bob", mine);
  assertEquals(retry, first);
  assertEquals(td.decode(backend.stateMachine.get("log")!.value), "x");
  assert(backend.stateMachine.sessionCount <= 100_001);
});

Deno.test("the same client_id under two subjects is two sessions", async () => {
  const backend = new LocalBackend();
  const kv = createKvServiceHandlers({ backend, authorize: () => true });
  const req = { key: "log", value: te.encode("a"), client_id: "c1", seq: 1 };
  await unaryAs(kv, "Append", "alice", req);
  // bob's first write with the same id must apply, not return alice's cached result
  const bob = await unaryAs<{ length: number }>(kv, "Append", "bob", req);
  assertEquals(bob.response?.length, 2);
  assertEquals(td.decode(backend.stateMachine.get("log")!.value), "aa");
  assertEquals(backend.stateMachine.sessionCount, 2);
});

Deno.test("sessions are bounded by bytes per subject, and in all without hurting small subjects", () => {
  const d = new Driver(
    new KvStateMachine({ maxSessionBytesPerSubject: 64 * 1024, maxSessionBytes: 160 * 1024 }),
  );
  const id = (i: number) => `${i}`.padStart(MAX_CLIENT_ID_BYTES, "z");
  const write = (subject: string, clientId: string) =>
    d.run({
      type: "set",
      key: "k",
      value: te.encode("v"),
      timeMs: 0,
      session: { subject, clientId, seq: 1 },
    });
  const perSession = SESSION_OVERHEAD_BYTES + "bob".length + MAX_CLIENT_ID_BYTES;
  write("small", "mine");
  for (let i = 0; i < 10_000; i++) write("bob", id(i));
  assert(d.sm.sessionBytes <= 160 * 1024, `${d.sm.sessionBytes}`);
  // bob keeps its most recent sessions within its own budget
  const bobSessions = Math.floor((64 * 1024) / perSession);
  assertEquals(d.sm.sessionCount, bobSessions + 1);
  // a failed CAS caches the current value: it counts against the budget too
  d.run({ type: "set", key: "big", value: new Uint8Array(40 * 1024), timeMs: 0 });
  for (let i = 0; i < 5; i++) {
    d.run({
      type: "cas",
      key: "big",
      value: te.encode("x"),
      expectVersion: 999,
      timeMs: 0,
      session: { subject: "carol", clientId: `c${i}`, seq: 1 },
    });
  }
  assert(d.sm.sessionBytes <= 160 * 1024, `${d.sm.sessionBytes}`);
  // many subjects each within budget: the global bound evicts from the largest, never "small"
  for (const s of ["dave", "erin", "frank"]) for (let i = 0; i < 400; i++) write(s, id(i));
  assert(d.sm.sessionBytes <= 160 * 1024, `${d.sm.sessionBytes}`);
  const retried = write("small", "mine");
  assertEquals(
    retried.version,
    1,
    "small's session survived: the retry returned the cached result",
  );
});

Deno.test("a node whose clock is an hour ahead does not expire sessions (retries apply once)", async () => {
  const backend = new LocalBackend();
  let realMs = 1_000_000;
  const normal = createKvServiceHandlers({ backend, nowMs: () => realMs, clockSource: "n1" });
  const ahead = createKvServiceHandlers({
    backend,
    nowMs: () => realMs + HOUR_MS + 5_000,
    clockSource: "n2",
  });
  const write = { key: "log", value: te.encode("x"), client_id: "c", seq: 1 };
  const first = await unaryAs(normal, "Append", "", write);
  realMs += 10;
  // one request lands on the skewed node
  await unaryAs(ahead, "Set", "", { key: "other", value: te.encode("y") });
  realMs += 10;
  const retry = await unaryAs(normal, "Append", "", write);
  assertEquals(retry, first);
  assertEquals(td.decode(backend.stateMachine.get("log")!.value), "x");
  assertEquals(backend.stateMachine.sessionCount, 1);
});

Deno.test("log time: new sources anchor, jumps are bounded, real elapsed time still expires", () => {
  const d = new Driver(new KvStateMachine({ sessionTtlMs: HOUR_MS }));
  const session = { clientId: "c", seq: 1 };
  d.run({ type: "set", key: "k", value: te.encode("1"), timeMs: 500, clockSource: "a", session });
  assertEquals(d.sm.logTimeMs, 0);
  // an hour ahead, from a source seen for the first time: anchored, no move
  d.run({ type: "set", key: "x", value: te.encode("1"), timeMs: 500 + HOUR_MS, clockSource: "b" });
  assertEquals(d.sm.logTimeMs, 0);
  // a known source whose readings jump an hour: at most one step per command
  d.run({
    type: "set",
    key: "x",
    value: te.encode("2"),
    timeMs: 500 + 2 * HOUR_MS,
    clockSource: "b",
  });
  assertEquals(d.sm.logTimeMs, MAX_CLOCK_STEP_MS);
  assertEquals(d.sm.sessionCount, 1);
  // a reading that goes backwards (a restart) re-anchors without moving
  d.run({ type: "set", key: "x", value: te.encode("3"), timeMs: 7, clockSource: "a" });
  assertEquals(d.sm.logTimeMs, MAX_CLOCK_STEP_MS);
  // a retry is still deduplicated
  const retry = d.run({
    type: "set",
    key: "k",
    value: te.encode("1"),
    timeMs: 8,
    clockSource: "a",
    session,
  });
  assertEquals(retry.version, 1);
  // time that really passes (steps of 30 s from one source) expires the session after the TTL
  let reading = 8;
  while (d.sm.logTimeMs <= 2 * HOUR_MS && d.sm.sessionCount > 0) {
    reading += 30_000;
    d.run({ type: "delete", key: "none", timeMs: reading, clockSource: "a" });
  }
  assertEquals(d.sm.sessionCount, 0);
  assert(d.sm.logTimeMs > HOUR_MS && d.sm.logTimeMs <= HOUR_MS + MAX_CLOCK_STEP_MS + 30_000 * 3);
});

Deno.test("snapshots keep subjects and clock anchors; a version 1 snapshot still restores", () => {
  const d = new Driver();
  d.run({ type: "set", key: "a", value: te.encode("1"), timeMs: 10, clockSource: "n1" });
  d.run({
    type: "append",
    key: "a",
    value: te.encode("2"),
    timeMs: 20,
    clockSource: "n1",
    maxValueBytes: 1,
    session: { subject: "alice", clientId: "c", seq: 3 },
  });
  const image = d.sm.snapshot();
  const other = new KvStateMachine();
  other.restore(image);
  assertEquals(other.snapshot(), image);
  assertEquals([other.sessionCount, other.sessionBytes], [d.sm.sessionCount, d.sm.sessionBytes]);
  // the cached refusal answers the retry; the same id under another subject is fresh
  const retried = other.apply(
    3,
    encodeCommand({
      type: "append",
      key: "a",
      value: te.encode("2"),
      timeMs: 25,
      clockSource: "n1",
      maxValueBytes: 1,
      session: { subject: "alice", clientId: "c", seq: 3 },
    }),
  );
  assertEquals(retried.refused, { reason: "value-too-large", sizeBytes: 2, limitBytes: 1 });
  assertEquals(other.logTimeMs, 15, "the restored anchor of n1 counts from reading 20");

  // Version 1 (before subjects): magic, version, appliedIndex, logTime, entries, sessions.
  const v1 = new Bytes()
    .raw([0x4d, 0x4b, 0x56, 0x53, 1]).u53(7).u53(1000).u53(1)
    .str("k").u53(5).blob(te.encode("old"))
    .u32(1).str("c1").u53(2).u53(900).raw([1 | 16]).u53(6).u53(3)
    .done();
  const restored = new KvStateMachine();
  restored.restore(v1);
  assertEquals([restored.appliedIndex, restored.logTimeMs, restored.sessionCount], [7, 1000, 1]);
  assertEquals(td.decode(restored.get("k")!.value), "old");
  // the old session belongs to subject "": its retry is still deduplicated
  const again = restored.apply(
    8,
    encodeCommand({
      type: "append",
      key: "k",
      value: te.encode("!"),
      timeMs: 0,
      session: { clientId: "c1", seq: 2 },
    }),
  );
  assertEquals(again, { ok: true, version: 6, length: 3 });
  assertEquals(td.decode(restored.get("k")!.value), "old");
});

Deno.test("a version 1 log entry still decodes and applies", () => {
  const v1 = new Bytes()
    .raw([1, 3, 1]).u53(42).str("log").str("c9").u53(4).blob(te.encode("tail"))
    .done();
  assertEquals(decodeCommand(v1), {
    type: "append",
    key: "log",
    timeMs: 42,
    session: { clientId: "c9", seq: 4 },
    value: te.encode("tail"),
  });
  const sm = new KvStateMachine();
  assertEquals(sm.apply(1, v1), { ok: true, version: 1, length: 4 });
});

/** A little big-endian writer for hand-made old-format images. */
class Bytes {
  #out: number[] = [];
  raw(b: number[]): this {
    this.#out.push(...b);
    return this;
  }
  u32(v: number): this {
    this.#out.push((v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
    return this;
  }
  u53(v: number): this {
    return this.u32(Math.floor(v / 2 ** 32)).u32(v % 2 ** 32);
  }
  blob(b: Uint8Array): this {
    this.u32(b.length);
    this.#out.push(...b);
    return this;
  }
  str(s: string): this {
    return this.blob(te.encode(s));
  }
  done(): Uint8Array {
    return new Uint8Array(this.#out);
  }
}
