import { assert as assertTrue, assertEquals } from "../helpers/assert.ts";
import { countKeys, withTempDir } from "./_tmp.ts";
import { Gen, normalEntries } from "./_gen.ts";
import { RaftStorage } from "../../src/replication/storage.ts";
import type { Snapshot } from "../../src/raft/types.ts";

const CONFIG = { voters: ["n1", "n2", "n3"], learners: [], addresses: { n1: "a:1", n2: "b:2" } };

function randomBytes(g: Gen, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 4096) out[i] = g.int(256);
  out[n - 1] = g.int(256);
  return out;
}

Deno.test("storage: log saves go between the commits of a snapshot write", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const g = new Gen(31);
    const s = await RaftStorage.open(path);
    await s.load();
    const entries = normalEntries(1, 3000, 1, 100);
    await s.save({ entries, hardState: { term: 1, vote: "", commit: 3000 } });
    const commitsBefore = s.stats().commits;
    // 5 MiB of chunks (several commits) and 2,500 deletes (three commits at 1,000 each).
    const snap: Snapshot = {
      meta: { index: 2500, term: 1, config: CONFIG },
      data: randomBytes(g, 5 * 1024 * 1024),
    };
    const order: string[] = [];
    const snapshotDone = s.saveSnapshot(snap).then(() => order.push("snapshot"));
    const more = normalEntries(3001, 20, 1, 100);
    const saveDone = s.save({ entries: more, hardState: { term: 1, vote: "", commit: 3010 } })
      .then(() => order.push("save"));
    await Promise.all([snapshotDone, saveDone]);
    assertEquals(order, ["save", "snapshot"]);
    assertTrue(s.stats().commits - commitsBefore > 4, "the snapshot took several commits");
    assertEquals(s.stats().firstIndex, 2501);
    assertEquals(s.stats().lastIndex, 3020);
    s.close();
    // Runs of 60 KiB: [2201..2750] straddles the snapshot index and stays.
    assertEquals(await countKeys(path, ["raft", "log"]), 3);
    const s2 = await RaftStorage.open(path);
    const st = await s2.load();
    assertEquals(st.snapshot, snap);
    assertEquals(st.entries, [...entries.slice(2500), ...more]);
    assertEquals(st.hardState.commit, 3010);
    // The next snapshot replaces this one's chunks.
    const snap2: Snapshot = {
      meta: { index: 3010, term: 1, config: CONFIG },
      data: randomBytes(g, 100 * 1024),
    };
    await s2.saveSnapshot(snap2);
    s2.close();
    assertEquals(await countKeys(path, ["raft", "snap"]), 2);
    assertEquals(await countKeys(path, ["raft", "log"]), 1); // the run [3001..3020]
  });
});

Deno.test("storage: a crash at any commit of a snapshot write with saves between loads a whole state", async () => {
  await withTempDir(async (dir) => {
    const g = new Gen(32);
    const entries = normalEntries(1, 2000, 1, 100);
    const more = normalEntries(2001, 5, 1, 100);
    const snap: Snapshot = {
      meta: { index: 1500, term: 1, config: CONFIG },
      data: randomBytes(g, 2 * 1024 * 1024),
    };
    let sawOld = false;
    let sawNew = false;
    // k runs over every commit of the two writes, until a run goes through without a crash.
    for (let k = 1, crashed = true; crashed && k <= 100; k++) {
      const path = `${dir}/raft-${k}.db`;
      let commits = 0;
      let armed = false;
      const s = await RaftStorage.open(path, {
        afterCommit: () => {
          if (armed && ++commits === k) throw new Error("simulated crash");
        },
      });
      await s.load();
      await s.save({ entries, hardState: { term: 1, vote: "", commit: 2000 } });
      armed = true;
      const results = await Promise.allSettled([
        s.saveSnapshot(snap),
        s.save({ entries: more }),
      ]);
      s.close();
      crashed = results.some((r) => r.status === "rejected");
      const s2 = await RaftStorage.open(path);
      const st = await s2.load();
      s2.close();
      const moreStored = st.entries.length > 0 &&
        st.entries[st.entries.length - 1].index === 2005;
      if (results[1].status === "fulfilled") assertTrue(moreStored, `k=${k}: a durable save lost`);
      const tail = moreStored ? more : [];
      if (st.snapshot === undefined) {
        sawOld = true;
        assertEquals(st.entries, [...entries, ...tail], `k=${k}`);
      } else {
        sawNew = true;
        assertEquals(st.snapshot, snap, `k=${k}`);
        assertEquals(st.entries, [...entries.slice(1500), ...tail], `k=${k}`);
      }
    }
    assertTrue(sawOld && sawNew, "crashes hit both sides of the snapshot record");
  });
});
