/**
 * The replication host bounds what waits in it by bytes, not only by count: with the disk
 * stalled, large writes are refused once MAX_PENDING_PROPOSAL_BYTES wait, so a producer
 * cannot fill the node's memory; once the disk moves again, writes go through.
 */
import { assert } from "../helpers/assert.ts";
import {
  type LogStore,
  MAX_PENDING_PROPOSAL_BYTES,
  ReplicationHost,
  type StateMachine,
  type Transport,
} from "../../src/replication/mod.ts";
import { UnavailableError } from "../../src/errors.ts";
import type { Entry, HardState, Snapshot } from "../../src/raft/mod.ts";

class GatedStore implements LogStore {
  gate: PromiseWithResolvers<void> | undefined;
  load() {
    return Promise.resolve({
      hardState: { term: 0, vote: "", commit: 0 },
      entries: [],
      snapshot: undefined,
    });
  }
  async save(_batch: { hardState?: HardState; entries: readonly Entry[]; snapshot?: Snapshot }) {
    if (this.gate) await this.gate.promise;
  }
  saveSnapshot(_s: Snapshot) {
    return Promise.resolve();
  }
}

class EchoMachine implements StateMachine<Uint8Array> {
  appliedIndex = 0;
  apply(index: number, data: Uint8Array) {
    this.appliedIndex = index;
    return data.subarray(0, 1);
  }
  markApplied(index: number) {
    this.appliedIndex = index;
  }
  snapshot() {
    return new Uint8Array(0);
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

Deno.test("host: with the disk stalled, pending writes stop at the byte bound; they resume after", async () => {
  const store = new GatedStore();
  const host = await ReplicationHost.open({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    storage: store,
    fsm: new EchoMachine(),
    results: { encode: (r) => r, decode: (b) => b },
    transport: noTransport,
    tickMs: 10,
    requestTimeoutMs: 1500,
  });
  host.bootstrap({ voters: ["n1"], learners: [], addresses: { n1: "127.0.0.1:1" } });
  host.start();
  try {
    const deadline = Date.now() + 5000;
    while (host.status().role !== "leader" || host.status().commit < 2) {
      assert(Date.now() < deadline, "n1 leads");
      await new Promise((r) => setTimeout(r, 10));
    }
    store.gate = Promise.withResolvers<void>();
    const base = host.status().lastIndex;
    const mib = new Uint8Array(1024 * 1024);
    const writes = Array.from({ length: 100 }, () => host.apply(mib).then(() => "ok", (e) => e));
    await new Promise((r) => setTimeout(r, 300));
    const appended = host.status().lastIndex - base;
    const limit = MAX_PENDING_PROPOSAL_BYTES / mib.length;
    assert(
      appended <= limit + 1,
      `${appended} MiB appended while the disk stalls (bound ${limit})`,
    );
    assert(appended >= limit - 2, `the bound is reached, not an earlier one (${appended})`);
    store.gate.resolve();
    store.gate = undefined;
    const results = await Promise.all(writes);
    const ok = results.filter((r) => r === "ok").length;
    assert(ok >= limit, `${ok} writes went through once the disk moved`);
    for (const r of results) {
      assert(r === "ok" || r instanceof UnavailableError, `refusals are retryable: ${r}`);
    }
  } finally {
    await host.close();
  }
});
