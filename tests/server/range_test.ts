/**
 * The read-back path: List's framed batches and the paged Range RPC over real gRPC, the
 * hand-written GetResponse / RangeResponse codec against protobufjs, and the compiled policy
 * against Casbin.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { newEnforcer, StringAdapter } from "casbin";
import protobuf from "protobufjs";
import {
  decodeRangeResponse,
  encodeGetResponse,
  KV_PROTO,
  kvServiceDefinition,
  RangeResponseWriter,
} from "../../src/api/mod.ts";
import type { RangeRequest, RangeResponse } from "../../src/api/mod.ts";
import type { KvClient as KvClientShape } from "../../src/api/messages.ts";
import { SeededRng } from "../../src/rng.ts";
import { CompiledPolicy } from "../../src/server/auth.ts";
import {
  LIST_YIELD_KEYS,
  LocalBackend,
  RANGE_PAGE_BYTES,
  RANGE_PAGE_EXAMINED_KEYS,
  type ReadConsistency,
} from "../../src/server/mod.ts";
import { call, callError, collect, type Harness, startHarness, td, te } from "./_helpers.ts";

const stamp = { timeMs: 0, clockSource: "t", maxValueBytes: 1 << 20, quotaBytes: 2 ** 31 };

/** A LocalBackend that records the consistency of every read barrier. */
class RecordingBackend extends LocalBackend {
  readonly barriers: ReadConsistency[] = [];
  override readBarrier(consistency: ReadConsistency): Promise<void> {
    this.barriers.push(consistency);
    return super.readBarrier(consistency);
  }
}

async function fill(backend: LocalBackend, keys: readonly string[], valueBytes = 8) {
  for (const key of keys) {
    const value = te.encode(key.padEnd(valueBytes, "."));
    await backend.apply({ type: "set", key, value, ...stamp });
  }
}

async function range(kv: KvClientShape, req: Partial<RangeRequest>): Promise<RangeResponse> {
  return await call(kv, kv.Range, req);
}

/** Every page from `req.start` on, as Range hands them out. */
async function allPages(kv: KvClientShape, req: Partial<RangeRequest>): Promise<RangeResponse[]> {
  const pages: RangeResponse[] = [];
  let start = req.start ?? "";
  for (;;) {
    const page = await range(kv, { ...req, start });
    pages.push(page);
    if (!page.more) return pages;
    assert(page.next_key > start, "next_key moves forward");
    start = page.next_key;
  }
}

const KEYS = ["a", "b/1", "b/2", "b/3", "b/4", "c", "\u00e9t\u00e9", "\u{1F600}"];

Deno.test("Range pages with prefix, start, limit, more and next_key", async () => {
  const h = await startHarness();
  try {
    await fill(h.backend, KEYS);
    const everything = await range(h.kv, {});
    assertEquals(everything.kvs.map((e) => e.key), KEYS);
    assertEquals(everything.more, false);
    assertEquals(everything.next_key, "");
    assertEquals(td.decode(everything.kvs[0].value), "a.......");
    assert(everything.kvs.every((e) => e.version > 0));

    const first = await range(h.kv, { prefix: "b/", limit: 2 });
    assertEquals(first.kvs.map((e) => e.key), ["b/1", "b/2"]);
    assertEquals([first.more, first.next_key], [true, "b/3"]);
    const second = await range(h.kv, { prefix: "b/", start: first.next_key, limit: 2 });
    assertEquals(second.kvs.map((e) => e.key), ["b/3", "b/4"]);
    // The next key is outside the prefix: the server knows the range is done.
    assertEquals([second.more, second.next_key], [false, ""]);

    assertEquals((await range(h.kv, { start: "c" })).kvs.map((e) => e.key), KEYS.slice(5));
    assertEquals((await range(h.kv, { prefix: "b/", start: "a" })).kvs.length, 4);
    assertEquals((await range(h.kv, { prefix: "b/", start: "b/9" })).kvs, []);
    assertEquals((await range(h.kv, { prefix: "zz" })).kvs, []);

    const paged = await allPages(h.kv, { limit: 3 });
    assertEquals(paged.flatMap((p) => p.kvs.map((e) => e.key)), KEYS);
  } finally {
    await h.close();
  }
});

Deno.test("Range pages are bounded in bytes", async () => {
  const h = await startHarness();
  try {
    // Values of 100 KiB: a page holds about RANGE_PAGE_BYTES of them, never more.
    const big = Array.from({ length: 45 }, (_, i) => `big/${String(i).padStart(3, "0")}`);
    await fill(h.backend, big, 100 * 1024);
    const pages = await allPages(h.kv, { prefix: "big/" });
    assert(pages.length >= 3, `${pages.length} pages`);
    for (const p of pages) {
      const bytes = p.kvs.reduce((n, e) => n + e.value.length, 0);
      assert(bytes <= RANGE_PAGE_BYTES, `a page of ${bytes} bytes`);
      assert(p.kvs.length > 0);
    }
    assertEquals(pages.flatMap((p) => p.kvs.map((e) => e.key)), big);
  } finally {
    await h.close();
  }
});

Deno.test("Range and List authorize per key, as List always did", async () => {
  const denied = new Set(["b/2", "b/3"]);
  const h = await startHarness({
    authorize: (_subject, object, action) => action === "consume" && !denied.has(object),
  });
  try {
    await fill(h.backend, KEYS);
    const page = await range(h.kv, { prefix: "b/" });
    assertEquals(page.kvs.map((e) => e.key), ["b/1", "b/4"]);
    // limit counts the keys sent, so a short page still means the end.
    const limited = await range(h.kv, { prefix: "b/", limit: 2 });
    assertEquals(limited.kvs.map((e) => e.key), ["b/1", "b/4"]);
    assertEquals(limited.more, false);
    const listed = await collect(h.kv.List({ prefix: "b/" }));
    assertEquals(listed.map((e) => e.key), ["b/1", "b/4"]);
    assertEquals((await collect(h.kv.List({ prefix: "b/", limit: 1 }))).map((e) => e.key), [
      "b/1",
    ]);
    // A denied prefix is refused before anything is read.
    denied.add("secret/");
    const error = await callError(h.kv, h.kv.Range, { prefix: "secret/" });
    assertEquals(error.code, grpc.status.PERMISSION_DENIED);
    // An oversized bound is a bad argument.
    const long = await callError(h.kv, h.kv.Range, { start: "x".repeat(5000) });
    assertEquals(long.code, grpc.status.INVALID_ARGUMENT);
  } finally {
    await h.close();
  }
});

Deno.test("Range many keys a subject may not read: bounded pages, then the allowed ones", async () => {
  const h = await startHarness({
    authorize: (_s, object) => object === "*" || object.startsWith("z"),
  });
  try {
    const n = RANGE_PAGE_EXAMINED_KEYS + 100;
    for (let i = 0; i < n; i++) {
      await h.backend.apply({
        type: "set",
        key: `a/${String(i).padStart(6, "0")}`,
        value: te.encode("v"),
        ...stamp,
      });
    }
    await fill(h.backend, ["z1", "z2"]);
    const first = await range(h.kv, {});
    assertEquals(first.kvs, []);
    assertEquals(first.more, true);
    const pages = await allPages(h.kv, {});
    assertEquals(pages.flatMap((p) => p.kvs.map((e) => e.key)), ["z1", "z2"]);
    assertEquals(pages.length, 2);
  } finally {
    await h.close();
  }
});

Deno.test("Range is linearizable by default and stale on request, one barrier per page", async () => {
  const backend = new RecordingBackend({ nodeId: "n1" });
  const h = await startHarness({ backend });
  try {
    await fill(backend, KEYS);
    await range(h.kv, {});
    await range(h.kv, { consistency: "STALE" });
    await range(h.kv, { consistency: "LINEARIZABLE", limit: 1 });
    assertEquals(backend.barriers, ["linearizable", "stale", "linearizable"]);
    backend.barriers.length = 0;
    // A whole List stream, however long, takes one read index.
    await collect(h.kv.List({}));
    await collect(h.kv.List({ consistency: "STALE" }));
    assertEquals(backend.barriers, ["linearizable", "stale"]);
  } finally {
    await h.close();
  }
});

/** A client that decodes with protobufjs (grpc-js's generic constructor), not kv_codec.ts. */
function protobufjsClient(h: Harness): KvClientShape {
  const Ctor = grpc.makeGenericClientConstructor(kvServiceDefinition, "api.KV");
  return new Ctor(h.address, grpc.credentials.createInsecure()) as unknown as KvClientShape;
}

Deno.test("List's framed batches and Range decode with protobufjs as they do by hand", async () => {
  const h = await startHarness();
  const pbClient = protobufjsClient(h);
  try {
    const keys = [...KEYS, ...Array.from({ length: 3000 }, (_, i) => `n/${i}`)];
    await fill(h.backend, keys, 40);
    await h.backend.apply({ type: "set", key: "empty", value: new Uint8Array(0), ...stamp });
    const expected = [...h.backend.stateMachine.list()].map((e) => ({
      key: e.key,
      value: td.decode(e.value),
      version: e.version,
    }));
    const plain = (items: { key: string; value: Uint8Array; version: number }[]) =>
      items.map((e) => ({ key: e.key, value: td.decode(e.value), version: e.version }));
    assertEquals(plain(await collect(pbClient.List({}))), expected);
    assertEquals(plain(await collect(h.kv.List({}))), expected);
    const pbPages = await allPages(pbClient, { limit: 1000 });
    assertEquals(plain(pbPages.flatMap((p) => p.kvs)), expected);
    assertEquals(plain((await allPages(h.kv, {})).flatMap((p) => p.kvs)), expected);
  } finally {
    pbClient.close();
    await h.close();
  }
});

Deno.test("List falls back to one message per entry and answers the same", async () => {
  const fast = await startHarness();
  const slow = await startHarness({ backend: fast.backend, listObjectWrites: true });
  try {
    const keys = Array.from({ length: LIST_YIELD_KEYS * 2 + 5 }, (_, i) => `k/${i}`);
    await fill(fast.backend, keys);
    for (const req of [{}, { prefix: "k/1" }, { start: "k/5", limit: 7 }]) {
      const a = await collect(fast.kv.List(req));
      const b = await collect(slow.kv.List(req));
      assertEquals(a.map((e) => e.key), b.map((e) => e.key));
    }
  } finally {
    await slow.close();
    await fast.close();
  }
});

Deno.test("the hand-written codec writes exactly what protobufjs writes", () => {
  const root = protobuf.parse(KV_PROTO.replace(/import "google\/protobuf\/empty.proto";/, ""), {
    keepCase: true,
  }).root;
  const GetResponse = root.lookupType("api.GetResponse");
  const RangeResponse = root.lookupType("api.RangeResponse");
  const rng = new SeededRng(7);
  const samples = [
    { key: "a", value: new Uint8Array(0), version: 0 },
    { key: "\u{1F600}\u00e9x", value: te.encode("v"), version: 2 ** 40 + 3 },
    { key: "k".repeat(300), value: new Uint8Array(70_000).fill(1), version: 127 },
    { key: "k", value: new Uint8Array(3), version: 128 },
  ];
  for (let i = 0; i < 200; i++) {
    const key = Array.from({ length: 1 + rng.int(20) }, () => String.fromCodePoint(rng.int(0x2000)))
      .join("");
    samples.push({ key, value: new Uint8Array(rng.int(300)), version: rng.int(2 ** 31) });
  }
  // proto3's canonical form: fields holding their zero value are left out.
  const canonical = (e: (typeof samples)[number]) => ({
    key: e.key,
    ...(e.value.length > 0 ? { value: e.value } : {}),
    ...(e.version > 0 ? { version: e.version } : {}),
  });
  for (const e of samples) {
    const expected = GetResponse.encode(GetResponse.fromObject(canonical(e))).finish();
    assertEquals([...encodeGetResponse(e)], [...expected]);
  }
  // A lone surrogate is written as U+FFFD, as TextEncoder (and every mokv decoder) reads it.
  assertEquals(
    [...encodeGetResponse({ key: "a\ud800", value: new Uint8Array(0), version: 0 })],
    [10, 4, 97, 0xef, 0xbf, 0xbd],
  );
  const writer = new RangeResponseWriter(16);
  for (const e of samples) writer.add(e);
  const mine = writer.finish(true, "n\u00e9xt");
  const theirs = RangeResponse.encode(
    RangeResponse.fromObject({ kvs: samples.map(canonical), more: true, next_key: "n\u00e9xt" }),
  ).finish();
  assertEquals([...mine], [...theirs]);
  const decoded = decodeRangeResponse(theirs);
  assertEquals(decoded.more, true);
  assertEquals(decoded.next_key, "n\u00e9xt");
  assertEquals(
    decoded.kvs.map((e) => [e.key, [...e.value], e.version]),
    samples.map((e) => [new TextDecoder().decode(te.encode(e.key)), [...e.value], e.version]),
  );
});

Deno.test("the compiled policy decides exactly as Casbin under mokv's model", async () => {
  const model = await Deno.readTextFile(new URL("../../certs/model.conf", import.meta.url));
  const modelPath = await Deno.makeTempFile({ suffix: ".conf" });
  try {
    await Deno.writeTextFile(modelPath, model);
    const rng = new SeededRng(11);
    const objects = ["*", "a*", "ab*", "ab", "a", "", "b/*", "b/", "\u00e9*", "x"];
    const keys = ["", "a", "ab", "abc", "b", "b/", "b/x", "\u00e9t\u00e9", "x", "*", "a*", "xy"];
    for (let round = 0; round < 30; round++) {
      const lines = ["p, carol, zzz, admin"];
      for (let i = 0; i < 1 + rng.int(6); i++) {
        const obj = objects[rng.int(objects.length)];
        if (obj === "") continue;
        lines.push(
          `p, ${["alice", "bob"][rng.int(2)]}, ${obj}, ${["consume", "produce"][rng.int(2)]}`,
        );
      }
      const enforcer = await newEnforcer(modelPath, new StringAdapter(lines.join("\n")));
      const compiled = CompiledPolicy.of(enforcer);
      assert(compiled, "mokv's model compiles");
      for (const sub of ["alice", "bob", "carol"]) {
        for (const act of ["consume", "produce", "admin"]) {
          for (const key of keys) {
            assertEquals(
              compiled.allows(sub, key, act),
              enforcer.enforceSync(sub, key, act),
              `${lines.join("; ")}: ${sub} ${act} ${JSON.stringify(key)}`,
            );
          }
        }
      }
    }
    // Any other model is left to Casbin.
    await Deno.writeTextFile(modelPath, model.replace("keyMatch", "keyMatch2"));
    const other = await newEnforcer(modelPath, new StringAdapter("p, alice, a*, consume"));
    assertEquals(CompiledPolicy.of(other), undefined);
  } finally {
    await Deno.remove(modelPath);
  }
});
