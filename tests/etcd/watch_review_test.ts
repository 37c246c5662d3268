/**
 * Adversarial review of slow watch streams (src/etcd/watch.ts): parked streams, catch-up from
 * the history, and what arrives on a stream while it is parked or catching up. The Watch
 * handler is driven through a stand-in for grpc-js's server call whose client reads only when
 * the test says so (each response's write callback is held until then, which is what the
 * object writes count as waiting), over a real KvStateMachine applied to synchronously, so a
 * scenario is a transcript: requests, writes, reads, and the responses that result. Every
 * scenario ends by reading everything and checking each watcher's events against the writes:
 * every event once, in revision order, a revision's events in one response, nothing at or
 * below a progress revision after it, a cancelled watcher told why and sent nothing after.
 */
import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { assert, assertEquals } from "../helpers/assert.ts";
import { serveGuarded } from "../helpers/guarded_port.ts";
import { etcdServiceDefinitions } from "../../src/api/mod.ts";
import { createWatchHandler, localEtcdBackend } from "../../src/etcd/mod.ts";
import { CATCH_UP_STEP_REVISIONS } from "../../src/etcd/watch.ts";
import { readCatchUp } from "../../src/etcd/watch_batch.ts";
import {
  EventHistory,
  KvStateMachine,
  normalizeTxn,
  type RevisionEvents,
} from "../../src/kv/mod.ts";
import { LocalBackend } from "../../src/server/mod.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string) => te.encode(s);

/** The stream bound of these tests: a few dozen 4 KiB events overflow it. */
const BUFFER_BYTES = 64 * 1024;
const VALUE = new Uint8Array(4096).fill(7);

interface Event {
  type: string;
  kv: { key: Uint8Array; mod_revision: number };
  prev_kv?: { key: Uint8Array } | null;
}
interface Response {
  watch_id: number;
  created: boolean;
  canceled: boolean;
  compact_revision: number;
  cancel_reason: string;
  header: { revision: number };
  events: Event[];
}

/** A write the handler made that the client has not read yet. */
interface Unread {
  readonly res: Response;
  readonly done: () => void;
}

/** grpc-js's server duplex call as the Watch handler uses it, with a client that reads on demand. */
class FakeCall extends EventEmitter {
  readonly unread: Unread[] = [];
  readonly got: Response[] = [];
  ended = false;
  /** The handler paused reading requests (grpc-js's Readable.pause). */
  paused = false;
  #held: Record<string, unknown>[] = [];
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    while (!this.paused && this.#held.length > 0) this.emit("data", this.#held.shift());
    return this;
  }
  getAuthContext() {
    return {};
  }
  getPeer() {
    return "127.0.0.1:1";
  }
  write(res: Response, done: () => void): boolean {
    this.unread.push({ res, done });
    return true;
  }
  end(): void {
    this.ended = true;
  }
  /** The client reads `n` responses (all by default). */
  read(n = Infinity): number {
    let i = 0;
    for (; i < n && this.unread.length > 0; i++) {
      const u = this.unread.shift()!;
      this.got.push(u.res);
      u.done();
    }
    return i;
  }
  request(req: Record<string, unknown>): void {
    if (this.paused) this.#held.push(req);
    else this.emit("data", req);
  }
}

interface Selector {
  readonly key: string;
  readonly end?: string;
  readonly noPut?: boolean;
  readonly noDelete?: boolean;
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A state machine, a Watch handler over it, and every revision it applied. */
function setup(opts: { historyRevisions?: number; historyBytes?: number; progressMs?: number }) {
  const local = new LocalBackend({
    nodeId: "n1",
    rpcAddr: "127.0.0.1:1",
    stateMachine: new KvStateMachine({
      historyRevisions: opts.historyRevisions,
      historyBytes: opts.historyBytes,
    }),
  });
  const backend = localEtcdBackend(local);
  const store = local.stateMachine;
  const applied: RevisionEvents[] = [];
  store.onEvents((rev) => applied.push(rev));
  let parked = 0;
  const handler = createWatchHandler({
    backend,
    streamBufferBytes: BUFFER_BYTES,
    forceObjectWrites: true,
    progressNotifyMs: opts.progressMs,
    onParked: () => parked++,
  });
  const calls: FakeCall[] = [];
  const open = () => {
    const call = new FakeCall();
    calls.push(call);
    (handler.Watch as (c: unknown) => void)(call);
    return call;
  };
  const put = (key: string, value = VALUE) => {
    // LocalBackend applies synchronously: the revision exists when this returns.
    void local.apply({ type: "set", key, value, timeMs: 0 });
    return store.revision;
  };
  const del = (key: string) => {
    void local.apply({ type: "delete", key, timeMs: 0 });
    return store.revision;
  };
  const txn = (keys: string[], value = VALUE) => {
    void local.apply({
      type: "txn",
      key: "",
      timeMs: 0,
      txn: normalizeTxn({ success: keys.map((k) => ({ request_put: { key: b(k), value } })) }),
    });
    return store.revision;
  };
  const compact = (revision: number) => {
    void local.apply({ type: "compact", key: "", revision, timeMs: 0 });
  };
  const close = () => {
    for (const c of calls) c.emit("cancelled");
  };
  return { store, applied, open, put, del, txn, compact, close, parked: () => parked };
}

/** What `s` selects of `applied` from `start`, as "PUT key@rev" strings. */
function expectedOf(applied: RevisionEvents[], s: Selector, start: number): string[] {
  const out: string[] = [];
  for (const rev of applied) {
    if (rev.revision < start) continue;
    for (const e of rev.events) {
      if (e.type === "put" ? s.noPut : s.noDelete) continue;
      const inRange = s.end === undefined ? e.key === s.key : e.key >= s.key && e.key < s.end;
      if (!inRange) continue;
      out.push(`${e.type.toUpperCase()} ${e.key}@${rev.revision}`);
    }
  }
  return out;
}

const describe = (events: Event[]) =>
  events.map((e) => `${e.type} ${td.decode(e.kv.key)}@${e.kv.mod_revision}`);

/** Reads everything, again and again, until nothing more comes for a while (bounded). */
async function drain(call: FakeCall): Promise<void> {
  let quiet = 0;
  for (let round = 0; round < 2000 && quiet < 5; round++) {
    const n = call.read();
    quiet = n === 0 ? quiet + 1 : 0;
    await tick(15);
  }
  assertEquals(call.unread.length, 0, "drained");
}

/** Reads everything, again and again, until `pred` holds (bounded). */
async function readUntil(call: FakeCall, pred: () => boolean): Promise<void> {
  for (let round = 0; round < 2000 && !pred(); round++) {
    call.read();
    await tick(15);
  }
  assert(pred(), "read until the condition held");
}

/**
 * Checks one watcher's responses on `call`: its events are `expected` exactly (once, in
 * order), each revision's events in one response, nothing at or below a stream progress
 * revision after that progress response, nothing after its cancel.
 */
function checkWatcher(call: FakeCall, id: number, expected: string[], what: string): void {
  const mine = call.got.filter((r) => r.watch_id === id);
  const events = mine.flatMap((r) => r.events ?? []);
  assertEquals(describe(events), expected, `${what}: every event once, in order`);
  const revsSeen = new Set<number>();
  for (const r of mine) {
    const revs = new Set((r.events ?? []).map((e) => e.kv.mod_revision));
    for (const rev of revs) {
      assert(!revsSeen.has(rev), `${what}: revision ${rev} split over two responses`);
      revsSeen.add(rev);
    }
  }
  // Progress: a stream-wide one (-1) or this watcher's own (no events, not created/canceled).
  // Only those after its created response: earlier ones were about other watchers.
  let progress = 0;
  const createdAt = call.got.findIndex((r) => r.watch_id === id && r.created);
  for (const r of call.got.slice(Math.max(0, createdAt))) {
    const isProgress = (r.watch_id === -1 || r.watch_id === id) && !r.created && !r.canceled &&
      (r.events ?? []).length === 0;
    if (isProgress) {
      progress = Math.max(progress, r.header.revision);
      continue;
    }
    if (r.watch_id !== id) continue;
    for (const e of r.events ?? []) {
      if (e.kv.mod_revision <= progress && Deno.env.get("WR_DEBUG")) {
        console.log(
          call.got.filter((x) => x.watch_id === id || x.watch_id === -1).map((x) =>
            `${x.watch_id} c=${x.created} x=${x.canceled} h=${x.header.revision} ev=${
              (x.events ?? []).map((y) => y.kv.mod_revision).join(",")
            }`
          ).join("\n"),
        );
      }
      assert(
        e.kv.mod_revision > progress,
        `${what}: event at ${e.kv.mod_revision} after a progress response at ${progress}`,
      );
    }
  }
  const cancelAt = call.got.findIndex((r) => r.watch_id === id && r.canceled);
  if (cancelAt >= 0) {
    assert(
      !call.got.slice(cancelAt + 1).some((r) => r.watch_id === id),
      `${what}: nothing after the cancel`,
    );
  }
}

/** Creates a watcher and reads its created response. */
async function watch(
  call: FakeCall,
  id: number,
  s: Selector,
  extra: Record<string, unknown> = {},
): Promise<void> {
  call.request({
    request_union: "create_request",
    create_request: {
      key: b(s.key),
      range_end: s.end === undefined ? new Uint8Array(0) : b(s.end),
      start_revision: 0,
      progress_notify: false,
      filters: [...(s.noPut ? ["NOPUT"] : []), ...(s.noDelete ? ["NODELETE"] : [])],
      prev_kv: false,
      watch_id: id,
      ...extra,
    },
  });
  await tick();
}

const PREFIX: Selector = { key: "s/", end: "s0" };
const key = (i: number) => `s/${String(i).padStart(5, "0")}`;

/** Writes until the stream is parked (at most 10,000 writes). */
async function writeUntilParked(env: ReturnType<typeof setup>, from: number): Promise<number> {
  const before = env.parked();
  let i = from;
  for (; i < from + 10_000 && env.parked() === before; i++) {
    env.put(key(i));
    await null; // the turn's flush (a microtask) runs
  }
  assert(env.parked() > before, "the stream was parked");
  return i;
}

Deno.test("watch review: watchers created while parked (now, current+1, future, old) catch up once each", async () => {
  const env = setup({});
  const call = env.open();
  try {
    env.put("other");
    await watch(call, 1, PREFIX);
    let i = await writeUntilParked(env, 0);
    await tick(30);
    // Parked now: every kind of new watcher.
    const current = env.store.revision;
    await watch(call, 2, PREFIX);
    await watch(call, 3, PREFIX, { start_revision: current + 1 });
    await watch(call, 4, PREFIX, { start_revision: current + 20 });
    await watch(call, 5, PREFIX, { start_revision: 2 });
    await watch(call, 6, { key: key(3) });
    for (const end = i + 60; i < end; i++) env.put(key(i));
    await drain(call);
    for (let j = 0; j < 40; j++, i++) env.put(key(i));
    await drain(call);
    checkWatcher(call, 1, expectedOf(env.applied, PREFIX, 2), "watcher 1");
    // A watcher from now starts after the revision its created response carries (a request
    // may wait while more than the bound waits for the client).
    const now = (id: number) =>
      call.got.find((r) => r.watch_id === id && r.created)!.header.revision + 1;
    checkWatcher(call, 2, expectedOf(env.applied, PREFIX, now(2)), "watcher 2 (now)");
    checkWatcher(call, 3, expectedOf(env.applied, PREFIX, current + 1), "watcher 3 (current+1)");
    checkWatcher(call, 4, expectedOf(env.applied, PREFIX, current + 20), "watcher 4 (future)");
    checkWatcher(call, 5, expectedOf(env.applied, PREFIX, 2), "watcher 5 (old)");
    checkWatcher(call, 6, expectedOf(env.applied, { key: key(3) }, now(6)), "watcher 6");
    assert(!call.got.some((r) => r.canceled), "nothing cancelled");
  } finally {
    env.close();
  }
});

/** The watcher's cancel response, if any. */
const cancelOf = (call: FakeCall, id: number) =>
  call.got.find((r) => r.watch_id === id && r.canceled);

/** A cancelled watcher got a prefix of `expected` and was told why (compact_revision set). */
function checkCancelled(call: FakeCall, id: number, expected: string[], what: string): void {
  const cancel = cancelOf(call, id);
  assert(cancel, `${what}: cancelled`);
  const events = call.got.filter((r) => r.watch_id === id).flatMap((r) => r.events ?? []);
  checkWatcher(call, id, expected.slice(0, events.length), what);
  assert(cancel.compact_revision > 0, `${what}: compact_revision set`);
  assert(/compacted/.test(cancel.cancel_reason), `${what}: reason ${cancel.cancel_reason}`);
  // The history had lost the watcher's position: past everything it was sent (the server
  // cannot know whether what it lost held events for this watcher, so it cancels anyway).
  const last = events.length > 0 ? events[events.length - 1].kv.mod_revision : 0;
  assert(
    cancel.compact_revision > last,
    `${what}: compact_revision ${cancel.compact_revision} past its last event at ${last}`,
  );
}

Deno.test("watch review: cancel, progress request and a compaction while parked and mid catch-up", async () => {
  const env = setup({});
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    const noPut: Selector = { ...PREFIX, noPut: true };
    await watch(call, 1, PREFIX);
    await watch(call, 2, PREFIX, { prev_kv: true });
    await watch(call, 3, noPut);
    await watch(call, 4, { key: key(7) });
    let i = await writeUntilParked(env, 0);
    for (let j = 0; j < 200; j++, i++) {
      env.put(key(i));
      if (j % 10 === 0) env.del(key(i - 5));
    }
    call.request({ request_union: "progress_request", progress_request: {} });
    await tick(30);
    // One catch-up step's worth, then cancel watcher 2 and compact above the parked position.
    call.read(3);
    await tick(30);
    call.read(3);
    call.request({ request_union: "cancel_request", cancel_request: { watch_id: 2 } });
    await tick();
    const compactAt = env.store.revision - 50;
    env.compact(compactAt);
    for (let j = 0; j < 30; j++, i++) env.put(key(i));
    await drain(call);
    for (let j = 0; j < 30; j++, i++) env.put(key(i));
    await drain(call);
    // Each watcher either got everything or was cancelled behind the compaction and told so.
    for (const [id, s] of [[1, PREFIX], [3, noPut], [4, { key: key(7) }]] as const) {
      const expected = expectedOf(env.applied, s, start);
      if (cancelOf(call, id)) checkCancelled(call, id, expected, `watcher ${id}`);
      else checkWatcher(call, id, expected, `watcher ${id}`);
    }
    const c2 = cancelOf(call, 2);
    assert(c2, "watcher 2 cancelled");
    const ev2 = call.got.filter((r) => r.watch_id === 2).flatMap((r) => r.events ?? []);
    checkWatcher(call, 2, expectedOf(env.applied, PREFIX, start).slice(0, ev2.length), "w2");
    assert(call.got.some((r) => r.watch_id === -1), "the progress request was answered");
  } finally {
    env.close();
  }
});

Deno.test("watch review: progress_notify timers firing while parked never claim past what was sent", async () => {
  const env = setup({ progressMs: 15 });
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    await watch(call, 1, PREFIX, { progress_notify: true });
    await watch(call, 2, { key: "idle" }, { progress_notify: true });
    let i = await writeUntilParked(env, 0);
    for (let round = 0; round < 20; round++) {
      for (let j = 0; j < 5; j++, i++) env.put(key(i));
      call.read(1);
      await tick(20);
    }
    const expected = expectedOf(env.applied, PREFIX, start);
    await readUntil(
      call,
      () =>
        call.got.filter((r) => r.watch_id === 1).flatMap((r) => r.events ?? []).length >=
          expected.length,
    );
    await tick(60);
    call.read();
    checkWatcher(call, 1, expected, "watcher 1");
    checkWatcher(call, 2, [], "watcher 2");
    assert(
      call.got.some((r) => r.watch_id === 2 && !r.created),
      "the idle watcher got progress notifications",
    );
  } finally {
    env.close();
  }
});

Deno.test("watch review: a client reading slowly right at the threshold makes progress (no thrash)", async () => {
  const env = setup({});
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    await watch(call, 1, PREFIX);
    await watch(call, 2, PREFIX, { prev_kv: true });
    let i = await writeUntilParked(env, 0);
    // Steady writes, and a client that reads two responses a poll: parked and resumed over
    // and over.
    for (let round = 0; round < 150; round++) {
      for (let j = 0; j < 2; j++, i++) env.put(key(i));
      call.read(2);
      await tick(12);
    }
    await drain(call);
    checkWatcher(call, 1, expectedOf(env.applied, PREFIX, start), "watcher 1");
    checkWatcher(call, 2, expectedOf(env.applied, PREFIX, start), "watcher 2");
    assert(env.parked() >= 1, `parked ${env.parked()} times`);
  } finally {
    env.close();
  }
});

Deno.test("watch review: transactions bigger than a catch-up step and than a response, while parked", async () => {
  const env = setup({});
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    await watch(call, 1, PREFIX);
    await watch(call, 2, { key: "s/", end: "s/1" });
    let i = await writeUntilParked(env, 0);
    // 300 keys of 4 KiB: 1.2 MiB, past the 1 MiB response cap and far past a 48 KiB step.
    env.txn(Array.from({ length: 300 }, (_, j) => key(100_000 + j)));
    for (let j = 0; j < 10; j++, i++) env.put(key(i));
    env.txn(Array.from({ length: 20 }, (_, j) => key(200_000 + j)));
    await drain(call);
    checkWatcher(call, 1, expectedOf(env.applied, PREFIX, start), "watcher 1");
    checkWatcher(call, 2, expectedOf(env.applied, { key: "s/", end: "s/1" }, start), "w2");
  } finally {
    env.close();
  }
});

Deno.test("watch review: history trimmed by bytes while catching up: each watcher whole or told why", async () => {
  const env = setup({ historyBytes: 400 * 1024 });
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    await watch(call, 1, PREFIX);
    await watch(call, 2, { key: key(5) });
    let i = await writeUntilParked(env, 0);
    for (let round = 0; round < 40; round++) {
      for (let j = 0; j < 10; j++, i++) env.put(key(i));
      call.read(1);
      await tick(12);
    }
    await drain(call);
    for (const [id, s] of [[1, PREFIX], [2, { key: key(5) }]] as const) {
      const expected = expectedOf(env.applied, s, start);
      if (cancelOf(call, id)) checkCancelled(call, id, expected, `watcher ${id}`);
      else checkWatcher(call, id, expected, `watcher ${id}`);
    }
  } finally {
    env.close();
  }
});

Deno.test("watch review: a quiet watcher is not starved behind a busy one on a parked stream", async () => {
  // The busy prefix watcher (created first) catches up for a long time while writes go on;
  // the quiet watcher on one key has a single event to catch up, and the client reads
  // everything it is sent. It must not be cancelled as too slow.
  const env = setup({ historyRevisions: 300 });
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    const quiet: Selector = { key: "q" };
    await watch(call, 1, PREFIX);
    await watch(call, 2, quiet);
    let i = await writeUntilParked(env, 0);
    env.put("q");
    for (let round = 0; round < 40; round++) {
      for (let j = 0; j < 15; j++, i++) env.put(key(i));
      call.read();
      await tick(12);
    }
    await drain(call);
    assert(
      !cancelOf(call, 2),
      `the quiet watcher was cancelled: ${cancelOf(call, 2)?.cancel_reason}`,
    );
    checkWatcher(call, 2, expectedOf(env.applied, quiet, start), "quiet watcher");
    const expected = expectedOf(env.applied, PREFIX, start);
    if (cancelOf(call, 1)) checkCancelled(call, 1, expected, "busy watcher");
    else checkWatcher(call, 1, expected, "busy watcher");
  } finally {
    env.close();
  }
});

Deno.test("watch review: a client that sends requests but never reads cannot grow the stream past its bound", async () => {
  // Progress requests are deferred (and answered once) while the stream is parked, but every
  // create and cancel is answered: a client that sends them without reading its responses.
  const env = setup({});
  const call = env.open();
  try {
    await watch(call, 1, PREFIX);
    const pairs = 10_000;
    for (let n = 0; n < pairs; n++) {
      call.request({
        request_union: "create_request",
        create_request: {
          key: b("k"),
          range_end: new Uint8Array(0),
          start_revision: 0,
          progress_notify: false,
          filters: [],
          prev_kv: false,
          watch_id: 2,
        },
      });
      call.request({ request_union: "cancel_request", cancel_request: { watch_id: 2 } });
    }
    for (let round = 0; round < 100 && call.paused === false; round++) await tick(10);
    await tick(50);
    // A created or canceled response is at least 20 bytes framed: more than this many is
    // past twice the bound.
    const most = (2 * BUFFER_BYTES) / 20;
    assert(call.unread.length <= most, `${call.unread.length} responses wait (at most ${most})`);
    await readUntil(call, () => call.got.filter((r) => r.watch_id === 2).length === 2 * pairs);
    checkWatcher(call, 1, [], "watcher 1");
  } finally {
    env.close();
  }
});

Deno.test("watch review: a client that resets its stream while parked releases it (timers, subscription)", async () => {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const backend = localEtcdBackend(local);
  let parked = 0, closed = 0;
  const server = new grpc.Server();
  server.addService(
    etcdServiceDefinitions.Watch,
    createWatchHandler({
      backend,
      streamBufferBytes: BUFFER_BYTES,
      progressNotifyMs: 20,
      onParked: () => parked++,
      onRequest: () => closed++,
    }),
  );
  const served = await serveGuarded(server);
  const Ctor = grpc.makeGenericClientConstructor(etcdServiceDefinitions.Watch, "Watch");
  const conn = new Ctor(served.addr, grpc.credentials.createInsecure()) as unknown as
    & grpc.Client
    & { Watch(): grpc.ClientDuplexStream<unknown, Response> };
  const stream = conn.Watch();
  stream.on("error", () => {});
  const got: Response[] = [];
  stream.on("data", (r: Response) => got.push(r));
  try {
    stream.write({ create_request: { key: b("s/"), range_end: b("s0"), progress_notify: true } });
    stream.write({ create_request: { key: b("s/"), range_end: b("s0"), start_revision: 1 } });
    for (let round = 0; round < 500 && got.length < 2; round++) await tick(10);
    assertEquals(got.length, 2, "created");
    stream.pause();
    for (let i = 0; i < 20_000 && parked === 0; i++) {
      void local.apply({ type: "set", key: key(i), value: VALUE, timeMs: 0 });
      if (i % 10 === 0) await tick(1);
    }
    assert(parked > 0, "parked");
    stream.cancel();
    for (let round = 0; round < 1000 && closed === 0; round++) await tick(10);
    assertEquals(closed, 1, "the server closed the stream");
    // Writes after the reset reach no listener of the stream (nothing throws, nothing queued).
    for (let i = 0; i < 100; i++) {
      void local.apply({ type: "set", key: key(i), value: VALUE, timeMs: 0 });
    }
    await tick(50);
  } finally {
    conn.close();
    await served.close();
  }
});

Deno.test("watch review: a catch-up read stops after its revision bound, between revisions", () => {
  const h = new EventHistory();
  for (let r = 1; r <= 10; r++) {
    h.push({ revision: r, events: r === 3 ? [] : [{ type: "put", key: `k${r}` }] });
  }
  const nothing = () => [];
  const first = readCatchUp(h.revisionsFrom(1), 1, nothing, 1000, 10, 4);
  assertEquals([first.next, first.done, first.visited], [5, false, 4], "four looked at");
  const rest = readCatchUp(h.revisionsFrom(5), 5, nothing, 1000, 10, 100);
  assertEquals([rest.next, rest.done, rest.visited], [11, true, 6], "the rest, to the newest");
  const one = readCatchUp(h.revisionsFrom(1), 1, nothing, 1000, 10, 0);
  assertEquals([one.next, one.visited], [2, 1], "at least one revision, so every read advances");
});

Deno.test("watch review: a watcher that selects little catches up over a long history in bounded steps", async () => {
  // Many watchers on single keys behind a long lag each scanned the whole lag in one
  // synchronous step (1,000 such watchers 20,000 revisions behind held the event loop for
  // 38 s): a step now looks at CATCH_UP_STEP_REVISIONS revisions at most, over all watchers.
  const env = setup({});
  const call = env.open();
  try {
    const revisions = 2.5 * CATCH_UP_STEP_REVISIONS;
    const small = new Uint8Array(1);
    for (let i = 0; i < revisions; i++) env.put(i % 1000 === 0 ? "q" : "other", small);
    await watch(call, 1, { key: "q" }, { start_revision: 1 });
    await drain(call);
    checkWatcher(call, 1, expectedOf(env.applied, { key: "q" }, 1), "watcher 1");
    const responses = call.got.filter((r) => r.watch_id === 1 && (r.events ?? []).length > 0);
    for (const r of responses) {
      const revs = r.events.map((e) => e.kv.mod_revision);
      assert(
        revs[revs.length - 1] - revs[0] < CATCH_UP_STEP_REVISIONS,
        `one step read revisions ${revs[0]} to ${revs[revs.length - 1]}`,
      );
    }
    assert(responses.length >= 3, `${responses.length} steps`);
  } finally {
    env.close();
  }
});

Deno.test("watch review: a snapshot installed while parked cancels the watchers behind it, told why; one from the future goes on", async () => {
  const env = setup({});
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    await watch(call, 1, PREFIX);
    await watch(call, 2, { key: key(1) });
    const i = await writeUntilParked(env, 0);
    // A newer state from elsewhere (a follower installing the leader's snapshot).
    const other = new LocalBackend({ nodeId: "n2", rpcAddr: "127.0.0.1:2" });
    for (let j = 0; j < i + 300; j++) {
      void other.apply({ type: "set", key: key(j), value: new Uint8Array(8), timeMs: 0 });
    }
    const snapRevision = other.stateMachine.revision;
    await watch(call, 3, PREFIX, { start_revision: snapRevision + 5 });
    env.store.restore(other.stateMachine.snapshot());
    assertEquals(env.store.revision, snapRevision, "restored");
    for (let j = 0; j < 20; j++) env.put(key(j));
    await drain(call);
    for (const id of [1, 2]) {
      const cancel = cancelOf(call, id);
      assert(cancel, `watcher ${id} cancelled`);
      assertEquals(cancel.compact_revision, snapRevision, `watcher ${id}: compact_revision`);
      const s = id === 1 ? PREFIX : { key: key(1) };
      const events = call.got.filter((r) => r.watch_id === id).flatMap((r) => r.events ?? []);
      checkWatcher(
        call,
        id,
        expectedOf(env.applied, s, start).slice(0, events.length),
        `watcher ${id}`,
      );
      assert(
        events.every((e) => e.kv.mod_revision < snapRevision),
        `watcher ${id}: only events from before the snapshot`,
      );
    }
    assert(!cancelOf(call, 3), "the watcher from the future goes on");
    checkWatcher(call, 3, expectedOf(env.applied, PREFIX, snapRevision + 5), "watcher 3");
    assert(call.got.some((r) => r.watch_id === 3 && (r.events ?? []).length > 0), "it got events");
  } finally {
    env.close();
  }
});

/** A small seeded generator (mulberry32), so a failing seed reproduces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function randomScenario(seed: number): Promise<void> {
  const rand = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const env = setup({ historyRevisions: 400, progressMs: 25 });
  const call = env.open();
  const selectors: Selector[] = [
    PREFIX,
    { ...PREFIX, noPut: true },
    { ...PREFIX, noDelete: true },
    { key: key(1), end: key(6) },
    { key: key(2) },
    { key: key(3) },
  ];
  const made = new Map<number, { s: Selector; start?: number }>();
  let nextId = 1;
  try {
    env.put("other");
    for (let op = 0; op < 250; op++) {
      const r = rand();
      if (r < 0.45) {
        const n = 1 + Math.floor(rand() * 12);
        for (let j = 0; j < n; j++) {
          const k = key(Math.floor(rand() * 10));
          if (rand() < 0.15) env.del(k);
          else if (rand() < 0.1) env.txn([k, key(Math.floor(rand() * 10)) + "x"]);
          else env.put(k);
        }
      } else if (r < 0.55) {
        const s = pick(selectors);
        const id = nextId++;
        const current = env.store.revision;
        const mode = rand();
        const start = mode < 0.4
          ? undefined
          : mode < 0.6
          ? current + 1
          : mode < 0.7
          ? current + 1 + Math.floor(rand() * 30)
          : Math.max(1, current - Math.floor(rand() * 500));
        made.set(id, { s, start });
        await watch(call, id, s, {
          start_revision: start ?? 0,
          prev_kv: rand() < 0.3,
          progress_notify: rand() < 0.5,
        });
      } else if (r < 0.6 && made.size > 0) {
        const id = pick([...made.keys()]);
        call.request({ request_union: "cancel_request", cancel_request: { watch_id: id } });
      } else if (r < 0.65) {
        call.request({ request_union: "progress_request", progress_request: {} });
      } else if (r < 0.67) {
        const at = env.store.revision - Math.floor(rand() * 200);
        if (at > env.store.compactedRevision) env.compact(at);
      } else if (r < 0.85) {
        call.read(Math.floor(rand() * 4));
      } else {
        await tick(Math.floor(rand() * 15));
      }
      if (rand() < 0.3) await null;
    }
    // Reading everything now; the progress notifications keep coming, so read until the
    // watchers have had every event or were cancelled.
    const doneWith = () =>
      [...made].every(([id, m]) => {
        if (cancelOf(call, id)) return true;
        const created = call.got.find((r) => r.watch_id === id && r.created);
        if (!created) return false;
        const start = m.start ?? created.header.revision + 1;
        const got = call.got.filter((r) => r.watch_id === id).flatMap((r) => r.events ?? []);
        return got.length >= expectedOf(env.applied, m.s, start).length;
      });
    await readUntil(call, doneWith);
    await tick(40);
    call.read();
    if (Deno.env.get("WR_DEBUG")) {
      const cancels = [...made.keys()].map((id) => cancelOf(call, id));
      console.log(
        `seed ${seed}: parked ${env.parked()}, watchers ${made.size}, compacted-cancel ${
          cancels.filter((c) => c && c.compact_revision > 0).length
        }, cancelled ${cancels.filter((c) => c && c.compact_revision === 0).length}`,
      );
    }
    for (const [id, m] of made) {
      const what = `seed ${seed}, watcher ${id} ${JSON.stringify(m)}`;
      const created = call.got.find((r) => r.watch_id === id && r.created);
      assert(created, `${what}: created`);
      const start = m.start ?? created.header.revision + 1;
      const expected = expectedOf(env.applied, m.s, start);
      const cancel = cancelOf(call, id);
      if (!cancel) {
        checkWatcher(call, id, expected, what);
      } else if (cancel.compact_revision > 0) {
        checkCancelled(call, id, expected, what);
      } else {
        const n = call.got.filter((r) => r.watch_id === id).flatMap((r) => r.events ?? []).length;
        checkWatcher(call, id, expected.slice(0, n), what);
      }
    }
  } finally {
    env.close();
  }
}

Deno.test("watch review: random interleavings of writes, creates, cancels, progress, compactions and reads", async () => {
  const seeds = Number(Deno.env.get("WATCH_REVIEW_SEEDS") ?? 12);
  for (let seed = 1; seed <= seeds; seed++) await randomScenario(seed);
});

Deno.test("watch review: one turn that applies many revisions to many watchers stays within the bound", async () => {
  // A follower catching up applies thousands of entries in one turn. Every synced watcher's
  // share of the turn was framed before the bound was looked at (50 watchers x 1.2 MiB of
  // this turn left 58.6 MiB waiting on a stream bound to 64 KiB).
  const env = setup({});
  const call = env.open();
  try {
    env.put("other");
    const start = env.store.revision + 1;
    const watchers = 20;
    for (let id = 1; id <= watchers; id++) await watch(call, id, PREFIX);
    call.read();
    const revisions = 300;
    // A progress request handled in the same turn, before the turn's events are framed:
    // framing them parks most watchers, so it must wait for them.
    call.request({ request_union: "progress_request", progress_request: {} });
    for (let i = 0; i < revisions; i++) env.put(key(i));
    await tick();
    let waiting = 0;
    for (const u of call.unread) {
      for (const e of u.res.events ?? []) {
        waiting += (e.kv as { value?: Uint8Array }).value?.length ?? 0;
      }
    }
    const turn = revisions * VALUE.length;
    assert(
      waiting <= BUFFER_BYTES + 2 * turn,
      `${(waiting / 2 ** 20).toFixed(1)} MiB wait (bound ${BUFFER_BYTES / 1024} KiB, the turn ${
        (turn / 2 ** 20).toFixed(1)
      } MiB per watcher)`,
    );
    for (let i = revisions; i < revisions + 50; i++) env.put(key(i));
    await drain(call);
    for (let id = 1; id <= watchers; id++) {
      checkWatcher(call, id, expectedOf(env.applied, PREFIX, start), `watcher ${id}`);
    }
    assert(call.got.some((r) => r.watch_id === -1), "the progress request was answered");
  } finally {
    env.close();
  }
});
