/**
 * A state machine that builds its snapshot in steps (`snapshotSteps`) is snapshotted a step
 * per event-loop turn: writes go on being applied between the steps, and the snapshot saved
 * is the state at the index where it began.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
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

/** Its image is the applied index (8 bytes); building one takes `STEPS` steps. */
const STEPS = 5;
class SteppedMachine implements StateMachine<Uint8Array> {
  appliedIndex = 0;
  /** Applies seen while a build was in progress, and the builds finished. */
  appliedDuringBuild = 0;
  builds = 0;
  #building = 0;
  apply(index: number, data: Uint8Array) {
    this.appliedIndex = index;
    if (this.#building > 0) this.appliedDuringBuild++;
    return data.subarray(0, 1);
  }
  markApplied(index: number) {
    this.appliedIndex = index;
  }
  snapshot() {
    return image(this.appliedIndex);
  }
  snapshotSteps() {
    const at = this.appliedIndex;
    let left = STEPS;
    this.#building++;
    return {
      step: () => {
        if (--left > 0) return undefined;
        this.#building--;
        this.builds++;
        return image(at);
      },
    };
  }
  restore() {}
}

function image(index: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setFloat64(0, index);
  return out;
}

const noTransport = (): Transport => ({
  send() {},
  request: () => Promise.reject(new UnavailableError("no peers")),
  takeUnreachable: () => [],
  stats: () => ({ peers: {}, inbound: {} as never }),
  forget() {},
  close: () => Promise.resolve(),
});

Deno.test("host: a stepped snapshot is built between applies and saved at its own index", async () => {
  const store = new MemStore();
  const fsm = new SteppedMachine();
  const host = await ReplicationHost.open({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    storage: store,
    fsm,
    results: { encode: (r) => r, decode: (b) => b },
    transport: noTransport,
    tickMs: 10,
    snapshotEntries: 20,
  });
  host.bootstrap({ voters: ["n1"], learners: [], addresses: { n1: "127.0.0.1:1" } });
  host.start();
  try {
    const deadline = Date.now() + 5000;
    while (host.status().role !== "leader") {
      assert(Date.now() < deadline, "n1 leads");
      await new Promise((r) => setTimeout(r, 10));
    }
    // Many writes in flight at once, so that some apply while a build is in progress.
    const value = new Uint8Array(10);
    for (let round = 0; round < 10; round++) {
      await Promise.all(Array.from({ length: 20 }, () => host.apply(value)));
    }
    const until = Date.now() + 5000;
    // The last snapshot due (20 entries after the previous one) comes once the writes end.
    while ((store.snapshots.at(-1)?.meta.index ?? 0) + 20 <= fsm.appliedIndex) {
      assert(Date.now() < until, "the snapshots are saved");
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await host.close();
  }
  assert(store.snapshots.length >= 2, `${store.snapshots.length} snapshots of 200 writes`);
  for (const s of store.snapshots) {
    assertEquals(new DataView(s.data.buffer).getFloat64(0), s.meta.index);
  }
  assert(fsm.appliedDuringBuild > 0, "writes were applied while a snapshot was being built");
});
