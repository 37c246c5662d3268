/**
 * etcd's services in one process over a LocalBackend, through a real gRPC connection on
 * 127.0.0.1: authorization of every key read or written (compares included), etcd's error
 * codes and messages, hasleader, and the Watch stream (replay from a revision, compacted
 * starts, cancel, progress, a slow client cancelled with a reason).
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { assert, assertEquals } from "../helpers/assert.ts";
import { etcdServiceDefinitions } from "../../src/api/mod.ts";
import { localEtcdBackend } from "../../src/etcd/mod.ts";
import { LocalBackend } from "../../src/server/mod.ts";
import { UnavailableError } from "../../src/errors.ts";
import { startHarness } from "../server/_helpers.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string) => te.encode(s);

type Unary = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void,
) => void;

function client(name: keyof typeof etcdServiceDefinitions, address: string) {
  const Ctor = grpc.makeGenericClientConstructor(etcdServiceDefinitions[name], name);
  return new Ctor(address, grpc.credentials.createInsecure()) as unknown as
    & grpc.Client
    & Record<string, Unary>
    & { Watch(): grpc.ClientDuplexStream<unknown, Record<string, unknown>> };
}

function unary(
  c: Record<string, Unary>,
  method: string,
  req: unknown,
  md = new grpc.Metadata(),
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) =>
    c[method](
      req,
      md,
      { deadline: Date.now() + 5000 },
      (err, res) => err ? reject(err) : resolve(res),
    )
  );
}

async function harness(authorize?: (s: string, o: string, a: string) => boolean) {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const h = await startHarness({
    backend: local,
    etcd: localEtcdBackend(local),
    authorize,
    watchProgressNotifyMs: 200,
  });
  const kv = client("KV", h.address);
  const watch = client("Watch", h.address);
  const maint = client("Maintenance", h.address);
  return {
    address: h.address,
    local,
    kv,
    watch,
    maint,
    close: async () => {
      kv.close();
      watch.close();
      maint.close();
      await h.close();
    },
  };
}

async function rejects(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("expected a rejection");
}

Deno.test("etcd service: without a certificate subject, a policy that denies gets etcd's permission denied", async () => {
  // The plaintext harness has subject "": allow only reads and writes under "pub/".
  const h = await harness((_s, o, a) => o === "pub/x" || (a === "consume" && o === "pub/*"));
  try {
    await unary(h.kv, "Put", { key: b("pub/x"), value: b("1") });
    const denied = await rejects(unary(h.kv, "Put", { key: b("secret"), value: b("1") }));
    assertEquals(
      [denied.code, denied.details],
      [grpc.status.PERMISSION_DENIED, "etcdserver: permission denied"],
      "denied put",
    );
    // A compare is a read: a txn comparing a key the subject may not read is refused whole.
    const cmp = await rejects(unary(h.kv, "Txn", {
      compare: [{ key: b("secret"), target: "VALUE", result: "EQUAL", value: b("s") }],
      success: [{ request_put: { key: b("pub/x"), value: b("2") } }],
    }));
    assertEquals(cmp.code, grpc.status.PERMISSION_DENIED, "compare on an unreadable key");
    const range = await unary(h.kv, "Range", { key: b("pub/"), range_end: b("pub0") });
    assertEquals((range.kvs as unknown[]).length, 1, "prefix read allowed as pub/*");
    const wide = await rejects(unary(h.kv, "Range", { key: b("a"), range_end: b("z") }));
    assertEquals(wide.code, grpc.status.PERMISSION_DENIED, "a range beyond the policy");
  } finally {
    await h.close();
  }
});

Deno.test("etcd service: errors carry etcd's codes and messages", async () => {
  const h = await harness();
  try {
    const notUtf8 = await rejects(
      unary(h.kv, "Put", { key: new Uint8Array([0xff]), value: b("") }),
    );
    assertEquals(
      [notUtf8.code, notUtf8.details],
      [grpc.status.INVALID_ARGUMENT, "etcdserver: key is not valid UTF-8"],
      "non-UTF-8",
    );
    const empty = await rejects(unary(h.kv, "Put", { key: new Uint8Array(0), value: b("") }));
    assertEquals(empty.details, "etcdserver: key is not provided", "empty key");
    const future = await rejects(unary(h.kv, "Range", { key: b("a"), revision: 99 }));
    assertEquals(
      [future.code, future.details],
      [grpc.status.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"],
      "future revision",
    );
    const lease = await rejects(unary(h.kv, "Put", { key: b("a"), value: b(""), lease: 5 }));
    assertEquals(lease.details, "etcdserver: requested lease not found", "lease");
    const dup = await rejects(unary(h.kv, "Txn", {
      success: [
        { request_put: { key: b("d"), value: b("1") } },
        { request_put: { key: b("d"), value: b("2") } },
      ],
    }));
    assertEquals(dup.details, "etcdserver: duplicate key given in txn request", "duplicate");
    // The Auth service is not offered.
    const Ctor = grpc.makeGenericClientConstructor({
      AuthEnable: {
        path: "/etcdserverpb.Auth/AuthEnable",
        requestStream: false,
        responseStream: false,
        requestSerialize: (x: Uint8Array) => Buffer.from(x),
        requestDeserialize: (x: Buffer) => x,
        responseSerialize: (x: Uint8Array) => Buffer.from(x),
        responseDeserialize: (x: Buffer) => x,
      },
    }, "Auth");
    const a = new Ctor(h.address, grpc.credentials.createInsecure()) as unknown as
      & Record<string, Unary>
      & grpc.Client;
    const unimplemented = await rejects(unary(a, "AuthEnable", new Uint8Array(0)));
    assertEquals(
      unimplemented.code,
      grpc.status.UNIMPLEMENTED,
      `Auth is not offered: ${unimplemented.code} ${unimplemented.details}`,
    );
    a.close();
    // Status reports the API version and the leader.
    const st = await unary(h.maint, "Status", {});
    assertEquals([st.version, Number(st.leader) > 0], ["3.4.0", true], "status");
  } finally {
    await h.close();
  }
});

interface WatchResponse {
  watch_id: number;
  created: boolean;
  canceled: boolean;
  compact_revision: number;
  cancel_reason: string;
  header: { revision: number };
  events: { type: string; kv: { key: Uint8Array; value: Uint8Array; mod_revision: number } }[];
}

function watchStream(h: { watch: { Watch(): grpc.ClientDuplexStream<unknown, unknown> } }) {
  const stream = h.watch.Watch();
  const got: WatchResponse[] = [];
  stream.on("data", (r) => got.push(r as WatchResponse));
  stream.on("error", () => {});
  const waitFor = async (pred: () => boolean, what: string) => {
    const deadline = Date.now() + 5000;
    while (!pred()) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting: ${what}: ${JSON.stringify(got)}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { stream, got, waitFor };
}

Deno.test("etcd watch: replay from a revision then live, no gap, no duplicate; cancel; progress", async () => {
  const h = await harness();
  try {
    for (let i = 1; i <= 5; i++) await unary(h.kv, "Put", { key: b(`w/${i}`), value: b(`${i}`) });
    const w = watchStream(h);
    w.stream.write({ create_request: { key: b("w/"), range_end: b("w0"), start_revision: 3 } });
    await w.waitFor(() => w.got.some((r) => r.created), "created");
    for (let i = 6; i <= 8; i++) await unary(h.kv, "Put", { key: b(`w/${i}`), value: b(`${i}`) });
    const revs = () => w.got.flatMap((r) => r.events ?? []).map((e) => e.kv.mod_revision);
    await w.waitFor(() => revs().length >= 6, "six events");
    assertEquals(revs(), [3, 4, 5, 6, 7, 8], "every revision from 3, once, in order");
    const id = w.got.find((r) => r.created)!.watch_id;
    w.stream.write({ progress_request: {} });
    await w.waitFor(() => w.got.some((r) => r.watch_id === -1), "progress response");
    assertEquals(w.got.find((r) => r.watch_id === -1)!.header.revision, 8, "progress revision");
    w.stream.write({ cancel_request: { watch_id: id } });
    await w.waitFor(() => w.got.some((r) => r.canceled && r.watch_id === id), "canceled");
    await unary(h.kv, "Put", { key: b("w/9"), value: b("9") });
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(revs().length, 6, "nothing after the cancel");
    w.stream.end();
  } finally {
    await h.close();
  }
});

Deno.test("etcd watch: a start revision at or below the compaction is answered as compacted", async () => {
  const h = await harness();
  try {
    for (let i = 1; i <= 4; i++) await unary(h.kv, "Put", { key: b("c"), value: b(`${i}`) });
    await unary(h.kv, "Compact", { revision: 3 });
    const w = watchStream(h);
    w.stream.write({ create_request: { key: b("c"), start_revision: 2 } });
    await w.waitFor(() => w.got.some((r) => r.canceled), "canceled");
    const c = w.got.find((r) => r.canceled)!;
    assertEquals(c.compact_revision, 3, "compact_revision names the compaction");
    assertEquals(c.cancel_reason, "etcdserver: mvcc: required revision has been compacted", "why");
    w.stream.end();
  } finally {
    await h.close();
  }
});

Deno.test("etcd watch: progress_notify on an idle watcher; filters; prev_kv", async () => {
  const h = await harness();
  try {
    const w = watchStream(h);
    w.stream.write({
      create_request: { key: b("f"), progress_notify: true, filters: ["NODELETE"], prev_kv: true },
    });
    await w.waitFor(() => w.got.some((r) => r.created), "created");
    await w.waitFor(
      () => w.got.some((r) => !r.created && (r.events ?? []).length === 0),
      "an empty progress notification",
    );
    await unary(h.kv, "Put", { key: b("f"), value: b("1") });
    await unary(h.kv, "Put", { key: b("f"), value: b("2") });
    await unary(h.kv, "DeleteRange", { key: b("f") });
    await unary(h.kv, "Put", { key: b("f"), value: b("3") });
    const events = () =>
      w.got.flatMap((r) => r.events ?? []) as unknown as {
        type: string;
        kv: { value: Uint8Array };
        prev_kv?: { value: Uint8Array } | null;
      }[];
    await w.waitFor(() => events().length >= 3, "three puts");
    assertEquals(events().map((e) => e.type), ["PUT", "PUT", "PUT"], "no delete events");
    assertEquals(td.decode(events()[1].prev_kv!.value), "1", "previous value");
    w.stream.end();
  } finally {
    await h.close();
  }
});

Deno.test("etcd watch: a client that does not read until its events left the history is cancelled with a reason; the node serves on", async () => {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const h = await startHarness({ backend: local, etcd: localEtcdBackend(local) });
  const kv = client("KV", h.address);
  const watch = client("Watch", h.address);
  try {
    const stream = watch.Watch();
    const got: WatchResponse[] = [];
    stream.on("data", (r) => got.push(r as WatchResponse));
    stream.on("error", () => {});
    stream.write({ create_request: { key: b("big") } });
    await new Promise((r) => setTimeout(r, 200));
    stream.pause(); // the client stops reading
    const value = new Uint8Array(512 * 1024);
    // Over 16 MiB waiting parks the stream (no more live events are queued for it); 64 MiB
    // of values, 128 MiB with their previous values, overflow the 64 MiB event history, so
    // the watcher's next revision leaves it and the watcher is cancelled as compacted.
    for (let i = 0; i < 128; i++) await unary(kv, "Put", { key: b("big"), value });
    stream.resume();
    const deadline = Date.now() + 20_000;
    while (!got.some((r) => r.canceled) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const c = got.find((r) => r.canceled);
    assert(c !== undefined, "the watcher was cancelled");
    assert(c!.cancel_reason.includes("too slow"), c!.cancel_reason);
    assert(Number(c!.compact_revision) > 0, `compact_revision ${c!.compact_revision}`);
    const r = await unary(kv, "Range", { key: b("big"), keys_only: true });
    assertEquals((r.kvs as unknown[]).length, 1, "the node still serves");
    stream.end();
  } finally {
    kv.close();
    watch.close();
    await h.close();
  }
});

Deno.test("etcd service: hasleader metadata fails fast without a leader", async () => {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const backend = { ...localEtcdBackendNoLeader(local) };
  const h = await startHarness({ backend: local, etcd: backend });
  const kv = client("KV", h.address);
  try {
    const md = new grpc.Metadata();
    md.set("hasleader", "true");
    const err = await rejects(unary(kv, "Range", { key: b("a") }, md));
    assertEquals([err.code, err.details], [grpc.status.UNAVAILABLE, "etcdserver: no leader"], "");
    await unary(kv, "Range", { key: b("a") }); // without the metadata it is served
  } finally {
    kv.close();
    await h.close();
  }
});

function localEtcdBackendNoLeader(local: LocalBackend) {
  const base = localEtcdBackend(local);
  return {
    ...base,
    raftStatus: () => ({ ...base.raftStatus(), leader: "" }),
  };
}

Deno.test("api.KV Set with a lease: the key goes with the lease; an unknown lease is refused", async () => {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const h = await startHarness({ backend: local, etcd: localEtcdBackend(local) });
  const lease = client("Lease", h.address);
  const mokv = h.kv as unknown as Record<string, Unary>;
  try {
    const g = await unary(lease, "LeaseGrant", { TTL: 30 });
    const id = Number(g.ID);
    await unary(mokv, "Set", { key: "with-lease", value: b("v"), lease: id });
    const ttl = await unary(lease, "LeaseTimeToLive", { ID: id, keys: true });
    assertEquals((ttl.keys as Uint8Array[]).map((k) => td.decode(k)), ["with-lease"], "attached");
    const bad = await rejects(unary(mokv, "Set", { key: "x", value: b("v"), lease: 12345 }));
    assertEquals(bad.code, grpc.status.INVALID_ARGUMENT, bad.details);
    await unary(lease, "LeaseRevoke", { ID: id });
    const gone = await rejects(unary(mokv, "Get", { key: "with-lease" }));
    assertEquals(gone.code, grpc.status.NOT_FOUND, "deleted with its lease");
  } finally {
    lease.close();
    await h.close();
  }
});

Deno.test("etcd Snapshot: a snapshot that fails ends the stream with etcd's status, not a hang", async () => {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const etcd = {
    ...localEtcdBackend(local),
    snapshot: () => Promise.reject(new UnavailableError("no leader")),
  };
  const h = await startHarness({ backend: local, etcd });
  const maint = client("Maintenance", h.address) as unknown as grpc.Client & {
    Snapshot(req: unknown, opts: grpc.CallOptions): grpc.ClientReadableStream<unknown>;
  };
  try {
    const stream = maint.Snapshot({}, { deadline: Date.now() + 5000 });
    const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
      stream.on("data", () => reject(new Error("a failed snapshot sent data")));
      stream.on("error", (e: grpc.ServiceError) => resolve(e));
      stream.on("end", () => reject(new Error("the stream ended without a status")));
    });
    assertEquals(err.code, grpc.status.UNAVAILABLE, err.details);
    assert(err.details !== "Deadline exceeded", `answered at once: ${err.details}`);
  } finally {
    maint.close();
    await h.close();
  }
});
