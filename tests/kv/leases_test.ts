/**
 * etcd's leases in the state machine: grant, attach by put, keep-alive, revoke (its keys are
 * deleted at one revision, watchers see the deletes), bounds, snapshots, and lease events.
 */
import { assert, assertEquals } from "../helpers/assert.ts";
import {
  type Command,
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
