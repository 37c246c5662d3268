/**
 * Adversarial review of the log in runs (63f69ee): a model-checked random walk of Raft-legal
 * writes (appends, conflicting tails, leader snapshots that match or cut the log, the host's
 * own snapshots with saves issued between their commits, old per-entry files) over an
 * in-memory KvFile that enforces Deno KV's limits, with a crash after a random commit and a
 * check of what a reopened store loads; then directed cases on real Deno KV files.
 * `REVIEW_SEEDS=N REVIEW_FROM=M` widen the walk (40 seeds from 1 by default); `REVIEW_LOG=1`
 * prints its transcript.
 */
import { assert as assertTrue, assertEquals } from "../helpers/assert.ts";
import { countKeys, withTempDir } from "./_tmp.ts";
import { normalEntries, seeded } from "./_gen.ts";
import {
  type KvAtomic,
  type KvFile,
  PART_BYTES,
  RaftStorage,
  type StorageOptions,
} from "../../src/replication/storage.ts";
import { ByteWriter } from "../../src/replication/_binary.ts";
import { encodeEntry, encodeHardState } from "../../src/replication/codec.ts";
import type { Entry, HardState, PersistedState, Snapshot } from "../../src/raft/types.ts";

const CONFIG = { voters: ["n1", "n2", "n3"], learners: [], addresses: { n1: "a:1", n2: "b:2" } };

// ---------------------------------------------------------------------------------------------
// An in-memory Deno KV file that refuses what Deno KV refuses

interface Stored {
  readonly key: Deno.KvKey;
  readonly value: Uint8Array;
}

/** Deno KV's encoded size of a key made of strings and numbers. */
function keyBytes(key: Deno.KvKey): number {
  let n = 0;
  for (const p of key) {
    n += typeof p === "number" ? 9 : 2 + new TextEncoder().encode(String(p)).length;
  }
  return n;
}

function compareKeys(a: Deno.KvKey, b: Deno.KvKey): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i];
    const y = b[i];
    if (x === y) continue;
    if (typeof x !== typeof y) return typeof x < typeof y ? -1 : 1;
    return (x as number | string) < (y as number | string) ? -1 : 1;
  }
  return a.length - b.length;
}

/** Deno KV's limits of one atomic commit (ext/kv), checked on every commit. */
const KV_LIMITS = { mutations: 1000, totalBytes: 800 * 1024, keyBytes: 80 * 1024, value: 65536 };

class MemKv implements KvFile {
  readonly data: Map<string, Stored>;
  constructor(data: Map<string, Stored>) {
    this.data = data;
  }
  get(key: Deno.KvKey): Promise<{ readonly value: unknown }> {
    return Promise.resolve({ value: this.data.get(JSON.stringify(key))?.value ?? null });
  }
  async *list(
    selector: { readonly prefix: Deno.KvKey },
  ): AsyncIterable<{ readonly key: Deno.KvKey; readonly value: unknown }> {
    const prefix = selector.prefix;
    const found = [...this.data.values()].filter((s) =>
      s.key.length > prefix.length && prefix.every((p, i) => s.key[i] === p)
    );
    found.sort((a, b) => compareKeys(a.key, b.key));
    for (const s of found) yield { key: s.key, value: s.value };
  }
  atomic(): KvAtomic {
    const mutations: { key: Deno.KvKey; value?: Uint8Array }[] = [];
    return {
      set: (key, value) => mutations.push({ key, value: value.slice() }),
      delete: (key) => mutations.push({ key }),
      commit: () => {
        let total = 0;
        let keys = 0;
        for (const m of mutations) {
          const k = keyBytes(m.key);
          keys += k;
          total += k + (m.value?.length ?? 0);
          if ((m.value?.length ?? 0) > KV_LIMITS.value) {
            throw new Error(`value of ${m.value?.length} bytes at ${JSON.stringify(m.key)}`);
          }
        }
        if (mutations.length > KV_LIMITS.mutations) {
          throw new Error(`${mutations.length} mutations in one commit`);
        }
        if (total > KV_LIMITS.totalBytes) throw new Error(`${total} bytes in one commit`);
        if (keys > KV_LIMITS.keyBytes) throw new Error(`${keys} key bytes in one commit`);
        for (const m of mutations) {
          const id = JSON.stringify(m.key);
          if (m.value) this.data.set(id, { key: m.key, value: m.value });
          else this.data.delete(id);
        }
        return Promise.resolve({ ok: true });
      },
    };
  }
  close(): void {}
}

/** Writes `entries` in the per-entry layout of files before runs (part 0 last). */
function oldLayoutMutations(e: Entry, withPart0 = true): { key: Deno.KvKey; value: Uint8Array }[] {
  const body = encodeEntry(e);
  const parts = Math.max(1, Math.ceil(body.length / PART_BYTES));
  const out: { key: Deno.KvKey; value: Uint8Array }[] = [];
  for (let p = 1; p < parts; p++) {
    out.push({
      key: ["raft", "log", e.index, p],
      value: body.slice(p * PART_BYTES, (p + 1) * PART_BYTES),
    });
  }
  if (withPart0) {
    const head = new ByteWriter(PART_BYTES + 8);
    head.varint(parts);
    head.raw(body.subarray(0, PART_BYTES));
    out.push({ key: ["raft", "log", e.index, 0], value: head.finish() });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The model: what the store holds after a sequence of writes

interface Model {
  readonly snap: Snapshot | undefined;
  /** Entries after the snapshot, by index, up to `last`. */
  readonly log: ReadonlyMap<number, Entry>;
  readonly last: number;
  readonly hs: HardState;
}

interface SaveOp {
  readonly hardState?: HardState;
  readonly entries: readonly Entry[];
  readonly snapshot?: Snapshot;
}

function snapIndex(m: Model): number {
  return m.snap?.meta.index ?? 0;
}

/** The first stored index `op` replaces (Infinity if none), as `RaftStorage.save` defines it. */
function cutOf(m: Model, op: SaveOp): number {
  let cut = Infinity;
  if (op.snapshot) {
    const s = op.snapshot.meta.index;
    const keep = s > snapIndex(m) && s <= m.last && m.log.get(s)?.term === op.snapshot.meta.term;
    if (!keep && m.last > s) cut = s + 1;
  }
  if (op.entries.length > 0 && op.entries[0].index <= m.last) {
    cut = Math.min(cut, op.entries[0].index);
  }
  return cut;
}

function applySave(m: Model, op: SaveOp): Model {
  const cut = cutOf(m, op);
  const log = new Map<number, Entry>();
  let last = m.last;
  for (const [i, e] of m.log) if (i < cut) log.set(i, e);
  if (cut !== Infinity) last = cut - 1;
  let snap = m.snap;
  if (op.snapshot) {
    snap = op.snapshot;
    for (const i of [...log.keys()]) if (i <= op.snapshot.meta.index) log.delete(i);
    last = Math.max(last, op.snapshot.meta.index);
  }
  for (const e of op.entries) log.set(e.index, e);
  if (op.entries.length > 0) last = op.entries[op.entries.length - 1].index;
  return { snap, log, last, hs: op.hardState ?? m.hs };
}

function applySnapshot(m: Model, snap: Snapshot): Model {
  const log = new Map(m.log);
  for (const i of [...log.keys()]) if (i <= snap.meta.index) log.delete(i);
  return { snap, log, last: Math.max(m.last, snap.meta.index), hs: m.hs };
}

function entriesOf(m: Model): Entry[] {
  const out: Entry[] = [];
  for (let i = snapIndex(m) + 1; i <= m.last; i++) {
    const e = m.log.get(i);
    if (e === undefined) throw new Error(`model has a gap at ${i}`);
    out.push(e);
  }
  return out;
}

function modelOf(st: PersistedState): Model {
  const log = new Map<number, Entry>();
  for (const e of st.entries) log.set(e.index, e);
  const s = st.snapshot?.meta.index ?? 0;
  const last = st.entries.length > 0 ? st.entries[st.entries.length - 1].index : s;
  return { snap: st.snapshot, log, last, hs: st.hardState };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Cheap deep equality (a failing deep assertion would format a diff of megabytes). */
function same(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && bytesEqual(a, b);
  }
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.every((k) => Object.hasOwn(rb, k) && same(ra[k], rb[k]));
}

function sameSnapshot(a: Snapshot | undefined, b: Snapshot | undefined): boolean {
  return same(a, b);
}

function sameEntries(a: readonly Entry[], b: readonly Entry[]): boolean {
  return same(a, b);
}

/**
 * What a store may load after a crash: `base` is the state after every write that resolved;
 * `torn` the first save that did not (it may be partly durable); `inFlight` a `saveSnapshot`
 * that did not resolve (its record may or may not have landed). Returns why `st` is not
 * acceptable, or "" if it is.
 */
function judge(
  st: PersistedState,
  base: Model,
  torn: SaveOp | undefined,
  inFlight: Snapshot | undefined,
): string {
  const sL = st.snapshot?.meta.index ?? 0;
  const okSnaps = [base.snap];
  if (inFlight) okSnaps.push(inFlight);
  if (torn?.snapshot) okSnaps.push(torn.snapshot);
  if (!okSnaps.some((s) => sameSnapshot(st.snapshot, s))) {
    return `snapshot at ${sL} is none of ${okSnaps.map((s) => s?.meta.index ?? 0)}`;
  }
  for (let i = 0; i < st.entries.length; i++) {
    if (st.entries[i].index !== sL + 1 + i) return `entry ${i} has index ${st.entries[i].index}`;
  }
  const hsIsBase = same(st.hardState, base.hs);
  const hsIsNew = torn?.hardState !== undefined && same(st.hardState, torn.hardState);
  if (!hsIsBase && !hsIsNew) return `hard state ${JSON.stringify(st.hardState)} is unknown`;
  const view = (m: Model) => entriesOf(m).filter((e) => e.index > sL);
  if (
    torn?.snapshot && sameSnapshot(st.snapshot, torn.snapshot) &&
    !sameSnapshot(base.snap, torn.snapshot)
  ) {
    // After the torn write's record: its kept tail whole, then a prefix of its entries.
    const full = view(applySave(base, torn));
    const kept = full.filter((e) => e.index < (torn.entries[0]?.index ?? Infinity));
    if (!sameEntries(st.entries.slice(0, kept.length), kept)) return "the kept tail is not whole";
    const rest = st.entries.slice(kept.length);
    if (!sameEntries(rest, torn.entries.slice(0, rest.length))) {
      return "after the snapshot record: not a prefix of the new entries";
    }
    if (!hsIsBase && rest.length !== torn.entries.length) return "new hard state before entries";
    return "";
  }
  if (!hsIsBase) {
    // The torn write's hard state landed, so everything before it in its stream did.
    if (torn?.snapshot) return "the new hard state without the new snapshot";
    if (!sameEntries(st.entries, view(applySave(base, torn!)))) {
      return "the new hard state before all the new entries";
    }
    return "";
  }
  const cut = torn ? cutOf(base, torn) : Infinity;
  const old = view(base);
  const lastL = st.entries.length > 0 ? st.entries[st.entries.length - 1].index : sL;
  if (sameEntries(st.entries, old.slice(0, st.entries.length))) {
    const mustHave = Math.min(base.last, cut - 1);
    if (lastL < mustHave) return `lost entries ${lastL + 1}..${mustHave} that no write replaced`;
    return "";
  }
  if (!torn || torn.snapshot) return "entries are not an old prefix";
  const keep = old.filter((e) => e.index < cut);
  if (!sameEntries(st.entries.slice(0, keep.length), keep)) return "neither old nor old + new";
  const rest = st.entries.slice(keep.length);
  if (!sameEntries(rest, torn.entries.slice(0, rest.length))) return "not old + a new prefix";
  return "";
}

// ---------------------------------------------------------------------------------------------
// The random walk

class Walk {
  readonly random: () => number;
  maxTerm = 1;
  commit = 0;
  constructor(seed: number) {
    this.random = seeded(seed);
  }
  int(n: number): number {
    return Math.floor(this.random() * n);
  }
  dataBytes(many: boolean): number {
    const r = this.random();
    if (r < 0.6 || (many && r < 0.97)) return this.int(many ? 30 : 100);
    if (r < 0.8) return 100 + this.int(3000);
    if (r < 0.88) return 15_000 + this.int(30_000);
    if (r < 0.96) return PART_BYTES - 24 + this.int(30); // around one value
    return PART_BYTES * (1 + this.int(3)) + this.int(20) - 10;
  }
  entries(from: number, count: number, term: number): Entry[] {
    const out: Entry[] = [];
    for (let i = 0; i < count; i++) {
      const index = from + i;
      if (this.int(15) === 0) {
        out.push({
          type: "config",
          term,
          index,
          change: { type: "promote", id: "n3" },
          config: CONFIG,
        });
        continue;
      }
      const data = new Uint8Array(this.dataBytes(count > 20));
      for (let j = 0; j < data.length; j += 251) data[j] = (index * 31 + j + term) & 0xff;
      if (data.length > 0) data[data.length - 1] = index & 0xff;
      out.push({ type: "normal", term, index, data });
    }
    return out;
  }
  count(): number {
    const r = this.random();
    if (r < 0.03) return 2000 + this.int(4000);
    return r < 0.13 ? 50 + this.int(400) : 1 + this.int(8);
  }
  commitUpTo(last: number): number {
    this.commit = Math.max(this.commit, this.commit + this.int(last - this.commit + 1));
    return this.commit;
  }
  snapData(at: number): Uint8Array {
    const n = this.int(3) === 0 ? this.int(3 * PART_BYTES) : this.int(500);
    const d = new Uint8Array(n);
    for (let i = 0; i < n; i += 97) d[i] = (at + i) & 0xff;
    return d;
  }
  /** A Raft-legal save against model `m` (a follower's or a leader's Ready). */
  save(m: Model, allowSnapshot: boolean): SaveOp {
    const s = snapIndex(m);
    const floor = Math.max(this.commit, s);
    const r = this.random();
    if (r < 0.45 || m.last <= floor) {
      const term = this.maxTerm;
      const entries = this.entries(m.last + 1, this.count(), term);
      const commit = this.int(3) === 0 ? this.commitUpTo(m.last) : -1;
      return { entries, hardState: commit < 0 ? undefined : { term, vote: "", commit } };
    }
    if (r < 0.75) {
      const lo = floor + 1 + this.int(m.last - floor);
      const term = ++this.maxTerm;
      return {
        entries: this.entries(lo, this.count(), term),
        hardState: { term, vote: "n2", commit: this.commit },
      };
    }
    if (r < 0.85 || !allowSnapshot) {
      const commit = this.commitUpTo(m.last);
      return { entries: [], hardState: { term: this.maxTerm, vote: "", commit } };
    }
    // A snapshot from the leader: at an index whose stored term matches, or one that cuts.
    let snap: Snapshot;
    let withEntries = this.int(2) === 0;
    if (this.int(2) === 0 && m.last > s) {
      const at = s + 1 + this.int(m.last - s);
      snap = {
        meta: { index: at, term: m.log.get(at)!.term, config: CONFIG },
        data: this.snapData(at),
      };
      // Entries after it replace the stored tail: only above the commit index.
      if (at < this.commit) withEntries = false;
    } else {
      const at = floor + 1 + this.int(Math.max(1, m.last - floor + 3));
      snap = { meta: { index: at, term: ++this.maxTerm, config: CONFIG }, data: this.snapData(at) };
    }
    const at = snap.meta.index;
    this.commit = Math.max(this.commit, at);
    return {
      snapshot: snap,
      entries: withEntries ? this.entries(at + 1, this.count(), this.maxTerm) : [],
      hardState: { term: this.maxTerm, vote: "", commit: at },
    };
  }
}

function isCrash(err: unknown): boolean {
  const m = (err as Error).message;
  return m.startsWith("simulated crash") || m.includes("storage failed earlier");
}

interface Issued {
  readonly op: SaveOp;
  status: "pending" | "ok" | "failed";
  error?: unknown;
}

function track(p: Promise<void>, rec: { status: string; error?: unknown }): Promise<void> {
  return p.then(
    () => {
      rec.status = "ok";
    },
    (err) => {
      rec.status = "failed";
      rec.error = err;
    },
  );
}

/** Runs one seed; throws with the end of its transcript on the first violation. */
async function walk(seed: number, rounds: number): Promise<void> {
  const w = new Walk(seed);
  const disk = new Map<string, Stored>();
  const maxCommitMutations = [1, 2, 3, 5, 8, 1000, 1000][w.int(7)];
  const trace: string[] = [`seed ${seed} maxCommitMutations ${maxCommitMutations}`];
  if (Deno.env.get("REVIEW_LOG")) {
    const push = trace.push.bind(trace);
    trace.push = (...xs: string[]) => {
      console.log(...xs);
      return push(...xs);
    };
  }
  const fail = (msg: string): never => {
    throw new Error(`seed ${seed}: ${msg}\n${trace.slice(-30).join("\n")}`);
  };
  let model: Model = {
    snap: undefined,
    log: new Map(),
    last: 0,
    hs: { term: 0, vote: "", commit: 0 },
  };
  // Sometimes a file of the per-entry layout, maybe with an entry torn (part 0 missing).
  if (w.int(3) === 0) {
    const n = 1 + w.int(30);
    const old = w.entries(1, n, 1);
    for (const e of old) for (const m of oldLayoutMutations(e)) disk.set(JSON.stringify(m.key), m);
    const torn = w.int(2) === 0;
    if (torn) {
      const big: Entry = {
        type: "normal",
        term: 1,
        index: n + 1,
        data: new Uint8Array(2 * PART_BYTES),
      };
      for (const m of oldLayoutMutations(big, false)) disk.set(JSON.stringify(m.key), m);
    }
    const hs = { term: 1, vote: "n1", commit: 0 };
    disk.set(JSON.stringify(["raft", "hard"]), {
      key: ["raft", "hard"],
      value: encodeHardState(hs),
    });
    const log = new Map<number, Entry>();
    for (const e of old) log.set(e.index, e);
    model = { snap: undefined, log, last: n, hs };
    trace.push(`old layout 1..${n}${torn ? ` + torn ${n + 1}` : ""}`);
  }

  let crashAt = Infinity;
  let onCommit: (n: number) => void = () => {};
  const open = async (): Promise<[RaftStorage, PersistedState]> => {
    const options: StorageOptions = {
      maxCommitMutations,
      afterCommit: (n) => {
        onCommit(n);
        if (n === crashAt) throw new Error(`simulated crash after commit ${n}`);
      },
    };
    const s = RaftStorage.over(new MemKv(disk), options);
    return [s, await s.load()];
  };
  const check = async (label: string): Promise<RaftStorage> => {
    const [s, st] = await open();
    if (!sameEntries(st.entries, entriesOf(model))) {
      fail(
        `${label}: loaded entries ${st.entries[0]?.index}..${st.entries.at(-1)?.index}, ` +
          `the model has ${snapIndex(model) + 1}..${model.last}`,
      );
    }
    if (!sameSnapshot(st.snapshot, model.snap)) fail(`${label}: the snapshot differs`);
    if (!same(st.hardState, model.hs)) fail(`${label}: the hard state differs`);
    const stats = s.stats();
    if (stats.firstIndex !== snapIndex(model) + 1 || stats.lastIndex !== model.last) {
      fail(`${label}: stats say ${stats.firstIndex}..${stats.lastIndex}`);
    }
    return s;
  };

  let s = await check("initial load");
  for (let round = 0; round < rounds; round++) {
    const crashing = w.int(3) === 0;
    const base0 = s.stats().commits;
    crashAt = crashing ? base0 + 1 + w.int(w.int(2) === 0 ? 3 : 12) : Infinity;
    const saves: Issued[] = [];
    const waits: Promise<void>[] = [];
    let issued = model;
    const store = s;
    const issue = (op: SaveOp) => {
      trace.push(
        `  save ${op.entries[0]?.index ?? "-"}..${op.entries.at(-1)?.index ?? "-"}` +
          (op.snapshot ? ` snap ${op.snapshot.meta.index}/${op.snapshot.meta.term}` : "") +
          (op.hardState ? ` hs ${op.hardState.commit}` : "") +
          ` (log ${snapIndex(issued) + 1}..${issued.last}, cut ${cutOf(issued, op)})`,
      );
      issued = applySave(issued, op);
      const rec: Issued = { op, status: "pending" };
      saves.push(rec);
      waits.push(track(store.save(op), rec));
    };
    let own: Snapshot | undefined;
    const ownRec: { status: string; error?: unknown } = { status: "none" };
    const top = Math.min(w.commit, model.last);
    if (top > snapIndex(model) && w.int(3) === 0) {
      // The host's own snapshot, with saves issued at random commits of it.
      const lo = snapIndex(model) + 1;
      const at = lo + w.int(top - lo + 1);
      own = {
        meta: { index: at, term: model.log.get(at)!.term, config: CONFIG },
        data: w.snapData(at),
      };
      trace.push(`round ${round}: saveSnapshot ${at}, crash after commit +${crashAt - base0}`);
      const triggers = new Set<number>();
      for (let i = 0; i < 3; i++) triggers.add(base0 + 1 + w.int(10));
      onCommit = (n) => {
        if (triggers.has(n)) issue(w.save(issued, false));
      };
      ownRec.status = "pending";
      waits.push(track(store.saveSnapshot(own), ownRec));
      if (w.int(2) === 0) issue(w.save(issued, false));
    } else {
      trace.push(`round ${round}: crash after commit +${crashAt - base0}`);
      onCommit = () => {};
      issue(w.save(model, true));
    }
    for (let n = -1; n !== waits.length;) {
      n = waits.length;
      await Promise.all(waits);
    }
    onCommit = () => {};
    for (const r of [...saves, ownRec]) {
      if (r.status === "failed" && !isCrash(r.error)) {
        fail(`refused: ${(r.error as Error).message}`);
      }
    }
    const crashed = saves.some((x) => x.status === "failed") || ownRec.status === "failed";
    crashAt = Infinity;
    if (!crashed) {
      model = issued;
      if (own) model = applySnapshot(model, own);
      if (w.int(4) === 0) {
        s.close();
        s = await check(`round ${round}: reopened`);
      }
      continue;
    }
    // A crash: what resolved is durable, the first save that did not may be torn.
    s.close();
    trace.push(`  crashed: saves ${saves.map((x) => x.status).join(",")} own ${ownRec.status}`);
    let base = model;
    let k = 0;
    while (k < saves.length && saves[k].status === "ok") base = applySave(base, saves[k++].op);
    for (let j = k + 1; j < saves.length; j++) {
      if (saves[j].status === "ok") fail(`save ${j} resolved after save ${k} failed`);
    }
    if (own && ownRec.status === "ok") base = applySnapshot(base, own);
    trace.push("  reopening");
    const [s2, st] = await open();
    s2.close();
    trace.push("  judging");
    const why = judge(st, base, saves[k]?.op, own && ownRec.status !== "ok" ? own : undefined);
    if (why !== "") {
      fail(
        `round ${round}: after the crash ${why}; loaded snapshot ${
          st.snapshot?.meta.index ?? 0
        }, ` +
          `entries ${st.entries[0]?.index}..${st.entries.at(-1)?.index}, ` +
          `hs ${JSON.stringify(st.hardState)}; resolved state ${
            snapIndex(base) + 1
          }..${base.last}, ` +
          `hs ${JSON.stringify(base.hs)}`,
      );
    }
    model = modelOf(st);
    w.commit = Math.max(st.hardState.commit, snapIndex(model));
    s = await check(`round ${round}: reopened after the crash`);
  }
  s.close();
  await check("final");
}

// ---------------------------------------------------------------------------------------------
// Directed cases on real Deno KV files

async function reopen(
  path: string,
  options: StorageOptions = {},
): Promise<[RaftStorage, PersistedState]> {
  const s = await RaftStorage.open(path, options);
  return [s, await s.load()];
}

/** A normal entry whose `writeEntry` bytes are exactly `bytes` (term 1, index < 128). */
function sized(index: number, bytes: number): Entry {
  const data = new Uint8Array(bytes - 6);
  for (let i = 0; i < data.length; i += 499) data[i] = (index + i) & 0xff;
  const e: Entry = { type: "normal", term: 1, index, data };
  assertEquals(encodeEntry(e).length - 1, bytes, "writeEntry size");
  return e;
}

/**
 * For a crash after every commit of `op` (and none), on a fresh file: `setup`, then `op`,
 * reopen twice (the repair is stable), `check` what loaded.
 */
async function everyCommit(
  dir: string,
  options: StorageOptions,
  setup: (s: RaftStorage) => Promise<void>,
  op: (s: RaftStorage) => Promise<unknown>,
  check: (st: PersistedState, k: number) => void,
): Promise<number> {
  let total = Infinity;
  for (let k = 1; k <= total + 1; k++) {
    const path = `${dir}/k${k}.db`;
    let crashAt = Infinity;
    let base = 0;
    const s = await RaftStorage.open(path, {
      ...options,
      afterCommit: (n) => {
        if (n === crashAt) throw new Error(`simulated crash after commit ${n - base}`);
      },
    });
    await s.load();
    await setup(s);
    base = s.stats().commits;
    crashAt = k > total ? Infinity : base + k;
    let crashed = false;
    try {
      await op(s);
    } catch (err) {
      if (!isCrash(err)) throw err;
      crashed = true;
    }
    if (!crashed) total = Math.min(total, s.stats().commits - base);
    s.close();
    const [s2, st] = await reopen(path, options);
    s2.close();
    const [s3, again] = await reopen(path, options);
    s3.close();
    assertTrue(same(again, st), `k=${k}: a second load gives the same state`);
    check(st, crashed ? k : Infinity);
    await Deno.remove(path);
    if (!crashed) break;
  }
  return total;
}

Deno.test("storage review: random writes with crashes, on the in-memory file", async () => {
  const seeds = Number(Deno.env.get("REVIEW_SEEDS") ?? 40);
  const from = Number(Deno.env.get("REVIEW_FROM") ?? 1);
  for (let seed = from; seed < from + seeds; seed++) await walk(seed, 40);
});

Deno.test("storage review: a truncation inside a run with its prefix and the new tail in different commits", async () => {
  await withTempDir(async (dir) => {
    // Runs of at most 2 entries, 2 mutations per commit: the prefix rewrite of [31, 32] and
    // the new runs land in separate commits after the deletes of the runs above.
    // Stream: delete [37, 38], [35, 36] | delete [33, 34], rewrite [31] | [32, 33], [34, 35] |
    // [36], hard state.
    const old = normalEntries(1, 38, 1, 30);
    const neu = normalEntries(32, 5, 2, 30, 7);
    const hs: HardState = { term: 2, vote: "n2", commit: 10 };
    const commits = await everyCommit(
      dir,
      { maxCommitMutations: 2 },
      async (s) => await s.save({ entries: old, hardState: { term: 1, vote: "", commit: 10 } }),
      (s) => s.save({ entries: neu, hardState: hs }),
      (st, k) => {
        const n = st.entries.length;
        assertTrue(n >= 31, `k=${k}: ${n} entries, the first 31 were not replaced`);
        if (n > 31 && st.entries[31].term === 2) {
          assertEquals(st.entries, [...old.slice(0, 31), ...neu.slice(0, n - 31)], `k=${k}`);
        } else {
          assertEquals(st.entries, old.slice(0, n), `k=${k}`);
        }
        if (k === Infinity) {
          assertEquals(st.entries, [...old.slice(0, 31), ...neu]);
          assertEquals(st.hardState, hs);
        } else if (st.hardState.term === 2) {
          assertEquals(st.entries.length, 36, `k=${k}: the hard state came before the entries`);
        }
      },
    );
    assertEquals(commits, 4);
  });
});

Deno.test("storage review: truncations at a run boundary, at a run's first entry, at and after an entry in parts", async () => {
  await withTempDir(async (dir) => {
    // Saved as three batches: runs [1..10], [11] (3 parts), [12..20].
    const a = normalEntries(1, 10, 1, 40);
    const b = [{ ...normalEntries(11, 1, 1, 2 * PART_BYTES + 100)[0] }];
    const c = normalEntries(12, 9, 1, 40);
    const setup = async (s: RaftStorage) => {
      await s.save({ entries: a });
      await s.save({ entries: b });
      await s.save({ entries: c });
    };
    const old = [...a, ...b, ...c];
    for (const cut of [11, 12, 1, 5, 20]) {
      const neu = normalEntries(cut, 3, 2, 40, cut);
      const done = await everyCommit(
        dir,
        { maxCommitMutations: 2 },
        setup,
        (s) => s.save({ entries: neu }),
        (st, k) => {
          const n = st.entries.length;
          assertTrue(n >= cut - 1, `cut ${cut} k=${k}: ${n} entries`);
          if (n >= cut && st.entries[cut - 1].term === 2) {
            assertEquals(st.entries, [...old.slice(0, cut - 1), ...neu.slice(0, n - cut + 1)]);
          } else {
            assertEquals(st.entries, old.slice(0, n), `cut ${cut} k=${k}`);
          }
          if (k === Infinity) assertEquals(st.entries, [...old.slice(0, cut - 1), ...neu]);
        },
      );
      assertTrue(done >= 2, `cut ${cut}: ${done} commits`);
    }
  });
});

Deno.test("storage review: entries whose codec bytes are around 60 KiB fit one value or go in parts", async () => {
  await withTempDir(async (dir) => {
    for (let size = PART_BYTES - 5; size <= PART_BYTES + 2; size++) {
      const path = `${dir}/s${size}.db`;
      const entries = [
        ...normalEntries(1, 2, 1, 10),
        sized(3, size),
        ...normalEntries(4, 2, 1, 10),
      ];
      let [s, st] = await reopen(path);
      await s.save({ entries });
      s.close();
      // [1, 2], then 3 on its own (one value up to PART_BYTES with the 3-byte header), [4, 5].
      const values = size + 3 <= PART_BYTES ? 3 : size + 2 <= PART_BYTES ? 3 : 4;
      assertEquals(await countKeys(path, ["raft", "log"]), values, `size ${size}`);
      const kv = await Deno.openKv(path);
      for await (const e of kv.list({ prefix: ["raft", "log"] })) {
        assertTrue((e.value as Uint8Array).length <= 65536, `size ${size}: a value over 64 KiB`);
      }
      kv.close();
      [s, st] = await reopen(path);
      assertEquals(st.entries, entries, `size ${size}`);
      // Truncate at it, then after it.
      const at = normalEntries(3, 2, 2, 10, 1);
      await s.save({ entries: at });
      await s.save({ entries: [sized(4, size)].map((e) => ({ ...e, term: 2 })) });
      s.close();
      [s, st] = await reopen(path);
      assertEquals(st.entries, [...entries.slice(0, 2), at[0], { ...sized(4, size), term: 2 }]);
      s.close();
    }
  });
});

Deno.test("storage review: 5,000 entries of 10 bytes and 1,000 of 1 KiB in one save stay within Deno KV's limits", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    let [s, st] = await reopen(path);
    const small = normalEntries(1, 5000, 1, 10);
    await s.save({ entries: small, hardState: { term: 1, vote: "", commit: 0 } });
    assertEquals(s.stats().commits, 1);
    const kib = normalEntries(5001, 1000, 1, 1024);
    await s.save({ entries: kib });
    assertEquals(s.stats().commits, 3, "1 MiB of runs: two commits");
    assertEquals(s.stats().entriesWritten, 6000);
    // A truncation across many runs, then a snapshot that cuts one.
    const neu = normalEntries(4000, 3000, 2, 10, 1);
    await s.save({ entries: neu });
    s.close();
    [s, st] = await reopen(path);
    assertEquals(st.entries, [...small.slice(0, 3999), ...neu]);
    await s.saveSnapshot({
      meta: { index: 4500, term: 2, config: CONFIG },
      data: new Uint8Array(7),
    });
    assertEquals([s.stats().firstIndex, s.stats().lastIndex, s.stats().snapshotIndex], [
      4501,
      6999,
      4500,
    ]);
    s.close();
    [s, st] = await reopen(path);
    assertEquals(st.entries, neu.slice(501));
    s.close();
  });
});

Deno.test("storage review: saves issued at every commit of a snapshot write, crashing at every commit, lose nothing", async () => {
  await withTempDir(async (dir) => {
    const options: StorageOptions = { maxCommitMutations: 3 }; // runs of 3 entries
    // An old snapshot at 10 inside the run [10..12]; the new one at 20 inside [19..21]: runs
    // straddle both.
    const log = normalEntries(1, 30, 1, 50);
    const first: Snapshot = {
      meta: { index: 10, term: 1, config: CONFIG },
      data: new Uint8Array(100),
    };
    const snap: Snapshot = {
      meta: { index: 20, term: 1, config: CONFIG },
      data: new Uint8Array(2 * PART_BYTES + 9).fill(5),
    };
    let cases = 0;
    for (let trigger = 1; trigger <= 8; trigger++) {
      for (let k = 1; k <= 12; k++) {
        const path = `${dir}/t${trigger}k${k}.db`;
        let base = Infinity;
        const pending: { op: SaveOp; p: Promise<void>; ok?: boolean }[] = [];
        const box: { s?: RaftStorage } = {};
        const issue = (op: SaveOp) => {
          const rec: { op: SaveOp; p: Promise<void>; ok?: boolean } = { op, p: box.s!.save(op) };
          rec.p.then(() => (rec.ok = true), () => (rec.ok = false));
          pending.push(rec);
        };
        const s = box.s = await RaftStorage.open(path, {
          ...options,
          afterCommit: (n) => {
            if (n === base + trigger) {
              // A conflicting tail from 25 (inside [25..27]), then an append.
              issue({
                entries: normalEntries(25, 4, 2, 50, 3),
                hardState: { term: 2, vote: "", commit: 20 },
              });
              issue({ entries: normalEntries(29, 3, 2, 50, 4) });
            }
            if (n === base + k) throw new Error("simulated crash");
          },
        });
        await s.load();
        await s.save({ entries: log, hardState: { term: 1, vote: "", commit: 24 } });
        await s.saveSnapshot(first);
        base = s.stats().commits;
        const own = s.saveSnapshot(snap).then(() => true, (err) => {
          if (!isCrash(err)) throw err;
          return false;
        });
        const ownOk = await own;
        for (let i = 0; i < pending.length; i++) await pending[i].p.catch(() => {});
        s.close();
        const [s2, st] = await reopen(path, options);
        s2.close();
        const [s3, again] = await reopen(path, options);
        s3.close();
        assertTrue(same(st, again), `trigger ${trigger} k=${k}: a second load differs`);
        const label = `trigger ${trigger} k=${k}`;
        let expected: Model = {
          snap: first,
          log: new Map(log.filter((e) => e.index > 10).map((e) => [e.index, e])),
          last: 30,
          hs: { term: 1, vote: "", commit: 24 },
        };
        let torn: SaveOp | undefined;
        for (const r of pending) {
          if (r.ok) expected = applySave(expected, r.op);
          else if (torn === undefined) torn = r.op;
        }
        if (ownOk) expected = applySnapshot(expected, snap);
        const why = judge(st, expected, torn, ownOk ? undefined : snap);
        assertEquals(why, "", `${label}: ${why}`);
        cases++;
        await Deno.remove(path);
        if (ownOk && pending.every((r) => r.ok)) break;
      }
    }
    assertTrue(cases > 20, `${cases} cases`);
  });
});

Deno.test("storage review: an old-layout file with a torn entry, runs written after the upgrade, then a truncation", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    const old = normalEntries(1, 12, 1, 70);
    const kv = await Deno.openKv(path);
    for (const e of old) {
      const op = kv.atomic();
      for (const m of oldLayoutMutations(e)) op.set(m.key, m.value);
      assertTrue((await op.commit()).ok);
    }
    // Entry 13 in three parts, part 0 never written (the old version crashed there).
    const torn: Entry = {
      type: "normal",
      term: 1,
      index: 13,
      data: new Uint8Array(2 * PART_BYTES),
    };
    const op = kv.atomic();
    for (const m of oldLayoutMutations(torn, false)) op.set(m.key, m.value);
    assertTrue((await op.commit()).ok);
    kv.close();
    let [s, st] = await reopen(path);
    assertEquals(st.entries, old);
    await s.save({ entries: normalEntries(13, 10, 1, 70, 1) });
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 13, "12 old keys and one run");
    [s, st] = await reopen(path);
    // A truncation inside the new run, then one among the old keys.
    await s.save({ entries: normalEntries(17, 2, 2, 70, 2) });
    const neu = normalEntries(6, 4, 3, 70, 3);
    await s.save({ entries: neu, hardState: { term: 3, vote: "", commit: 5 } });
    s.close();
    [s, st] = await reopen(path);
    assertEquals(st.entries, [...old.slice(0, 5), ...neu]);
    await s.saveSnapshot({ meta: { index: 7, term: 3, config: CONFIG }, data: new Uint8Array(1) });
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 1, "the run [6..9]");
    [s, st] = await reopen(path);
    assertEquals(st.entries, neu.slice(2));
    s.close();
  });
});

Deno.test("storage review: a run starting right after the snapshot index", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    let [s, st] = await reopen(path);
    const a = normalEntries(1, 10, 1, 30);
    const b = normalEntries(11, 10, 1, 30);
    await s.save({ entries: a });
    await s.save({ entries: b });
    await s.saveSnapshot({ meta: { index: 10, term: 1, config: CONFIG }, data: new Uint8Array(2) });
    assertEquals(await s.stats().firstIndex, 11);
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 1);
    [s, st] = await reopen(path);
    assertEquals(st.entries, b);
    // A conflicting tail from the run's first entry, then a leader's snapshot matching at 10.
    const neu = normalEntries(11, 3, 2, 30, 1);
    await s.save({ entries: neu });
    await s.save({
      snapshot: { meta: { index: 12, term: 2, config: CONFIG }, data: new Uint8Array(3) },
      entries: [],
      hardState: { term: 2, vote: "", commit: 12 },
    });
    s.close();
    [s, st] = await reopen(path);
    assertEquals(st.snapshot?.meta.index, 12);
    assertEquals(st.entries, neu.slice(2));
    assertEquals([s.stats().firstIndex, s.stats().lastIndex], [13, 13]);
    s.close();
  });
});

Deno.test("storage review: a crash at any commit of a snapshot write whose index falls in the run the old one did", async () => {
  await withTempDir(async (dir) => {
    // One run [1..60] straddles the old snapshot (20) and the new one (40).
    const log = normalEntries(1, 60, 1, 100);
    const old: Snapshot = { meta: { index: 20, term: 1, config: CONFIG }, data: new Uint8Array(5) };
    const snap: Snapshot = {
      meta: { index: 40, term: 1, config: CONFIG },
      data: new Uint8Array(5 * PART_BYTES).fill(9),
    };
    const more = normalEntries(61, 3, 1, 100);
    let sawNew = false;
    const commits = await everyCommit(
      dir,
      {},
      async (s) => {
        await s.save({ entries: log, hardState: { term: 1, vote: "", commit: 60 } });
        await s.saveSnapshot(old);
      },
      (s) => Promise.all([s.saveSnapshot(snap), s.save({ entries: more })]),
      (st, k) => {
        const tail = st.entries.at(-1)?.index === 63 ? more : [];
        if (st.snapshot?.meta.index === 40) {
          sawNew = true;
          assertTrue(same(st.snapshot, snap), `k=${k}: the new snapshot's data`);
          assertTrue(same(st.entries, [...log.slice(40), ...tail]), `k=${k}`);
        } else {
          assertTrue(same(st.snapshot, old), `k=${k}: the old snapshot`);
          assertTrue(same(st.entries, [...log.slice(20), ...tail]), `k=${k}`);
        }
      },
    );
    assertTrue(commits >= 4 && sawNew, `${commits} commits`);
  });
});

Deno.test("storage review: over a thousand runs deleted by one truncation or one snapshot fit Deno KV's commits", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    let [s, st] = await reopen(path);
    const log = normalEntries(1, 1200, 1, 20);
    for (const e of log) await s.save({ entries: [e] }); // a run per entry
    const commits = s.stats().commits;
    const neu = normalEntries(3, 1500, 2, 20, 1);
    await s.save({ entries: neu, hardState: { term: 2, vote: "", commit: 2 } });
    assertEquals(s.stats().commits - commits, 2, "1,198 deletes and the new runs: two commits");
    s.close();
    [s, st] = await reopen(path);
    assertEquals(st.entries, [...log.slice(0, 2), ...neu]);
    for (const e of normalEntries(1503, 1200, 2, 20, 2)) await s.save({ entries: [e] });
    // A leader's snapshot beyond the log: every run goes in the same save.
    const leader: Snapshot = {
      meta: { index: 3000, term: 3, config: CONFIG },
      data: new Uint8Array(4),
    };
    await s.save({
      snapshot: leader,
      entries: normalEntries(3001, 2, 3, 20),
      hardState: { term: 3, vote: "", commit: 3000 },
    });
    s.close();
    assertEquals(await countKeys(path, ["raft", "log"]), 1);
    [s, st] = await reopen(path);
    assertEquals(st.snapshot, leader);
    assertEquals(st.entries, normalEntries(3001, 2, 3, 20));
    s.close();
  });
});
