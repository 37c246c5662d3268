/**
 * Eviction of commands from the in-memory Raft log (`RaftLog.evict`, `RaftNode.evictData`):
 * an applied, durable normal entry may lose its command (the host's store holds it) and keep
 * its index, term and size; config entries, unapplied and undurable entries never do, and a
 * compaction never leaves an evicted entry at or below the snapshot the host's store drops.
 */
import {
  commandBytes,
  EMPTY_CONFIG,
  type Entry,
  EVICTED_DATA,
  isEvicted,
  RaftInvariantError,
  RaftNode,
} from "../../src/raft/mod.ts";
import { RaftLog } from "../../src/raft/log.ts";
import { encodeMessageBatch } from "../../src/replication/codec.ts";
import { CodecError } from "../../src/replication/_binary.ts";
import { assert, assertEquals, assertThrows } from "./sim/mod.ts";

const CONFIG = { voters: ["a"], learners: [], addresses: { a: "a:1" } };

/** Entries 1..n of term 1 (3..5 of term 2), each with `size` bytes; entry 4 a config entry. */
function entries(n: number, size = 10): Entry[] {
  const out: Entry[] = [];
  for (let i = 1; i <= n; i++) {
    const term = i >= 3 && i <= 5 ? 2 : i > 5 ? 3 : 1;
    if (i === 4) {
      out.push({ type: "config", term, index: i, change: { type: "bootstrap" }, config: CONFIG });
    } else {
      out.push({ type: "normal", term, index: i, data: new Uint8Array(size).fill(i) });
    }
  }
  return out;
}

/** A log of `n` entries, all committed, applied and durable. */
function appliedLog(n: number, size = 10): RaftLog {
  const log = new RaftLog({ index: 0, term: 0, config: EMPTY_CONFIG }, entries(n, size), n);
  log.applied = n;
  return log;
}

Deno.test("eviction keeps index, term and size; drops the bytes; config entries stay whole", () => {
  const log = appliedLog(8);
  const before = log.slice(1, 9);
  const slicedBefore = log.slice(1, 9, 40).length;
  assertEquals(log.dataBytes, 70, "7 normal entries of 10 bytes");
  assertEquals(log.evict(6, 8), 5, "1, 2, 3, 5 and 6: not the config entry 4");
  assertEquals(log.evictedIndex, 6);
  assertEquals(log.dataBytes, 20, "only 7 and 8 hold their bytes");
  for (let i = 1; i <= 8; i++) {
    const e = log.entry(i);
    assertEquals(e.term, before[i - 1].term, `term of ${i}`);
    assertEquals(log.term(i), before[i - 1].term);
    assertEquals(isEvicted(e), i <= 6 && i !== 4, `entry ${i} evicted`);
    if (e.type === "normal") assertEquals(commandBytes(e), 10, `size of ${i}`);
  }
  assert(log.entry(4).type === "config", "the config entry is whole");
  assertEquals(log.configAt(8), CONFIG);
  assertEquals(log.slice(1, 9, 40).length, slicedBefore, "maxBytes counts the original sizes");
  // What the host already held (the Ready's entries) is untouched.
  assert(before[0].type === "normal" && before[0].data.length === 10 && before[0].data[0] === 1);
  assert(log.matchTerm(5, 2) && log.firstIndexOfTerm(5) === 3);
  assertEquals(log.lastIndexWithTermAtMost(8, 2), 5);
  // Evicting again is a no-op; the cursor only moves up.
  assertEquals(log.evict(6, 8), 0);
  assertEquals(log.evict(2, 8), 0);
  assertEquals(log.evictedIndex, 6);
});

Deno.test("eviction refuses unapplied and undurable entries", () => {
  const log = new RaftLog({ index: 0, term: 0, config: EMPTY_CONFIG }, entries(8), 8);
  log.applied = 5;
  assertThrows(() => log.evict(6, 8), RaftInvariantError);
  assertThrows(() => log.evict(5, 4), RaftInvariantError);
  assertEquals(log.evict(5, 5), 4);
  assertEquals(log.dataBytes, 30);
});

Deno.test("compaction and restore move the eviction cursor; truncation below it is refused", () => {
  const log = appliedLog(10);
  log.evict(7, 10);
  log.compact({ index: 5, term: 2, config: CONFIG });
  assertEquals(log.evictedIndex, 7);
  assertEquals(log.dataBytes, 30, "entries 8..10 hold their bytes");
  log.skipEvictionThrough(9);
  assertEquals(log.evict(9, 10), 0, "8 and 9 are kept whole for good");
  assertEquals(log.evict(10, 10), 1);
  assertThrows(() =>
    log.mergeFrom([{ type: "normal", term: 9, index: 9, data: new Uint8Array(1) }])
  );
  log.restore({ index: 20, term: 4, config: CONFIG });
  assertEquals(log.evictedIndex, 20);
  assertEquals(log.dataBytes, 0);
});

/** A single-voter leader of term 2 with `n` proposals of 100 bytes, all applied and durable. */
function leaderWith(n: number): RaftNode {
  const r = new RaftNode({ id: "a", random: () => 0.5, electionTicks: 10 });
  r.bootstrap(CONFIG);
  r.campaign();
  for (let i = 0; i < n; i++) r.propose(new Uint8Array(100).fill(i + 1));
  for (let i = 0; i < 5 && r.hasReady(); i++) {
    r.ready();
    r.advance();
  }
  return r;
}

Deno.test("the core evicts only applied, durable entries and reports the memory it frees", () => {
  const r = leaderWith(20);
  const st = r.status();
  assertEquals(st.commit, st.lastIndex);
  assertEquals(r.evictableIndex(), st.lastIndex);
  assertEquals(st.logDataBytes, 2000);
  assertThrows(() => r.evictData(st.lastIndex + 1), RaftInvariantError);
  // One more proposal: appended, not durable yet.
  r.propose(new Uint8Array(100));
  assertThrows(() => r.evictData(st.lastIndex + 1), RaftInvariantError);
  r.evictData(12);
  assertEquals(r.status().evictedIndex, 12);
  assertEquals(r.status().logDataBytes, 2100 - 10 * 100, "entries 3..12 (the no-op at 2 is empty)");
  // The Ready does not carry evicted entries: it persists 23 and applies nothing evicted.
  const rd = r.ready();
  assert(!rd.entries.some(isEvicted) && !rd.committed.some(isEvicted));
});

Deno.test("a compaction drops evicted entries up to the snapshot even into the tail it keeps", () => {
  const r = leaderWith(30);
  r.evictData(20);
  // A snapshot at 25 with a tail of 10: the store drops its log up to 25, so the evicted
  // entries 16..20 of the tail could not be read back: the log starts after 20.
  r.compact(25, new Uint8Array([1]), 10);
  const st = r.status();
  assertEquals(st.snapshotIndex, 20);
  assertEquals(st.evictedIndex, 25, "21..25 are never evicted (the store may drop them)");
  assertEquals(r.evictData(st.lastIndex), st.lastIndex - 25);
  // With nothing evicted, the tail is what was asked for, also after an earlier compaction.
  const q = leaderWith(30);
  q.compact(12, new Uint8Array([1]), 10);
  assertEquals(q.status().snapshotIndex, 2);
  q.compact(16, new Uint8Array([2]), 10);
  assertEquals(q.status().snapshotIndex, 6, "the tail reaches below the last snapshot");
  assertEquals(q.status().evictedIndex, 16);
});

Deno.test("an evicted entry cannot be encoded for the wire", () => {
  const r = leaderWith(5);
  r.evictData(4);
  const stub = r.entries(3, 4)[0];
  assert(isEvicted(stub) && stub.data === EVICTED_DATA);
  const append = {
    type: "append" as const,
    from: "a",
    to: "b",
    term: 2,
    prevIndex: 2,
    prevTerm: 2,
    entries: [stub],
    commit: 4,
  };
  assertThrows(() => encodeMessageBatch([append]), CodecError);
  // An empty command (a no-op) is another array and encodes.
  const noop = { type: "normal" as const, term: 2, index: 3, data: new Uint8Array(0) };
  assert(!isEvicted(noop));
  encodeMessageBatch([{ ...append, entries: [noop] }]);
});
