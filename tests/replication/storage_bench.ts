/**
 * Micro benchmark of RaftStorage: 100-entry batches (300-byte payloads) plus a hard state per
 * save, the shape of a busy leader's Ready. Not a test.
 *
 *   deno run --allow-all --unstable-kv tests/replication/storage_bench.ts [batches]
 *   deno bench --allow-all --unstable-kv tests/replication/storage_bench.ts
 */
import { RaftStorage } from "../../src/replication/storage.ts";
import { normalEntries } from "./_gen.ts";

const BATCH_ENTRIES = 100;
const ENTRY_BYTES = 300;

async function run(batches: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mokv-storage-bench-" });
  try {
    const s = await RaftStorage.open(`${dir}/raft.db`);
    await s.load();
    const lat: number[] = [];
    const start = performance.now();
    for (let b = 0; b < batches; b++) {
      const first = b * BATCH_ENTRIES + 1;
      const entries = normalEntries(first, BATCH_ENTRIES, 1, ENTRY_BYTES);
      const t = performance.now();
      await s.save({ entries, hardState: { term: 1, vote: "n1", commit: first - 1 } });
      lat.push(performance.now() - t);
    }
    const secs = (performance.now() - start) / 1000;
    lat.sort((a, b) => a - b);
    const st = s.stats();
    s.close();
    console.log(
      `${batches} saves of ${BATCH_ENTRIES} x ${ENTRY_BYTES} B: ` +
        `${Math.round((batches * BATCH_ENTRIES) / secs)} entries/s, ` +
        `${Math.round(batches / secs)} saves/s, ${st.commits} commits, ` +
        `p50 ${lat[Math.floor(lat.length / 2)].toFixed(2)} ms, ` +
        `p99 ${lat[Math.floor(lat.length * 0.99)].toFixed(2)} ms, ` +
        `${(st.bytesWritten / secs / 1e6).toFixed(1)} MB/s`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  await run(Number(Deno.args[0] ?? 500));
} else {
  const dir = Deno.makeTempDirSync({ prefix: "mokv-storage-bench-" });
  const s = await RaftStorage.open(`${dir}/raft.db`);
  await s.load();
  let next = 1;
  Deno.bench(`save ${BATCH_ENTRIES} entries of ${ENTRY_BYTES} B + hard state`, async () => {
    const entries = normalEntries(next, BATCH_ENTRIES, 1, ENTRY_BYTES);
    await s.save({ entries, hardState: { term: 1, vote: "n1", commit: next - 1 } });
    next += BATCH_ENTRIES;
  });
  globalThis.addEventListener("unload", () => {
    s.close();
    Deno.removeSync(dir, { recursive: true });
  });
}
