import { startMallocTrim } from "../../src/node/malloc_trim.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

Deno.test("malloc trim runs on its interval where glibc is, and stops", async () => {
  const trimmer = startMallocTrim(5);
  try {
    if (Deno.build.os !== "linux") {
      assert(!trimmer.available, "malloc_trim is glibc's: off elsewhere");
      return;
    }
    assert(trimmer.available, "glibc's malloc_trim opens under --allow-all on Linux");
    // Bounded: at most 200 waits of 10 ms for the first calls.
    for (let i = 0; i < 200 && trimmer.stats().calls < 2; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const { calls, seconds } = trimmer.stats();
    assert(calls >= 2, `calls: ${calls}`);
    assert(seconds >= 0 && Number.isFinite(seconds), `seconds: ${seconds}`);
  } finally {
    trimmer.stop();
  }
  const after = trimmer.stats().calls;
  await new Promise((r) => setTimeout(r, 30));
  assert(trimmer.stats().calls === after, "no call after stop");
});

Deno.test("malloc trim with interval 0 never runs", () => {
  const trimmer = startMallocTrim(0);
  assert(!trimmer.available, "0 turns it off");
  assertStats(trimmer.stats());
  trimmer.stop();
});

function assertStats(s: { calls: number; seconds: number }): void {
  assert(s.calls === 0 && s.seconds === 0, `stats ${JSON.stringify(s)}`);
}
