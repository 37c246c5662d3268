/**
 * Snapshot buffers do not outlive their use (`freeSnapshotBytes`): the snapshot loaded at
 * start-up is freed once the state machine restored it, and a snapshot the host took is freed
 * once its write is done and the core released it, never while the write still reads it.
 * V8 returns an ArrayBuffer's memory only at a full collection, which an idle node may not
 * run: without this a 1 GiB node held its loaded snapshot beside its state after a restart.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  type LogStore,
  ReplicationHost,
  type StateMachine,
  type Transport,
} from "../../src/replication/mod.ts";
import { UnavailableError } from "../../src/errors.ts";
import type { PersistedState, Snapshot } from "../../src/raft/mod.ts";

const CONFIG = { voters: ["n1"], learners: [], addresses: { n1: "127.0.0.1:1" } };

/** Keeps copies of what it is given, as Deno KV does; a snapshot write waits for `gate`. */
class CopyingStore implements LogStore {
  written: Snapshot[] = [];
  gate: Promise<void> = Promise.resolve();
  constructor(private readonly persisted: PersistedState) {}
  load() {
    return Promise.resolve(this.persisted);
  }
  save() {
    return Promise.resolve();
  }
  async saveSnapshot(s: Snapshot) {
    await this.gate;
    this.written.push({ meta: s.meta, data: s.data.slice() });
  }
}

/** A state whose image is its restored size plus one byte per applied entry, all 7s. */
class Machine implements StateMachine<Uint8Array> {
  appliedIndex = 0;
  bytes = 0;
  apply(index: number, data: Uint8Array) {
    this.appliedIndex = index;
    this.bytes += 1;
    return data.subarray(0, 1);
  }
  markApplied(index: number) {
    this.appliedIndex = index;
  }
  snapshot() {
    return new Uint8Array(this.bytes).fill(7);
  }
  restore(data: Uint8Array) {
    // Copies nothing out of `data`: it reads the size only, as the KV state machine copies.
    this.bytes = data.length;
    this.appliedIndex = 5;
  }
}

const noTransport = (): Transport => ({
  send() {},
  request: () => Promise.reject(new UnavailableError("no peers")),
  takeUnreachable: () => [],
  stats: () => ({ peers: {}, inbound: {} as never }),
  forget() {},
  close: () => Promise.resolve(),
});

/** Was the buffer behind `data` freed (detached)? */
function detached(data: Uint8Array): boolean {
  return (data.buffer as ArrayBuffer).detached;
}

async function until(what: string, done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  assert(done(), what);
}

function open(store: LogStore, fsm: Machine, free: boolean, snapshotEntries = 100_000) {
  return ReplicationHost.open({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    storage: store,
    fsm,
    results: { encode: (r) => r, decode: (b) => b },
    transport: noTransport,
    tickMs: 10,
    snapshotEntries,
    freeSnapshotBytes: free,
  });
}

function loaded(bytes: number): PersistedState {
  return {
    hardState: { term: 1, vote: "n1", commit: 5 },
    entries: [],
    snapshot: { meta: { index: 5, term: 1, config: CONFIG }, data: new Uint8Array(bytes) },
  };
}

Deno.test("host: the snapshot loaded at start-up is freed once restored, and the node serves", async () => {
  const persisted = loaded(1 << 20);
  const data = persisted.snapshot!.data;
  const fsm = new Machine();
  const host = await open(new CopyingStore(persisted), fsm, true);
  host.start();
  try {
    await until("the loaded buffer is freed", () => detached(data));
    assertEquals(fsm.bytes, 1 << 20, "after the state machine restored it");
    await until("n1 leads", () => host.status().role === "leader");
    await host.apply(new Uint8Array([1]));
    assertEquals(fsm.appliedIndex > 5, true);
  } finally {
    await host.close();
  }
});

Deno.test("host: without freeSnapshotBytes the loaded buffer is left to the collector", async () => {
  const persisted = loaded(1024);
  const data = persisted.snapshot!.data;
  const host = await open(new CopyingStore(persisted), new Machine(), false);
  host.start();
  try {
    await until("n1 leads", () => host.status().role === "leader");
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(detached(data), false);
  } finally {
    await host.close();
  }
});

Deno.test("host: its own snapshot is freed after its write and the core's release, not before", async () => {
  const store = new CopyingStore({
    hardState: { term: 0, vote: "", commit: 0 },
    entries: [],
    snapshot: undefined,
  });
  let open_: () => void = () => {};
  store.gate = new Promise((r) => open_ = r);
  const taken: Snapshot[] = [];
  const save = store.saveSnapshot.bind(store);
  store.saveSnapshot = (s: Snapshot) => {
    taken.push(s);
    return save(s);
  };
  const host = await open(store, new Machine(), true, 20);
  host.bootstrap(CONFIG);
  host.start();
  try {
    await until("n1 leads", () => host.status().role === "leader");
    for (let i = 0; i < 30; i++) await host.apply(new Uint8Array([1]));
    await until("a snapshot is being written", () => taken.length === 1);
    const data = taken[0].data;
    // Well past the core's release (4 election timeouts of ticks): the write still holds it.
    await new Promise((r) => setTimeout(r, 600));
    assertEquals(detached(data), false, "not freed while its write is in progress");
    open_();
    await until("freed once written and released", () => detached(data));
    assertEquals(store.written.length, 1);
    assert(store.written[0].data.length > 0 && store.written[0].data.every((b) => b === 7));
  } finally {
    open_();
    await host.close();
  }
});
