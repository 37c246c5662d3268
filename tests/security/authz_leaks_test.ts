/**
 * Authorization leaks no state (issue 14): CompareAndSet needs consume as well as produce, a
 * denied request never touches the backend (so Append is no existence or size oracle), a
 * policy pattern with text after `*` is refused, and List over keys a subject may not read
 * neither blocks the event loop nor outlives its client.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { ConfigError } from "../../src/errors.ts";
import { encodeCommand } from "../../src/kv/mod.ts";
import { Authorizer } from "../../src/server/auth.ts";
import {
  type AuthorizeFn,
  createKvServiceHandlers,
  type KvBackend,
  LocalBackend,
} from "../../src/server/mod.ts";
import { streamAs, unaryAs } from "./_handler_calls.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const MODEL = new URL("../../certs/model.conf", import.meta.url).pathname;

/** An Authorizer over the repository's model and the given policy lines. */
async function authorizerWith(rules: readonly string[]): Promise<Authorizer> {
  const dir = await Deno.makeTempDir({ prefix: "mokv-authz-" });
  try {
    await Deno.writeTextFile(`${dir}/policy.csv`, rules.join("\n") + "\n");
    return await Authorizer.load(MODEL, `${dir}/policy.csv`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function enforcing(auth: Authorizer): AuthorizeFn {
  return (subject, object, action) => auth.enforce(subject, object, action);
}

Deno.test("CompareAndSet by a produce-only subject is denied and reveals nothing", async () => {
  const auth = await authorizerWith([
    "p, root, *, produce",
    "p, root, *, consume",
    "p, writer, secret, produce",
    "p, both, secret, produce",
    "p, both, secret, consume",
  ]);
  const backend = new LocalBackend();
  const kv = createKvServiceHandlers({ backend, authorize: enforcing(auth) });
  const root = await unaryAs(kv, "Set", "root", { key: "secret", value: te.encode("hunter2") });
  assertEquals(root.code, grpc.status.OK);

  const attempts = [
    { key: "secret", value: te.encode("x"), expect_version: 99 },
    {
      key: "secret",
      value: te.encode("x"),
      expect_value: te.encode("guess"),
      has_expect_value: true,
    },
    {
      key: "secret",
      value: te.encode("x"),
      expect_value: te.encode("hunter2"),
      has_expect_value: true,
    },
    { key: "secret", value: te.encode("x"), expect_version: 0 },
  ];
  for (const request of attempts) {
    const denied = await unaryAs(kv, "CompareAndSet", "writer", request);
    assertEquals(denied.code, grpc.status.PERMISSION_DENIED);
    assertEquals(denied.details, "writer may not consume secret");
    assertEquals(denied.response, undefined);
  }
  assertEquals(td.decode(backend.stateMachine.get("secret")!.value), "hunter2");
  // writer may still write blindly
  assertEquals(
    (await unaryAs(kv, "Set", "writer", { key: "secret", value: te.encode("w") })).code,
    grpc.status.OK,
  );

  // With consume and produce a failed compare shows the current value, as before.
  const shown = await unaryAs<{ ok: boolean; current_value: Uint8Array }>(
    kv,
    "CompareAndSet",
    "both",
    attempts[0],
  );
  assertEquals(shown.code, grpc.status.OK);
  assertEquals([shown.response!.ok, td.decode(shown.response!.current_value)], [false, "w"]);
});

Deno.test("Append is no existence or size oracle: the denial is the same with or without the key", async () => {
  const backend = new LocalBackend();
  const kv = createKvServiceHandlers({
    backend,
    authorize: (subject) => subject === "root",
  });
  const big = new Uint8Array(1024 * 1024);
  await unaryAs(kv, "Set", "root", { key: "k", value: big.subarray(0, 1000) });
  const present = await unaryAs(kv, "Append", "nobody", { key: "k", value: big });
  await unaryAs(kv, "Delete", "root", { key: "k" });
  const absent = await unaryAs(kv, "Append", "nobody", { key: "k", value: big });
  assertEquals(present, absent);
  assertEquals(present.code, grpc.status.PERMISSION_DENIED);
  assertEquals(present.details, "nobody may not produce k");
});

/** A backend that records every member a handler touches (anything but `nodeId`). */
function spied(inner: LocalBackend): { backend: KvBackend; touched: string[] } {
  const touched: string[] = [];
  const backend = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop !== "nodeId") touched.push(String(prop));
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  }) as KvBackend;
  return { backend, touched };
}

Deno.test("every RPC authorizes before it reads state or reaches the backend", async () => {
  const inner = new LocalBackend();
  inner.stateMachine.apply(
    1,
    encodeCommand({
      type: "set",
      key: "k",
      value: new Uint8Array(1000),
      timeMs: 0,
    }),
  );
  const { backend, touched } = spied(inner);
  const kv = createKvServiceHandlers({ backend, authorize: () => false });
  const big = new Uint8Array(1024 * 1024);
  const unary: [string, Record<string, unknown>][] = [
    ["Get", { key: "k" }],
    ["Set", { key: "k", value: big }],
    ["Delete", { key: "k" }],
    ["Append", { key: "k", value: big }],
    ["CompareAndSet", { key: "k", value: big, expect_version: 1 }],
    ["GetServers", {}],
    ["Admin/Members", {}],
    ["Admin/RemoveServer", { id: "n2" }],
    ["Admin/TransferLeadership", { id: "" }],
    ["Admin/Leave", {}],
  ];
  for (const [method, request] of unary) {
    const out = await unaryAs(kv, method, "nobody", request);
    assertEquals([method, out.code], [method, grpc.status.PERMISSION_DENIED]);
    assertEquals([method, touched], [method, []]);
  }
  for (const method of ["List", "Admin/Snapshot"]) {
    const out = await streamAs(kv, "nobody", { prefix: "" }, method);
    assertEquals([method, out.code], [method, grpc.status.PERMISSION_DENIED]);
    assertEquals([method, touched], [method, []]);
  }
});

Deno.test("a policy pattern with text after * is refused; a trailing * is a prefix", async () => {
  let refused: unknown;
  try {
    await authorizerWith(["p, alice, foo*bar, consume"]);
  } catch (err) {
    refused = err;
  }
  assert(refused instanceof ConfigError, `expected ConfigError, got ${refused}`);
  assertEquals(refused.key, "acl-policy-file");
  assert(refused.message.includes("foo*bar"), refused.message);
  await assertRejectsConfig(["p, alice, *x, consume"]);
  await assertRejectsConfig(["p, alice, a*b*, produce"]);

  const auth = await authorizerWith(["p, alice, foo*, consume", "p, alice, *, produce"]);
  assert(auth.enforce("alice", "foo", "consume"));
  assert(auth.enforce("alice", "foobar", "consume"));
  assert(auth.enforce("alice", "foo-secret", "consume"));
  assert(!auth.enforce("alice", "fo", "consume"));
  assert(!auth.enforce("alice", "bar", "consume"));
  assert(auth.enforce("alice", "anything", "produce"));
});

async function assertRejectsConfig(rules: readonly string[]): Promise<void> {
  let refused: unknown;
  try {
    await authorizerWith(rules);
  } catch (err) {
    refused = err;
  }
  assert(refused instanceof ConfigError, `${rules}: expected ConfigError, got ${refused}`);
}

Deno.test("List over keys the subject may not read yields to the event loop and stops when cancelled", async () => {
  const KEYS = 100_000;
  const backend = new LocalBackend();
  for (let i = 0; i < KEYS; i++) {
    backend.stateMachine.apply(
      i + 1,
      encodeCommand({
        type: "set",
        key: `p/${String(i).padStart(6, "0")}`,
        value: new Uint8Array(1),
        timeMs: 0,
      }),
    );
  }
  let checked = 0;
  let firedAt = -1;
  const kv = createKvServiceHandlers({
    backend,
    authorize: (_subject, object) => {
      if (object === "p/") return true; // may list the prefix, but read none of its keys
      if (++checked === 1) setTimeout(() => firedAt = checked, 0);
      return false;
    },
  });
  const out = await streamAs(kv, "nobody", { prefix: "p/" });
  assertEquals([out.code, out.response], [grpc.status.OK, []]);
  assertEquals(checked, KEYS);
  assert(firedAt > 0 && firedAt < KEYS, `a timer waited for ${firedAt} of ${KEYS} keys`);

  // A client that goes away stops the scan at the next yield.
  checked = 0;
  const cancelled = await streamAs(kv, "nobody", { prefix: "p/" }, "List", (call) => {
    setTimeout(() => call.emit("cancelled"), 0);
  });
  assertEquals(cancelled.code, grpc.status.CANCELLED);
  await new Promise((r) => setTimeout(r, 50));
  assert(checked < KEYS / 2, `the scan went on for ${checked} keys after the cancel`);
  assert(checked >= 1);
});
