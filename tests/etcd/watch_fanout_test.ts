/**
 * The Watch service's shared encoding (src/etcd/watch_codec.ts, src/etcd/watch.ts): the
 * hand-written WatchResponse bytes decode as protobufjs decodes its own; and over a real gRPC
 * connection, with the framed HTTP/2 writes and with grpc-js's object writes alike, watchers
 * that share a stream but not a selector each get exactly their events: a range that matches
 * part of a transaction gets that part in one response, prev_kv on one watcher and not on
 * another that sees the same event, a filter, a replaying watcher beside live ones (no gap,
 * no duplicate), and a progress response after every pending event.
 */
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { assert, assertEquals } from "../helpers/assert.ts";
import { serveGuarded } from "../helpers/guarded_port.ts";
import { ETCD_KV_PROTO, ETCD_RPC_PROTO, etcdServiceDefinitions } from "../../src/api/mod.ts";
import { createEtcdHandlers, createWatchHandler, localEtcdBackend } from "../../src/etcd/mod.ts";
import {
  encodeEventField,
  encodeHeaderField,
  frameBodies,
  WatchFrames,
} from "../../src/etcd/watch_codec.ts";
import { LocalBackend } from "../../src/server/mod.ts";
import { startHarness } from "../server/_helpers.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string) => te.encode(s);

const root = new protobuf.Root();
protobuf.parse(ETCD_KV_PROTO, root, { keepCase: true });
protobuf.parse(ETCD_RPC_PROTO, root, { keepCase: true });
root.resolveAll();
const WatchResponseType = root.lookupType("etcdserverpb.WatchResponse");
const decode = (body: Uint8Array) =>
  WatchResponseType.toObject(WatchResponseType.decode(body), {
    longs: Number,
    enums: String,
    bytes: String,
    defaults: true,
  });

Deno.test("watch codec: responses decode as protobufjs's own encoding of the same message", () => {
  const entry = { value: b("v2"), version: 2 ** 40 + 7, created: 3, writes: 2, lease: 99 };
  const prev = { value: b("v1"), version: 3, created: 3, writes: 1, lease: 0 };
  const message = {
    header: { cluster_id: 2 ** 52 - 1, member_id: 12345, revision: 2 ** 40 + 7, raft_term: 4 },
    watch_id: 17,
    events: [
      { type: "PUT", kv: { key: b("k"), ...kv(entry) }, prev_kv: { key: b("k"), ...kv(prev) } },
      { type: "DELETE", kv: { key: b("gone"), mod_revision: 2 ** 40 + 7 } },
    ],
  };
  const frames = new WatchFrames(8);
  frames.append({
    header: encodeHeaderField(message.header),
    watchId: 17,
    events: [
      encodeEventField({ type: "put", key: b("k"), entry, prev, revision: entry.version }),
      encodeEventField({ type: "delete", key: b("gone"), revision: 2 ** 40 + 7 }),
    ],
  });
  frames.append({
    header: encodeHeaderField({ cluster_id: 1, member_id: 2, revision: 0, raft_term: 1 }),
    watchId: -1,
    created: true,
    canceled: true,
    compactRevision: 5,
    cancelReason: "zu langsam: ü",
  });
  assertEquals(frames.count, 2, "two responses");
  const bodies = [...frameBodies(frames.take())];
  assertEquals(bodies.length, 2, "two framed bodies");
  const expected = WatchResponseType.encode(WatchResponseType.fromObject(message)).finish();
  assertEquals(decode(bodies[0]), decode(expected), "events response");
  const control = decode(bodies[1]);
  assertEquals(
    [control.watch_id, control.created, control.canceled, control.compact_revision],
    [-1, true, true, 5],
    "control fields",
  );
  assertEquals(control.cancel_reason, "zu langsam: ü", "cancel reason");
  assertEquals(frames.byteLength, 0, "take starts over");
});

function kv(
  e: { value: Uint8Array; version: number; created: number; writes: number; lease: number },
) {
  return {
    create_revision: e.created,
    mod_revision: e.version,
    version: e.writes,
    value: e.value,
    lease: e.lease,
  };
}

type Unary = (
  req: unknown,
  md: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void,
) => void;

interface Clients {
  kv: grpc.Client & Record<string, Unary>;
  watch: grpc.Client & { Watch(): grpc.ClientDuplexStream<unknown, Record<string, unknown>> };
}

function clients(address: string): Clients {
  const make = (name: "KV" | "Watch") => {
    const Ctor = grpc.makeGenericClientConstructor(etcdServiceDefinitions[name], name);
    return new Ctor(address, grpc.credentials.createInsecure());
  };
  return {
    kv: make("KV") as unknown as Clients["kv"],
    watch: make("Watch") as unknown as Clients["watch"],
  };
}

function put(c: Clients, req: Record<string, unknown>, method = "Put") {
  return new Promise<Record<string, unknown>>((resolve, reject) =>
    c.kv[method](
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
      (err, res) => err ? reject(err) : resolve(res),
    )
  );
}

/** The framed-write path: the node's own server on the shared port. */
async function rawServer() {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const h = await startHarness({ backend: local, etcd: localEtcdBackend(local) });
  return { address: h.address, close: () => h.close() };
}

/** The object-write path: Watch with forceObjectWrites on a plain grpc-js server. */
async function objectServer() {
  const local = new LocalBackend({ nodeId: "n1", rpcAddr: "127.0.0.1:1" });
  const backend = localEtcdBackend(local);
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
    createWatchHandler({ backend, forceObjectWrites: true }),
  );
  const served = await serveGuarded(server);
  return {
    address: served.addr,
    close: () => served.close(),
  };
}

interface Event {
  type: string;
  kv: { key: Uint8Array; value: Uint8Array; mod_revision: number };
  prev_kv?: { value: Uint8Array } | null;
}
interface Response {
  watch_id: number;
  created: boolean;
  header: { revision: number };
  events?: Event[];
}

async function scenario(server: { address: string; close(): Promise<void> }) {
  const c = clients(server.address);
  try {
    const first = await put(c, { key: b("t/a"), value: b("a0") });
    const r0 = (first.header as { revision: number }).revision;
    const stream = c.watch.Watch();
    const got: Response[] = [];
    stream.on("data", (r) => got.push(r as Response));
    stream.on("error", () => {});
    const waitFor = async (pred: () => boolean, what: string) => {
      const deadline = Date.now() + 5000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out: ${what}: ${JSON.stringify(got)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const create = async (watchId: number, req: Record<string, unknown>) => {
      stream.write({ create_request: { watch_id: watchId, ...req } });
      await waitFor(() => got.some((r) => r.created && r.watch_id === watchId), `${watchId}`);
    };
    const prefix = { key: b("t/"), range_end: b("t0") };
    await create(1, { ...prefix, prev_kv: true });
    await create(2, prefix);
    await create(3, { key: b("t/b") });
    await create(4, { ...prefix, filters: ["NOPUT"] });
    // One transaction, three keys, one revision.
    await put(c, {
      success: ["a", "b", "c"].map((k) => ({
        request_put: { key: b(`t/${k}`), value: b(`${k}1`) },
      })),
    }, "Txn");
    await put(c, { key: b("t/a") }, "DeleteRange");
    await put(c, { key: b("t/b"), value: b("b2") });
    // A watcher sharing watcher 2's selector, replaying from the first put.
    await create(5, { ...prefix, start_revision: r0 });
    await put(c, { key: b("t/c"), value: b("c2") });
    const last = r0 + 4;
    stream.write({ progress_request: {} });
    await waitFor(() => got.some((r) => r.watch_id === -1), "progress");
    const progressAt = got.findIndex((r) => r.watch_id === -1);
    assertEquals(got[progressAt].header.revision, last, "progress at the newest revision");

    const of = (id: number) => got.slice(0, progressAt).filter((r) => r.watch_id === id);
    const flat = (id: number) =>
      of(id).flatMap((r) => r.events ?? []).map((e) =>
        `${e.type} ${td.decode(e.kv.key)}@${e.kv.mod_revision}` +
        (e.type === "PUT" ? `=${td.decode(e.kv.value)}` : "") +
        (e.prev_kv ? ` prev=${td.decode(e.prev_kv.value)}` : "")
      );
    const t = r0 + 1, d = r0 + 2, p = r0 + 3;
    assertEquals(flat(1), [
      `PUT t/a@${t}=a1 prev=a0`,
      `PUT t/b@${t}=b1`,
      `PUT t/c@${t}=c1`,
      `DELETE t/a@${d} prev=a1`,
      `PUT t/b@${p}=b2 prev=b1`,
      `PUT t/c@${last}=c2 prev=c1`,
    ], "prefix with prev_kv");
    assertEquals(flat(2), [
      `PUT t/a@${t}=a1`,
      `PUT t/b@${t}=b1`,
      `PUT t/c@${t}=c1`,
      `DELETE t/a@${d}`,
      `PUT t/b@${p}=b2`,
      `PUT t/c@${last}=c2`,
    ], "the same events without prev_kv");
    assertEquals(flat(3), [`PUT t/b@${t}=b1`, `PUT t/b@${p}=b2`], "one key of the txn");
    assertEquals(flat(4), [`DELETE t/a@${d}`], "NOPUT");
    assertEquals(flat(5), [`PUT t/a@${r0}=a0`, ...flat(2)], "replay, then live, once each");
    for (const id of [1, 2, 3]) {
      const txn = of(id).find((r) => (r.events ?? []).some((e) => e.kv.mod_revision === t))!;
      const inTxn = (txn.events ?? []).filter((e) => e.kv.mod_revision === t).length;
      assertEquals(inTxn, id === 3 ? 1 : 3, `watcher ${id}: the txn's events in one response`);
      assert(txn.header.revision >= t, `watcher ${id}: header at or after its events`);
    }
    stream.end();
  } finally {
    c.kv.close();
    c.watch.close();
    await server.close();
  }
}

Deno.test("etcd watch fan-out, framed HTTP/2 writes: each watcher gets exactly its events", async () => {
  await scenario(await rawServer());
});

Deno.test("etcd watch fan-out, grpc-js object writes: the same events", async () => {
  await scenario(await objectServer());
});

Deno.test("etcd watch: a long replay comes in responses of at most 1 MiB of events, split only between revisions", async () => {
  const server = await rawServer();
  const c = clients(server.address);
  try {
    const value = new Uint8Array(60 * 1024);
    const first = await put(c, { key: b("r/0"), value });
    const r0 = (first.header as { revision: number }).revision;
    for (let i = 1; i < 40; i++) await put(c, { key: b(`r/${i}`), value });
    // One transaction of 1.5 MiB: larger than the bound, it goes alone and whole.
    const big = new Uint8Array(500 * 1024);
    await put(c, {
      success: ["x", "y", "z"].map((k) => ({ request_put: { key: b(`r/${k}`), value: big } })),
    }, "Txn");
    for (let i = 40; i < 45; i++) await put(c, { key: b(`r/${i}`), value });
    const stream = c.watch.Watch();
    const got: Response[] = [];
    stream.on("data", (r) => got.push(r as Response));
    stream.on("error", () => {});
    stream.write({
      create_request: { key: b("r/"), range_end: b("r0"), start_revision: r0, watch_id: 7 },
    });
    const events = () => got.flatMap((r) => r.events ?? []);
    const deadline = Date.now() + 10_000;
    while (events().length < 48 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const responses = got.filter((r) => (r.events ?? []).length > 0);
    const revs = events().map((e) => e.kv.mod_revision);
    assertEquals(revs.length, 48, "every event once");
    assertEquals(revs, [...revs].sort((x, y) => x - y), "in revision order");
    const txnRevision = r0 + 40;
    const txn = responses.filter((r) => r.events!.some((e) => e.kv.mod_revision === txnRevision));
    assertEquals(txn.length, 1, "the transaction's events in one response");
    assertEquals(txn[0].events!.length, 3, "the transaction alone");
    for (const r of responses) {
      const bytes = r.events!.reduce((n, e) => n + e.kv.value.length, 0);
      const single = new Set(r.events!.map((e) => e.kv.mod_revision)).size === 1;
      assert(single || bytes <= 1024 * 1024, `a response of ${bytes} bytes of values`);
      assertEquals(
        r.header.revision,
        r.events![r.events!.length - 1].kv.mod_revision,
        "header at the response's newest event",
      );
    }
    assert(responses.length >= 4, `several responses: ${responses.length}`);
    stream.end();
  } finally {
    c.kv.close();
    c.watch.close();
    await server.close();
  }
});
