import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { BinaryReader, BinaryWriter, utf8Length } from "../../src/kv/_binary.ts";
import { InvalidArgumentError } from "../../src/errors.ts";

Deno.test("binary: strings round-trip, ASCII and not, short and long", () => {
  const strings = [
    "",
    "k000000000000001",
    "a".repeat(64),
    "a".repeat(65),
    "clé",
    "é".repeat(40),
    "key/😀/x",
    "\u007f\u0080",
    "x".repeat(63) + "é",
  ];
  let size = 0;
  for (const s of strings) size += 4 + utf8Length(s);
  const w = new BinaryWriter(size);
  for (const s of strings) w.str(s, utf8Length(s));
  const r = new BinaryReader(w.bytes);
  for (const s of strings) assertEquals(r.str(), s);
  r.end();
});

Deno.test("binary: a wrong byte length and invalid UTF-8 are refused", () => {
  assertThrows(() => new BinaryWriter(16).str("é", 1), InvalidArgumentError);
  const bad = new Uint8Array([0, 0, 0, 2, 0xc3, 0x28]);
  assertThrows(() => new BinaryReader(bad).str(), InvalidArgumentError);
});
