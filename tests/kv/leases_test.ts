/**
 * etcd's leases in the state machine: grant, attach by put, keep-alive, revoke (its keys are
 * deleted at one revision, watchers see the deletes), bounds, snapshots, and lease events.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  type Command,
  decodeCommand,
  encodeCommand,
  KvStateMachine,
  type LeaseEvent,
  normalizeTxn,
  rangeRequest,
  type RevisionEvents,
} from "../../src/kv/mod.ts";

const te = new TextEncoder();
const b = (s: string) => te.encode(s);

class Store {
  index = 0;
  constructor(readonly sm = new KvStateMachine()) {}
  run(cmd: Command) {
    return this.sm.apply(++this.index, encodeCommand(cmd));
  }
  grant(id: number, ttlSeconds = 10, owner = "alice") {
    return this.run({ type: "leaseGrant", key: "", timeMs: 0, leaseId: id, ttlSeconds, owner });
  }
  put(key: string, lease = 0) {
    return this.run({
      type: "txn",
      key: "",
      timeMs: 0,
      txn: normalizeTxn({ success: [{ request_put: { key: b(key), value: b("v"), lease } }] }),
    });
  }
}

Deno.test("leases: a put attaches, a revoke deletes every attached key at one revision", () => {
  const s = new Store();
  const leases: LeaseEvent[] = [];
  s.sm.onLease((e) => leases.push(e));
  assert(s.grant(7).ok, "grant");
  s.put("a", 7);
  s.put("b", 7);
  s.put("c");
  assertEquals([...s.sm.lease(7)!.keys].sort(), ["a", "b"], "attached");
  assertEquals(s.sm.range(rangeRequest({ key: b("a") })).kvs[0].lease, 7, "key's lease");
  s.put("b"); // a put without the lease detaches the key
  assertEquals([...s.sm.lease(7)!.keys], ["a"], "b detached");
  const events: RevisionEvents[] = [];
  s.sm.onEvents((r) => events.push(r));
  const r = s.run({ type: "leaseRevoke", key: "", timeMs: 0, leaseId: 7, expired: true });
  assert(r.ok, "revoke");
  assertEquals(s.sm.lease(7), undefined, "gone");
  assertEquals(events.map((e) => [e.revision, e.events.map((x) => [x.type, x.key])]), [
    [s.index, [["delete", "a"]]],
  ], "one revision of deletes");
  assertEquals(leases.map((e) => e.type), ["grant", "revoke"], "lease events");
});

Deno.test("leases: errors as etcd's; bounds; keep-alive of a missing lease", () => {
  const s = new Store(new KvStateMachine({ maxLeases: 2, maxKeysPerLease: 1 }));
  assert(s.grant(1).ok && s.grant(2).ok, "two leases");
  assertEquals(s.grant(1).etcdError?.message, "etcdserver: lease already exists", "exists");
  assert(s.grant(3).etcdError?.message.includes("at most 2 leases"), "bounded count");
  s.put("k1", 1);
  assert(s.put("k2", 1).etcdError?.message.includes("as many keys"), "bounded keys per lease");
  assertEquals(s.put("k3", 99).etcdError?.message, "etcdserver: requested lease not found", "");
  const ka = s.run({ type: "leaseKeepAlive", key: "", timeMs: 0, leaseId: 42 });
  assertEquals(ka.etcdError?.message, "etcdserver: requested lease not found", "keep-alive");
  const ok = s.run({ type: "leaseKeepAlive", key: "", timeMs: 0, leaseId: 1 });
  assertEquals([ok.ok, ok.ttlSeconds], [true, 10], "keep-alive answers the TTL");
});

Deno.test("leases: snapshots keep leases and their keys; a restored replica revokes alike", () => {
  const s = new Store();
  s.grant(5, 30, "bob");
  s.put("x", 5);
  s.put("y", 5);
  const other = new KvStateMachine();
  other.restore(s.sm.snapshot());
  assertEquals(other.snapshot(), s.sm.snapshot(), "round trip");
  const l = other.lease(5)!;
  assertEquals([l.ttlSeconds, l.owner, [...l.keys].sort()], [30, "bob", ["x", "y"]], "lease");
  const revoke = encodeCommand({
    type: "leaseRevoke",
    key: "",
    timeMs: 0,
    leaseId: 5,
    expired: false,
  });
  s.sm.apply(++s.index, revoke);
  other.apply(s.index, revoke);
  assertEquals(other.snapshot(), s.sm.snapshot(), "same state after the revoke");
  assertEquals(other.keyCount, 0, "keys deleted");
});

Deno.test("leases: an expiry decided before a keep-alive that applied since is void", () => {
  const s = new Store();
  s.grant(7, 5);
  s.put("held", 7);
  const grantedAt = s.sm.lease(7)!.renewedIndex;
  assertEquals(grantedAt, 1, "the grant's index");
  // The leader's lessor decides the expiry having seen the grant only; a keep-alive already in
  // the log applies first and is acknowledged with a full TTL.
  const decided = s.sm.lease(7)!.renewedIndex;
  assert(s.run({ type: "leaseKeepAlive", key: "", timeMs: 0, leaseId: 7 }).ok, "keep-alive");
  assertEquals(s.sm.lease(7)!.renewedIndex, s.index, "renewed at the keep-alive's index");
  const stale = s.run({
    type: "leaseRevoke",
    key: "",
    timeMs: 0,
    leaseId: 7,
    expired: true,
    renewedIndex: decided,
  });
  assertEquals(stale.ok, false, "the stale expiry is refused");
  assertEquals(stale.etcdError?.code, "FAILED_PRECONDITION", stale.etcdError?.message);
  assert(s.sm.lease(7) !== undefined, "the lease lives on");
  assertEquals(s.sm.range(rangeRequest({ key: b("held") })).kvs.length, 1, "with its key");
  // An expiry decided after the last renewal applies; so does one without the field (older
  // nodes), and a client's revoke is never conditional.
  const current = s.sm.lease(7)!.renewedIndex;
  const r = s.run({
    type: "leaseRevoke",
    key: "",
    timeMs: 0,
    leaseId: 7,
    expired: true,
    renewedIndex: current,
  });
  assert(r.ok, "an expiry that saw the last renewal");
  assertEquals(s.sm.lease(7), undefined);
  assertEquals(s.sm.range(rangeRequest({ key: b("held") })).kvs.length, 0, "its key gone");
  s.grant(8);
  s.run({ type: "leaseKeepAlive", key: "", timeMs: 0, leaseId: 8 });
  assert(
    s.run({ type: "leaseRevoke", key: "", timeMs: 0, leaseId: 8, expired: true }).ok,
    "an expiry without renewedIndex is unconditional",
  );
});

Deno.test("leases: renewedIndex is encoded in expiries and kept in snapshots", () => {
  const cmd: Command = {
    type: "leaseRevoke",
    key: "",
    timeMs: 5,
    leaseId: 9,
    expired: true,
    renewedIndex: 123_456,
  };
  const back = decodeCommand(encodeCommand(cmd));
  assertEquals(back.type === "leaseRevoke" && back.renewedIndex, 123_456, "round trip");
  const plain = decodeCommand(
    encodeCommand({ type: "leaseRevoke", key: "", timeMs: 5, leaseId: 9, expired: false }),
  );
  assertEquals(plain.type === "leaseRevoke" && plain.renewedIndex, undefined, "absent");
  const s = new Store();
  s.grant(3);
  s.run({ type: "leaseKeepAlive", key: "", timeMs: 0, leaseId: 3 });
  const restored = new KvStateMachine();
  restored.restore(s.sm.snapshot());
  assertEquals(restored.lease(3)!.renewedIndex, 2, "a restored replica voids the same expiries");
});
