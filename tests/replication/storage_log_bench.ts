/**
 * Micro benchmark of the stored log (not a test): saves of 300-byte entries with a hard state
 * in batches of 1, 30 and 200 entries, the load of that log, and a snapshot covering all of it
 * while saves go on (how long the compaction takes and how many commits it makes between the
 * saves). `TREE` (default: this checkout) runs another checkout's storage, for a before/after:
 *
 *   deno run -A --unstable-kv tests/replication/storage_log_bench.ts [TREE]
 */
import type { Entry } from "../../src/raft/types.ts";
import type { RaftStorage as Storage } from "../../src/replication/storage.ts";

const tree = Deno.args[0] ?? new URL("../..", import.meta.url).pathname;
const { RaftStorage } = await import(`${tree}/src/replication/storage.ts`) as {
  RaftStorage: typeof Storage;
};
const { normalEntries } = await import(`${tree}/tests/replication/_gen.ts`) as {
  normalEntries: (from: number, count: number, term: number, bytes: number) => Entry[];
};
const CONFIG = { voters: ["n1"], learners: [], addresses: {} };

async function run(batch: number, total: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mokv-log-bench-" });
  try {
    const s = await RaftStorage.open(`${dir}/raft.db`);
    await s.load();
    let t = performance.now();
    for (let i = 1; i <= total; i += batch) {
      const hardState = { term: 1, vote: "n1", commit: i - 1 };
      await s.save({ entries: normalEntries(i, batch, 1, 300), hardState });
    }
    const saveSecs = (performance.now() - t) / 1000;
    s.close();
    t = performance.now();
    const s2 = await RaftStorage.open(`${dir}/raft.db`);
    const loaded = await s2.load();
    const loadMs = performance.now() - t;
    const commitsBefore = s2.stats().commits;
    t = performance.now();
    let next = total + 1;
    let saves = 0;
    let done = false;
    const snapshot = s2.saveSnapshot({
      meta: { index: total, term: 1, config: CONFIG },
      data: new Uint8Array(1000),
    }).then(() => (done = true));
    while (!done) {
      const hardState = { term: 1, vote: "n1", commit: next - 1 };
      await s2.save({ entries: normalEntries(next, batch, 1, 300), hardState });
      next += batch;
      saves++;
    }
    await snapshot;
    const compactionMs = performance.now() - t;
    const commits = s2.stats().commits - commitsBefore - saves;
    s2.close();
    console.log(
      `batch ${batch}: ${total} entries at ${Math.round(total / saveSecs)} entries/s ` +
        `(${Math.round(total / batch / saveSecs)} saves/s); load of ${loaded.entries.length} ` +
        `in ${loadMs.toFixed(0)} ms; compaction ${compactionMs.toFixed(0)} ms, ${commits} ` +
        `snapshot commits, ${saves} saves meanwhile`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

await run(1, 5000);
await run(30, 100_000);
await run(200, 100_000);
