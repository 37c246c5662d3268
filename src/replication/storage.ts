/**
 * Durable Raft state on one Deno KV file: hard state, log entries and snapshots.
 *
 * Layout (all keys under "raft"):
 * - `["raft", "hard"]`: the hard state (codec bytes).
 * - `["raft", "log", index, part]`: one log entry, split into parts of at most 60 KiB because
 *   Deno KV values are limited to 64 KiB. Part 0 holds a varint part count, then the first
 *   slice of the codec bytes of the entry; parts 1..n-1 hold the rest.
 * - `["raft", "snapmeta"]`: the current snapshot's record: generation, chunk count, data size
 *   and metadata. Its data lives in `["raft", "snap", generation, chunk]`.
 *
 * One `save()` turns into one ordered stream of mutations, cut into as few atomic commits as
 * the Deno KV limits allow (1000 mutations, 800 KiB): a normal Ready is exactly one commit,
 * which fsyncs once. The stream is ordered so that a crash between two of its commits leaves
 * a state `load()` accepts and that Raft can restart from: first the replaced log tail is
 * deleted from the highest index down (leaving a prefix of the old log), then snapshot chunks
 * (invisible until their record exists), the snapshot record, new entries from the lowest index
 * up (an entry's part 0 last, so a present part 0 means a complete entry), the hard state, and
 * only then the entries the snapshot covers and the previous snapshot's chunks are deleted.
 * `load()` removes whatever such a crash left behind (orphan chunks, covered entries, a
 * partially written entry). `saveSnapshot()` writes in the same order, as separate commits
 * between which `save()`s run, so log fsyncs never wait for a whole snapshot.
 */
import type { Entry, HardState, PersistedState, Snapshot, SnapshotMeta } from "../raft/types.ts";
import { MokvError } from "../errors.ts";
import { ByteReader, ByteWriter, CodecError } from "./_binary.ts";
import {
  CODEC_VERSION,
  decodeEntry,
  decodeHardState,
  encodeHardState,
  peekEntryHeader,
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
   * can tear them.
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

/** Largest slice of an entry or snapshot stored in one Deno KV value (limit: 64 KiB). */
export const PART_BYTES = 60 * 1024;
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
  /** Stored log entries are exactly [#first, #last]; #first = snapshot index + 1. */
  #first = 1;
  #last = 0;
  /** Part counts of stored entries that needed more than one part. */
  readonly #parts = new Map<number, number>();
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
      this.#deleteRange(dead, this.#first, Math.min(s, this.#last), false);
      for (const i of this.#parts.keys()) if (i <= s) this.#parts.delete(i);
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

    // Log: entries the snapshot covers are leftovers of a compaction; after the first gap or
    // incomplete entry everything is the residue of an interrupted write.
    const snapIndex = record?.meta.index ?? 0;
    const entries: Entry[] = [];
    this.#parts.clear();
    let expected = snapIndex + 1;
    let broken = false;
    let cur: { index: number; parts: number; chunks: Uint8Array[]; keys: Deno.KvKey[] } | null =
      null;
    const finish = () => {
      if (cur === null) return;
      if (cur.chunks.length !== cur.parts) {
        broken = true;
        for (const key of cur.keys) garbage.push({ key });
      } else {
        entries.push(this.#decodeStored(cur.index, cur.chunks));
        if (cur.parts > 1) this.#parts.set(cur.index, cur.parts);
        expected = cur.index + 1;
      }
      cur = null;
    };
    for await (
      const kv of this.#kv.list({ prefix: [ROOT, LOG] }, { batchSize: LIST_BATCH })
    ) {
      const index = kv.key[2];
      const part = kv.key[3];
      if (typeof index !== "number" || typeof part !== "number") {
        throw new StorageError(`malformed log key ${JSON.stringify(kv.key)}`);
      }
      if (index <= snapIndex || broken) {
        garbage.push({ key: kv.key });
        continue;
      }
      if (cur !== null && cur.index !== index) finish();
      if (broken) {
        garbage.push({ key: kv.key });
        continue;
      }
      const bytes = asBytes(kv.value, kv.key);
      if (cur === null) {
        if (index !== expected || part !== 0) {
          broken = true;
          garbage.push({ key: kv.key });
          continue;
        }
        const r = new ByteReader(bytes);
        const parts = r.varint();
        cur = { index, parts, chunks: [bytes.subarray(r.position)], keys: [kv.key] };
      } else if (part === cur.chunks.length && part < cur.parts) {
        cur.chunks.push(bytes);
        cur.keys.push(kv.key);
      } else {
        throw new StorageError(`log entry ${index} has an unexpected part ${part}`);
      }
    }
    finish();

    this.#snapshot = record;
    if (record && record.generation >= this.#nextGeneration) {
      this.#nextGeneration = record.generation + 1;
    }
    this.#first = snapIndex + 1;
    this.#last = entries.length === 0 ? snapIndex : entries[entries.length - 1].index;
    if (garbage.length > 0) await this.#commitStream(garbage);
    this.#loaded = true;
    return { hardState, snapshot, entries };
  }

  #decodeStored(index: number, chunks: Uint8Array[]): Entry {
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
    let e: Entry;
    try {
      e = decodeEntry(bytes);
    } catch (err) {
      throw new StorageError(`log entry ${index} is corrupt: ${(err as Error).message}`);
    }
    if (e.index !== index) throw new StorageError(`log key ${index} holds entry ${e.index}`);
    return e;
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
        this.#deleteRange(stream, cutFrom, last, true);
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
      // Delete what is replaced, from the top down: a crash mid-way leaves an old prefix.
      if (last >= lo) {
        cutFrom = Math.min(cutFrom, lo);
        this.#deleteRange(stream, lo, last, true);
      }
    }

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

    const newParts = new Map<number, number>();
    for (const e of entries) this.#pushEntry(stream, e, newParts);
    if (hardState) stream.push({ key: HARD_KEY, value: encodeHardState(hardState) });

    // Only now that the snapshot is durable: drop the log it covers and the old chunks.
    if (snapshot && newRecord) {
      const s = snapshot.meta.index;
      this.#deleteRange(stream, first, Math.min(s, last), false);
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
    for (const i of this.#parts.keys()) {
      if (i >= cutFrom || i < first) this.#parts.delete(i);
    }
    for (const [i, n] of newParts) this.#parts.set(i, n);
    this.#first = first;
    this.#last = last;
  }

  /** Appends deletes of every stored part of entries [lo, hi], ascending or descending. */
  #deleteRange(stream: Mutation[], lo: number, hi: number, descending: boolean): void {
    if (hi < lo) return;
    const one = (i: number) => {
      const n = this.#parts.get(i) ?? 1;
      if (descending) {
        for (let p = n - 1; p >= 0; p--) stream.push({ key: logKey(i, p) });
      } else {
        for (let p = 0; p < n; p++) stream.push({ key: logKey(i, p) });
      }
    };
    if (descending) {
      for (let i = hi; i >= lo; i--) one(i);
    } else {
      for (let i = lo; i <= hi; i++) one(i);
    }
  }

  /** Appends the sets of one entry: parts 1..n-1 first, part 0 (with the count) last. */
  #pushEntry(stream: Mutation[], e: Entry, newParts: Map<number, number>): void {
    const w = this.#writer;
    w.reset();
    w.u8(1); // part count placeholder for the common single-part case
    w.u8(CODEC_VERSION);
    writeEntry(w, e);
    if (w.length <= PART_BYTES) {
      stream.push({ key: logKey(e.index, 0), value: w.finish() });
      return;
    }
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
    newParts.set(e.index, parts);
  }

  /** The term of the stored entry at `index` (which must be in [#first, #last]). */
  async #storedTerm(index: number): Promise<number> {
    const key = logKey(index, 0);
    const res = await this.#kv.get(key);
    if (res.value === null) throw new StorageError(`log entry ${index} is missing`);
    const bytes = asBytes(res.value, key);
    const r = new ByteReader(bytes);
    r.varint();
    return peekEntryHeader(bytes.subarray(r.position)).term;
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
