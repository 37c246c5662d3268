/**
 * Limits the state machine enforces from the command itself, identically on every replica:
 * the value limit (no Append can grow a value past `max-value-bytes`, however many race) and
 * the data-size quota (`quota-bytes`: writes that grow the data get RESOURCE_EXHAUSTED,
 * deletes and shrinking writes still work), with a metric for the alarm.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import type { Command, CommandResult } from "../../src/kv/mod.ts";
import { encodeCommand, KvStateMachine } from "../../src/kv/mod.ts";
import { createNodeMetrics } from "../../src/metrics/mod.ts";
import { decodeResult, encodeResult } from "../../src/replication/forward.ts";
import { createKvServiceHandlers, LocalBackend } from "../../src/server/mod.ts";
import { unaryAs } from "../security/_handler_calls.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** A LocalBackend whose writes wait a moment before they apply, as replication does. */
class SlowBackend extends LocalBackend {
  override async apply(cmd: Command): Promise<CommandResult> {
    await new Promise((r) => setTimeout(r, 5));
    return await super.apply(cmd);
  }
}

Deno.test("concurrent Appends past the limit: the state machine refuses, the value never exceeds it", async () => {
  const backend = new SlowBackend();
  const kv = createKvServiceHandlers({ backend, maxValueBytes: MIB });
  const chunk = new Uint8Array(300 * KIB).fill(7);
  const outcomes = await Promise.all(
    Array.from({ length: 8 }, () => unaryAs(kv, "Append", "", { key: "grow", value: chunk })),
  );
  const ok = outcomes.filter((o) => o.code === grpc.status.OK);
  const refused = outcomes.filter((o) => o.code === grpc.status.INVALID_ARGUMENT);
  assertEquals([ok.length, refused.length], [3, 5]);
  for (const r of refused) {
    assert(/^value is \d+ bytes; the limit is 1048576$/.test(r.details), r.details);
  }
  assertEquals(backend.stateMachine.get("grow")!.value.length, 900 * KIB);
  // the node keeps serving
  const after = await unaryAs(kv, "Append", "", { key: "grow", value: new Uint8Array(10) });
  assertEquals(after.code, grpc.status.OK);
});

Deno.test("the value limit travels in the entry: every replica refuses the same writes", () => {
  const entries = [
    { type: "set", key: "k", value: new Uint8Array(6), timeMs: 0, maxValueBytes: 10 },
    { type: "append", key: "k", value: new Uint8Array(4), timeMs: 0, maxValueBytes: 10 },
    { type: "append", key: "k", value: new Uint8Array(1), timeMs: 0, maxValueBytes: 10 },
    { type: "set", key: "k", value: new Uint8Array(11), timeMs: 0, maxValueBytes: 10 },
    {
      type: "cas",
      key: "k",
      value: new Uint8Array(11),
      expectVersion: 2,
      timeMs: 0,
      maxValueBytes: 10,
    },
  ] as const satisfies readonly Command[];
  const replicas = [new KvStateMachine(), new KvStateMachine({ sessionTtlMs: 5 })];
  const results = replicas.map((sm) => entries.map((e, i) => sm.apply(i + 1, encodeCommand(e))));
  assertEquals(results[0], results[1]);
  assertEquals(results[0][2], {
    ok: false,
    version: 0,
    refused: { reason: "value-too-large", sizeBytes: 11, limitBytes: 10 },
  });
  assertEquals(results[0][3].refused?.reason, "value-too-large");
  assertEquals(results[0][4].refused?.reason, "value-too-large");
  for (const sm of replicas) {
    const e = sm.get("k");
    assertEquals({ value: e?.value, version: e?.version }, {
      value: new Uint8Array(10),
      version: 2,
    });
  }
});

Deno.test("quota: writes that grow the data above it get RESOURCE_EXHAUSTED; deletes still work", async () => {
  const backend = new LocalBackend();
  const quotaBytes = 10 * KIB;
  const kv = createKvServiceHandlers({ backend, quotaBytes });
  const fill = new Uint8Array(3 * KIB);
  for (const key of ["a", "b", "c"]) {
    assertEquals((await unaryAs(kv, "Set", "", { key, value: fill })).code, grpc.status.OK);
  }
  const over = await unaryAs(kv, "Set", "", { key: "d", value: fill });
  assertEquals(over.code, grpc.status.RESOURCE_EXHAUSTED);
  assertEquals(
    over.details,
    `data-size quota of ${quotaBytes} bytes exceeded (this write would store ${
      4 * (3 * KIB + 1)
    }); delete keys to free space`,
  );
  assertEquals(backend.stateMachine.get("d"), undefined);
  assert(backend.stateMachine.quotaAlarm);
  for (
    const [method, req] of [
      ["Append", { key: "a", value: fill }],
      ["CompareAndSet", { key: "d", value: fill, expect_version: 0 }],
    ] as const
  ) {
    assertEquals((await unaryAs(kv, method, "", req)).code, grpc.status.RESOURCE_EXHAUSTED);
  }
  // the same size and smaller still go through; so does a failed compare
  assertEquals((await unaryAs(kv, "Set", "", { key: "a", value: fill })).code, grpc.status.OK);
  const cas = await unaryAs<{ ok: boolean }>(kv, "CompareAndSet", "", {
    key: "a",
    value: fill,
    expect_version: 99,
  });
  assertEquals([cas.code, cas.response?.ok], [grpc.status.OK, false]);
  assertEquals(
    (await unaryAs(kv, "Set", "", { key: "b", value: new Uint8Array(10) })).code,
    grpc.status.OK,
  );
  assert(!backend.stateMachine.quotaAlarm, "a shrinking write clears the alarm");
  assertEquals((await unaryAs(kv, "Set", "", { key: "d", value: fill })).code, grpc.status.OK);
  assertEquals(
    (await unaryAs(kv, "Set", "", { key: "e", value: fill })).code,
    grpc.status.RESOURCE_EXHAUSTED,
  );
  const del = await unaryAs<{ existed: boolean }>(kv, "Delete", "", { key: "c" });
  assertEquals([del.code, del.response?.existed], [grpc.status.OK, true]);
  assertEquals((await unaryAs(kv, "Set", "", { key: "e", value: fill })).code, grpc.status.OK);
  assert(backend.stateMachine.byteCount <= quotaBytes);
});

Deno.test("a refusal survives the forwarding wire and the session cache", () => {
  const refused: CommandResult = {
    ok: false,
    version: 0,
    refused: { reason: "quota-exceeded", sizeBytes: 2 ** 40, limitBytes: 2 ** 31 },
  };
  assertEquals(decodeResult(encodeResult(refused)), refused);
  const sm = new KvStateMachine();
  const cmd = encodeCommand({
    type: "set",
    key: "k",
    value: new Uint8Array(20),
    timeMs: 0,
    quotaBytes: 10,
    session: { subject: "s", clientId: "c", seq: 1 },
  });
  const first = sm.apply(1, cmd);
  assertEquals(first.refused?.reason, "quota-exceeded");
  assertEquals(sm.apply(2, cmd), first);
});

Deno.test("metrics: mokv_quota_bytes and mokv_quota_alarm are gauges", async () => {
  const m = createNodeMetrics({ processMetrics: false });
  m.quotaBytes.set(2 * 1024 * MIB);
  m.quotaAlarm.set(1);
  const text = await m.registry.metrics();
  assert(text.includes("# TYPE mokv_quota_bytes gauge\nmokv_quota_bytes 2147483648"), text);
  assert(text.includes("# TYPE mokv_quota_alarm gauge\nmokv_quota_alarm 1"), text);
});
