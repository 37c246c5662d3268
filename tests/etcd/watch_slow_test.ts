/**
 * Slow watch clients (src/etcd/watch.ts): a stream whose client stops reading is parked once
 * its bound of bytes waits, not cancelled; when the client reads again its watchers catch up
 * from the event history and rejoin the live events, so every event arrives exactly once, in
 * order, a transaction's events in one response, and a progress response only after every
 * event at or below its revision. Meanwhile another stream on the same node gets every event
 * while the slow one is still paused. A watcher that falls behind the history's bound is
 * cancelled with `compact_revision` set. Over real gRPC connections on 127.0.0.1, with the
 * framed HTTP/2 writes and with grpc-js's object writes.
 */
import * as grpc from "@grpc/grpc-js";
import { assert, assertEquals } from "../helpers/assert.ts";
import { serveGuarded } from "../helpers/guarded_port.ts";
import { etcdServiceDefinitions } from "../../src/api/mod.ts";
import { createEtcdHandlers, createWatchHandler, localEtcdBackend } from "../../src/etcd/mod.ts";
import { KvStateMachine } from "../../src/kv/mod.ts";
import { LocalBackend } from "../../src/server/mod.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string) => te.encode(s);

/** The stream bound of these tests: small, so a few hundred writes overflow it. */
const BUFFER_BYTES = 64 * 1024;

type Unary = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void,
) => void;
type WatchClient = grpc.Client & {
  Watch(): grpc.ClientDuplexStream<unknown, Record<string, unknown>>;
};

interface Event {
  type: string;
  kv: { key: Uint8Array; mod_revision: number };
}
interface Response {
  watch_id: number;
  created: boolean;
  canceled: boolean;
  compact_revision: number;
  cancel_reason: string;
  header: { revision: number };
  events?: Event[];
}

interface Server {
  readonly address: string;
  /** Times a stream was parked. */
  parked(): number;
  close(): Promise<void>;
}

/** KV and Watch on a plain grpc-js server over a LocalBackend (no Raft), on 127.0.0.1. */
async function startServer(
  opts: { forceObjectWrites: boolean; historyRevisions?: number },
): Promise<Server> {
  const local = new LocalBackend({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    stateMachine: new KvStateMachine({ historyRevisions: opts.historyRevisions }),
  });
  const backend = localEtcdBackend(local);
  let parked = 0;
  const server = new grpc.Server();
  const etcd = createEtcdHandlers({
    backend,
    maxKeyBytes: 4096,
    maxValueBytes: 1 << 20,
    quotaBytes: 1 << 30,
    stamp: () => ({ timeMs: Math.floor(performance.now()), clockSource: "test" }),
  });
  server.addService(etcdServiceDefinitions.KV, etcd.kv);
  server.addService(
    etcdServiceDefinitions.Watch,
    createWatchHandler({
      backend,
      streamBufferBytes: BUFFER_BYTES,
      forceObjectWrites: opts.forceObjectWrites,
      onParked: () => parked++,
    }),
  );
  const served = await serveGuarded(server);
  return {
    address: served.addr,
    parked: () => parked,
    close: () => served.close(),
  };
}

function client<T>(address: string, name: "KV" | "Watch"): T {
  const Ctor = grpc.makeGenericClientConstructor(etcdServiceDefinitions[name], name);
  return new Ctor(address, grpc.credentials.createInsecure()) as unknown as T;
}

function unary(kv: Record<string, Unary>, method: string, req: Record<string, unknown>) {
  return new Promise<Record<string, unknown>>((resolve, reject) =>
    kv[method](
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (err, res) => err ? reject(err) : resolve(res),
    )
  );
}
const revisionOf = (res: Record<string, unknown>) => (res.header as { revision: number }).revision;

/** A watch stream (its own connection) and every response it has received so far. */
function openStream(address: string) {
  const conn = client<WatchClient>(address, "Watch");
  const stream = conn.Watch();
  const got: Response[] = [];
  stream.on("data", (r) => got.push(r as Response));
  stream.on("error", () => {});
  return {
    stream,
    got,
    events: (id: number) => got.filter((r) => r.watch_id === id).flatMap((r) => r.events ?? []),
    close: () => {
      stream.end();
      conn.close();
    },
  };
}

/** Waits (at most 60 s, polling) until `pred` holds. */
async function waitFor(pred: () => boolean, what: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const describe = (events: Event[]) =>
  events.map((e) => `${e.type} ${td.decode(e.kv.key)}@${e.kv.mod_revision}`);

async function pausedThenResumed(forceObjectWrites: boolean): Promise<void> {
  const server = await startServer({ forceObjectWrites });
  const kv = client<grpc.Client & Record<string, Unary>>(server.address, "KV");
  const slow = openStream(server.address);
  const fast = openStream(server.address);
  try {
    const r0 = revisionOf(await unary(kv, "Put", { key: b("other"), value: b("x") }));
    const prefix = { key: b("s/"), range_end: b("s0") };
    for (const s of [slow, fast]) {
      s.stream.write({ create_request: { ...prefix, watch_id: 1 } });
      s.stream.write({ create_request: { ...prefix, watch_id: 2, prev_kv: true } });
      await waitFor(
        () => s.got.filter((r) => r.created).length === 2,
        () => JSON.stringify(s.got),
      );
    }
    slow.stream.pause();
    // 600 revisions of 4 KiB values, every 50th a transaction of two keys: megabytes, far
    // above the 64 KiB bound and whatever the connection holds in flight.
    const value = new Uint8Array(4096).fill(7);
    const expected: string[] = [];
    let progressAsked = false;
    for (let i = 0; i < 600; i++) {
      const k = `s/${String(i).padStart(4, "0")}`;
      if (i % 50 === 25) {
        const rev = revisionOf(
          await unary(kv, "Txn", {
            success: ["a", "b"].map((x) => ({ request_put: { key: b(`${k}${x}`), value } })),
          }),
        );
        expected.push(`PUT ${k}a@${rev}`, `PUT ${k}b@${rev}`);
      } else {
        const rev = revisionOf(await unary(kv, "Put", { key: b(k), value }));
        expected.push(`PUT ${k}@${rev}`);
      }
      if (i === 300 && !progressAsked) {
        // Asked while the stream is parked: answered only once its watchers have caught up.
        slow.stream.write({ progress_request: {} });
        progressAsked = true;
      }
    }
    assertEquals(expected.length, 612, "writes");
    assert(expected[0].endsWith(`@${r0 + 1}`), "the first write is the next revision");

    // The other stream got everything while the slow one still does not read.
    await waitFor(
      () => fast.events(1).length >= expected.length && fast.events(2).length >= expected.length,
      () => `fast stream: ${fast.events(1).length}, ${fast.events(2).length}`,
    );
    assert(server.parked() >= 1, `the slow stream was parked (${server.parked()} times)`);
    assertEquals(describe(fast.events(1)), expected, "fast watcher 1");
    assertEquals(describe(fast.events(2)), expected, "fast watcher 2");

    slow.stream.resume();
    await waitFor(
      () =>
        slow.events(1).length >= expected.length && slow.events(2).length >= expected.length &&
        slow.got.some((r) => r.watch_id === -1),
      () => `slow stream: ${slow.events(1).length}, ${slow.events(2).length} of ${expected.length}`,
    );
    // Every event exactly once, in revision order, on both of the slow stream's watchers.
    assertEquals(describe(slow.events(1)), expected, "slow watcher 1: every event once, in order");
    assertEquals(describe(slow.events(2)), expected, "slow watcher 2: every event once, in order");
    assert(!slow.got.some((r) => r.canceled), "nothing cancelled");
    for (const id of [1, 2]) {
      const responses = slow.got.filter((r) => r.watch_id === id && (r.events ?? []).length > 0);
      for (const r of responses) {
        const revs = r.events!.map((e) => e.kv.mod_revision);
        assertEquals(r.header.revision, revs[revs.length - 1], "header at the newest event");
      }
      const txns = responses.filter((r) =>
        r.events!.some((e) => td.decode(e.kv.key).endsWith("a"))
      );
      for (const r of txns) {
        const rev = r.events!.find((e) => td.decode(e.kv.key).endsWith("a"))!.kv.mod_revision;
        assertEquals(
          r.events!.filter((e) => e.kv.mod_revision === rev).length,
          2,
          `watcher ${id}: the transaction at ${rev} in one response`,
        );
      }
    }
    // The progress response comes after every event at or below its revision.
    const at = slow.got.findIndex((r) => r.watch_id === -1);
    const progressRev = slow.got[at].header.revision;
    assert(progressRev >= r0 + 300, `progress at ${progressRev}`);
    for (const id of [1, 2]) {
      const before = slow.got.slice(0, at).filter((r) => r.watch_id === id)
        .flatMap((r) => r.events ?? []);
      const upTo = expected.filter((e) => Number(e.split("@")[1]) <= progressRev);
      assertEquals(describe(before).slice(0, upTo.length), upTo, `watcher ${id} before progress`);
      const after = slow.got.slice(at).filter((r) => r.watch_id === id)
        .flatMap((r) => r.events ?? []);
      assert(
        after.every((e) => e.kv.mod_revision > progressRev),
        `watcher ${id}: nothing at or below the progress revision after it`,
      );
    }
  } finally {
    slow.close();
    fast.close();
    kv.close();
    await server.close();
  }
}

Deno.test("etcd watch, framed HTTP/2 writes: a paused client is parked, catches up once it reads, every event once; other streams go on", async () => {
  await pausedThenResumed(false);
});

Deno.test("etcd watch, grpc-js object writes: a paused client is parked, catches up once it reads, every event once; other streams go on", async () => {
  await pausedThenResumed(true);
});

Deno.test("etcd watch: a parked watcher that falls behind the history is cancelled with compact_revision", async () => {
  const server = await startServer({ forceObjectWrites: false, historyRevisions: 64 });
  const kv = client<grpc.Client & Record<string, Unary>>(server.address, "KV");
  const slow = openStream(server.address);
  try {
    const r0 = revisionOf(await unary(kv, "Put", { key: b("other"), value: b("x") }));
    slow.stream.write({ create_request: { key: b("h/"), range_end: b("h0"), watch_id: 3 } });
    await waitFor(() => slow.got.some((r) => r.created), () => JSON.stringify(slow.got));
    slow.stream.pause();
    const value = new Uint8Array(4096).fill(1);
    const writes = 800;
    for (let i = 0; i < writes; i++) {
      await unary(kv, "Put", { key: b(`h/${String(i).padStart(4, "0")}`), value });
    }
    // Once the history (64 revisions) has passed the parked watcher, it cannot catch up.
    await waitFor(() => server.parked() >= 1, () => "parked");
    slow.stream.resume();
    await waitFor(
      () => slow.got.some((r) => r.canceled),
      () => `slow stream: ${slow.events(3).length} events, no cancel`,
    );
    const cancel = slow.got.find((r) => r.canceled)!;
    assertEquals(cancel.watch_id, 3, "the watcher is cancelled");
    const revs = slow.events(3).map((e) => e.kv.mod_revision);
    const delivered = revs.length;
    assert(delivered < writes, `only part delivered: ${delivered}`);
    assertEquals(
      revs,
      Array.from({ length: delivered }, (_, i) => r0 + 1 + i),
      "what came, came once and in order from the first write",
    );
    assert(
      cancel.compact_revision >= r0 + 1 + delivered,
      `compact_revision ${cancel.compact_revision} at or after the revision it needed (${
        r0 + 1 + delivered
      })`,
    );
    assert(/compacted/.test(cancel.cancel_reason), `reason: ${cancel.cancel_reason}`);
    assert(/too slow/.test(cancel.cancel_reason), `reason: ${cancel.cancel_reason}`);
    assertEquals(
      slow.got.findIndex((r) => r.canceled),
      slow.got.length - 1,
      "nothing after the cancel",
    );
  } finally {
    slow.close();
    kv.close();
    await server.close();
  }
});
