/**
 * The event batches the Watch service sends a watcher: encoded events with their revisions,
 * cut from a position, split into responses between revisions only, and read back from the
 * event history under a byte budget when a parked watcher catches up. Pure: no I/O, no clock.
 */
import type { RevisionEvents } from "../kv/mod.ts";

/**
 * Bytes of events one response carries at most: more (a long replay, a long turn) go in
 * several responses, split between revisions only, so a transaction's events stay together
 * (a single larger revision goes alone). grpc-js clients refuse messages above 4 MiB.
 */
export const MAX_WATCH_RESPONSE_EVENT_BYTES = 1024 * 1024;

/** Encoded events, oldest first, and the revision of each (parallel arrays). */
export interface EventBatch {
  readonly events: Uint8Array[];
  readonly revisions: number[];
}

/** A new empty batch. */
export const emptyBatch = (): EventBatch => ({ events: [], revisions: [] });

/** Bytes of the encoded events of `b`. */
export function batchBytes(b: EventBatch): number {
  let total = 0;
  for (const e of b.events) total += e.length;
  return total;
}

/** The events of `b` from revision `from` on (`b` itself when all are). */
export function eventsFrom(b: EventBatch, from: number): EventBatch {
  const revs = b.revisions;
  if (revs.length === 0 || revs[0] >= from) return b;
  let i = 0;
  while (i < revs.length && revs[i] < from) i++;
  return { events: b.events.slice(i), revisions: revs.slice(i) };
}

/**
 * `b` as the event lists of consecutive responses of at most MAX_WATCH_RESPONSE_EVENT_BYTES
 * each, split between revisions only, with the revision of each list's newest event.
 */
export function responsesOf(b: EventBatch): { events: Uint8Array[]; revision: number }[] {
  const { events, revisions } = b;
  if (batchBytes(b) <= MAX_WATCH_RESPONSE_EVENT_BYTES) {
    return [{ events, revision: revisions[revisions.length - 1] }];
  }
  const out: { events: Uint8Array[]; revision: number }[] = [];
  let start = 0, bytes = 0;
  for (let i = 0; i < events.length;) {
    // The events of revision revisions[i] are [i, j).
    let j = i, revisionBytes = 0;
    while (j < events.length && revisions[j] === revisions[i]) revisionBytes += events[j++].length;
    if (i > start && bytes + revisionBytes > MAX_WATCH_RESPONSE_EVENT_BYTES) {
      out.push({ events: events.slice(start, i), revision: revisions[i - 1] });
      start = i;
      bytes = 0;
    }
    bytes += revisionBytes;
    i = j;
  }
  out.push({ events: events.slice(start), revision: revisions[revisions.length - 1] });
  return out;
}

/**
 * {@link responsesOf} with each response's events joined into one array: what every watcher
 * that is sent the same batch copies with a single copy per response, not one per event.
 */
export function packedResponsesOf(b: EventBatch): { events: Uint8Array[]; revision: number }[] {
  return responsesOf(b).map((r) => {
    if (r.events.length === 1) return r;
    let size = 0;
    for (const e of r.events) size += e.length;
    const joined = new Uint8Array(size);
    let at = 0;
    for (const e of r.events) {
      joined.set(e, at);
      at += e.length;
    }
    return { events: [joined], revision: r.revision };
  });
}

/** What one catch-up read took from the history. */
export interface CatchUpRead {
  /** The selected events, whole revisions only. */
  readonly batch: EventBatch;
  /** The watcher's position afterwards: the lowest revision not read yet. */
  readonly next: number;
  /** The read reached the store's newest revision: the watcher can follow live events now. */
  readonly done: boolean;
  /** Revisions of the history looked at (selected from or not). */
  readonly visited: number;
}

/**
 * Reads the events a watcher selects from `revisions` (the history from `from` on, oldest
 * first) until they pass `budgetBytes`, or `maxRevisions` revisions have been looked at,
 * stopping between revisions only (the first revision is always taken whole, however large,
 * so every read advances). `newest` is the store's newest revision: a read that exhausts
 * `revisions` has reached it, and the watcher's position becomes `newest + 1` (never lower
 * than `from`). The revision bound keeps a watcher that selects little from scanning the
 * whole history in one synchronous step.
 */
export function readCatchUp(
  revisions: Iterable<RevisionEvents>,
  from: number,
  select: (rev: RevisionEvents) => readonly Uint8Array[],
  budgetBytes: number,
  newest: number,
  maxRevisions = Infinity,
): CatchUpRead {
  const batch = emptyBatch();
  let bytes = 0, visited = 0;
  for (const rev of revisions) {
    if (rev.revision < from) continue;
    if ((bytes > 0 && bytes >= budgetBytes) || (visited > 0 && visited >= maxRevisions)) {
      return { batch, next: rev.revision, done: false, visited };
    }
    visited++;
    for (const e of select(rev)) {
      batch.events.push(e);
      batch.revisions.push(rev.revision);
      bytes += e.length;
    }
  }
  return { batch, next: Math.max(from, newest + 1), done: true, visited };
}
