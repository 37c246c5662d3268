import { assert as assertTrue, assertEquals, assertRejects } from "../helpers/assert.ts";
import { countKeys, withTempDir } from "./_tmp.ts";
import { Gen, normalEntries } from "./_gen.ts";
import {
  PART_BYTES,
  RaftStorage,
  StorageError,
  type StorageOptions,
} from "../../src/replication/storage.ts";
import type { Entry, HardState, PersistedState, Snapshot } from "../../src/raft/types.ts";

const CONFIG = { voters: ["n1", "n2", "n3"], learners: [], addresses: { n1: "a:1", n2: "b:2" } };

async function reopen(path: string): Promise<[RaftStorage, PersistedState]> {
  const s = await RaftStorage.open(path);
  return [s, await s.load()];
}

function randomBytes(g: Gen, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 4096) out[i] = g.int(256);
  out[n - 1] = g.int(256);
  return out;
}

Deno.test("storage: empty file loads the zero state; parent directories are created", async () => {
  await withTempDir(async (dir) => {
    const [s, st] = await reopen(`${dir}/a/b/raft.db`);
    assertEquals(st, {
      hardState: { term: 0, vote: "", commit: 0 },
      snapshot: undefined,
      entries: [],
    });
    s.close();
  });
});

Deno.test("storage: round trip across close/reopen; a normal Ready is one commit", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const g = new Gen(10);
    const [s] = await reopen(path);
    const entries: Entry[] = [
      { type: "config", term: 1, index: 1, change: { type: "bootstrap" }, config: CONFIG },
    ];
    for (let i = 2; i <= 100; i++) entries.push(g.entry(i, 1 + (i >> 5), 300));
    const hs: HardState = { term: 4, vote: "n2", commit: 90 };
    await s.save({ hardState: hs, entries });
    assertEquals(s.stats().commits, 1);
    assertTrue(s.stats().bytesWritten > 100 * 100);
    // A hard-state-only save, then an append.
    await s.save({ hardState: { ...hs, commit: 100 }, entries: [] });
    const more = normalEntries(101, 10, 4, 300);
    await s.save({ entries: more });
    assertEquals(s.stats().commits, 3);
    assertEquals(s.stats().lastIndex, 110);
    s.close();
    const [s2, st] = await reopen(path);
    assertEquals(st.hardState, { ...hs, commit: 100 });
    assertEquals(st.snapshot, undefined);
    assertEquals(st.entries, [...entries, ...more]);
    s2.close();
  });
});

Deno.test("storage: a conflicting tail is truncated and replaced", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    const old = normalEntries(1, 50, 1, 100);
    // Entry 40 is a big multi-part entry: its parts must go too.
    old[39] = { type: "normal", term: 1, index: 40, data: new Uint8Array(3 * PART_BYTES) };
    await s.save({ entries: old, hardState: { term: 1, vote: "n1", commit: 20 } });
    const replacement = normalEntries(30, 6, 2, 100, 7);
    await s.save({ entries: replacement, hardState: { term: 2, vote: "n3", commit: 20 } });
    assertEquals(s.stats().lastIndex, 35);
    s.close();
    const [s2, st] = await reopen(path);
    assertEquals(st.entries, [...old.slice(0, 29), ...replacement]);
    assertEquals(st.hardState, { term: 2, vote: "n3", commit: 20 });
    // Appending after the truncation continues at 36.
    await s2.save({ entries: normalEntries(36, 2, 2, 10) });
    s2.close();
    // Runs: [1..29] (cut inside and rewritten), [30..35], [36..37].
    assertEquals(await countKeys(path, ["raft", "log"]), 3);
    const [s3, st3] = await reopen(path);
    assertEquals(st3.entries.length, 37);
    s3.close();
  });
});

Deno.test("storage: a batch of 5,000 entries is split into several commits", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    // 5 MB: runs of 60 KiB, at most 760 KiB of them per commit.
    const entries = normalEntries(1, 5000, 3, 1000);
    await s.save({ entries, hardState: { term: 3, vote: "n1", commit: 0 } });
    assertTrue(s.stats().commits >= 6, `commits: ${s.stats().commits}`);
    s.close();
    const [s2, st] = await reopen(path);
    assertEquals(st.entries, entries);
    s2.close();
  });
});

Deno.test("storage: 1 MiB entries are split across values and read back whole", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const g = new Gen(11);
    const [s] = await reopen(path);
    const entries: Entry[] = [];
    for (let i = 1; i <= 4; i++) {
      entries.push({ type: "normal", term: 1, index: i, data: randomBytes(g, 1024 * 1024) });
    }
    await s.save({ entries, hardState: { term: 1, vote: "", commit: 4 } });
    s.close();
    const perEntry = Math.ceil((1024 * 1024 + 16) / PART_BYTES);
    assertEquals(await countKeys(path, ["raft", "log"]), 4 * perEntry);
    const [s2, st] = await reopen(path);
    assertEquals(st.entries, entries);
    // Overwrite from 3 with small entries: every part of the big 3 and 4 disappears.
    await s2.save({ entries: normalEntries(3, 1, 2, 10) });
    s2.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 2 * perEntry + 1);
    const [s3, st3] = await reopen(path);
    assertEquals(st3.entries, [...entries.slice(0, 2), ...normalEntries(3, 1, 2, 10)]);
    s3.close();
  });
});

Deno.test("storage: snapshots replace the log they cover and older snapshots", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const g = new Gen(12);
    const [s] = await reopen(path);
    const entries = normalEntries(1, 100, 2, 200);
    await s.save({ entries, hardState: { term: 2, vote: "n1", commit: 100 } });
    const snap1: Snapshot = {
      meta: { index: 60, term: 2, config: CONFIG },
      data: randomBytes(g, 5 * 1024 * 1024),
    };
    await s.saveSnapshot(snap1);
    assertEquals(s.stats().firstIndex, 61);
    s.close();
    // One run of the 100 entries: it straddles the snapshot index, so it stays.
    assertEquals(await countKeys(path, ["raft", "log"]), 1);
    assertEquals(
      await countKeys(path, ["raft", "snap"]),
      Math.ceil(snap1.data.length / PART_BYTES),
    );
    let [s2, st] = await reopen(path);
    assertEquals(st.snapshot, snap1);
    assertEquals(st.entries, entries.slice(60));

    const snap2: Snapshot = {
      meta: { index: 90, term: 2, config: { ...CONFIG, learners: ["n4"] } },
      data: randomBytes(g, 3 * 1024 * 1024 + 5),
    };
    await s2.saveSnapshot(snap2);
    s2.close();
    assertEquals(
      await countKeys(path, ["raft", "snap"]),
      Math.ceil(snap2.data.length / PART_BYTES),
    );
    assertEquals(await countKeys(path, ["raft", "log"]), 1);
    [s2, st] = await reopen(path);
    assertEquals(st.snapshot, snap2);
    assertEquals(st.entries, entries.slice(90));
    // Compacting everything leaves only the snapshot; appending continues after it.
    const snap3: Snapshot = {
      meta: { index: 100, term: 2, config: CONFIG },
      data: new Uint8Array(),
    };
    await s2.saveSnapshot(snap3);
    await s2.save({ entries: normalEntries(101, 3, 3, 20) });
    // An older snapshot is refused.
    await assertRejects(s2.saveSnapshot(snap1), StorageError);
    s2.close();
    [s2, st] = await reopen(path);
    assertEquals(st.snapshot, snap3);
    assertEquals(st.entries, normalEntries(101, 3, 3, 20));
    s2.close();
  });
});

Deno.test("storage: a snapshot from the leader keeps a matching tail and drops a conflicting one", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    await s.save({ entries: normalEntries(1, 50, 2, 50) });
    // Matching at 30 (term 2): entries 31..50 stay.
    const matching: Snapshot = {
      meta: { index: 30, term: 2, config: CONFIG },
      data: new Uint8Array([1]),
    };
    await s.save({ snapshot: matching, entries: [], hardState: { term: 3, vote: "", commit: 30 } });
    assertEquals([s.stats().firstIndex, s.stats().lastIndex], [31, 50]);
    // Conflicting at 40 (term 5 vs 2): the whole tail goes; new entries follow the snapshot.
    const conflicting: Snapshot = {
      meta: { index: 40, term: 5, config: CONFIG },
      data: new Uint8Array([2]),
    };
    const after = normalEntries(41, 5, 5, 50, 3);
    await s.save({
      snapshot: conflicting,
      entries: after,
      hardState: { term: 5, vote: "", commit: 40 },
    });
    s.close();
    const [s2, st] = await reopen(path);
    assertEquals(st.snapshot, conflicting);
    assertEquals(st.entries, after);
    assertEquals(st.hardState, { term: 5, vote: "", commit: 40 });
    // A lagging follower: a snapshot far beyond its log replaces it all.
    const far: Snapshot = {
      meta: { index: 500, term: 6, config: CONFIG },
      data: new Uint8Array(10),
    };
    await s2.save({ snapshot: far, entries: [] });
    s2.close();
    const [s3, st3] = await reopen(path);
    assertEquals(st3.snapshot, far);
    assertEquals(st3.entries, []);
    s3.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 0);
  });
});

Deno.test("storage: misuse is refused with StorageError", async () => {
  await withTempDir(async (dir) => {
    const s = await RaftStorage.open(`${dir}/raft.db`);
    await assertRejects(
      s.save({ entries: normalEntries(1, 1, 1, 1) }),
      StorageError,
      "before load",
    );
    await s.load();
    await assertRejects(s.save({ entries: normalEntries(2, 1, 1, 1) }), StorageError, "gap");
    const bad = [...normalEntries(1, 2, 1, 1), ...normalEntries(4, 1, 1, 1)];
    await assertRejects(s.save({ entries: bad }), StorageError, "not contiguous");
    await s.save({ entries: normalEntries(1, 3, 1, 1) });
    s.close();
  });
});

/**
 * Runs `setup` then `op` on a fresh store, crashing (the hook throws) after commit `k` of `op`,
 * and returns what a reopened store loads, plus the number of commits `op` needs without crash.
 */
async function crashAfter(
  dir: string,
  k: number,
  setup: (s: RaftStorage) => Promise<void>,
  op: (s: RaftStorage) => Promise<void>,
  options: StorageOptions = {},
): Promise<{ state: PersistedState; crashed: boolean; opCommits: number }> {
  const path = `${dir}/raft-${k}.db`;
  let crashAt = Infinity;
  const s = await RaftStorage.open(path, {
    ...options,
    afterCommit: (n) => {
      if (n === crashAt) throw new Error(`simulated crash after commit ${n}`);
    },
  });
  await s.load();
  await setup(s);
  const base = s.stats().commits;
  crashAt = base + k;
  let crashed = false;
  try {
    await op(s);
  } catch (err) {
    if (!(err as Error).message.startsWith("simulated crash")) throw err;
    crashed = true;
    // Once failed, the store refuses further writes.
    await assertRejects(s.save({ entries: [] }), StorageError);
  }
  const opCommits = s.stats().commits - base;
  s.close();
  const [s2, state] = await reopen(path);
  // The repaired store accepts writes again, and loading twice gives the same state.
  s2.close();
  const [s3, again] = await reopen(path);
  s3.close();
  assertEquals(again, state);
  await Deno.remove(path);
  return { state, crashed, opCommits };
}

Deno.test("storage: a crash between the commits of a split batch loads a consistent state", async () => {
  await withTempDir(async (dir) => {
    const old = normalEntries(1, 1500, 1, 2000);
    const oldHs: HardState = { term: 1, vote: "n1", commit: 900 };
    const neu = normalEntries(1000, 2500, 2, 2000, 9);
    const newHs: HardState = { term: 2, vote: "n2", commit: 950 };
    const setup = (s: RaftStorage) => s.save({ entries: old, hardState: oldHs });
    const op = (s: RaftStorage) => s.save({ entries: neu, hardState: newHs });
    const full = await crashAfter(dir, Infinity, setup, op);
    assertTrue(full.opCommits >= 4, `op took ${full.opCommits} commits`);
    assertEquals(full.state.entries, [...old.slice(0, 999), ...neu]);
    for (let k = 1; k < full.opCommits; k++) {
      const { state, crashed } = await crashAfter(dir, k, setup, op);
      assertTrue(crashed);
      // The log is a prefix of the old log, or the old log up to 999 plus a prefix of the new.
      const n = state.entries.length;
      if (n <= 999 || state.entries[n - 1].term === 1) {
        assertEquals(state.entries, old.slice(0, n), `k=${k}`);
      } else {
        assertEquals(state.entries, [...old.slice(0, 999), ...neu.slice(0, n - 999)], `k=${k}`);
      }
      // The hard state is written last.
      assertEquals(state.hardState, oldHs, `k=${k}`);
    }
  });
});

Deno.test("storage: a crash while deleting a long conflicting tail leaves an old prefix", async () => {
  await withTempDir(async (dir) => {
    // Runs of at most 4 entries and 4 mutations per commit: 75 runs, 19 commits of deletes.
    const options = { maxCommitMutations: 4 };
    const old = normalEntries(1, 300, 1, 50);
    const neu = normalEntries(10, 3, 2, 50, 5);
    const setup = (s: RaftStorage) => s.save({ entries: old });
    const op = (s: RaftStorage) =>
      s.save({ entries: neu, hardState: { term: 2, vote: "", commit: 5 } });
    const full = await crashAfter(dir, Infinity, setup, op, options);
    assertTrue(full.opCommits >= 3, `op took ${full.opCommits} commits`);
    assertEquals(full.state.entries, [...old.slice(0, 9), ...neu]);
    for (let k = 1; k < full.opCommits; k++) {
      const { state } = await crashAfter(dir, k, setup, op, options);
      const n = state.entries.length;
      assertTrue(n > 9 && n < 300, `k=${k}: ${n} entries`);
      assertEquals(state.entries, old.slice(0, n), `k=${k}`);
      assertEquals(state.hardState, { term: 0, vote: "", commit: 0 });
    }
  });
});

Deno.test("storage: a crash while writing 1 MiB entries drops only the incomplete entry", async () => {
  await withTempDir(async (dir) => {
    const g = new Gen(13);
    const big: Entry[] = [];
    for (let i = 1; i <= 3; i++) {
      big.push({ type: "normal", term: 1, index: i, data: randomBytes(g, 1024 * 1024) });
    }
    const setup = async () => {};
    const op = (s: RaftStorage) =>
      s.save({ entries: big, hardState: { term: 1, vote: "", commit: 0 } });
    const full = await crashAfter(dir, Infinity, setup, op);
    assertEquals(full.state.entries, big);
    for (let k = 1; k < full.opCommits; k++) {
      const { state } = await crashAfter(dir, k, setup, op);
      assertEquals(state.entries, big.slice(0, state.entries.length), `k=${k}`);
      assertTrue(state.entries.length < 3, `k=${k}`);
    }
  });
});

Deno.test("storage: a crash while replacing a snapshot keeps the old or the new one, never a mix", async () => {
  await withTempDir(async (dir) => {
    const g = new Gen(14);
    const entries = normalEntries(1, 2500, 1, 100);
    const snap1: Snapshot = {
      meta: { index: 100, term: 1, config: CONFIG },
      data: randomBytes(g, 2 * 1024 * 1024),
    };
    const snap2: Snapshot = {
      meta: { index: 2000, term: 1, config: CONFIG },
      data: randomBytes(g, 5 * 1024 * 1024),
    };
    const setup = async (s: RaftStorage) => {
      await s.save({ entries, hardState: { term: 1, vote: "", commit: 2500 } });
      await s.saveSnapshot(snap1);
    };
    const op = (s: RaftStorage) => s.saveSnapshot(snap2);
    const full = await crashAfter(dir, Infinity, setup, op);
    assertEquals(full.state.snapshot, snap2);
    assertEquals(full.state.entries, entries.slice(2000));
    let sawOld = false;
    let sawNew = false;
    for (let k = 1; k < full.opCommits; k++) {
      const { state } = await crashAfter(dir, k, setup, op);
      if (state.snapshot?.meta.index === 100) {
        sawOld = true;
        assertEquals(state.snapshot, snap1, `k=${k}`);
        assertEquals(state.entries, entries.slice(100), `k=${k}`);
      } else {
        sawNew = true;
        assertEquals(state.snapshot, snap2, `k=${k}`);
        assertEquals(state.entries, entries.slice(2000), `k=${k}`);
      }
    }
    assertTrue(sawOld && sawNew, "crashes hit both sides of the snapshot record");
  });
});

Deno.test("storage: leftovers of a crash are cleaned by load", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const g = new Gen(15);
    let crash = false;
    const s = await RaftStorage.open(path, {
      afterCommit: () => {
        if (crash) throw new Error("simulated crash");
      },
    });
    await s.load();
    await s.save({ entries: normalEntries(1, 10, 1, 10) });
    const snap: Snapshot = {
      meta: { index: 5, term: 1, config: CONFIG },
      data: randomBytes(g, 2 * 1024 * 1024),
    };
    crash = true;
    await assertRejects(s.saveSnapshot(snap), Error);
    s.close();
    // The first chunk commit happened: orphan chunks exist until load.
    assertTrue(await countKeys(path, ["raft", "snap"]) > 0);
    const [s2, st] = await reopen(path);
    assertEquals(st.snapshot, undefined);
    assertEquals(st.entries, normalEntries(1, 10, 1, 10));
    s2.close();
    assertEquals(await countKeys(path, ["raft", "snap"]), 0);
  });
});

Deno.test("storage: a snapshot beyond the stored log with the entries after it is one Ready", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const [s] = await reopen(path);
    await s.save({ entries: normalEntries(1, 10, 2, 50) });
    // A follower far behind gets the leader's snapshot at 500 and, in the same Ready,
    // the entries the leader appended right after it.
    const far: Snapshot = {
      meta: { index: 500, term: 6, config: CONFIG },
      data: new Uint8Array(8),
    };
    const after = normalEntries(501, 3, 6, 50, 7);
    await s.save({ snapshot: far, entries: after, hardState: { term: 6, vote: "", commit: 500 } });
    s.close();
    const [s2, st] = await reopen(path);
    assertEquals(st.snapshot, far);
    assertEquals(st.entries, after);
    assertEquals([s2.stats().firstIndex, s2.stats().lastIndex], [501, 503]);
    s2.close();
  });
});
