/**
 * The host snapshots by size: once the entries applied since the last snapshot hold more
 * bytes than that snapshot (and than the floor), whatever their count; and still after
 * `snapshotEntries` entries, the upper bound.
 */
import { assert } from "../helpers/assert.ts";
import {
  type LogStore,
  ReplicationHost,
  type StateMachine,
  type Transport,
} from "../../src/replication/mod.ts";
import { UnavailableError } from "../../src/errors.ts";
import type { Snapshot } from "../../src/raft/mod.ts";

class MemStore implements LogStore {
  snapshots: Snapshot[] = [];
  load() {
    return Promise.resolve({
      hardState: { term: 0, vote: "", commit: 0 },
      entries: [],
      snapshot: undefined,
    });
  }
  save() {
    return Promise.resolve();
  }
  saveSnapshot(s: Snapshot) {
    this.snapshots.push(s);
    return Promise.resolve();
  }
}

/** A state whose snapshot is as large as everything applied to it. */
class SizedMachine implements StateMachine<Uint8Array> {
  appliedIndex = 0;
  bytes = 0;
  apply(index: number, data: Uint8Array) {
    this.appliedIndex = index;
    this.bytes += data.length;
    return data.subarray(0, 1);
  }
  markApplied(index: number) {
    this.appliedIndex = index;
  }
  snapshot() {
    return new Uint8Array(this.bytes);
  }
  restore() {}
}

const noTransport = (): Transport => ({
  send() {},
  request: () => Promise.reject(new UnavailableError("no peers")),
  takeUnreachable: () => [],
  stats: () => ({ peers: {}, inbound: {} as never }),
  forget() {},
  close: () => Promise.resolve(),
});

async function run(
  opts: { snapshotEntries?: number; snapshotMinLogBytes?: number },
  writes: number,
  size: number,
) {
  const store = new MemStore();
  const host = await ReplicationHost.open({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    storage: store,
    fsm: new SizedMachine(),
    results: { encode: (r) => r, decode: (b) => b },
    transport: noTransport,
    tickMs: 10,
    ...opts,
  });
  host.bootstrap({ voters: ["n1"], learners: [], addresses: { n1: "127.0.0.1:1" } });
  host.start();
  try {
    const deadline = Date.now() + 5000;
    while (host.status().role !== "leader") {
      assert(Date.now() < deadline, "n1 leads");
      await new Promise((r) => setTimeout(r, 10));
    }
    const value = new Uint8Array(size);
    for (let i = 0; i < writes; i++) await host.apply(value);
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    await host.close();
  }
  return store.snapshots;
}

Deno.test("host: snapshots come when the log outgrows the state, not every N entries", async () => {
  // 400 writes of 1000 B, floor 10 kB: snapshots at about 10 kB, 20 kB, 40 kB, 80 kB, 160 kB
  // and 320 kB of state (each once the log since doubled it), not 400 / N of them.
  const snaps = await run({ snapshotEntries: 100_000, snapshotMinLogBytes: 10_000 }, 400, 1000);
  assert(snaps.length >= 4 && snaps.length <= 7, `${snaps.length} snapshots`);
  for (let i = 1; i < snaps.length; i++) {
    assert(
      snaps[i].data.length >= 1.8 * snaps[i - 1].data.length,
      `each snapshot waits for a log as large as the last: ${snaps.map((s) => s.data.length)}`,
    );
  }
});

Deno.test("host: snapshotEntries still bounds the entries between snapshots", async () => {
  const snaps = await run({ snapshotEntries: 50 }, 300, 10);
  assert(snaps.length >= 5 && snaps.length <= 6, `${snaps.length} snapshots of 300 entries`);
});
