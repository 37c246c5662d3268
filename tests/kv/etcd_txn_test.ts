/**
 * etcd's KV semantics in the state machine: revisions are entry indexes, metadata as etcd
 * keeps it, Range (limit, more, count, sort, filters, an older revision), Txn (compares,
 * nested ops, all or nothing), Compact, the event history and its listeners.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  type Command,
  encodeCommand,
  KvStateMachine,
  normalizeTxn,
  rangeRequest,
  type RevisionEvents,
  type TxnInput,
} from "../../src/kv/mod.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string) => te.encode(s);

class Store {
  readonly sm: KvStateMachine;
  index = 0;
  constructor(sm = new KvStateMachine()) {
    this.sm = sm;
  }
  run(cmd: Command) {
    return this.sm.apply(++this.index, encodeCommand(cmd));
  }
  txn(t: TxnInput) {
    return this.run({ type: "txn", key: "", timeMs: 0, txn: normalizeTxn(t) });
  }
  put(key: string, value: string, extra: Record<string, unknown> = {}) {
    return this.txn({ success: [{ request_put: { key: b(key), value: b(value), ...extra } }] });
  }
  del(key: string, end = "") {
    return this.txn({
      success: [{ request_delete_range: { key: b(key), range_end: b(end), prev_kv: true } }],
    });
  }
  range(key: string, end = "", extra: Record<string, unknown> = {}) {
    return this.sm.range(rangeRequest({ key: b(key), range_end: b(end), ...extra }));
  }
}

const keys = (r: { kvs: { key: Uint8Array }[] }) => r.kvs.map((kv) => td.decode(kv.key));

Deno.test("etcd: a put's revision is its entry's index; metadata as etcd keeps it", () => {
  const s = new Store();
  s.put("a", "1");
  s.sm.markApplied(++s.index); // a no-op: revisions may skip numbers
  const r = s.put("a", "2");
  assertEquals([r.ok, r.revision], [true, 3], "revision of the second put");
  const [kv] = s.range("a").kvs;
  assertEquals(
    [kv.create_revision, kv.mod_revision, kv.version, td.decode(kv.value)],
    [1, 3, 2, "2"],
    "create, mod, version",
  );
  s.del("a");
  s.put("a", "3");
  const [again] = s.range("a").kvs;
  assertEquals([again.create_revision, again.version], [5, 1], "recreated after a delete");
  assertEquals(s.sm.revision, 5, "store revision");
});

Deno.test("etcd: Range limit, more, count, sort, keys_only, count_only and filters", () => {
  const s = new Store();
  for (const k of ["b", "a", "c", "d"]) s.put(k, `v${k}`);
  s.put("a", "va2"); // a: mod 5
  const all = s.range("a", "e", { limit: 2 });
  assertEquals([keys(all), all.more, all.count], [["a", "b"], true, 4], "limit");
  const byMod = s.range("a", "e", { sort_target: "MOD", sort_order: "DESCEND", limit: 1 });
  assertEquals(keys(byMod), ["a"], "newest mod first");
  const countOnly = s.range("\0", "\0", { count_only: true });
  assertEquals([countOnly.kvs.length, countOnly.count], [0, 4], "count_only over everything");
  const keysOnly = s.range("a", "c", { keys_only: true });
  assertEquals(keysOnly.kvs.map((kv) => kv.value.length), [0, 0], "keys_only");
  const recent = s.range("a", "e", { min_mod_revision: 4 });
  assertEquals(keys(recent), ["a", "d"], "min_mod_revision");
  const fromKey = s.range("c", "\0");
  assertEquals(keys(fromKey), ["c", "d"], "range_end \\0: every key from c");
});

Deno.test("etcd: Range at an older revision undoes later writes; older than the history is compacted", () => {
  const s = new Store();
  s.put("k1", "a"); // 1
  s.put("k2", "b"); // 2
  s.put("k1", "c"); // 3
  s.del("k2"); // 4
  const at2 = s.range("k", "l", { revision: 2 });
  assertEquals(at2.kvs.map((kv) => td.decode(kv.value)), ["a", "b"], "state at revision 2");
  const at3 = s.range("k", "l", { revision: 3 });
  assertEquals(at3.kvs.map((kv) => td.decode(kv.value)), ["c", "b"], "state at revision 3");
  const c = s.run({ type: "compact", key: "", timeMs: 0, revision: 2 });
  assert(c.ok, "compact");
  let err: unknown;
  try {
    s.range("k", "l", { revision: 2 });
  } catch (e) {
    err = e;
  }
  assertEquals(
    (err as Error).message,
    "etcdserver: mvcc: required revision has been compacted",
    "etcd's message",
  );
  assertEquals(s.range("k", "l", { revision: 3 }).kvs.length, 2, "above the compaction");
});

Deno.test("etcd: Txn compares choose the branch; nested ops see earlier writes; all or nothing", () => {
  const s = new Store();
  s.put("x", "1");
  const r = s.txn({
    compare: [{ key: b("x"), target: "VALUE", result: "EQUAL", value: b("1") }],
    success: [
      { request_put: { key: b("y"), value: b("2") } },
      { request_range: { key: b("y") } },
      {
        request_txn: {
          compare: [{ key: b("y"), target: "VERSION", result: "GREATER", version: 0 }],
          success: [{ request_put: { key: b("z"), value: b("3") } }],
        },
      },
    ],
    failure: [{ request_put: { key: b("never"), value: b("0") } }],
  });
  assert(r.ok && r.txn!.succeeded, "succeeded");
  assertEquals(td.decode(r.txn!.responses[1].response_range!.kvs[0].value), "2", "sees own put");
  assert(r.txn!.responses[2].response_txn!.succeeded, "nested compare saw y");
  assertEquals(keys(s.range("\0", "\0")), ["x", "y", "z"], "all of it applied");
  const [y, z] = s.range("y", "{").kvs;
  assertEquals([y.mod_revision, z.mod_revision], [2, 2], "one revision for the whole txn");
  // A failing op (ignore_value on a missing key) leaves nothing behind.
  const bad = s.txn({
    success: [
      { request_put: { key: b("w"), value: b("9") } },
      { request_put: { key: b("missing"), ignore_value: true } },
    ],
  });
  assertEquals(bad.etcdError?.message, "etcdserver: key not found", "etcd's error");
  assertEquals(keys(s.range("\0", "\0")), ["x", "y", "z"], "the first put was undone");
  // A lease that does not exist.
  const leased = s.put("l", "v", { lease: 7 });
  assertEquals(leased.etcdError?.message, "etcdserver: requested lease not found", "lease");
});

Deno.test("etcd: compares on a missing key, CREATE/MOD/VERSION/LEASE, over a range", () => {
  const s = new Store();
  s.put("p/a", "1");
  s.put("p/b", "2");
  const cmp = (c: Record<string, unknown>) =>
    s.txn({ compare: [{ key: b("p/a"), ...c }], success: [] }).txn!.succeeded;
  assert(cmp({ target: "CREATE", result: "EQUAL", create_revision: 1 }), "create");
  assert(cmp({ target: "MOD", result: "LESS", mod_revision: 2 }), "mod");
  assert(cmp({ target: "LEASE", result: "EQUAL", lease: 0 }), "lease");
  assert(!cmp({ target: "VERSION", result: "NOT_EQUAL", version: 1 }), "version");
  const missing = s.txn({
    compare: [{ key: b("nope"), target: "CREATE", result: "EQUAL", create_revision: 0 }],
    success: [],
  });
  assert(missing.txn!.succeeded, "a missing key's create revision is 0");
  const overRange = s.txn({
    compare: [{ key: b("p/"), range_end: b("p0"), target: "VERSION", result: "EQUAL", version: 1 }],
    success: [],
  });
  assert(overRange.txn!.succeeded, "every key of the range compares");
});

Deno.test("etcd: one revision's events are published together and kept in the history", () => {
  const s = new Store();
  const seen: RevisionEvents[] = [];
  s.sm.onEvents((rev) => seen.push(rev));
  s.put("a", "1");
  s.txn({
    success: [
      { request_put: { key: b("a"), value: b("2") } },
      { request_put: { key: b("b"), value: b("3") } },
    ],
  });
  s.del("a", "c");
  assertEquals(seen.map((r) => [r.revision, r.events.length]), [[1, 1], [2, 2], [3, 2]], "revs");
  assertEquals(seen[2].events.map((e) => e.type), ["delete", "delete"], "deletes");
  assertEquals(td.decode(seen[1].events[0].prev!.value), "1", "prev kept");
  assertEquals(s.sm.history.since(2).map((r) => r.revision), [2, 3], "history from 2");
  // mökv's own writes are revisions too.
  s.run({ type: "set", key: "m", value: b("x"), timeMs: 0 });
  assertEquals(seen.at(-1)!.events[0].key, "m", "api.KV writes are events");
});

Deno.test("etcd: snapshots keep metadata, revision and compaction; history starts anew", () => {
  const s = new Store();
  s.put("a", "1");
  s.put("a", "2");
  s.run({ type: "compact", key: "", timeMs: 0, revision: 1 });
  const image = s.sm.snapshot();
  const other = new KvStateMachine();
  let reset = -1;
  other.onReset((rev) => (reset = rev));
  other.restore(image);
  assertEquals(other.snapshot(), image, "round trip");
  assertEquals([other.revision, reset], [2, 2], "revision and reset");
  const [kv] = other.range(rangeRequest({ key: b("a") })).kvs;
  assertEquals([kv.create_revision, kv.mod_revision, kv.version], [1, 2, 2], "metadata");
  assertEquals(other.compactedRevision, 2, "nothing older than the snapshot is answerable");
});

Deno.test("etcd: non-UTF-8 and empty keys are refused with etcd's errors", () => {
  const s = new Store();
  const r = s.txn({
    success: [{ request_put: { key: new Uint8Array([0xff, 0xfe]), value: b("") } }],
  });
  assertEquals(r.etcdError?.message, "etcdserver: key is not valid UTF-8", "non-UTF-8");
  const e = s.txn({ success: [{ request_put: { key: new Uint8Array(0), value: b("") } }] });
  assertEquals(e.etcdError?.message, "etcdserver: key is not provided", "empty");
  assertEquals(s.sm.keyCount, 0, "nothing stored");
});
