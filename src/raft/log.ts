/**
 * The Raft log as the core sees it: the latest snapshot's metadata, then every entry after
 * it, held in memory (the host compacts with snapshots, so this stays bounded). It tracks
 * which prefix is durable (`stableIndex`), committed and applied, so `ready()` can hand out
 * exactly the entries still to persist and to apply.
 */
import type { Config, Entry, NormalEntry, SnapshotMeta } from "./types.ts";

/** The configuration of a cluster with no members yet. */
export const EMPTY_CONFIG: Config = { voters: [], learners: [], addresses: {} };

/** An impossible-state error: a broken invariant inside the core, never bad input. */
export class RaftInvariantError extends Error {}

/**
 * The `data` of an evicted entry: a normal entry whose command the in-memory log dropped once
 * it was applied and durable (see {@link RaftLog.evict}). Never a command: the codec refuses
 * to encode it and the host refuses to apply it; the host reads the real bytes back from its
 * log store before it sends such an entry. Compared by identity (an empty no-op is another
 * array).
 */
export const EVICTED_DATA: Uint8Array = new Uint8Array(0);

/** A normal entry whose command was evicted: index and term kept, and the command's size. */
export interface EvictedEntry extends NormalEntry {
  /** Length of the dropped command, so batch sizes stay what they were with the data. */
  readonly evictedBytes: number;
}

/** Is `e` an evicted entry (its `data` is {@link EVICTED_DATA}, not its command)? */
export function isEvicted(e: Entry): e is EvictedEntry {
  return e.type === "normal" && e.data === EVICTED_DATA;
}

/** Bytes of the command `e` carries or carried (an evicted entry's original size). */
export function commandBytes(e: NormalEntry): number {
  return e.data === EVICTED_DATA ? (e as EvictedEntry).evictedBytes : e.data.length;
}

/** In-memory Raft log with snapshot base, durability and commit/apply cursors. */
export class RaftLog {
  /** Metadata of the snapshot the log starts after. */
  snapshot: SnapshotMeta;
  /** Entries with indexes snapshot.index + 1 .. lastIndex, without gaps. */
  private entries: Entry[];
  /** Highest index known committed. */
  committed: number;
  /** Highest index handed to the application to apply. */
  applied: number;
  /** Highest index whose entry is durable (or handed to the host to persist). */
  stableIndex: number;
  /** Indexes of config entries still in `entries`, ascending. */
  private configIndexes: number[] = [];
  /** Bytes of command data in `entries` (what the in-memory log holds beyond its objects). */
  #dataBytes = 0;
  /**
   * The eviction cursor: no entry above it is evicted, and no entry at or below it is
   * evicted any more (each normal one there is evicted, or is kept whole for good because the
   * host's store may have compacted it: see {@link skipEvictionThrough}).
   */
  #evictedIndex: number;
  /** Index of the latest entry evicted (0 if none): no evicted entry lies above it. */
  #lastEvicted = 0;

  constructor(snapshot: SnapshotMeta, entries: readonly Entry[], committed: number) {
    this.snapshot = snapshot;
    this.entries = [...entries];
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].index !== snapshot.index + 1 + i) {
        throw new RaftInvariantError(`log gap at ${entries[i].index}`);
      }
      if (entries[i].type === "config") this.configIndexes.push(entries[i].index);
      this.#dataBytes += dataBytes(entries[i]);
    }
    this.committed = Math.max(committed, snapshot.index);
    this.applied = snapshot.index;
    this.stableIndex = this.lastIndex();
    this.#evictedIndex = snapshot.index;
  }

  /** The eviction cursor (see {@link evict}); at least the snapshot index. */
  get evictedIndex(): number {
    return Math.max(this.#evictedIndex, this.snapshot.index);
  }

  /** Index of the latest entry evicted, or at most the snapshot index when none is left. */
  get lastEvicted(): number {
    return Math.max(this.#lastEvicted, this.snapshot.index);
  }

  /** Bytes of command data held by the entries in memory. */
  get dataBytes(): number {
    return this.#dataBytes;
  }

  /** Index of the first entry still in memory (snapshot.index + 1 when the log is empty). */
  firstIndex(): number {
    return this.snapshot.index + 1;
  }

  lastIndex(): number {
    return this.snapshot.index + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** The term of the entry at `index`, or undefined when it is compacted or beyond the end. */
  term(index: number): number | undefined {
    if (index === this.snapshot.index) return this.snapshot.term;
    if (index < this.snapshot.index || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshot.index - 1].term;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** The entry at `index`; throws when it is compacted or missing. */
  entry(index: number): Entry {
    const e = this.entries[index - this.snapshot.index - 1];
    if (e === undefined) throw new RaftInvariantError(`no entry at ${index}`);
    return e;
  }

  /** Entries in [lo, hi), clamped to what is in memory, limited to about `maxBytes` (at least one). */
  slice(lo: number, hi: number, maxBytes = Infinity): Entry[] {
    const from = Math.max(lo, this.firstIndex());
    const to = Math.min(hi, this.lastIndex() + 1);
    if (from >= to) return [];
    const base = this.snapshot.index + 1;
    if (maxBytes === Infinity) return this.entries.slice(from - base, to - base);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = from; i < to; i++) {
      const e = this.entries[i - base];
      const size = e.type === "normal" ? commandBytes(e) + 16 : 128;
      if (out.length > 0 && bytes + size > maxBytes) break;
      out.push(e);
      bytes += size;
    }
    return out;
  }

  /** Is a log ending at (lastIndex, lastTerm) at least as up to date as ours (Raft §5.4.1)? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Appends entries that follow the last one (the leader's own proposals). */
  append(entries: readonly Entry[]): void {
    for (const e of entries) {
      if (e.index !== this.lastIndex() + 1) {
        throw new RaftInvariantError(`append at ${e.index}, last is ${this.lastIndex()}`);
      }
      this.entries.push(e);
      this.#dataBytes += dataBytes(e);
      if (e.type === "config") this.configIndexes.push(e.index);
    }
  }

  /**
   * Follower side of AppendEntries after prev matched: skips entries already present,
   * truncates at the first conflicting one and appends the rest (Raft §5.3). Returns the
   * index of the first truncated entry, or 0 when nothing was truncated.
   */
  mergeFrom(entries: readonly Entry[]): number {
    let truncatedAt = 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e.index <= this.snapshot.index) continue;
      const existing = this.term(e.index);
      if (existing === e.term) continue;
      if (existing !== undefined) {
        if (e.index <= this.committed) {
          throw new RaftInvariantError(`conflict at committed index ${e.index}`);
        }
        this.truncateFrom(e.index);
        truncatedAt = e.index;
      }
      this.append(entries.slice(i));
      break;
    }
    return truncatedAt;
  }

  /** Drops entries from `index` on. */
  private truncateFrom(index: number): void {
    if (index <= this.#evictedIndex) {
      throw new RaftInvariantError(
        `truncation at ${index} below the evicted ${this.#evictedIndex}`,
      );
    }
    for (let i = index - this.snapshot.index - 1; i < this.entries.length; i++) {
      this.#dataBytes -= dataBytes(this.entries[i]);
    }
    this.entries.length = index - this.snapshot.index - 1;
    while (
      this.configIndexes.length > 0 &&
      this.configIndexes[this.configIndexes.length - 1] >= index
    ) {
      this.configIndexes.pop();
    }
    this.stableIndex = Math.min(this.stableIndex, index - 1);
  }

  /** First index of the term of the entry at `index`, not below the first in-memory index. */
  firstIndexOfTerm(index: number): number {
    const t = this.term(index);
    let i = index;
    while (i - 1 >= this.firstIndex() && this.term(i - 1) === t) i--;
    return i;
  }

  /** The largest index <= `index` whose term is <= `term` (etcd's findConflictByTerm). */
  lastIndexWithTermAtMost(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.snapshot.index) {
      const t = this.term(i);
      if (t !== undefined && t <= term) return i;
      i--;
    }
    return this.snapshot.index;
  }

  /** The configuration in effect after appending entry `index` (latest config entry <= index). */
  configAt(index: number): Config {
    for (let i = this.configIndexes.length - 1; i >= 0; i--) {
      const ci = this.configIndexes[i];
      if (ci <= index) return (this.entry(ci) as Entry & { type: "config" }).config;
    }
    return this.snapshot.config;
  }

  /** The configuration in effect now: the latest config entry in the log, or the snapshot's. */
  currentConfig(): Config {
    return this.configAt(this.lastIndex());
  }

  /** Index of the latest config entry in the log, or 0. */
  lastConfigIndex(): number {
    return this.configIndexes.length === 0 ? 0 : this.configIndexes[this.configIndexes.length - 1];
  }

  /** Drops entries up to `meta.index`, which a snapshot now covers. */
  compact(meta: SnapshotMeta): void {
    const last = this.lastIndex();
    if (meta.index >= last) {
      this.entries = [];
      this.#dataBytes = 0;
    } else {
      const dropped = this.entries.splice(0, Math.max(0, meta.index - this.snapshot.index));
      for (const e of dropped) this.#dataBytes -= dataBytes(e);
    }
    while (this.configIndexes.length > 0 && this.configIndexes[0] <= meta.index) {
      this.configIndexes.shift();
    }
    this.snapshot = meta;
  }

  /**
   * Replaces the command data of the normal entries in (evictedIndex, index] by
   * {@link EVICTED_DATA} (new entry objects: what the host already holds is untouched) and
   * moves the cursor to `index`. Config entries stay whole (the core reads them). Only applied
   * entries that are durable at or below `durableIndex` (the caller's, which the log does not
   * track): anything else throws. Returns how many entries were evicted.
   */
  evict(index: number, durableIndex: number): number {
    if (index > this.applied || index > durableIndex || index > this.stableIndex) {
      throw new RaftInvariantError(
        `evict(${index}) beyond applied ${this.applied} or durable ${durableIndex}`,
      );
    }
    const base = this.snapshot.index + 1;
    const to = Math.min(index, this.lastIndex());
    let n = 0;
    for (let i = this.evictedIndex + 1; i <= to; i++) {
      const e = this.entries[i - base];
      if (e.type !== "normal" || e.data === EVICTED_DATA) continue;
      const stub: EvictedEntry = {
        type: "normal",
        term: e.term,
        index: e.index,
        data: EVICTED_DATA,
        evictedBytes: e.data.length,
      };
      this.entries[i - base] = stub;
      this.#dataBytes -= e.data.length;
      this.#lastEvicted = i;
      n++;
    }
    this.#evictedIndex = Math.max(this.#evictedIndex, index);
    return n;
  }

  /**
   * Never evicts an entry at or below `index` from now on: the host's store may no longer hold
   * them (it compacted its log up to a snapshot there), so they could not be read back.
   */
  skipEvictionThrough(index: number): void {
    this.#evictedIndex = Math.max(this.#evictedIndex, index);
  }

  /** Replaces the whole log with a snapshot received from the leader. */
  restore(meta: SnapshotMeta): void {
    this.entries = [];
    this.#dataBytes = 0;
    this.#evictedIndex = meta.index;
    this.#lastEvicted = 0;
    this.configIndexes = [];
    this.snapshot = meta;
    this.committed = meta.index;
    this.applied = meta.index;
    this.stableIndex = meta.index;
  }

  /** Entries committed but not yet handed out to apply. */
  nextCommitted(): Entry[] {
    return this.slice(this.applied + 1, this.committed + 1);
  }

  hasNextCommitted(): boolean {
    return this.committed > this.applied;
  }

  /** Entries not yet handed out to persist. */
  unstable(): Entry[] {
    return this.slice(this.stableIndex + 1, this.lastIndex() + 1);
  }

  hasUnstable(): boolean {
    return this.lastIndex() > this.stableIndex;
  }
}

/** Bytes of command data `e` holds in memory (none once evicted). */
function dataBytes(e: Entry): number {
  return e.type === "normal" ? e.data.length : 0;
}
