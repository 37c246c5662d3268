import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { MAX_SLAB_VALUE_BYTES, SLAB_BYTES, ValueArena } from "../../src/kv/value_arena.ts";
import { encodeCommand, KvStateMachine } from "../../src/kv/mod.ts";

Deno.test("a copied value owns its bytes: changing the source changes nothing", () => {
  const arena = new ValueArena();
  const src = new Uint8Array(1 << 20).fill(1);
  const v = arena.copy(src.subarray(10, 266));
  src.fill(2);
  assertEquals(v.length, 256);
  assert(v.every((b) => b === 1));
  assert(v.buffer !== src.buffer);
  assertEquals(v.buffer.byteLength, SLAB_BYTES);
  const big = arena.copy(new Uint8Array(MAX_SLAB_VALUE_BYTES + 1));
  assertEquals(big.buffer.byteLength, MAX_SLAB_VALUE_BYTES + 1);
  assertEquals(arena.liveBytes, 256 + MAX_SLAB_VALUE_BYTES + 1);
});

Deno.test("overwrites leave the slabs pinned within about twice the live bytes", () => {
  const sm = new KvStateMachine({ historyRevisions: 1 });
  const keys = 2000;
  let index = 0;
  const value = (round: number) => new Uint8Array(256).fill(round & 0xff);
  for (let round = 0; round < 120; round++) {
    for (let k = 0; k < keys; k++) {
      const key = `k${(k * 7919 + round * 31) % keys}`;
      sm.apply(++index, encodeCommand({ type: "set", key, value: value(round), timeMs: 0 }));
    }
  }
  assertEquals(sm.keyCount, keys);
  for (const item of sm.list()) assert(item.value.every((b) => b === 119), item.key);
  // The arena is private: bound what the state pins through the distinct buffers it holds.
  const buffers = new Set<ArrayBufferLike>();
  for (const item of sm.list()) buffers.add(item.value.buffer);
  const pinned = buffers.size * SLAB_BYTES;
  assert(pinned <= Math.max(8 * 1024 * 1024, 2.6 * keys * 256), `pinned ${pinned}`);
});

Deno.test("a restored state does not pin the snapshot it came from", () => {
  const sm = new KvStateMachine();
  for (let i = 1; i <= 500; i++) {
    sm.apply(
      i,
      encodeCommand({ type: "set", key: `k${i}`, value: new Uint8Array(100), timeMs: 0 }),
    );
  }
  const snap = sm.snapshot();
  const copy = new KvStateMachine();
  copy.restore(snap);
  for (const item of copy.list()) assert(item.value.buffer !== snap.buffer);
  assertEquals([...copy.list()].length, 500);
});
