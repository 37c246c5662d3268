/**
 * The recent history of the store, revision by revision: what each write did to each key.
 * Watches replay it from a start revision and then follow live; a Range at an older revision
 * is answered by undoing it. Bounded by revisions and by bytes; what falls out of it, or is
 * compacted, is gone (`floor`).
 */

/** One key's change at a revision. Entries are shared with the store (never mutated). */
export interface KvEvent {
  readonly type: "put" | "delete";
  readonly key: string;
  /** The key after a put; absent after a delete. */
  readonly entry?: HistoryEntry;
  /** The key before the change; absent if it did not exist. */
  readonly prev?: HistoryEntry;
}

/** What the history keeps of a key's state (the store's KvEntry). */
export interface HistoryEntry {
  readonly value: Uint8Array;
  /** Mod revision. */
  readonly version: number;
  readonly created: number;
  readonly writes: number;
  readonly lease: number;
}

/** Every change one log entry made, at its revision. */
export interface RevisionEvents {
  readonly revision: number;
  readonly events: readonly KvEvent[];
}

/** Default bound on revisions kept. */
export const DEFAULT_HISTORY_REVISIONS = 100_000;
/** Default bound on the bytes the kept events account for (keys, values, prev values). */
export const DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024;
/** What one event costs beyond its key and value bytes (objects and references). */
const EVENT_OVERHEAD_BYTES = 96;

function eventBytes(e: KvEvent): number {
  return EVENT_OVERHEAD_BYTES + e.key.length * 2 + (e.entry?.value.length ?? 0) +
    (e.prev?.value.length ?? 0);
}

/** Bytes one revision accounts for (events never change, so this is the same when it is dropped). */
function revisionBytes(rev: RevisionEvents): number {
  let bytes = 0;
  for (const e of rev.events) bytes += eventBytes(e);
  return bytes;
}

/** The bounded event history. See the module comment. */
export class EventHistory {
  readonly maxRevisions: number;
  readonly maxBytes: number;
  /** Kept revisions, oldest first from #head (their bytes are recomputed when dropped). */
  #items: RevisionEvents[] = [];
  #head = 0;
  #bytes = 0;
  #floor = 0;

  constructor(maxRevisions = DEFAULT_HISTORY_REVISIONS, maxBytes = DEFAULT_HISTORY_BYTES) {
    this.maxRevisions = maxRevisions;
    this.maxBytes = maxBytes;
  }

  /** Highest revision whose events are no longer kept: events exist only above it. */
  get floor(): number {
    return this.#floor;
  }

  /** Revisions kept. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Bytes the kept events account for. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Records the changes of one revision (higher than any before), dropping the oldest beyond the bounds. */
  push(rev: RevisionEvents): void {
    this.#items.push(rev);
    this.#bytes += revisionBytes(rev);
    while (this.size > 1 && (this.size > this.maxRevisions || this.#bytes > this.maxBytes)) {
      this.#dropOldest();
    }
  }

  /** Drops every revision at or below `revision` (etcd's Compact); the floor rises to it. */
  compact(revision: number): void {
    while (this.size > 0 && this.#items[this.#head].revision <= revision) this.#dropOldest();
    if (revision > this.#floor) this.#floor = revision;
  }

  /** Forgets everything: the state was replaced at `revision` (a snapshot restore). */
  reset(revision: number): void {
    this.#items = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#floor = revision;
  }

  /** The kept revisions at or above `from`, oldest first (empty if `from` is above all). */
  since(from: number): RevisionEvents[] {
    return [...this.revisionsFrom(from)];
  }

  /**
   * The kept revisions at or above `from`, oldest first, without copying the history: for a
   * reader that takes a few at a time (a slow watcher catching up). Read it in one synchronous
   * step: a push or compact while it is open may skip or drop revisions under it.
   */
  *revisionsFrom(from: number): Generator<RevisionEvents> {
    let lo = this.#head, hi = this.#items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#items[mid].revision < from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.#items.length; i++) yield this.#items[i];
  }

  #dropOldest(): void {
    const rev = this.#items[this.#head];
    this.#items[this.#head] = undefined as unknown as RevisionEvents;
    this.#head++;
    this.#bytes -= revisionBytes(rev);
    if (rev.revision > this.#floor) this.#floor = rev.revision;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
}
