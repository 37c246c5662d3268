/**
 * The log layout of runs (one Deno KV value per batch of consecutive entries): truncation
 * inside a run, runs that straddle the snapshot index, entries bigger than a value, files in
 * the per-entry layout written before runs, and a crash after every commit of each of these.
 */
import { assert as assertTrue, assertEquals } from "../helpers/assert.ts";
import { countKeys, withTempDir } from "./_tmp.ts";
import { normalEntries } from "./_gen.ts";
import { PART_BYTES, RaftStorage, type StorageOptions } from "../../src/replication/storage.ts";
import { ByteWriter } from "../../src/replication/_binary.ts";
import { encodeEntry, encodeHardState } from "../../src/replication/codec.ts";
import type { Entry, HardState, PersistedState, Snapshot } from "../../src/raft/types.ts";

const CONFIG = { voters: ["n1", "n2", "n3"], learners: [], addresses: { n1: "a:1", n2: "b:2" } };
const ZERO_HS: HardState = { term: 0, vote: "", commit: 0 };

async function reopen(path: string): Promise<[RaftStorage, PersistedState]> {
  const s = await RaftStorage.open(path);
  return [s, await s.load()];
}

function big(index: number, term: number, bytes: number): Entry {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 1009) data[i] = (index * 7 + i) & 0xff;
  data[bytes - 1] = index & 0xff;
  return { type: "normal", term, index, data };
}

/**
 * Writes `entries` in the per-entry layout of the storage before runs (one key per entry,
 * split into parts of PART_BYTES, part 0 holding the part count and written last), as a node
 * of an older version left its file, plus the hard state.
 */
async function writeOldLayout(path: string, entries: readonly Entry[], hs: HardState) {
  const kv = await Deno.openKv(path);
  try {
    for (const e of entries) {
      const body = encodeEntry(e);
      const parts = Math.max(1, Math.ceil(body.length / PART_BYTES));
      const op = kv.atomic();
      for (let p = 1; p < parts; p++) {
        op.set(["raft", "log", e.index, p], body.slice(p * PART_BYTES, (p + 1) * PART_BYTES));
      }
      const head = new ByteWriter(PART_BYTES + 8);
      head.varint(parts);
      head.raw(body.subarray(0, PART_BYTES));
      op.set(["raft", "log", e.index, 0], head.finish());
      assertTrue((await op.commit()).ok);
    }
    assertTrue((await kv.set(["raft", "hard"], encodeHardState(hs))).ok);
  } finally {
    kv.close();
  }
}

/**
 * Runs `setup` then `op` on a fresh store, crashing (the hook throws) after commit `k` of `op`,
 * and returns what a reopened store loads (twice: the repair is stable), plus the number of
 * commits `op` needs without a crash.
 */
async function crashAfter(
  path: string,
  k: number,
  setup: (s: RaftStorage, path: string) => Promise<void>,
  op: (s: RaftStorage) => Promise<unknown>,
  options: StorageOptions = {},
): Promise<{ state: PersistedState; opCommits: number }> {
  let crashAt = Infinity;
  let base = 0;
  const s = await RaftStorage.open(path, {
    ...options,
    afterCommit: (n) => {
      if (n === crashAt) throw new Error(`simulated crash after commit ${n - base}`);
    },
  });
  await s.load();
  await setup(s, path);
  base = s.stats().commits;
  crashAt = base + k;
  try {
    await op(s);
  } catch (err) {
    if (!(err as Error).message.startsWith("simulated crash")) throw err;
  }
  const opCommits = s.stats().commits - base;
  s.close();
  const [s2, state] = await reopen(path);
  s2.close();
  const [s3, again] = await reopen(path);
  s3.close();
  assertEquals(again, state, `k=${k}: a second load gives the same state`);
  await Deno.remove(path);
  return { state, opCommits };
}

/** Calls `check` for a crash after every commit of `op`, then for a run without a crash. */
async function everyCrash(
  dir: string,
  setup: (s: RaftStorage, path: string) => Promise<void>,
  op: (s: RaftStorage) => Promise<unknown>,
  check: (state: PersistedState, k: number) => void,
  options: StorageOptions = {},
): Promise<number> {
  const full = await crashAfter(`${dir}/full.db`, Infinity, setup, op, options);
  check(full.state, Infinity);
  for (let k = 1; k < full.opCommits; k++) {
    const { state } = await crashAfter(`${dir}/k${k}.db`, k, setup, op, options);
    check(state, k);
  }
  return full.opCommits;
}

/** Is `log` the old log cut at or after `keep`, or old[..keep] then a prefix of `neu`? */
function assertOldPrefixOrNew(
  log: readonly Entry[],
  old: readonly Entry[],
  keep: number,
  neu: readonly Entry[],
  k: number,
) {
  const n = log.length;
  assertTrue(n >= keep, `k=${k}: ${n} entries, fewer than the ${keep} kept`);
  if (n === keep || log[keep].term === old[keep]?.term) {
    assertEquals(log, old.slice(0, n), `k=${k}`);
  } else {
    assertEquals(log, [...old.slice(0, keep), ...neu.slice(0, n - keep)], `k=${k}`);
  }
}

Deno.test("storage runs: a Ready of many entries is a few values; one commit", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    const entries = normalEntries(1, 1000, 1, 300);
    await s.save({ entries, hardState: { term: 1, vote: "n1", commit: 0 } });
    assertEquals(s.stats().commits, 1);
    s.close();
    const keys = await countKeys(path, ["raft", "log"]);
    assertTrue(keys >= 5 && keys <= 6, `${keys} values for 300 KB of entries`);
    const [s2, st] = await reopen(path);
    assertEquals(st.entries, entries);
    s2.close();
  });
});

Deno.test("storage runs: a truncation inside a run keeps its prefix in place", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    const old = normalEntries(1, 100, 1, 50);
    await s.save({ entries: old });
    const neu = normalEntries(50, 10, 2, 50, 3);
    await s.save({ entries: neu, hardState: { term: 2, vote: "n2", commit: 10 } });
    assertEquals([s.stats().firstIndex, s.stats().lastIndex], [1, 59]);
    // A second truncation inside the rewritten run, then one at a run's first entry.
    const again = normalEntries(20, 5, 3, 50, 5);
    await s.save({ entries: again });
    const atStart = normalEntries(20, 2, 4, 50, 6);
    await s.save({ entries: atStart });
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 2);
    const [s2, st] = await reopen(path);
    assertEquals(st.entries, [...old.slice(0, 19), ...atStart]);
    assertEquals(st.hardState, { term: 2, vote: "n2", commit: 10 });
    s2.close();
  });
});

Deno.test("storage runs: a crash after any commit of a truncation inside a run leaves an old prefix or the new tail", async () => {
  await withTempDir(async (dir) => {
    const options = { maxCommitMutations: 3 }; // runs of at most 3 entries, 3 per commit
    const old = normalEntries(1, 60, 1, 40);
    const neu = normalEntries(32, 40, 2, 40, 9); // 32 is inside the run [31, 33]
    const hs: HardState = { term: 2, vote: "n2", commit: 20 };
    const commits = await everyCrash(
      dir,
      (s) => s.save({ entries: old }),
      (s) => s.save({ entries: neu, hardState: hs }),
      (state, k) => {
        assertOldPrefixOrNew(state.entries, old, 31, neu, k);
        if (k === Infinity) assertEquals(state.entries, [...old.slice(0, 31), ...neu]);
        assertEquals(state.hardState, k === Infinity ? hs : ZERO_HS, `k=${k}`);
      },
      options,
    );
    assertTrue(commits >= 8, `the truncation took ${commits} commits`);
  });
});

Deno.test("storage runs: entries over 60 KiB between small ones are runs of their own, in parts", async () => {
  await withTempDir(async (dir) => {
    const entries: Entry[] = [
      ...normalEntries(1, 5, 1, 100),
      big(6, 1, 200 * 1024),
      ...normalEntries(7, 3, 1, 100),
      big(10, 1, PART_BYTES - 4), // just over one value with its header
      big(11, 1, PART_BYTES - 200), // just under
      ...normalEntries(12, 3, 1, 100),
    ];
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    await s.save({ entries, hardState: { term: 1, vote: "", commit: 14 } });
    s.close();
    // [1..5], 6 in 4 parts, [7..9], 10 in 2 parts, [11], [12..14].
    assertEquals(await countKeys(path, ["raft", "log"]), 1 + 4 + 1 + 2 + 1 + 1);
    const [s2, st] = await reopen(path);
    assertEquals(st.entries, entries);
    s2.close();
    // A crash after any commit loses only a suffix of the batch.
    await everyCrash(
      dir,
      async () => {},
      (s) => s.save({ entries, hardState: { term: 1, vote: "", commit: 14 } }),
      (state, k) => {
        assertEquals(state.entries, entries.slice(0, state.entries.length), `k=${k}`);
      },
      { maxCommitMutations: 2 },
    );
  });
});

Deno.test("storage runs: a run straddling the snapshot index stays until a snapshot covers it", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    const entries = normalEntries(1, 100, 1, 50);
    await s.save({ entries, hardState: { term: 1, vote: "", commit: 100 } });
    const snap: Snapshot = {
      meta: { index: 50, term: 1, config: CONFIG },
      data: new Uint8Array(9),
    };
    await s.saveSnapshot(snap);
    assertEquals([s.stats().firstIndex, s.stats().lastIndex], [51, 100]);
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 1);
    let [s2, st] = await reopen(path);
    assertEquals(st.snapshot, snap);
    assertEquals(st.entries, entries.slice(50));
    // A truncation inside the straddling run rewrites it; its dead entries stay hidden.
    const neu = normalEntries(70, 5, 2, 50, 4);
    await s2.save({ entries: neu });
    s2.close();
    [s2, st] = await reopen(path);
    assertEquals(st.entries, [...entries.slice(50, 69), ...neu]);
    // A leader's snapshot whose term does not match drops the tail inside that run.
    const leader: Snapshot = {
      meta: { index: 60, term: 3, config: CONFIG },
      data: new Uint8Array(3),
    };
    const after = normalEntries(61, 3, 3, 50, 8);
    await s2.save({
      snapshot: leader,
      entries: after,
      hardState: { term: 3, vote: "", commit: 60 },
    });
    s2.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 1);
    [s2, st] = await reopen(path);
    assertEquals(st.snapshot, leader);
    assertEquals(st.entries, after);
    // Covering it entirely deletes it.
    await s2.saveSnapshot({ meta: { index: 63, term: 3, config: CONFIG }, data: new Uint8Array() });
    s2.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 0);
  });
});

Deno.test("storage runs: a crash after any commit of a leader's snapshot cutting inside a run", async () => {
  await withTempDir(async (dir) => {
    const options = { maxCommitMutations: 4 };
    const old = normalEntries(1, 40, 1, 40);
    const leader: Snapshot = {
      meta: { index: 22, term: 2, config: CONFIG }, // 22 is inside the run [21, 24]
      data: new Uint8Array(3 * PART_BYTES + 10),
    };
    const after = normalEntries(23, 6, 2, 40, 5);
    const hs: HardState = { term: 2, vote: "", commit: 22 };
    await everyCrash(
      dir,
      (s) => s.save({ entries: old }),
      (s) => s.save({ snapshot: leader, entries: after, hardState: hs }),
      (state, k) => {
        if (state.snapshot === undefined) {
          // Before the record: a prefix of the old log, at least up to the snapshot.
          assertTrue(state.entries.length >= 22, `k=${k}`);
          assertEquals(state.entries, old.slice(0, state.entries.length), `k=${k}`);
          assertEquals(state.hardState, ZERO_HS, `k=${k}`);
        } else {
          assertEquals(state.snapshot, leader, `k=${k}`);
          assertEquals(state.entries, after.slice(0, state.entries.length), `k=${k}`);
          if (k === Infinity) assertEquals(state.hardState, hs);
        }
      },
      options,
    );
  });
});

Deno.test("storage runs: a file in the per-entry layout loads, truncates and compacts", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const old: Entry[] = [
      { type: "config", term: 1, index: 1, change: { type: "bootstrap" }, config: CONFIG },
      ...normalEntries(2, 18, 1, 80),
      big(20, 1, 130 * 1024),
      ...normalEntries(21, 20, 1, 80),
    ];
    const hs: HardState = { term: 1, vote: "n1", commit: 40 };
    await writeOldLayout(path, old, hs);
    let [s, st] = await reopen(path);
    assertEquals(st.hardState, hs);
    assertEquals(st.entries, old);
    // New runs after the old entries; a truncation inside the old region, past the big one.
    await s.save({ entries: normalEntries(41, 10, 1, 80) });
    const neu = normalEntries(30, 30, 2, 80, 2);
    await s.save({ entries: neu, hardState: { term: 2, vote: "n2", commit: 29 } });
    s.close();
    [s, st] = await reopen(path);
    assertEquals(st.entries, [...old.slice(0, 29), ...neu]);
    // A snapshot covering old keys, the big one included, and part of the new run.
    const snap: Snapshot = {
      meta: { index: 35, term: 2, config: CONFIG },
      data: new Uint8Array(5),
    };
    await s.saveSnapshot(snap);
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 1); // the run [30..59]
    [s, st] = await reopen(path);
    assertEquals(st.snapshot, snap);
    assertEquals(st.entries, neu.slice(6));
    s.close();
  });
});

Deno.test("storage runs: a crash after any commit of a truncation of a per-entry layout file", async () => {
  await withTempDir(async (dir) => {
    const old = normalEntries(1, 30, 1, 60);
    const neu = normalEntries(12, 25, 2, 60, 3);
    const commits = await everyCrash(
      dir,
      async (s, path) => {
        // The old layout, written through a second handle, then loaded by this one.
        await writeOldLayout(path, old, ZERO_HS);
        await s.load();
      },
      (s) => s.save({ entries: neu }),
      (state, k) => assertOldPrefixOrNew(state.entries, old, 11, neu, k),
      { maxCommitMutations: 3 },
    );
    assertTrue(commits >= 7, `took ${commits} commits`);
  });
});

Deno.test("storage runs: a covered run in parts left with only its part 0 is dropped, the live log kept", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.kv`;
    // Entries 1..12 in the per-entry layout, entry 5 in three parts.
    const entries = normalEntries(1, 12, 1, 20).map((e) =>
      e.index === 5 ? big(5, 1, 2 * PART_BYTES + 100) : e
    );
    await writeOldLayout(path, entries, { term: 1, vote: "", commit: 12 });
    const kv = await Deno.openKv(path);
    const part0 = (await kv.get<Uint8Array>(["raft", "log", 5, 0])).value!;
    kv.close();
    let [s, st] = await reopen(path);
    assertEquals(st.entries.length, 12);
    await s.saveSnapshot({ meta: { index: 8, term: 1, config: CONFIG }, data: new Uint8Array() });
    s.close();
    // A covered run half deleted the other way round than compaction does it: part 0 alone.
    const kv2 = await Deno.openKv(path);
    assertTrue((await kv2.set(["raft", "log", 5, 0], part0)).ok);
    kv2.close();
    [s, st] = await reopen(path);
    assertEquals(st.entries.map((e) => e.index), [9, 10, 11, 12], "the live log stays");
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 4, "the leftover part 0 is gone");
  });
});
