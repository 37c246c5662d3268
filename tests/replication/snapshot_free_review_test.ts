/**
 * Adversarial review of `freeSnapshotBytes` (eda36d3). The host freed (detached) a released
 * snapshot buffer a tick after the core released it, but a Ready may use it longer: a
 * follower's Ready with the leader's snapshot waits for the host's own snapshot write before
 * its save (the disk got 0 bytes: a restart could not restore), the core holds a received
 * snapshot for the next Ready while a save runs (the state machine restored 0 bytes and the
 * loop stopped), and a leader's InstallSnapshot chunks wait in the core during a save (their
 * encoding threw, which in PeerTransport's flush microtask ends the process). Each host here
 * drives a real RaftStorage (Deno KV in a temp dir) on a hand-driven clock and a fake peer
 * network that encodes as PeerTransport does; fake peers play the other nodes. And a loop
 * kept busy by writes still frees what it released.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import { withTempDir } from "./_tmp.ts";
import {
  type LogStore,
  ReplicationHost,
  type StateMachine,
  type Transport,
  type TransportHandlers,
} from "../../src/replication/mod.ts";
import { RaftStorage } from "../../src/replication/storage.ts";
import { decodeMessageBatch, encodeMessageBatch } from "../../src/replication/codec.ts";
import { UnavailableError } from "../../src/errors.ts";
import type { Entry, HardState, Message, Snapshot } from "../../src/raft/mod.ts";
import { ManualClock } from "../raft/sim/manual_clock.ts";

const CONFIG = {
  voters: ["n1", "n2"],
  learners: [],
  addresses: { n1: "127.0.0.1:1", n2: "127.0.0.1:2" },
};
const CONFIG3 = {
  voters: ["n1", "n2", "n3"],
  learners: [],
  addresses: { n1: "127.0.0.1:1", n2: "127.0.0.1:2", n3: "127.0.0.1:3" },
};
const TICK_MS = 10;
/** The host's release: 4 election timeouts of 6 ticks; a few more so a tick frees it. */
const PAST_RELEASE_TICKS = 4 * 6 + 6;

/** An image: the applied index (u32) then `filler` bytes of 7; shorter than 4 bytes is invalid. */
function image(index: number, filler: number): Uint8Array {
  const out = new Uint8Array(4 + filler).fill(7);
  new DataView(out.buffer).setUint32(0, index);
  return out;
}

/** Counts applies; restores from an {@link image}, refusing a truncated one as KV does. */
class Machine implements StateMachine<Uint8Array> {
  appliedIndex = 0;
  filler = 0;
  apply(index: number, data: Uint8Array) {
    this.appliedIndex = index;
    this.filler++;
    return data.subarray(0, 1);
  }
  markApplied(index: number) {
    this.appliedIndex = index;
  }
  snapshot() {
    return image(this.appliedIndex, this.filler);
  }
  restore(data: Uint8Array) {
    if (data.length < 4) throw new Error(`not an image: ${data.length} bytes`);
    this.appliedIndex = new DataView(data.buffer, data.byteOffset).getUint32(0);
    this.filler = data.length - 4;
  }
}

/** The real storage, with gates a test opens to hold `save` or `saveSnapshot` back. */
class GatedStore implements LogStore {
  saveGate: Promise<void> | undefined;
  snapshotGate: Promise<void> | undefined;
  saveCalls = 0;
  snapshotCalls = 0;
  /** The snapshots handed to `save` (from the leader) and `saveSnapshot` (the host's own). */
  saved: Snapshot[] = [];
  /** Copies of the host's own snapshots, taken when their write began. */
  ownImages: Uint8Array[] = [];
  constructor(readonly inner: RaftStorage) {}
  load() {
    return this.inner.load();
  }
  async save(batch: { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot }) {
    this.saveCalls++;
    if (batch.snapshot) this.saved.push(batch.snapshot);
    if (this.saveGate) await this.saveGate;
    await this.inner.save(batch);
  }
  async saveSnapshot(s: Snapshot) {
    this.snapshotCalls++;
    this.ownImages.push(s.data.slice());
    if (this.snapshotGate) await this.snapshotGate;
    await this.inner.saveSnapshot(s);
  }
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {};
  const promise = new Promise<void>((r) => open = r);
  return { promise, open };
}

class FakeNet {
  handlers: TransportHandlers | undefined;
  sent: Message[] = [];
  /** The InstallSnapshot chunks' data as the peer decodes it. */
  chunks: Uint8Array[] = [];
  /** What encoding the messages threw. */
  encodeErrors: string[] = [];
  factory = (h: TransportHandlers): Transport => {
    this.handlers = h;
    return {
      // Encodes a turn's messages in a microtask, as PeerTransport does (a freed buffer
      // throws there: its flush would fail outside any caller).
      send: (_to, _addr, msgs) => {
        this.sent.push(...msgs);
        const batch = [...msgs];
        queueMicrotask(() => {
          try {
            for (const m of decodeMessageBatch(encodeMessageBatch(batch))) {
              if (m.type === "snapshot") this.chunks.push(m.data);
            }
          } catch (err) {
            this.encodeErrors.push(String(err));
          }
        });
      },
      request: () => Promise.reject(new UnavailableError("no peers")),
      takeUnreachable: () => [],
      stats: () => ({ peers: {}, inbound: {} as never }),
      forget() {},
      close: () => Promise.resolve(),
    };
  };
  deliver(...msgs: Message[]) {
    this.handlers!.onMessages(msgs);
  }
}

/** Was the buffer behind `data` freed (detached)? */
function detached(data: Uint8Array): boolean {
  return (data.buffer as ArrayBuffer).detached;
}

/** Lets the host's promises run (the manual clock does not move). */
async function until(what: string, done: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !done(); i++) await new Promise((r) => setTimeout(r, 1));
  assert(done(), what);
}

async function ticks(clock: ManualClock, n: number, each?: () => void): Promise<void> {
  for (let i = 0; i < n; i++) {
    each?.();
    clock.advance(TICK_MS);
    for (let k = 0; k < 3; k++) await new Promise((r) => setTimeout(r, 0));
  }
}

async function seed(path: string): Promise<void> {
  const s = await RaftStorage.open(path);
  await s.load();
  await s.save({
    hardState: { term: 1, vote: "n1", commit: 1 },
    entries: [{ type: "config", term: 1, index: 1, change: { type: "bootstrap" }, config: CONFIG }],
  });
  s.close();
}

/** What the host logged as errors (a stopped loop). */
const errors: string[] = [];

async function openHost(
  store: LogStore,
  fsm: Machine,
  net: FakeNet,
  clock: ManualClock,
  nodeId = "n2",
  config: typeof CONFIG | typeof CONFIG3 = CONFIG,
) {
  return await ReplicationHost.open({
    nodeId,
    rpcAddr: (config.addresses as Record<string, string>)[nodeId],
    storage: store,
    fsm,
    results: { encode: (r) => r, decode: (b) => b },
    transport: net.factory,
    clock,
    tickMs: TICK_MS,
    snapshotEntries: nodeId === "n2" ? 2 : 100_000,
    freeSnapshotBytes: true,
    // A leader's checks as in production; elections without a pre-vote round (fewer steps).
    raftOptions: { preVote: false, snapshotChunkBytes: 256 },
    hooks: {
      log: (level, message, props) => {
        if (level === "error") errors.push(`${message} ${JSON.stringify(props)}`);
      },
    },
  });
}

function append(prevIndex: number, from: number, to: number, commit: number): Message {
  const entries: Entry[] = [];
  for (let i = from; i <= to; i++) {
    entries.push({ type: "normal", term: 1, index: i, data: new Uint8Array([i]) });
  }
  return { type: "append", from: "n1", to: "n2", term: 1, prevIndex, prevTerm: 1, entries, commit };
}

function installSnapshot(index: number, data: Uint8Array): Message {
  return {
    type: "snapshot",
    from: "n1",
    to: "n2",
    term: 1,
    meta: { index, term: 1, config: CONFIG },
    offset: 0,
    data,
    done: true,
  };
}

/** What a restart finds on disk: the snapshot, and whether a host opens on it. */
async function restart(path: string): Promise<{ snapshot?: Snapshot; error?: string }> {
  const s = await RaftStorage.open(path);
  try {
    const persisted = await s.load();
    const fsm = new Machine();
    try {
      if (persisted.snapshot) fsm.restore(persisted.snapshot.data);
    } catch (err) {
      return { snapshot: persisted.snapshot, error: String(err) };
    }
    return { snapshot: persisted.snapshot };
  } finally {
    s.close();
  }
}

Deno.test("review: a leader's snapshot waiting for the host's own snapshot write is not freed before it is stored", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    await seed(path);
    const store = new GatedStore(await RaftStorage.open(path));
    const snapGate = gate();
    store.snapshotGate = snapGate.promise;
    const fsm = new Machine();
    const net = new FakeNet();
    const clock = new ManualClock();
    const host = await openHost(store, fsm, net, clock);
    host.start();
    try {
      // Entries 2..4 commit: the follower takes its own snapshot, whose write is held.
      net.deliver(append(1, 2, 4, 4));
      await until("n2 writes its own snapshot", () => store.snapshotCalls === 1);
      // The leader's snapshot at 10: restored at once, stored after the own write.
      const leaderImage = image(10, 1000);
      net.deliver(installSnapshot(10, leaderImage));
      await until("n2 restored the leader's snapshot", () => fsm.appliedIndex === 10);
      // The own write is slow (a large state): the core releases the leader's snapshot.
      await ticks(clock, PAST_RELEASE_TICKS);
      snapGate.open();
      await until(
        "the leader's snapshot is stored",
        () => store.inner.stats().snapshotIndex === 10,
      );
      // Stored and restored, it goes once the core released it (it did, long ago).
      await ticks(clock, 3);
      assertEquals(store.saved.length, 1);
      assert(detached(store.saved[0].data), "freed once stored");
      await host.close();
      store.inner.close();
      const after = await restart(path);
      assertEquals(
        after.error,
        undefined,
        `a restart restores the stored snapshot: ${after.error}`,
      );
      assertEquals(after.snapshot?.meta.index, 10);
      assertEquals(after.snapshot?.data, leaderImage, "the disk holds the leader's image");
    } finally {
      snapGate.open();
      await host.close();
      try {
        store.inner.close();
      } catch { /* closed */ }
    }
  });
});

Deno.test("review: a leader's snapshot waiting in the core while a save runs is not freed before it is restored", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    await seed(path);
    const store = new GatedStore(await RaftStorage.open(path));
    const fsm = new Machine();
    const net = new FakeNet();
    const clock = new ManualClock();
    const host = await openHost(store, fsm, net, clock);
    host.start();
    const saveGate = gate();
    try {
      // A save that takes long (a slow fsync): entries 2..3, not yet committed.
      store.saveGate = saveGate.promise;
      const before = store.saveCalls;
      net.deliver(append(1, 2, 3, 1));
      await until("n2 is saving the entries", () => store.saveCalls === before + 1);
      // Meanwhile the leader's snapshot at 10 arrives; the core holds it for the next Ready.
      const leaderImage = image(10, 1000);
      net.deliver(installSnapshot(10, leaderImage));
      await ticks(clock, PAST_RELEASE_TICKS);
      store.saveGate = undefined;
      saveGate.open();
      await until(
        "n2 restored and stored the leader's snapshot (or stopped)",
        () => store.inner.stats().snapshotIndex === 10 || errors.length > 0,
      );
      assertEquals(errors, [], `the replication loop goes on: ${errors}`);
      assertEquals(fsm.appliedIndex, 10, "the state machine restored the leader's image");
      assertEquals(fsm.filler, 1000);
      await ticks(clock, 3);
      assertEquals(store.saved.length, 1);
      assert(detached(store.saved[0].data), "freed once restored and stored");
      await host.close();
      store.inner.close();
      const after = await restart(path);
      assertEquals(
        after.error,
        undefined,
        `a restart restores the stored snapshot: ${after.error}`,
      );
      assertEquals(after.snapshot?.data, leaderImage, "the disk holds the leader's image");
    } finally {
      saveGate.open();
      await host.close();
      try {
        store.inner.close();
      } catch { /* closed */ }
    }
  });
});

Deno.test("review: InstallSnapshot chunks a leader queued during a long save are whole when sent after the snapshot was released", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/raft.db`;
    {
      const s = await RaftStorage.open(path);
      await s.load();
      await s.save({
        hardState: { term: 1, vote: "n1", commit: 10 },
        entries: [],
        snapshot: { meta: { index: 10, term: 1, config: CONFIG3 }, data: image(10, 500) },
      });
      s.close();
    }
    const store = new GatedStore(await RaftStorage.open(path));
    const fsm = new Machine();
    const net = new FakeNet();
    const clock = new ManualClock();
    const host = await openHost(store, fsm, net, clock, "n1", CONFIG3);
    host.start();
    const saveGate = gate();
    const reply = (m: Record<string, unknown>) =>
      net.deliver({ ...m, to: "n1", term: 2 } as unknown as Message);
    try {
      // n1 campaigns for term 2; n2 votes for it.
      for (let i = 0; i < 30 && !net.sent.some((m) => m.type === "vote"); i++) {
        await ticks(clock, 1);
      }
      reply({ type: "voteResponse", from: "n2", reject: false });
      await until("n1 leads", () => host.status().role === "leader");
      // n2 has the no-op at 11; n3 has nothing: it needs a snapshot, which n1 takes afresh
      // (it dropped the loaded one at start-up).
      reply({
        type: "appendResponse",
        from: "n2",
        reject: false,
        index: 11,
        hintIndex: 0,
        hintTerm: 0,
      });
      reply({
        type: "appendResponse",
        from: "n3",
        reject: true,
        index: 10,
        hintIndex: 0,
        hintTerm: 0,
      });
      await until("n1 took a snapshot for n3", () => store.snapshotCalls === 1);
      await until("its write is done", () => store.inner.stats().snapshotIndex === 11);
      reply({
        type: "snapshotResponse",
        from: "n3",
        index: 11,
        offset: 256,
        done: false,
        reject: false,
      });
      await until("both chunks went out", () => net.chunks.length === 2);
      // A save that takes long (a slow fsync) ...
      store.saveGate = saveGate.promise;
      const before = store.saveCalls;
      host.apply(new Uint8Array([1])).catch(() => {});
      await until("n1 is saving the proposal", () => store.saveCalls === before + 1);
      // ... while n3's answer is late: n1 queues the last chunk again (the idle timer), then
      // n3's answer to the first copy arrives and n3 is no longer sent a snapshot. n2 keeps
      // answering heartbeats, so n1 leads on in term 2 and releases the snapshot.
      const n2Answers = () => reply({ type: "heartbeatResponse", from: "n2", context: 0 });
      await ticks(clock, 8, n2Answers);
      reply({
        type: "snapshotResponse",
        from: "n3",
        index: 11,
        offset: 504,
        done: true,
        reject: false,
      });
      await ticks(clock, PAST_RELEASE_TICKS, n2Answers);
      assertEquals(host.status().role, "leader");
      assertEquals(host.status().snapshotDataBytes, 0, "n1 released the snapshot");
      assertEquals(net.chunks.length, 2, "nothing sent while the save runs");
      store.saveGate = undefined;
      saveGate.open();
      await until(
        "the queued chunk goes out",
        () => net.chunks.length > 2 || net.encodeErrors.length > 0,
      );
      assertEquals(net.encodeErrors, [], "the messages encode");
      const want = store.ownImages[0].subarray(256);
      assertEquals(want.length, 504 - 256);
      for (const c of net.chunks.slice(2)) {
        assertEquals(c, want, "the chunk holds the snapshot's bytes, not a freed buffer's none");
      }
    } finally {
      saveGate.open();
      await host.close();
      store.inner.close();
    }
  });
});

Deno.test("review: under writes that never let the Ready loop idle, replaced snapshots are still freed", async () => {
  const snapshots: Snapshot[] = [];
  let pumping = true;
  const ref: { host?: ReplicationHost<Uint8Array> } = {};
  const pending: Promise<unknown>[] = [];
  const store: LogStore = {
    load: () =>
      Promise.resolve({
        hardState: { term: 0, vote: "", commit: 0 },
        entries: [],
        snapshot: undefined,
      }),
    // Every save sees a new write arrive: the loop always has another Ready to do.
    async save() {
      const host = ref.host;
      if (pumping && host?.status().role === "leader") {
        pending.push(host.apply(new Uint8Array([1])).catch(() => {}));
      }
      await new Promise((r) => setTimeout(r, 0));
    },
    saveSnapshot(s: Snapshot) {
      snapshots.push(s);
      return Promise.resolve();
    },
  };
  const clock = new ManualClock();
  const host = ref.host = await ReplicationHost.open({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    storage: store,
    fsm: new Machine(),
    results: { encode: (r) => r, decode: (b) => b },
    transport: new FakeNet().factory,
    clock,
    tickMs: TICK_MS,
    snapshotEntries: 5,
    freeSnapshotBytes: true,
  });
  host.bootstrap({ voters: ["n1"], learners: [], addresses: { n1: "127.0.0.1:1" } });
  host.start();
  try {
    for (let i = 0; i < 100 && host.status().role !== "leader"; i++) await ticks(clock, 1);
    assertEquals(host.status().role, "leader");
    pending.push(host.apply(new Uint8Array([1])));
    for (let i = 0; i < 300 && !(snapshots.length > 2 && detached(snapshots[0].data)); i++) {
      await ticks(clock, 1);
    }
    assert(snapshots.length > 2, `snapshots taken: ${snapshots.length}`);
    assert(detached(snapshots[0].data), "the first snapshot was freed while the writes went on");
  } finally {
    pumping = false;
    await host.close();
    await Promise.all(pending);
  }
});
