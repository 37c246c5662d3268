/**
 * A mirror of what a node handed its storage, following the `Ready` persistence contract: hard
 * state, the log (truncate-and-append from `entries[0].index`) and the latest snapshot. The
 * safety checker reads a leader's log through it ({@link LogView}); the real `RaftStorage`
 * holds the node's actual state.
 */
import type { Entry, HardState, Ready, Snapshot } from "../../../src/raft/types.ts";

/** Read access to a node's durable log, for the checkers. */
export interface LogView {
  /** Index covered by the latest snapshot (0 without one). */
  readonly snapshotIndex: number;
  /** Term of the entry at `snapshotIndex` (0 without a snapshot). */
  readonly snapshotTerm: number;
  /** The entry at `index`, or undefined when compacted or beyond the end. */
  entryAt(index: number): Entry | undefined;
  /** Index of the last entry (or `snapshotIndex` when the log is empty). */
  lastIndex(): number;
}

/** Raised when a Ready breaks the persistence contract (a gap in the log, for instance). */
export class PersistenceContractError extends Error {}

/** The durable state of one node, as its storage was asked to keep it. */
export class Disk implements LogView {
  hardState: HardState = { term: 0, vote: "", commit: 0 };
  snapshot: Snapshot | undefined;
  /** Entries after the snapshot, contiguous. */
  entries: Entry[] = [];

  get snapshotIndex(): number {
    return this.snapshot?.meta.index ?? 0;
  }

  get snapshotTerm(): number {
    return this.snapshot?.meta.term ?? 0;
  }

  lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  entryAt(index: number): Entry | undefined {
    return this.entries[index - this.snapshotIndex - 1];
  }

  /** Term at `index`, including the snapshot's own index; undefined when unknown. */
  termAt(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    return this.entryAt(index)?.term;
  }

  /** Makes a Ready's snapshot, entries and hard state durable, in that order. */
  persist(ready: Ready): void {
    if (ready.snapshot) this.installSnapshot(ready.snapshot);
    if (ready.entries.length > 0) this.append(ready.entries);
    if (ready.hardState) this.hardState = structuredClone(ready.hardState);
  }

  /** Replaces the log prefix a snapshot covers; keeps the tail only if it matches the snapshot. */
  installSnapshot(snapshot: Snapshot): void {
    const { index, term } = snapshot.meta;
    const keep = this.termAt(index) === term ? this.entries.slice(index - this.snapshotIndex) : [];
    this.snapshot = structuredClone(snapshot);
    this.entries = keep;
  }

  /** Truncates the log from `entries[0].index` and appends `entries`. */
  append(entries: readonly Entry[]): void {
    const first = entries[0].index;
    if (first <= this.snapshotIndex) {
      throw new PersistenceContractError(
        `entries from ${first} overwrite the snapshot at ${this.snapshotIndex}`,
      );
    }
    if (first > this.lastIndex() + 1) {
      throw new PersistenceContractError(
        `entries from ${first} leave a gap after last index ${this.lastIndex()}`,
      );
    }
    for (let i = 1; i < entries.length; i++) {
      if (entries[i].index !== first + i) {
        throw new PersistenceContractError(`Ready entries not contiguous at ${entries[i].index}`);
      }
    }
    this.entries.length = first - this.snapshotIndex - 1;
    for (const e of entries) this.entries.push(structuredClone(e));
  }
}
