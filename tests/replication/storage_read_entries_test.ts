/**
 * `RaftStorage.readEntries`: the stored entries of a range read back from their runs (the
 * host sends evicted entries from there), across runs and entries in parts, and undefined for
 * what is not stored any more (compacted by a snapshot, beyond the log, truncated away).
 */
import { assertEquals } from "../helpers/assert.ts";
import { withTempDir } from "./_tmp.ts";
import { normalEntries } from "./_gen.ts";
import { PART_BYTES, RaftStorage } from "../../src/replication/storage.ts";
import type { Entry } from "../../src/raft/types.ts";

const CONFIG = { voters: ["n1"], learners: [], addresses: { n1: "a:1" } };

function same(got: readonly Entry[] | undefined, want: readonly Entry[]): void {
  assertEquals(got?.length, want.length);
  for (let i = 0; i < want.length; i++) {
    const g: Entry = got![i];
    const w: Entry = want[i];
    assertEquals([g.index, g.term, g.type], [w.index, w.term, w.type]);
    if (g.type === "normal" && w.type === "normal") assertEquals([...g.data], [...w.data]);
  }
}

Deno.test("storage: readEntries reads ranges back across runs and entries in parts", async () => {
  await withTempDir(async (dir) => {
    const s = await RaftStorage.open(`${dir}/kv`, { maxCommitMutations: 7 });
    try {
      await s.load();
      const small = normalEntries(1, 40, 1, 100);
      const large = normalEntries(41, 2, 2, PART_BYTES * 2 + 5);
      const more = normalEntries(43, 30, 2, 50);
      await s.save({ entries: small });
      await s.save({ entries: [...large, ...more] });
      const all = [...small, ...large, ...more];
      same(await s.readEntries(1, 72), all);
      same(await s.readEntries(5, 5), all.slice(4, 5));
      same(await s.readEntries(6, 13), all.slice(5, 13));
      same(await s.readEntries(39, 44), all.slice(38, 44));
      assertEquals(await s.readEntries(5, 4), []);
      assertEquals(await s.readEntries(70, 73), undefined, "beyond the log");
      assertEquals(await s.readEntries(0, 3), undefined, "before the log");
    } finally {
      s.close();
    }
  });
});

Deno.test("storage: readEntries answers undefined once a snapshot compacted or a truncation replaced them", async () => {
  await withTempDir(async (dir) => {
    const s = await RaftStorage.open(`${dir}/kv`, { maxCommitMutations: 5 });
    try {
      await s.load();
      const entries = normalEntries(1, 30, 1, 64);
      await s.save({ entries });
      await s.saveSnapshot({
        meta: { index: 12, term: 1, config: CONFIG },
        data: new Uint8Array(9),
      });
      assertEquals(await s.readEntries(10, 14), undefined, "12 and below are compacted");
      same(await s.readEntries(13, 20), entries.slice(12, 20));
      // A new leader's entries replace 25.. : the range is what the log holds now.
      const replaced = normalEntries(25, 3, 2, 10);
      await s.save({ entries: replaced });
      assertEquals(await s.readEntries(20, 30), undefined, "the log ends at 27 now");
      same(await s.readEntries(20, 27), [...entries.slice(19, 24), ...replaced]);
      // A read racing with the compaction: started before it, answered after it.
      const racing = s.readEntries(13, 16);
      await s.saveSnapshot({
        meta: { index: 20, term: 1, config: CONFIG },
        data: new Uint8Array(9),
      });
      const got = await racing;
      if (got !== undefined) same(got, entries.slice(12, 16));
      assertEquals(await s.readEntries(13, 16), undefined);
    } finally {
      s.close();
    }
  });
});
