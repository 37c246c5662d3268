/**
 * Restart-time benchmark (not a test): builds a state machine of N MiB (4 KiB values), stores
 * it as a snapshot in a Deno KV file, and times loading and restoring it, which is what a
 * restarting node does. `deno run -A --unstable-kv tests/replication/restore_bench.ts 1024`.
 */
import { encodeCommand, KvStateMachine } from "../../src/kv/mod.ts";
import { RaftStorage } from "../../src/replication/storage.ts";
const mb = Number(Deno.args[0] ?? 256);
const valueSize = 4096;
const n = Math.floor(mb * 1024 * 1024 / valueSize);
const fsm = new KvStateMachine();
const v = new Uint8Array(valueSize).fill(7);
let t = performance.now();
for (let i = 1; i <= n; i++) {
  fsm.apply(
    i,
    encodeCommand({
      type: "set",
      key: `key-${i.toString().padStart(10, "0")}`,
      value: v,
      timeMs: 1,
    }),
  );
}
console.log(`built ${n} keys in ${(performance.now() - t).toFixed(0)} ms`);
t = performance.now();
const snap = fsm.snapshot();
console.log(
  `snapshot() ${(snap.length / 1048576).toFixed(0)} MB in ${(performance.now() - t).toFixed(0)} ms`,
);
const dir = await Deno.makeTempDir();
const st = await RaftStorage.open(`${dir}/raft.kv`);
await st.load();
t = performance.now();
await st.saveSnapshot({
  meta: { index: n, term: 1, config: { voters: ["a"], learners: [], addresses: {} } },
  data: snap,
});
console.log(`saveSnapshot in ${(performance.now() - t).toFixed(0)} ms`);
st.close();
t = performance.now();
const st2 = await RaftStorage.open(`${dir}/raft.kv`);
const p = await st2.load();
console.log(`load in ${(performance.now() - t).toFixed(0)} ms`);
t = performance.now();
const fsm2 = new KvStateMachine();
fsm2.restore(p.snapshot!.data);
console.log(`restore in ${(performance.now() - t).toFixed(0)} ms, keys ${fsm2.keyCount}`);
st2.close();
await Deno.remove(dir, { recursive: true });
