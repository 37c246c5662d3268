import { SeededRng, shuffle } from "../../src/rng.ts";

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

Deno.test("rng: one seed gives one sequence; values stay in range and spread evenly", () => {
  const a = new SeededRng(123);
  const b = new SeededRng(123);
  const c = new SeededRng(124);
  const sa = Array.from({ length: 100 }, () => a.nextUint32());
  const sb = Array.from({ length: 100 }, () => b.nextUint32());
  const sc = Array.from({ length: 100 }, () => c.nextUint32());
  assert(sa.join() === sb.join(), "same seed, same sequence");
  assert(sa.join() !== sc.join(), "different seeds differ");
  const r = new SeededRng(9);
  const buckets = new Array(10).fill(0);
  for (let i = 0; i < 100_000; i++) {
    const f = r.float();
    assert(f >= 0 && f < 1, `float ${f}`);
    buckets[r.int(10)]++;
  }
  assert(buckets.every((n) => n > 9_500 && n < 10_500), `uneven: ${buckets}`);
  const items = shuffle(new SeededRng(1), Array.from({ length: 50 }, (_, i) => i));
  assert([...items].sort((x, y) => x - y).every((v, i) => v === i), "shuffle is a permutation");
});
