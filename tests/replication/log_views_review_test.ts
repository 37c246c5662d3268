/**
 * Adversarial review of c7c512d. The log tail RaftStorage loads from runs is views into each
 * run's buffer: nothing the state machine keeps (values, watch events, session results,
 * snapshot images) may be such a view, or it would pin a whole run and change with it. Here
 * the loaded entries' buffers are detached after the applies: every observable must stay as a
 * machine fed private copies has it. And u53 fields read back as small integers stay exact
 * around 2^31, 2^32 and 2^53 - 1, with garbage still refused.
 */
import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";
import { withTempDir } from "./_tmp.ts";
import { RaftStorage } from "../../src/replication/storage.ts";
import {
  type Command,
  encodeCommand,
  KvStateMachine,
  normalizeTxn,
  rangeRequest,
  type RevisionEvents,
} from "../../src/kv/mod.ts";
import { BinaryReader, BinaryWriter } from "../../src/kv/_binary.ts";
import type { Entry } from "../../src/raft/mod.ts";
import { InvalidArgumentError } from "../../src/errors.ts";

const te = new TextEncoder();
const b = (s: string) => te.encode(s);

/** Every kind of write that carries bytes: set, append, both cas forms, etcd puts, deletes. */
function commands(): Command[] {
  const out: Command[] = [];
  for (let i = 0; i < 40; i++) {
    const key = `k${i % 7}`;
    const value = b(`value-${i}-${"x".repeat(i * 37)}`);
    const session = { clientId: `c${i % 3}`, seq: Math.floor(i / 3) + 1 };
    switch (i % 6) {
      case 0:
        out.push({ type: "set", key, value, timeMs: i, session });
        break;
      case 1:
        out.push({ type: "append", key, value, timeMs: i, session });
        break;
      case 2:
        out.push({ type: "cas", key, value, expectVersion: 0, timeMs: i, session });
        break;
      case 3:
        out.push({ type: "cas", key, value, expectValue: b(`value-${i - 3}`), timeMs: i });
        break;
      case 4:
        out.push({
          type: "txn",
          key: "",
          timeMs: i,
          txn: normalizeTxn({
            success: [{ request_put: { key: b(`e${i % 5}`), value, prev_kv: true } }],
          }),
        });
        break;
      default:
        out.push({
          type: "txn",
          key: "",
          timeMs: i,
          txn: normalizeTxn({
            success: [{ request_delete_range: { key: b(`e${(i + 1) % 5}`), prev_kv: true } }],
          }),
        });
    }
  }
  return out;
}

interface Observed {
  results: unknown[];
  events: RevisionEvents[];
  entries: unknown[];
  range: unknown;
  image: Uint8Array;
}

/** Applies `entries` to a new machine, then detaches their buffers if asked, and observes. */
function run(entries: readonly Entry[], detach: boolean): Observed {
  const sm = new KvStateMachine();
  const events: RevisionEvents[] = [];
  sm.onEvents((rev) => events.push(rev));
  const results: unknown[] = [];
  for (const e of entries) {
    if (e.type === "normal") results.push(sm.apply(e.index, e.data));
    else sm.markApplied(e.index);
  }
  if (detach) {
    for (const e of entries) {
      if (e.type !== "normal") continue;
      const buf = e.data.buffer as ArrayBuffer;
      if (!buf.detached) buf.transfer(0);
    }
  }
  const keys = [...sm.list({})].map((x) => x.key);
  return {
    // Deep copies now, so a view detached later could not hide.
    results: structuredClone(results),
    events: structuredClone(events),
    entries: structuredClone(keys.map((k) => ({ k, ...sm.get(k) }))),
    range: structuredClone(sm.range(rangeRequest({ key: b("e"), range_end: b("f") }))),
    image: sm.snapshot(),
  };
}

Deno.test("review: state built from log entries loaded as run views does not change when their buffers go", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const cmds = commands();
    const written: Entry[] = cmds.map((c, i) => ({
      type: "normal",
      term: 1,
      index: i + 1,
      data: encodeCommand(c),
    }));
    const s = await RaftStorage.open(path);
    await s.load();
    // Several saves: several runs.
    for (let i = 0; i < written.length; i += 9) {
      await s.save({
        hardState: { term: 1, vote: "", commit: Math.min(written.length, i + 9) },
        entries: written.slice(i, i + 9),
      });
    }
    s.close();
    const s2 = await RaftStorage.open(path);
    const loaded = (await s2.load()).entries;
    s2.close();
    assertEquals(loaded, written);
    const views = loaded.filter((e) =>
      e.type === "normal" && e.data.byteLength !== (e.data.buffer as ArrayBuffer).byteLength
    );
    assertEquals(views.length, loaded.length, "every loaded entry is a view into its run");
    const copies = written.map((e) => e.type === "normal" ? { ...e, data: e.data.slice() } : e);
    const want = run(copies, false);
    const got = run(loaded, true);
    assert(loaded.every((e) => e.type !== "normal" || e.data.length === 0), "the runs are gone");
    assertEquals(got.results, want.results);
    assertEquals(got.events, want.events);
    assertEquals(got.entries, want.entries);
    assertEquals(got.range, want.range);
    assertEquals(got.image, want.image);
    // And a machine restored from that image serves the same state.
    const restored = new KvStateMachine();
    restored.restore(got.image);
    assertEquals(restored.snapshot(), want.image);
    assert(want.events.length > 0 && want.entries.length > 0);
  });
});

Deno.test("review: u53 fields round-trip exactly around 2^31, 2^32 and 2^53 - 1", () => {
  const values = [
    0,
    1,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 31 + 1,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 32 + 1,
    2 ** 52,
    Number.MAX_SAFE_INTEGER - 1,
    Number.MAX_SAFE_INTEGER,
  ];
  const w = new BinaryWriter(8 * values.length);
  for (const v of values) w.u53(v);
  const r = new BinaryReader(w.bytes);
  for (const v of values) {
    const got = r.u53();
    assert(Object.is(got, v), `${v} read back as ${got}`);
  }
  // Beyond 2^53 - 1 (the high word above 21 bits) is refused on read; writes refuse the rest.
  const big = new Uint8Array(8);
  new DataView(big.buffer).setUint32(0, 0x20_0000);
  assertThrows(() => new BinaryReader(big).u53(), InvalidArgumentError);
  const max = new Uint8Array(8).fill(0xff);
  assertThrows(() => new BinaryReader(max).u53(), InvalidArgumentError);
  for (const bad of [-1, 2 ** 53, 1.5, NaN, Infinity, -0.5]) {
    assertThrows(() => new BinaryWriter(8).u53(bad), InvalidArgumentError);
  }
  // Truncated input is refused, not read as a smaller number.
  assertThrows(() => new BinaryReader(new Uint8Array(7)).u53());
});
