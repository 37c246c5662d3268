/**
 * Durable Raft state on one Deno KV file: hard state, log entries and snapshots.
 *
 * Layout (all keys under "raft"):
 * - `["raft", "hard"]`: the hard state (codec bytes).
 * - `["raft", "log", first, part]`: one *run*, a value holding consecutive log entries from
 *   index `first` on: a save cuts its entries into runs of at most 60 KiB (Deno KV values are
 *   limited to 64 KiB), so a Ready is a few values, not one per entry, and compaction deletes
 *   one key per run. An entry bigger than that is a run of its own split into parts. Part 0
 *   holds a varint part count, then the first slice of the run's body; parts 1..n-1 hold the
 *   rest. The body is `RUN_FORMAT`, the codec version, then the entries (`writeEntry`) back
 *   to back. A body that starts with the codec version instead is one entry in the per-entry
 *   layout of files written before runs (a key per entry): it loads, truncates and compacts
 *   as a run of one entry, so a node upgraded in place keeps its log.
 * - `["raft", "snapmeta"]`: the current snapshot's record: generation, chunk count, data size
 *   and metadata. Its data lives in `["raft", "snap", generation, chunk]`.
 *
 * One `save()` turns into one ordered stream of mutations, cut into as few atomic commits as
 * the Deno KV limits allow (1000 mutations, 800 KiB): a normal Ready is exactly one commit,
 * which fsyncs once. The stream is ordered so that a crash between two of its commits leaves
 * a state `load()` accepts and that Raft can restart from: first the replaced log tail is
 * deleted, whole runs from the highest down, and a run the truncation point falls inside is
 * then rewritten in place (one set of its key) with only the entries before that point: at
 * every commit boundary the stored log is a prefix of the old log. Then snapshot chunks
 * (invisible until their record exists), the snapshot record, new runs from the lowest index
 * up (a run's part 0 last, so a present part 0 means a complete run), the hard state, and
 * only then the runs the snapshot covers entirely and the previous snapshot's chunks are
 * deleted. A run that straddles the snapshot index stays until a later snapshot covers it;
 * `load()` skips its entries up to the snapshot. `load()` removes whatever a crash left behind
 * (orphan chunks, covered runs, a partially written run and anything after a gap).
 * `saveSnapshot()` writes in the same order, as separate commits between which `save()`s run,
 * so log fsyncs never wait for a whole snapshot.
 */
import type { Entry, HardState, PersistedState, Snapshot, SnapshotMeta } from "../raft/types.ts";
import { MokvError } from "../errors.ts";
import { ByteReader, ByteWriter, CodecError } from "./_binary.ts";
import {
  CODEC_VERSION,
  decodeEntry,
  decodeHardState,
  encodeHardState,
  readEntry,
  readSnapshotMeta,
  writeEntry,
  writeSnapshotMeta,
} from "./codec.ts";
import { dirname } from "node:path";
import type { LogStore } from "./interfaces.ts";

/** The storage cannot continue: corrupt data, a misuse, or an earlier failed commit. */
export class StorageError extends MokvError {}

/** Options of `RaftStorage.open`. */
export interface StorageOptions {
  /**
   * Test hook, called after every successful atomic commit with the number of commits made
   * since open (1-based). Throwing from it simulates a crash right after that commit: the
   * operation rejects and the storage refuses further writes until it is reopened.
   */
  readonly afterCommit?: (commitNumber: number) => void;
  /**
   * Test knob: mutations per atomic commit, at most (default and ceiling: Deno KV's 1000).
   * The simulator sets it low so that ordinary batches span several commits and a crash
   * can tear them; below the default it also caps the entries of one log run at the same
   * number, so that a batch is several runs and truncations fall inside runs.
   */
  readonly maxCommitMutations?: number;
}

/**
 * The part of `Deno.Kv` the storage uses (a `Deno.Kv` is one); the simulator brings an
 * in-memory file whose commits complete on its virtual clock.
 */
export interface KvFile {
  get(key: Deno.KvKey): Promise<{ readonly value: unknown }>;
  list(
    selector: { readonly prefix: Deno.KvKey },
    options?: { readonly batchSize?: number },
  ): AsyncIterable<{ readonly key: Deno.KvKey; readonly value: unknown }>;
  atomic(): KvAtomic;
  close(): void;
}

/** One atomic commit being built on a {@link KvFile}. */
export interface KvAtomic {
  set(key: Deno.KvKey, value: Uint8Array): unknown;
  delete(key: Deno.KvKey): unknown;
  commit(): Promise<{ readonly ok: boolean }>;
}

/** Figures for metrics. */
export interface StorageStats {
  /** Atomic commits made since open (each one fsyncs). */
  readonly commits: number;
  /** Duration of the last commit in milliseconds. */
  readonly lastCommitMs: number;
  /** Sum of all commit durations in milliseconds. */
  readonly totalCommitMs: number;
  /** Value bytes written since open. */
  readonly bytesWritten: number;
  /** Log entries written since open. */
  readonly entriesWritten: number;
  /** First and last stored log index (last = first - 1 when the log is empty). */
  readonly firstIndex: number;
  readonly lastIndex: number;
  /** Index of the stored snapshot, 0 if none. */
  readonly snapshotIndex: number;
}

/** Largest slice of a log run or snapshot stored in one Deno KV value (limit: 64 KiB). */
export const PART_BYTES = 60 * 1024;
/**
 * First byte of a log run's body. Bodies of the per-entry layout start with the codec
 * version instead (1 so far); this value stays clear of the versions to come.
 */
export const RUN_FORMAT = 0xb0;
const MAX_COMMIT_MUTATIONS = 1000;
/** Deno KV rejects commits above 819,200 bytes of keys and values; keep a margin. */
const MAX_COMMIT_BYTES = 760 * 1024;
/**
 * Limits of one commit of `saveSnapshot`, well below Deno KV's: a log save queued behind such
 * a commit waits for a few milliseconds, not for a 1000-mutation commit's tens.
 */
const SNAPSHOT_STEP_MUTATIONS = 250;
const SNAPSHOT_STEP_BYTES = 192 * 1024;
/** Generous estimate of one encoded key's size, counted against MAX_COMMIT_BYTES. */
const KEY_BYTES = 48;
const LIST_BATCH = 500;

const ROOT = "raft";
const HARD_KEY: Deno.KvKey = [ROOT, "hard"];
const SNAP_META_KEY: Deno.KvKey = [ROOT, "snapmeta"];
const LOG = "log";
const SNAP = "snap";

const ZERO_HARD_STATE: HardState = { term: 0, vote: "", commit: 0 };

interface SnapshotRecord {
  readonly generation: number;
  readonly chunks: number;
  readonly dataBytes: number;
  readonly meta: SnapshotMeta;
}

/**
 * One stored log run: the entries [first, last] under `["raft", "log", first, 0..parts-1]`.
 * Only a run of one entry has more than one part.
 */
interface Run {
  readonly first: number;
  readonly last: number;
  readonly parts: number;
}

/** What a truncation leaves of the stored runs: the first `keep` whole, then `partial`. */
interface Truncation {
  readonly keep: number;
  readonly partial: Run | undefined;
}

/** One mutation of a commit stream: a set when `value` is present, else a delete. */
interface Mutation {
  readonly key: Deno.KvKey;
  readonly value?: Uint8Array;
}

function logKey(index: number, part: number): Deno.KvKey {
  return [ROOT, LOG, index, part];
}

function chunkKey(generation: number, chunk: number): Deno.KvKey {
  return [ROOT, SNAP, generation, chunk];
}

function encodeSnapshotRecord(r: SnapshotRecord): Uint8Array {
  const w = new ByteWriter(128);
  w.u8(CODEC_VERSION);
  w.varint(r.generation);
  w.varint(r.chunks);
  w.varint(r.dataBytes);
  writeSnapshotMeta(w, r.meta);
  return w.finish();
}

function decodeSnapshotRecord(bytes: Uint8Array): SnapshotRecord {
  const r = new ByteReader(bytes);
  const v = r.u8();
  if (v !== CODEC_VERSION) throw new CodecError(`unsupported snapshot record version ${v}`);
  const rec = {
    generation: r.varint(),
    chunks: r.varint(),
    dataBytes: r.varint(),
    meta: readSnapshotMeta(r),
  };
  r.end();
  return rec;
}

function asBytes(v: unknown, key: Deno.KvKey): Uint8Array {
  if (v instanceof Uint8Array) return v;
  throw new StorageError(`value at ${JSON.stringify(key)} is not bytes`);
}

/**
 * Raft's stable storage on a Deno KV file. Call `load()` once after `open()` and before any
 * write: it reads the state back, repairs what an interrupted write left, and establishes the
 * in-memory index range that lets truncation and compaction run without scans. Writes are
 * serialized; each resolves once durable.
 */
export class RaftStorage implements LogStore {
  readonly #kv: KvFile;
  readonly #options: StorageOptions;
  readonly #maxCommitMutations: number;
  readonly #writer = new ByteWriter(64 * 1024);
  #loaded = false;
  #broken: Error | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #maxRunEntries: number;
  /** Stored log entries are exactly [#first, #last]; #first = snapshot index + 1. */
  #first = 1;
  #last = 0;
  /**
   * The stored runs, ascending and contiguous, ending at #last; the first one may start at
   * or before the snapshot index (its entries up to there are dead).
   */
  #runs: Run[] = [];
  #snapshot: SnapshotRecord | undefined;
  /** Generation of the next snapshot written: above every generation seen on disk. */
  #nextGeneration = 1;
  #commits = 0;
  #lastCommitMs = 0;
  #totalCommitMs = 0;
  #bytesWritten = 0;
  #entriesWritten = 0;

  private constructor(kv: KvFile, options: StorageOptions) {
    this.#kv = kv;
    this.#options = options;
    this.#maxCommitMutations = Math.max(
      1,
      Math.min(MAX_COMMIT_MUTATIONS, options.maxCommitMutations ?? MAX_COMMIT_MUTATIONS),
    );
    this.#maxRunEntries = this.#maxCommitMutations < MAX_COMMIT_MUTATIONS
      ? this.#maxCommitMutations
      : Infinity;
  }

  /** Storage on an already open file (the simulator's in-memory one, for instance). */
  static over(kv: KvFile, options: StorageOptions = {}): RaftStorage {
    return new RaftStorage(kv, options);
  }

  /** Opens (creating if needed, parent directory included) the Deno KV file at `path`. */
  static async open(path: string, options: StorageOptions = {}): Promise<RaftStorage> {
    await Deno.mkdir(dirname(path), { recursive: true });
    return new RaftStorage(await Deno.openKv(path), options);
  }

  /**
   * Everything a restarting node needs: the hard state (zero if none), the latest snapshot
   * with its data, and the log entries after it, in order and without gaps. Also deletes the
   * leftovers of an interrupted write. Throws `StorageError` on corrupt data.
   */
  load(): Promise<PersistedState> {
    return this.#serialize(() => this.#load());
  }

  /**
   * Persists one Ready's durable part; resolves once it is durable. With a snapshot, the
   * snapshot replaces the log it covers; stored entries after it stay only if the stored
   * entry at the snapshot's index has the snapshot's term (the log matches). Entries replace
   * stored entries from `entries[0].index` on (stored entries beyond the new last index are
   * deleted); they must be contiguous and leave no gap after the stored log or snapshot.
   */
  save(batch: {
    readonly hardState?: HardState;
    readonly entries: readonly Entry[];
    readonly snapshot?: Snapshot;
  }): Promise<void> {
    return this.#serialize(() => this.#save(batch.hardState, batch.entries, batch.snapshot));
  }

  /**
   * Stores a snapshot the application took itself and deletes the log entries up to
   * `meta.index`; the entries after it stay. Resolves once durable and the covered log is
   * deleted.
   *
   * Unlike `save`, this is not one operation of the write queue but a sequence of them, one
   * per atomic commit: the chunks (invisible until their record exists), the record, then
   * the deletes of the covered log and of the previous snapshot's chunks. `save` calls made
   * meanwhile run between those commits, so a large snapshot (tens of MB of chunks, up to
   * `snapshotEntries` deletes) never holds the log's fsyncs up for seconds. Those saves only
   * touch entries after the snapshot's index, which is committed and so never rewritten.
   * A snapshot from the leader (`save` with one) must not be started while this runs.
   */
  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    const generation = await this.#serialize(() => {
      this.#checkSnapshotIndex(snapshot);
      return Promise.resolve(this.#nextGeneration++);
    });
    const data = snapshot.data;
    const chunks: Mutation[] = [];
    for (let c = 0; c * PART_BYTES < data.length; c++) {
      chunks.push({
        key: chunkKey(generation, c),
        value: data.subarray(c * PART_BYTES, Math.min(data.length, (c + 1) * PART_BYTES)),
      });
    }
    for (const batch of this.#cutSteps(chunks)) {
      await this.#serialize(() => this.#commitOrBreak(batch));
    }
    const garbage = await this.#serialize(async () => {
      this.#checkSnapshotIndex(snapshot);
      const record: SnapshotRecord = {
        generation,
        chunks: chunks.length,
        dataBytes: data.length,
        meta: snapshot.meta,
      };
      await this.#commitOrBreak([{ key: SNAP_META_KEY, value: encodeSnapshotRecord(record) }]);
      // Durable: the covered log and the old chunks are garbage now (load drops them too).
      const old = this.#snapshot;
      const s = snapshot.meta.index;
      const dead: Mutation[] = [];
      const covered = this.#pushCompaction(dead, this.#runs, this.#runs.length, s);
      this.#runs.splice(0, covered);
      if (old) {
        for (let c = 0; c < old.chunks; c++) dead.push({ key: chunkKey(old.generation, c) });
      }
      this.#snapshot = record;
      this.#first = s + 1;
      this.#last = Math.max(this.#last, s);
      return dead;
    });
    for (const batch of this.#cutSteps(garbage)) {
      await this.#serialize(() => this.#commitOrBreak(batch));
    }
  }

  /**
   * The stored entries [lo, hi], read back from their runs, or undefined when some of them
   * are not stored (any more: a snapshot compacted them meanwhile, or beyond the log). Reads
   * go beside the write queue, so a read never waits for a log save nor delays one; a run a
   * concurrent write deletes or rewrites reads as missing, and the host checks the index and
   * term of what it gets. Data are views into each run's own bytes. Throws on corrupt runs.
   */
  async readEntries(lo: number, hi: number): Promise<Entry[] | undefined> {
    if (!this.#loaded) throw new StorageError("load() must run before reading entries");
    if (lo > hi) return [];
    if (lo < this.#first || hi > this.#last) return undefined;
    const runs = this.#runs.slice(this.#runAt(lo), this.#runAt(hi) + 1);
    const read = await Promise.all(runs.map((run) => this.#readRunIfStored(run)));
    const out: Entry[] = [];
    for (const got of read) {
      if (got === undefined) return undefined;
      for (const e of got) if (e.index >= lo && e.index <= hi) out.push(e);
    }
    // A run rewritten in place by a truncation meanwhile holds fewer entries.
    if (out.length !== hi - lo + 1 || out[0].index !== lo) return undefined;
    return out;
  }

  /** Refuses a snapshot older than the stored one. */
  #checkSnapshotIndex(snapshot: Snapshot): void {
    if (!this.#loaded) throw new StorageError("load() must run before the first write");
    const current = this.#snapshot?.meta.index ?? 0;
    if (snapshot.meta.index < current) {
      throw new StorageError(
        `snapshot at ${snapshot.meta.index} is older than the stored one at ${current}`,
      );
    }
  }

  /** Closes the Deno KV file; pending writes are not waited for. */
  close(): void {
    this.#kv.close();
  }

  /** Figures for metrics: commits, their latency, bytes and entries written, index range. */
  stats(): StorageStats {
    return {
      commits: this.#commits,
      lastCommitMs: this.#lastCommitMs,
      totalCommitMs: this.#totalCommitMs,
      bytesWritten: this.#bytesWritten,
      entriesWritten: this.#entriesWritten,
      firstIndex: this.#first,
      lastIndex: this.#last,
      snapshotIndex: this.#snapshot?.meta.index ?? 0,
    };
  }

  #serialize<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(() => {
      if (this.#broken) {
        throw new StorageError(`storage failed earlier, reopen it: ${this.#broken.message}`);
      }
      return op();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // Loading

  async #load(): Promise<PersistedState> {
    const hardRes = await this.#kv.get(HARD_KEY);
    const hardState = hardRes.value === null
      ? ZERO_HARD_STATE
      : decodeHardState(asBytes(hardRes.value, HARD_KEY));
    const recRes = await this.#kv.get(SNAP_META_KEY);
    const record = recRes.value === null
      ? undefined
      : decodeSnapshotRecord(asBytes(recRes.value, SNAP_META_KEY));
    const garbage: Mutation[] = [];

    // Snapshot chunks: the current generation's are the data, any other generation is an
    // orphan of an interrupted snapshot write or of an unfinished cleanup.
    let snapshot: Snapshot | undefined;
    const data = new Uint8Array(record?.dataBytes ?? 0);
    let chunksSeen = 0;
    let dataOffset = 0;
    for await (
      const kv of this.#kv.list({ prefix: [ROOT, SNAP] }, { batchSize: LIST_BATCH })
    ) {
      const generation = kv.key[2];
      const chunk = kv.key[3];
      if (typeof generation === "number" && generation >= this.#nextGeneration) {
        this.#nextGeneration = generation + 1;
      }
      if (record === undefined || generation !== record.generation) {
        garbage.push({ key: kv.key });
        continue;
      }
      const bytes = asBytes(kv.value, kv.key);
      if (chunk !== chunksSeen || dataOffset + bytes.length > data.length) {
        throw new StorageError(`snapshot chunk ${String(chunk)} out of place`);
      }
      data.set(bytes, dataOffset);
      dataOffset += bytes.length;
      chunksSeen++;
    }
    if (record) {
      if (chunksSeen !== record.chunks || dataOffset !== record.dataBytes) {
        throw new StorageError(
          `snapshot at ${record.meta.index} has ${chunksSeen}/${record.chunks} chunks, ` +
            `${dataOffset}/${record.dataBytes} bytes`,
        );
      }
      snapshot = { meta: record.meta, data };
    }

    // Log: runs the snapshot covers entirely are leftovers of a compaction; after the first
    // gap or incomplete run everything is the residue of an interrupted write.
    const snapIndex = record?.meta.index ?? 0;
    const entries: Entry[] = [];
    const runs: Run[] = [];
    let expected = snapIndex + 1;
    let broken = false;
    let cur: { first: number; parts: number; chunks: Uint8Array[]; keys: Deno.KvKey[] } | null =
      null;
    const finish = () => {
      if (cur === null) return;
      const run = cur;
      cur = null;
      if (run.chunks.length !== run.parts) {
        // A run in parts holds one entry: one the snapshot covers is a leftover, not a tear.
        if (run.first > snapIndex) broken = true;
        for (const key of run.keys) garbage.push({ key });
        return;
      }
      const got = this.#decodeRun(run.first, run.chunks);
      const last = run.first + got.length - 1;
      if (last <= snapIndex) {
        for (const key of run.keys) garbage.push({ key });
        return;
      }
      if (run.first > expected) {
        broken = true;
        for (const key of run.keys) garbage.push({ key });
        return;
      }
      if (run.first < expected && run.first > snapIndex) {
        throw new StorageError(`log run at ${run.first} overlaps the run before it`);
      }
      for (const e of got) if (e.index >= expected) entries.push(e);
      runs.push({ first: run.first, last, parts: run.parts });
      expected = last + 1;
    };
    for await (
      const kv of this.#kv.list({ prefix: [ROOT, LOG] }, { batchSize: LIST_BATCH })
    ) {
      const first = kv.key[2];
      const part = kv.key[3];
      if (typeof first !== "number" || typeof part !== "number") {
        throw new StorageError(`malformed log key ${JSON.stringify(kv.key)}`);
      }
      if (cur !== null && cur.first !== first) finish();
      if (broken) {
        garbage.push({ key: kv.key });
        continue;
      }
      const bytes = asBytes(kv.value, kv.key);
      if (cur === null) {
        if (part !== 0) {
          // The later parts of a run without its part 0: a covered run half deleted (part 0
          // goes first), or the top run half written (part 0 comes last).
          garbage.push({ key: kv.key });
          if (first > snapIndex) broken = true;
          continue;
        }
        const r = new ByteReader(bytes);
        const parts = r.varint();
        cur = { first, parts, chunks: [bytes.subarray(r.position)], keys: [kv.key] };
      } else if (part === cur.chunks.length && part < cur.parts) {
        cur.chunks.push(bytes);
        cur.keys.push(kv.key);
      } else {
        throw new StorageError(`log run ${first} has an unexpected part ${part}`);
      }
    }
    finish();

    this.#snapshot = record;
    if (record && record.generation >= this.#nextGeneration) {
      this.#nextGeneration = record.generation + 1;
    }
    this.#first = snapIndex + 1;
    this.#last = entries.length === 0 ? snapIndex : entries[entries.length - 1].index;
    this.#runs = runs;
    if (garbage.length > 0) await this.#commitStream(garbage);
    this.#loaded = true;
    return { hardState, snapshot, entries };
  }

  /**
   * The entries of the run stored at `first` from its parts (part 0 without its part count):
   * a run body, or one entry of the per-entry layout.
   */
  #decodeRun(first: number, chunks: readonly Uint8Array[]): Entry[] {
    let bytes: Uint8Array;
    if (chunks.length === 1) {
      bytes = chunks[0];
    } else {
      let n = 0;
      for (const c of chunks) n += c.length;
      bytes = new Uint8Array(n);
      let o = 0;
      for (const c of chunks) {
        bytes.set(c, o);
        o += c.length;
      }
    }
    const out: Entry[] = [];
    try {
      const r = new ByteReader(bytes);
      const format = r.u8();
      if (format === RUN_FORMAT) {
        const v = r.u8();
        if (v !== CODEC_VERSION) throw new CodecError(`unsupported codec version ${v}`);
        // Views into the run's bytes (its own buffer, of about the entries' size, and the
        // entries of a run are compacted together): no ArrayBuffer per entry.
        while (r.remaining > 0) out.push(readEntry(r, true));
        if (out.length === 0) throw new CodecError("empty run");
      } else {
        out.push(decodeEntry(bytes));
      }
    } catch (err) {
      throw new StorageError(`log run ${first} is corrupt: ${(err as Error).message}`);
    }
    for (let i = 0; i < out.length; i++) {
      if (out[i].index !== first + i) {
        throw new StorageError(`log key ${first} holds entry ${out[i].index} at position ${i}`);
      }
    }
    return out;
  }

  /** Reads the stored run `run` back. */
  async #readRun(run: Run): Promise<Entry[]> {
    const got = await this.#readRunIfStored(run);
    if (got === undefined) throw new StorageError(`log run ${run.first} is missing a part`);
    return got;
  }

  /** Reads the stored run `run` back, or undefined when a part of it is not stored. */
  async #readRunIfStored(run: Run): Promise<Entry[] | undefined> {
    const chunks: Uint8Array[] = [];
    for (let p = 0; p < run.parts; p++) {
      const key = logKey(run.first, p);
      const res = await this.#kv.get(key);
      if (res.value === null) return undefined;
      const bytes = asBytes(res.value, key);
      if (p === 0) {
        const r = new ByteReader(bytes);
        r.varint();
        chunks.push(bytes.subarray(r.position));
      } else {
        chunks.push(bytes);
      }
    }
    return this.#decodeRun(run.first, chunks);
  }

  /** Position in #runs of the run holding `index` (which must be in [#first, #last]). */
  #runAt(index: number): number {
    const runs = this.#runs;
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid].last < index) lo = mid + 1;
      else if (runs[mid].first > index) hi = mid - 1;
      else return mid;
    }
    throw new StorageError(`log entry ${index} is not stored`);
  }

  // -------------------------------------------------------------------------------------------
  // Writing

  async #save(
    hardState: HardState | undefined,
    entries: readonly Entry[],
    snapshot: Snapshot | undefined,
  ): Promise<void> {
    if (!this.#loaded) throw new StorageError("load() must run before the first write");
    const stream: Mutation[] = [];
    const oldRecord = this.#snapshot;
    let first = this.#first;
    let last = this.#last;
    let newRecord: SnapshotRecord | undefined;
    /** Stored entries from this index on are deleted by this write. */
    let cutFrom = Infinity;

    if (snapshot) {
      const s = snapshot.meta.index;
      const current = oldRecord?.meta.index ?? 0;
      if (s < current) {
        throw new StorageError(`snapshot at ${s} is older than the stored one at ${current}`);
      }
      // A snapshot from the leader keeps the stored tail only where the log matches it.
      let keepTail = false;
      if (s >= first && s <= last) {
        keepTail = (await this.#storedTerm(s)) === snapshot.meta.term;
      }
      if (!keepTail && last > s) {
        cutFrom = Math.max(s + 1, first);
        last = s;
      }
    }

    if (entries.length > 0) {
      const lo = entries[0].index;
      const floor = snapshot ? snapshot.meta.index : first - 1;
      // After a snapshot beyond the stored log, the entries that follow it start right after it.
      const top = snapshot ? Math.max(last, snapshot.meta.index) : last;
      if (lo <= floor || lo > top + 1) {
        throw new StorageError(
          `entries from ${lo} leave a gap or rewrite compacted entries (log ${first}..${last})`,
        );
      }
      for (let i = 1; i < entries.length; i++) {
        if (entries[i].index !== lo + i) throw new StorageError("entries are not contiguous");
      }
      if (last >= lo) cutFrom = Math.min(cutFrom, lo);
    }

    // Delete what is replaced, from the top down: a crash mid-way leaves an old prefix.
    const truncation = cutFrom <= this.#last
      ? await this.#pushTruncation(stream, cutFrom)
      : undefined;

    if (snapshot) {
      const generation = this.#nextGeneration++;
      const data = snapshot.data;
      const chunks = Math.ceil(data.length / PART_BYTES);
      for (let c = 0; c < chunks; c++) {
        stream.push({
          key: chunkKey(generation, c),
          value: data.subarray(c * PART_BYTES, Math.min(data.length, (c + 1) * PART_BYTES)),
        });
      }
      newRecord = { generation, chunks, dataBytes: data.length, meta: snapshot.meta };
      stream.push({ key: SNAP_META_KEY, value: encodeSnapshotRecord(newRecord) });
    }

    const newRuns: Run[] = [];
    if (entries.length > 0) this.#pushRuns(stream, entries, newRuns);
    if (hardState) stream.push({ key: HARD_KEY, value: encodeHardState(hardState) });

    // Only now that the snapshot is durable: drop the runs it covers and the old chunks.
    let covered = 0;
    let partial = truncation?.partial;
    if (snapshot && newRecord) {
      const s = snapshot.meta.index;
      const kept = truncation ? truncation.keep : this.#runs.length;
      covered = this.#pushCompaction(stream, this.#runs, kept, s);
      if (covered === kept && partial && partial.last <= s) {
        this.#pushDeleteRun(stream, partial, false);
        partial = undefined;
      }
      if (oldRecord) {
        for (let c = 0; c < oldRecord.chunks; c++) {
          stream.push({ key: chunkKey(oldRecord.generation, c) });
        }
      }
      first = s + 1;
      last = Math.max(last, s);
    }

    try {
      await this.#commitStream(stream);
    } catch (err) {
      this.#broken = err instanceof Error ? err : new Error(String(err));
      throw err;
    }

    // Durable: update the in-memory picture.
    if (newRecord) this.#snapshot = newRecord;
    if (entries.length > 0) {
      last = entries[entries.length - 1].index;
      this.#entriesWritten += entries.length;
    }
    const runs = this.#runs;
    if (truncation) {
      runs.length = truncation.keep;
      if (partial) runs.push(partial);
    }
    for (const r of newRuns) runs.push(r);
    if (covered > 0) runs.splice(0, covered);
    this.#first = first;
    this.#last = last;
  }

  /**
   * Appends the mutations that delete the stored entries from `cut` on: the runs that start
   * at or after it, from the highest down, then the run `cut` falls inside rewritten in place
   * with its entries before `cut` (one set, so the log stays an old prefix at every commit).
   */
  async #pushTruncation(stream: Mutation[], cut: number): Promise<Truncation> {
    const runs = this.#runs;
    let keep = runs.length;
    while (keep > 0 && runs[keep - 1].first >= cut) {
      keep--;
      this.#pushDeleteRun(stream, runs[keep], true);
    }
    if (keep === 0 || runs[keep - 1].last < cut) return { keep, partial: undefined };
    const run = runs[keep - 1];
    // Only a run of several entries can be cut inside, and such a run is a single value.
    if (run.parts !== 1) throw new StorageError(`log run ${run.first} cannot be cut at ${cut}`);
    const prefix = (await this.#readRun(run)).filter((e) => e.index < cut);
    const w = this.#writer;
    w.reset();
    w.u8(1);
    w.u8(RUN_FORMAT);
    w.u8(CODEC_VERSION);
    for (const e of prefix) writeEntry(w, e);
    stream.push({ key: logKey(run.first, 0), value: w.finish() });
    return { keep: keep - 1, partial: { first: run.first, last: cut - 1, parts: 1 } };
  }

  /**
   * Appends, in ascending order, the deletes of the leading runs among `runs[0..count)` that
   * end at or before `index` (a snapshot covers them), and returns how many there are.
   */
  #pushCompaction(stream: Mutation[], runs: readonly Run[], count: number, index: number): number {
    let k = 0;
    while (k < count && runs[k].last <= index) this.#pushDeleteRun(stream, runs[k++], false);
    return k;
  }

  /** Appends the deletes of every part of `run`. */
  #pushDeleteRun(stream: Mutation[], run: Run, descending: boolean): void {
    if (descending) {
      for (let p = run.parts - 1; p >= 0; p--) stream.push({ key: logKey(run.first, p) });
    } else {
      for (let p = 0; p < run.parts; p++) stream.push({ key: logKey(run.first, p) });
    }
  }

  /**
   * Appends the sets of `entries` as runs of at most PART_BYTES (and #maxRunEntries entries),
   * lowest first; an entry too big for one value is a run of its own, its parts 1..n-1 set
   * before part 0 (with the count), so a present part 0 means a complete run.
   */
  #pushRuns(stream: Mutation[], entries: readonly Entry[], newRuns: Run[]): void {
    const w = this.#writer;
    let runFirst = -1;
    let count = 0;
    const flush = () => {
      if (count === 0) return;
      stream.push({ key: logKey(runFirst, 0), value: w.finish() });
      newRuns.push({ first: runFirst, last: runFirst + count - 1, parts: 1 });
      count = 0;
    };
    const start = (index: number) => {
      w.reset();
      w.u8(1); // part count: one part, unless a lone entry outgrows it
      w.u8(RUN_FORMAT);
      w.u8(CODEC_VERSION);
      runFirst = index;
    };
    for (const e of entries) {
      if (count === 0) start(e.index);
      const before = w.length;
      writeEntry(w, e);
      if (w.length <= PART_BYTES && count < this.#maxRunEntries) {
        count++;
        continue;
      }
      if (count > 0) {
        // Does not fit here: close the run so far and start the next one with this entry.
        w.truncate(before);
        flush();
        start(e.index);
        writeEntry(w, e);
        if (w.length <= PART_BYTES) {
          count = 1;
          continue;
        }
      }
      // Alone and too big for one value: a run of its own, in parts.
      const body = w.view().subarray(1);
      const parts = Math.ceil(body.length / PART_BYTES);
      for (let p = 1; p < parts; p++) {
        stream.push({
          key: logKey(e.index, p),
          value: body.slice(p * PART_BYTES, Math.min(body.length, (p + 1) * PART_BYTES)),
        });
      }
      const head = new ByteWriter(PART_BYTES + 8);
      head.varint(parts);
      head.raw(body.subarray(0, PART_BYTES));
      stream.push({ key: logKey(e.index, 0), value: head.finish() });
      newRuns.push({ first: e.index, last: e.index, parts });
      count = 0;
    }
    flush();
  }

  /** The term of the stored entry at `index` (which must be in [#first, #last]). */
  async #storedTerm(index: number): Promise<number> {
    const run = this.#runs[this.#runAt(index)];
    const stored = await this.#readRun(run);
    return stored[index - run.first].term;
  }

  /** Cuts `stream` into atomic commits within Deno KV's limits and runs them in order. */
  async #commitStream(stream: readonly Mutation[]): Promise<void> {
    for (const batch of this.#cut(stream)) await this.#commit(batch);
  }

  /** `stream` in consecutive pieces that each fit in one atomic commit (and in the limits). */
  #cut(
    stream: readonly Mutation[],
    maxMutations = this.#maxCommitMutations,
    maxBytes = MAX_COMMIT_BYTES,
  ): Mutation[][] {
    const out: Mutation[][] = [];
    let cur: Mutation[] = [];
    let bytes = 0;
    for (const m of stream) {
      const size = KEY_BYTES + (m.value?.length ?? 0);
      if (
        cur.length > 0 &&
        (cur.length + 1 > maxMutations || bytes + size > maxBytes)
      ) {
        out.push(cur);
        cur = [];
        bytes = 0;
      }
      cur.push(m);
      bytes += size;
    }
    if (cur.length > 0) out.push(cur);
    return out;
  }

  /** `stream` in the small commits of `saveSnapshot`. */
  #cutSteps(stream: readonly Mutation[]): Mutation[][] {
    return this.#cut(
      stream,
      Math.min(this.#maxCommitMutations, SNAPSHOT_STEP_MUTATIONS),
      SNAPSHOT_STEP_BYTES,
    );
  }

  /** One commit of a multi-step write: a failure makes the storage refuse further writes. */
  async #commitOrBreak(batch: readonly Mutation[]): Promise<void> {
    try {
      await this.#commit(batch);
    } catch (err) {
      this.#broken = err instanceof Error ? err : new Error(String(err));
      throw err;
    }
  }

  /** One atomic commit of `batch` (which fits Deno KV's limits). */
  async #commit(batch: readonly Mutation[]): Promise<void> {
    const op = this.#kv.atomic();
    let valueBytes = 0;
    for (const m of batch) {
      if (m.value) {
        op.set(m.key, m.value);
        valueBytes += m.value.length;
      } else {
        op.delete(m.key);
      }
    }
    const start = performance.now();
    const res = await op.commit();
    if (!res.ok) throw new StorageError("Deno KV refused an unconditional commit");
    const ms = performance.now() - start;
    this.#commits++;
    this.#lastCommitMs = ms;
    this.#totalCommitMs += ms;
    this.#bytesWritten += valueBytes;
    this.#options.afterCommit?.(this.#commits);
  }
}
