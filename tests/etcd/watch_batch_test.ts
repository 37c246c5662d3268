/**
 * The Watch service's event batches (src/etcd/watch_batch.ts), with the event history's
 * lazy read (src/kv/history.ts): a catch-up read takes whole revisions up to its budget and
 * always at least one, says where the watcher stands afterwards and whether it reached the
 * newest revision; responses split between revisions only; a batch is cut at a position.
 */
import { assertEquals } from "../helpers/assert.ts";
import {
  emptyBatch,
  eventsFrom,
  MAX_WATCH_RESPONSE_EVENT_BYTES,
  packedResponsesOf,
  readCatchUp,
  responsesOf,
} from "../../src/etcd/watch_batch.ts";
import { EventHistory, type RevisionEvents } from "../../src/kv/mod.ts";

const put = (key: string, size: number) => ({
  type: "put" as const,
  key,
  entry: { value: new Uint8Array(size), version: 0, created: 0, writes: 1, lease: 0 },
});

/** A history of revisions 10, 12, 14, ... 28: each one put of 100 bytes on "a/N"; 13 has two. */
function history(): EventHistory {
  const h = new EventHistory();
  for (let r = 10; r <= 28; r += 2) h.push({ revision: r, events: [put(`a/${r}`, 100)] });
  return h;
}

/** Encodes an event as its key and value size, so tests can read what was selected. */
const selectAll = (rev: RevisionEvents) =>
  rev.events.map((e) => new Uint8Array(e.entry?.value.length ?? 0).fill(rev.revision % 256));

Deno.test("history: revisionsFrom reads lazily from a revision, as since() copies", () => {
  const h = history();
  assertEquals([...h.revisionsFrom(15)].map((r) => r.revision), [16, 18, 20, 22, 24, 26, 28]);
  assertEquals([...h.revisionsFrom(15)], h.since(15), "the same as since()");
  assertEquals([...h.revisionsFrom(29)], [], "above all");
  assertEquals([...h.revisionsFrom(0)].length, 10, "all");
});

Deno.test("watch catch-up: whole revisions up to the budget, then the next position", () => {
  const h = history();
  // 250 bytes of budget: 100 + 100 + 100 (the third passes it, so the read stops after it).
  const first = readCatchUp(h.revisionsFrom(11), 11, selectAll, 250, 28);
  assertEquals(first.batch.revisions, [12, 14, 16], "three revisions");
  assertEquals(first.next, 18, "next: the first revision not read");
  assertEquals(first.done, false, "not at the newest yet");
  const second = readCatchUp(h.revisionsFrom(first.next), first.next, selectAll, 1000, 28);
  assertEquals(second.batch.revisions, [18, 20, 22, 24, 26, 28], "the rest");
  assertEquals([second.next, second.done], [29, true], "at the newest: follows live next");
});

Deno.test("watch catch-up: a revision larger than the budget is taken whole; nothing selected still advances", () => {
  const h = new EventHistory();
  h.push({ revision: 5, events: [put("x/1", 10), put("x/2", 10), put("x/3", 10)] });
  h.push({ revision: 6, events: [put("y", 10)] });
  const one = readCatchUp(h.revisionsFrom(1), 1, selectAll, 1, 9);
  assertEquals(one.batch.revisions, [5, 5, 5], "the transaction alone, whole");
  assertEquals([one.next, one.done], [6, false], "then stops");
  const none = readCatchUp(h.revisionsFrom(1), 1, () => [], 1, 9);
  assertEquals([none.batch.events.length, none.next, none.done], [0, 10, true], "nothing");
  // A position above the newest revision (a watch from the future) never moves back.
  const future = readCatchUp(h.revisionsFrom(20), 20, selectAll, 100, 9);
  assertEquals([future.next, future.done], [20, true], "from the future");
});

Deno.test("watch batches: cut at a position; responses split between revisions only", () => {
  const b = emptyBatch();
  const big = Math.floor(MAX_WATCH_RESPONSE_EVENT_BYTES / 3);
  for (const r of [1, 2, 2, 3, 4]) {
    b.events.push(new Uint8Array(big));
    b.revisions.push(r);
  }
  assertEquals(eventsFrom(b, 1), b, "all from the start: the batch itself");
  assertEquals(eventsFrom(b, 3).revisions, [3, 4], "from 3");
  const parts = responsesOf(b);
  assertEquals(parts.map((p) => p.revision), [2, 4], "split between revisions 2 and 3");
  assertEquals(parts.map((p) => p.events.length), [3, 2], "revision 2 stays together");
});

Deno.test("watch batches: packed responses join each response's events into one array", () => {
  const b = emptyBatch();
  for (const [r, byte] of [[1, 1], [1, 2], [2, 3]]) {
    b.events.push(new Uint8Array([byte, byte]));
    b.revisions.push(r);
  }
  const packed = packedResponsesOf(b);
  assertEquals(packed.length, 1, "one response");
  assertEquals(packed[0].revision, 2, "at the newest revision");
  assertEquals(packed[0].events, [new Uint8Array([1, 1, 2, 2, 3, 3])], "the events joined");
  const big = emptyBatch();
  const size = Math.floor(MAX_WATCH_RESPONSE_EVENT_BYTES / 2) + 1;
  for (const r of [1, 2]) {
    big.events.push(new Uint8Array(size).fill(r));
    big.revisions.push(r);
  }
  const two = packedResponsesOf(big);
  assertEquals(two.map((p) => [p.revision, p.events.length, p.events[0].length]), [
    [1, 1, size],
    [2, 1, size],
  ], "split as responsesOf splits");
});
