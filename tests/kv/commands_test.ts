import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { InvalidArgumentError } from "../../src/errors.ts";
import { type Command, decodeCommand, encodeCommand } from "../../src/kv/mod.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

const samples: Command[] = [
  { type: "set", key: "a", value: bytes("1"), timeMs: 5 },
  { type: "set", key: "ключ/🔑", value: new Uint8Array([0, 255, 7]), timeMs: 2 ** 52 },
  { type: "delete", key: "gone", timeMs: 0, session: { clientId: "c1", seq: 9 } },
  { type: "append", key: "log", value: new Uint8Array(0), timeMs: 1 },
  {
    type: "cas",
    key: "k",
    value: bytes("new"),
    expectValue: bytes("old"),
    timeMs: 3,
    session: { clientId: "", seq: 1 },
  },
  { type: "cas", key: "k", value: bytes("v"), expectVersion: 0, timeMs: 3 },
  { type: "cas", key: "k", value: bytes("v"), expectVersion: 2 ** 53 - 1, timeMs: 3 },
];

Deno.test("every command round-trips through the binary encoding", () => {
  for (const cmd of samples) {
    const encoded = encodeCommand(cmd);
    assertEquals(encoded[0], 2, "version byte first");
    assertEquals(decodeCommand(encoded), cmd);
  }
});

Deno.test("decoded values are copies, not views into the log entry", () => {
  const encoded = encodeCommand({ type: "set", key: "a", value: bytes("xyz"), timeMs: 1 });
  const cmd = decodeCommand(encoded);
  encoded.fill(0);
  if (cmd.type !== "set") throw new Error("expected set");
  assertEquals(new TextDecoder().decode(cmd.value), "xyz");
});

Deno.test("garbage and truncated input throw InvalidArgumentError", () => {
  const good = encodeCommand(samples[4]);
  const garbage: Uint8Array[] = [
    new Uint8Array(0),
    new Uint8Array([2, 1, 0]),
    new Uint8Array([1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    new TextEncoder().encode('{"type":"set"}'),
    good.subarray(0, good.length - 1),
    new Uint8Array([...good, 0]),
  ];
  for (let i = 1; i < good.length; i++) garbage.push(good.subarray(0, i));
  for (const g of garbage) assertThrows(() => decodeCommand(g), InvalidArgumentError);
});

Deno.test("encode refuses invalid commands", () => {
  assertThrows(
    () => encodeCommand({ type: "cas", key: "k", value: bytes("v"), timeMs: 1 }),
    InvalidArgumentError,
  );
  assertThrows(
    () =>
      encodeCommand({
        type: "cas",
        key: "k",
        value: bytes("v"),
        expectValue: bytes("a"),
        expectVersion: 1,
        timeMs: 1,
      }),
    InvalidArgumentError,
  );
  assertThrows(
    () =>
      encodeCommand({ type: "delete", key: "k", timeMs: 1, session: { clientId: "c", seq: 0 } }),
    InvalidArgumentError,
  );
  assertThrows(() => encodeCommand({ type: "delete", key: "k", timeMs: -1 }), InvalidArgumentError);
});
