import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { AdminClient, PROTO_LOADER_OPTIONS } from "../../src/api/mod.ts";
import { NotLeaderError } from "../../src/errors.ts";
import type { Command, CommandResult } from "../../src/kv/mod.ts";
import { KvStateMachine } from "../../src/kv/mod.ts";
import { LocalBackend, type RequestInfo } from "../../src/server/mod.ts";
import { call, callError, collect, startHarness, td, te } from "./_helpers.ts";

Deno.test("every api.KV RPC round-trips over real gRPC", async () => {
  const h = await startHarness();
  try {
    const kv = h.kv;
    const set = await call(kv, kv.Set, { key: "a", value: te.encode("1") });
    assertEquals(set, { ok: true, version: 1 });
    const got = await call(kv, kv.Get, { key: "a" });
    assertEquals([got.key, td.decode(got.value), got.version], ["a", "1", 1]);
    const stale = await call(kv, kv.Get, { key: "a", consistency: "STALE" });
    assertEquals(td.decode(stale.value), "1");

    const appended = await call(kv, kv.Append, { key: "a", value: te.encode("23") });
    assertEquals(appended, { ok: true, version: 2, length: 3 });

    const casFail = await call(kv, kv.CompareAndSet, {
      key: "a",
      value: te.encode("x"),
      expect_version: 1,
    });
    assertEquals([casFail.ok, casFail.version, td.decode(casFail.current_value)], [
      false,
      2,
      "123",
    ]);
    const casOk = await call(kv, kv.CompareAndSet, {
      key: "a",
      value: te.encode("x"),
      expect_value: te.encode("123"),
      has_expect_value: true,
    });
    assertEquals([casOk.ok, casOk.version], [true, 4]);
    const create = await call(kv, kv.CompareAndSet, {
      key: "fresh",
      value: te.encode("f"),
      expect_version: 0,
    });
    assertEquals(create.ok, true);

    const deleted = await call(kv, kv.Delete, { key: "a" });
    assertEquals(deleted, { ok: true, version: 6, existed: true });
    const again = await call(kv, kv.Delete, { key: "a" });
    assertEquals(again, { ok: true, version: 0, existed: false });
    const missing = await callError(kv, kv.Get, { key: "a" });
    assertEquals(missing.code, grpc.status.NOT_FOUND);

    const servers = await call(kv, kv.GetServers, {});
    assertEquals(servers.servers, [{
      id: "n1",
      rpc_addr: "127.0.0.1:0",
      is_leader: true,
      is_voter: true,
    }]);
  } finally {
    await h.close();
  }
});

Deno.test("client sessions make a retried write exactly-once over gRPC", async () => {
  const h = await startHarness();
  try {
    const req = { key: "log", value: te.encode("x"), client_id: "c1", seq: 1 };
    const first = await call(h.kv, h.kv.Append, req);
    const retry = await call(h.kv, h.kv.Append, req);
    assertEquals(retry, first);
    assertEquals(td.decode(h.backend.stateMachine.get("log")!.value), "x");
    const bad = await callError(h.kv, h.kv.Set, { ...req, seq: 0 });
    assertEquals(bad.code, grpc.status.INVALID_ARGUMENT);
  } finally {
    await h.close();
  }
});

Deno.test("List streams in key order with prefix, start and limit", async () => {
  const h = await startHarness();
  try {
    for (const key of ["b/2", "a", "b/1", "b/3", "c", "😀", "\uffff"]) {
      await call(h.kv, h.kv.Set, { key, value: te.encode(key.toUpperCase()) });
    }
    const keys = async (req: object) =>
      (await collect(h.kv.List(req))).map((e) => [e.key, td.decode(e.value)]);
    assertEquals((await keys({})).map(([k]) => k), ["a", "b/1", "b/2", "b/3", "c", "\uffff", "😀"]);
    assertEquals(await keys({ prefix: "b/" }), [["b/1", "B/1"], ["b/2", "B/2"], ["b/3", "B/3"]]);
    assertEquals((await keys({ prefix: "b/", start: "b/2" })).map(([k]) => k), ["b/2", "b/3"]);
    assertEquals((await keys({ limit: 2, consistency: "STALE" })).map(([k]) => k), ["a", "b/1"]);
    assertEquals(await keys({ prefix: "nothing" }), []);
  } finally {
    await h.close();
  }
});

/** mökv's original contract: List takes google.protobuf.Empty, GetResponse has key and value. */
const OLD_MOKV_PROTO = `
syntax = "proto3";
package api;
import "google/protobuf/empty.proto";
message GetRequest { string key = 1; }
message GetResponse { string key = 1; bytes value = 2; }
message SetRequest { string key = 1; bytes value = 2; }
message SetResponse { bool ok = 1; }
message DeleteRequest { string key = 1; }
message DeleteResponse { bool ok = 1; }
message Server { string id = 1; string rpc_addr = 2; bool is_leader = 3; }
message GetServersResponse { repeated Server servers = 1; }
service KV {
  rpc Get(GetRequest) returns (GetResponse) {}
  rpc Set(SetRequest) returns (SetResponse) {}
  rpc Delete(DeleteRequest) returns (DeleteResponse) {}
  rpc List(google.protobuf.Empty) returns (stream GetResponse) {}
  rpc GetServers(google.protobuf.Empty) returns (GetServersResponse) {}
}
`;

Deno.test("an old mökv client (List with an empty body) keeps working", async () => {
  const h = await startHarness();
  try {
    const root = new protobuf.Root();
    protobuf.parse('syntax = "proto3"; package google.protobuf; message Empty {}', root);
    protobuf.parse(OLD_MOKV_PROTO, root, { keepCase: true });
    const def = protoLoader.fromJSON(root.toJSON(), PROTO_LOADER_OPTIONS);
    const Old = grpc.makeGenericClientConstructor(def["api.KV"] as grpc.ServiceDefinition, "KV");
    // deno-lint-ignore no-explicit-any -- a generic client's methods are untyped
    const old = new Old(h.address, grpc.credentials.createInsecure()) as any;
    try {
      assertEquals(
        await call(old, old.Set, { key: "k", value: te.encode("v") }),
        { ok: true },
      );
      const got = await call(old, old.Get, { key: "k" }) as {
        key: string;
        value: Uint8Array;
      };
      assertEquals([got.key, td.decode(got.value)], ["k", "v"]);
      const items = await collect(old.List({})) as { key: string }[];
      assertEquals(items.map((i) => i.key), ["k"]);
      const servers = await call(old, old.GetServers, {}) as {
        servers: { id: string; is_leader: boolean }[];
      };
      assertEquals(servers.servers.map((s) => [s.id, s.is_leader]), [["n1", true]]);
      assertEquals(await call(old, old.Delete, { key: "k" }), { ok: true });
    } finally {
      old.close();
    }
  } finally {
    await h.close();
  }
});

Deno.test("bad keys and values get INVALID_ARGUMENT and the server keeps serving", async () => {
  const h = await startHarness({ maxKeyBytes: 16, maxValueBytes: 1024 });
  try {
    const cases: [string, Promise<grpc.ServiceError>, string][] = [
      [
        "empty key",
        callError(h.kv, h.kv.Set, { key: "", value: te.encode("v") }),
        "empty",
      ],
      [
        "long key",
        callError(h.kv, h.kv.Get, { key: "k".repeat(17) }),
        "key is 17 bytes; the limit is 16",
      ],
      [
        "multi-byte key",
        callError(h.kv, h.kv.Delete, { key: "é".repeat(9) }),
        "key is 18 bytes",
      ],
      [
        "big value",
        callError(h.kv, h.kv.Set, { key: "k", value: new Uint8Array(1025) }),
        "value is 1025 bytes; the limit is 1024",
      ],
      [
        "big cas expectation",
        callError(h.kv, h.kv.CompareAndSet, {
          key: "k",
          value: te.encode("v"),
          expect_value: new Uint8Array(2000),
          has_expect_value: true,
        }),
        "value is 2000 bytes",
      ],
      ["empty get", callError(h.kv, h.kv.Get, { key: "" }), "empty"],
    ];
    for (const [name, pending, message] of cases) {
      const error = await pending;
      assertEquals(error.code, grpc.status.INVALID_ARGUMENT, name);
      assert(error.details.includes(message), `${name}: ${error.details}`);
    }
    // an append that would grow the value past the limit is refused too
    await call(h.kv, h.kv.Set, { key: "k", value: new Uint8Array(1000) });
    const grow = await callError(h.kv, h.kv.Append, {
      key: "k",
      value: new Uint8Array(100),
    });
    assertEquals(grow.code, grpc.status.INVALID_ARGUMENT);
    // a value far beyond the limit (but under grpc's receive limit) is answered, not dropped
    const huge = await callError(h.kv, h.kv.Set, {
      key: "k",
      value: new Uint8Array(60_000),
    });
    assertEquals(huge.code, grpc.status.INVALID_ARGUMENT);
    const ok = await call(h.kv, h.kv.Set, { key: "k", value: new Uint8Array(1024) });
    assertEquals(ok.ok, true);
  } finally {
    await h.close();
  }
});

/** A backend whose node is a follower, or whose state machine breaks: errors must map. */
class FailingBackend extends LocalBackend {
  constructor(readonly failure: () => Error) {
    super({ nodeId: "n2" });
  }
  override apply(_cmd: Command): Promise<CommandResult> {
    return Promise.reject(this.failure());
  }
}

Deno.test("NotLeaderError maps to UNAVAILABLE with the leader hint in trailers", async () => {
  const h = await startHarness({
    backend: new FailingBackend(() => new NotLeaderError("n1", "127.0.0.1:7001")),
  });
  try {
    const error = await callError(h.kv, h.kv.Set, { key: "k", value: te.encode("v") });
    assertEquals(error.code, grpc.status.UNAVAILABLE);
    assertEquals(error.metadata.get("mokv-leader-id"), ["n1"]);
    assertEquals(error.metadata.get("mokv-leader-addr"), ["127.0.0.1:7001"]);
  } finally {
    await h.close();
  }
});

Deno.test("an unexpected error becomes INTERNAL, is reported, and the server keeps serving", async () => {
  const seen: RequestInfo[] = [];
  const h = await startHarness({
    backend: new FailingBackend(() => new TypeError("boom")),
    onRequest: (info) => seen.push(info),
  });
  try {
    const error = await callError(h.kv, h.kv.Set, { key: "k", value: te.encode("v") });
    assertEquals(error.code, grpc.status.INTERNAL);
    assertEquals(error.details.includes("boom"), false);
    const missing = await callError(h.kv, h.kv.Get, { key: "k" });
    assertEquals(missing.code, grpc.status.NOT_FOUND);
    assertEquals(seen.map((s) => [s.method, s.code]), [
      ["/api.KV/Set", grpc.status.INTERNAL],
      ["/api.KV/Get", grpc.status.NOT_FOUND],
    ]);
    assertEquals(seen[0].error?.message, "boom");
    assert(seen.every((s) => s.durationMs >= 0 && s.subject === ""));
  } finally {
    await h.close();
  }
});

Deno.test("authorize sees subject, object and action; denials are PERMISSION_DENIED", async () => {
  const asked: string[] = [];
  const seen: RequestInfo[] = [];
  const h = await startHarness({
    authorize: (subject, object, action) => {
      asked.push(`${subject}|${object}|${action}`);
      return Promise.resolve(object.startsWith("public/") || action === "consume");
    },
    onRequest: (info) => seen.push(info),
  });
  const admin = new AdminClient(h.address, grpc.credentials.createInsecure());
  try {
    const denied = await callError(h.kv, h.kv.Set, {
      key: "secret",
      value: te.encode("v"),
    });
    assertEquals(denied.code, grpc.status.PERMISSION_DENIED);
    assertEquals(denied.details, "anonymous may not produce secret");
    await call(h.kv, h.kv.Set, { key: "public/x", value: te.encode("v") });
    await collect(h.kv.List({ prefix: "public/" }));
    await collect(h.kv.List({}));
    await call(h.kv, h.kv.GetServers, {});
    await call(admin, admin.Members, {});
    const leave = await callError(admin, admin.Leave, {});
    assertEquals(leave.code, grpc.status.PERMISSION_DENIED);
    assertEquals(leave.details, "anonymous may not admin *");
    const snap = await new Promise<grpc.ServiceError>((resolve) => {
      const s = admin.Snapshot({});
      s.on("data", () => {});
      s.on("error", resolve);
    });
    assertEquals(snap.code, grpc.status.PERMISSION_DENIED);
    assertEquals(asked, [
      "|secret|produce",
      "|public/x|produce",
      "|public/|consume",
      "|public/x|consume",
      "|*|consume",
      "|public/x|consume",
      "|*|consume",
      "|*|consume",
      "|*|admin",
      "|*|admin",
    ]);
    assertEquals(seen.map((s) => s.method), [
      "/api.KV/Set",
      "/api.KV/Set",
      "/api.KV/List",
      "/api.KV/List",
      "/api.KV/GetServers",
      "/api.Admin/Members",
      "/api.Admin/Leave",
      "/api.Admin/Snapshot",
    ]);
  } finally {
    admin.close();
    await h.close();
  }
});

Deno.test("api.Admin: members, leadership, removal, snapshot and leave", async () => {
  const h = await startHarness();
  const admin = new AdminClient(h.address, grpc.credentials.createInsecure());
  try {
    // enough data for several snapshot chunks
    for (let i = 0; i < 12; i++) {
      await call(h.kv, h.kv.Set, {
        key: `k${i}`,
        value: new Uint8Array(60_000).fill(i),
      });
    }
    const members = await call(admin, admin.Members, {});
    assertEquals(members.members, [{
      name: "n1",
      gossip_addr: "",
      rpc_addr: "127.0.0.1:0",
      state: "alive",
    }]);
    assertEquals(await call(admin, admin.TransferLeadership, {}), { leader_id: "n1" });
    const bad = await callError(admin, admin.TransferLeadership, { id: "n9" });
    assertEquals(bad.code, grpc.status.INVALID_ARGUMENT);
    const rm = await callError(admin, admin.RemoveServer, { id: "" });
    assertEquals(rm.code, grpc.status.INVALID_ARGUMENT);

    const chunks = await collect(admin.Snapshot({}));
    assert(chunks.length > 1, `expected several chunks, got ${chunks.length}`);
    const image = new Uint8Array(chunks.reduce((n, c) => n + c.data.length, 0));
    let offset = 0;
    for (const c of chunks) {
      image.set(c.data, offset);
      offset += c.data.length;
    }
    const restored = new KvStateMachine();
    restored.restore(image);
    assertEquals(restored.keyCount, 12);
    assertEquals(restored.get("k7")!.value[0], 7);

    await call(admin, admin.Leave, {});
    const after = await callError(h.kv, h.kv.Get, { key: "k1" });
    assertEquals(after.code, grpc.status.UNAVAILABLE);
  } finally {
    admin.close();
    await h.close();
  }
});
